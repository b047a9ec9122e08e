//! Volumes (issue #13), through the real daemon: create, list, show and delete
//! with their validation errors (API and CLI); another tenant's volume or snapshot answers 404
//! on every route and at node create (counted); the storage quota counts volumes, also for
//! parallel creates; a deleted volume's image is zeros on the backing store, and the raw image
//! never holds a marker written into its data directory; byte and inode limits of one volume
//! leave another untouched. Snapshots and one writer: `e2e_volume_snapshots.rs`.
//!
//! Content is written and read from the test (root) through `bulkhead_storage::ext4img::open_data`
//! with the tenant's key, as the supervisor would mount it.

mod common;

use common::shared::Shared;
use common::*;
use hyper::Method;
use serde_json::json;

#[path = "common/volumes.rs"]
mod vols;
use vols::*;

#[test]
fn volumes_crud_validation_and_cli() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("vol", &[]);
    let c = d.client();
    let v = create(
        &c,
        json!({"name": "data", "size": "64M", "labels": {"team": "a"}}),
    );
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 26, "{v}");
    assert_eq!(v["tenant"], d.tenant.as_str());
    assert_eq!(v["size_bytes"], 64 << 20);
    assert_eq!(v["inodes"], 4096, "one per 16 KiB by default");
    assert_eq!(v["state"], "ready");
    assert_eq!(v["labels"]["team"], "a");
    assert!(image(&d.tenant_dir(), &id).exists());
    let (s, list) = req(&c, Method::GET, "/volumes", None);
    assert_eq!(s, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (s, one) = req(&c, Method::GET, &format!("/volumes/{id}"), None);
    assert_eq!((s, &one["name"]), (200, &json!("data")));
    // The name is unique in the tenant.
    refused(
        req(
            &c,
            Method::POST,
            "/volumes",
            Some(json!({"name": "data", "size": "16M"})),
        ),
        409,
        "conflict",
        "volume name \"data\" is taken",
    );
    // Validation: 400 naming the field.
    for (body, code, want) in [
        (
            json!({"name": "Bad_Name", "size": "16M"}),
            "invalid_request",
            "name:",
        ),
        (json!({"name": "x", "size": "1M"}), "out_of_range", "size:"),
        (json!({"name": "x", "size": "20T"}), "out_of_range", "size:"),
        (
            json!({"name": "x", "size": "12Q"}),
            "invalid_request",
            "size:",
        ),
        (json!({"name": "x"}), "invalid_request", "size: missing"),
        (
            json!({"name": "x", "size": "16M", "inodes": 5}),
            "out_of_range",
            "inodes:",
        ),
        (
            json!({"name": "x", "size": "16M", "labels": {"a b": "c"}}),
            "invalid_request",
            "labels:",
        ),
        (
            json!({"name": "x", "size": "16M", "sise": 1}),
            "invalid_request",
            "sise",
        ),
        (
            json!({"name": "x", "from_snapshot": "nope"}),
            "not_found",
            "snapshot",
        ),
    ] {
        let (s, e) = req(&c, Method::POST, "/volumes", Some(body.clone()));
        assert!(s == 400 || s == 404, "{body}: {s} {e}");
        assert_eq!(e["code"], code, "{body}: {e}");
        assert!(e["error"].as_str().unwrap().contains(want), "{body}: {e}");
    }
    // Unknown and malformed ids: the same 404.
    for bad in ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "nope", "..%2F..%2Fetc"] {
        refused(
            req(&c, Method::GET, &format!("/volumes/{bad}"), None),
            404,
            "not_found",
            "not found",
        );
        refused(
            req(&c, Method::DELETE, &format!("/volumes/{bad}"), None),
            404,
            "not_found",
            "not found",
        );
    }
    refused(
        req(&c, Method::GET, "/volumes?tenant=zzz", None),
        404,
        "not_found",
        "none of yours",
    );
    // The CLI.
    let sock = d.sock().to_string();
    let cid = cli_ok(&[
        "volume", "create", "--socket", &sock, "logs", "--size", "32M", "--label", "k=v",
    ]);
    let cid = cid.trim().to_string();
    let out = cli_ok(&["volume", "list", "--socket", &sock]);
    assert!(
        out.contains(&cid) && out.contains("logs") && out.contains("32M"),
        "{out}"
    );
    let out = cli_ok(&["volume", "show", "--socket", &sock, &cid]);
    assert!(out.contains("label k=v"), "{out}");
    let out = cli_ok(&["volume", "delete", "--socket", &sock, &cid]);
    assert!(out.contains("deleted"), "{out}");
    let o = cli(&["volume", "show", "--socket", &sock, &cid]);
    assert!(!o.status.success());
    delete(&c, &id);
    refused(
        req(&c, Method::GET, &format!("/volumes/{id}"), None),
        404,
        "not_found",
        "not found",
    );
    assert!(!image(&d.tenant_dir(), &id).exists());
    d.stop_and_assert_clean();
}

#[test]
fn another_tenants_volume_or_snapshot_is_404_everywhere() {
    if !privileged() {
        return;
    }
    let s = Shared::start("", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    let (ca, cb) = (s.tenant_client(&a), s.tenant_client(&b));
    let v = create(&ca, json!({"name": "secret", "size": "16M"}));
    let id = v["id"].as_str().unwrap().to_string();
    let (st, snap) = req(&ca, Method::POST, &format!("/volumes/{id}/snapshots"), None);
    assert_eq!(st, 201, "{snap}");
    let sid = snap["id"].as_str().unwrap().to_string();
    // b sees nothing of a's volume: every route answers like an unknown id.
    let (st, list) = req(&cb, Method::GET, "/volumes", None);
    assert_eq!((st, list), (200, json!([])));
    for (m, path) in [
        (Method::GET, format!("/volumes/{id}")),
        (Method::DELETE, format!("/volumes/{id}")),
        (Method::GET, format!("/volumes/{id}/snapshots")),
        (Method::POST, format!("/volumes/{id}/snapshots")),
        (Method::DELETE, format!("/volumes/{id}/snapshots/{sid}")),
    ] {
        refused(
            req(&cb, m.clone(), &path, None),
            404,
            "not_found",
            "not found",
        );
    }
    refused(
        req(
            &cb,
            Method::POST,
            "/volumes",
            Some(json!({"name": "steal", "from_snapshot": sid})),
        ),
        404,
        "not_found",
        "snapshot",
    );
    // b's own volume, and a's snapshot id under it: 404 too.
    let vb = create(&cb, json!({"name": "mine", "size": "16M"}));
    let idb = vb["id"].as_str().unwrap().to_string();
    refused(
        req(
            &cb,
            Method::DELETE,
            &format!("/volumes/{idb}/snapshots/{sid}"),
            None,
        ),
        404,
        "not_found",
        "snapshot",
    );
    // A node of b asking for a's volume: 404 naming the id, counted.
    refused(
        req(
            &cb,
            Method::POST,
            &format!("/hostgroup/{b}/nodes"),
            Some(json!({"volumes": [{"id": id, "path": "/data"}]})),
        ),
        404,
        "not_found",
        &id,
    );
    let (_, m) = req(&cb, Method::GET, "/metrics", None);
    let m = m.as_str().unwrap().to_string();
    assert!(
        m.contains(&format!(
            "bulkhead_volume_attach_refused_total{{tenant=\"{b}\",reason=\"not_found\"}} 1"
        )),
        "{m}"
    );
    assert!(!m.contains(&a), "b's metrics show nothing of a");
    // The admin may act in both: a new volume must say which tenant; a lookup finds it.
    refused(
        req(
            &s.admin_client(),
            Method::POST,
            "/volumes",
            Some(json!({"name": "x", "size": "16M"})),
        ),
        400,
        "invalid_request",
        "?tenant=",
    );
    let (st, got) = req(
        &s.admin_client(),
        Method::GET,
        &format!("/volumes/{id}"),
        None,
    );
    assert_eq!((st, got["tenant"].as_str()), (200, Some(a.as_str())));
    let (st, _) = req(
        &ca,
        Method::DELETE,
        &format!("/volumes/{id}/snapshots/{sid}"),
        None,
    );
    assert_eq!(st, 204);
    delete(&ca, &id);
    delete(&cb, &idb);
    s.stop_and_assert_clean();
}

#[test]
fn the_storage_quota_counts_volumes_also_in_parallel() {
    if !privileged() {
        return;
    }
    // Nodes of the default group have storage_size 1G.
    let d = Daemon::start_edited("volq", &[], |y| {
        y.replace(
            "  image: minimal",
            "  image: minimal\n  quotas: {storage: 2G}",
        )
    });
    let c = d.client();
    let big = create(&c, json!({"name": "big", "size": "1G"}));
    refused(
        req(
            &c,
            Method::POST,
            "/volumes",
            Some(json!({"name": "more", "size": "1536M"})),
        ),
        403,
        "quota_exceeded",
        "storage: 1G in use + 1536M asked > 2G allowed",
    );
    // Eight parallel creates of 256M: exactly four fit.
    let ok = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let c = d.client();
                sc.spawn(move || {
                    req(
                        &c,
                        Method::POST,
                        "/volumes",
                        Some(json!({"name": format!("p{i}"), "size": "256M"})),
                    )
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .filter(|(s, _)| *s == 201)
            .count()
    });
    assert_eq!(ok, 4);
    // Volumes hold the quota: a node (1G) does not fit now.
    let g = d.tenant.clone();
    refused(
        req(
            &c,
            Method::POST,
            &format!("/hostgroup/{g}/nodes"),
            Some(json!({})),
        ),
        403,
        "quota_exceeded",
        "storage:",
    );
    let (_, q) = req(&c, Method::GET, "/quota", None);
    assert_eq!(q["tenants"][0]["storage_bytes"]["used"], 2u64 << 30, "{q}");
    // A delete frees at once.
    delete(&c, big["id"].as_str().unwrap());
    let (_, list) = req(&c, Method::GET, "/volumes", None);
    for v in list.as_array().unwrap() {
        delete(&c, v["id"].as_str().unwrap());
    }
    let (_, q) = req(&c, Method::GET, "/quota", None);
    assert_eq!(q["tenants"][0]["storage_bytes"]["used"], 0, "{q}");
    d.stop_and_assert_clean();
}

#[test]
fn a_deleted_volume_is_zeros_and_its_image_never_holds_plaintext() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("volw", &[]);
    let c = d.client();
    let v = create(&c, json!({"name": "w", "size": "32M"}));
    let id = v["id"].as_str().unwrap().to_string();
    let marker = format!("bulkhead-marker-{}", std::process::id());
    {
        let data = Data::open(&d.state, &d.tenant, &d.tenant_dir(), &v);
        // Many copies, in a file big enough to leave inline data.
        std::fs::write(data.path("marker.txt"), marker.repeat(4096)).unwrap();
    }
    let img = image(&d.tenant_dir(), &id);
    let raw = std::fs::read(&img).unwrap();
    assert!(
        !contains(&raw, marker.as_bytes()),
        "the raw image holds the plaintext marker"
    );
    assert!(
        !contains(&raw, b"marker.txt"),
        "file names are encrypted too"
    );
    // Hold the image open across the delete, then read what it held.
    let held = std::fs::File::open(&img).unwrap();
    delete(&c, &id);
    assert!(!img.exists());
    use std::io::Read;
    let mut after = Vec::new();
    (&held).read_to_end(&mut after).unwrap();
    assert_eq!(after.len(), 32 << 20);
    assert!(
        after.iter().all(|b| *b == 0),
        "a deleted volume's image was not wiped"
    );
    // A new volume never shows old bytes: a fresh image with nothing of the marker.
    let v2 = create(&c, json!({"name": "w2", "size": "32M"}));
    let raw = std::fs::read(image(&d.tenant_dir(), v2["id"].as_str().unwrap())).unwrap();
    assert!(!contains(&raw, marker.as_bytes()));
    {
        let data = Data::open(&d.state, &d.tenant, &d.tenant_dir(), &v2);
        let names: Vec<_> = std::fs::read_dir(data.path(""))
            .unwrap()
            .flatten()
            .collect();
        assert!(names.is_empty(), "a new volume is empty");
    }
    delete(&c, v2["id"].as_str().unwrap());
    d.stop_and_assert_clean();
}

#[test]
fn byte_and_inode_limits_hold_per_volume() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("voll", &[]);
    let c = d.client();
    let full = create(&c, json!({"name": "full", "size": "16M", "inodes": 64}));
    let other = create(&c, json!({"name": "other", "size": "16M"}));
    let host_before = std::fs::metadata(image(&d.tenant_dir(), full["id"].as_str().unwrap()))
        .unwrap()
        .len();
    {
        let data = Data::open(&d.state, &d.tenant, &d.tenant_dir(), &full);
        // Bytes: writing far more than the volume holds stops at ENOSPC.
        let mut f = std::fs::File::create(data.path("big")).unwrap();
        use std::io::Write;
        let chunk = vec![7u8; 1 << 20];
        let mut written = 0u64;
        let err = loop {
            match f.write_all(&chunk).and_then(|()| f.sync_data()) {
                Ok(()) => written += chunk.len() as u64,
                Err(e) => break e,
            }
            assert!(written < 64 << 20, "wrote past the volume's size");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        drop(f);
        std::fs::remove_file(data.path("big")).unwrap();
        // Inodes: at most 64 (some taken by the file system itself).
        let mut made = 0;
        let err = loop {
            match std::fs::write(data.path(&format!("f{made}")), b"") {
                Ok(()) => made += 1,
                Err(e) => break e,
            }
            assert!(made <= 64, "made more files than the volume's inodes");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(made > 10, "only {made} files");
    }
    // The image never grows past the volume's size; the other volume is untouched.
    let len = std::fs::metadata(image(&d.tenant_dir(), full["id"].as_str().unwrap()))
        .unwrap()
        .len();
    assert_eq!((host_before, len), (16 << 20, 16 << 20));
    {
        let data = Data::open(&d.state, &d.tenant, &d.tenant_dir(), &other);
        std::fs::write(data.path("ok"), vec![1u8; 4 << 20]).unwrap();
        for i in 0..200 {
            std::fs::write(data.path(&format!("n{i}")), b"x").unwrap();
        }
    }
    delete(&c, full["id"].as_str().unwrap());
    delete(&c, other["id"].as_str().unwrap());
    d.stop_and_assert_clean();
}
