//! Volumes and snapshots (issue #13), through the real daemon: create, list, show and delete
//! with their validation errors (API and CLI); another tenant's volume or snapshot answers 404
//! on every route and at node create (counted); the storage quota counts volumes, also for
//! parallel creates; a deleted volume's image is zeros on the backing store, and the raw image
//! never holds a marker written into its data directory; byte and inode limits of one volume
//! leave another untouched; a snapshot round-trips content into a new volume; one writer at a
//! time; a daemon killed during a snapshot leaves no snapshot and no file after its restart.
//!
//! Content is written and read from the test (root) through `bulkhead_storage::ext4img::open_data`
//! with the tenant's key, as the supervisor would mount it.

mod common;

use common::shared::Shared;
use common::*;
use hyper::Method;
use serde_json::{json, Value};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

async fn call(
    c: &bulkhead_api::Client,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    use http_body_util::BodyExt;
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let ct = (!bytes.is_empty()).then_some("application/json");
    let r = c
        .send(
            m,
            path,
            bulkhead_api::client::full_body(bytes.into_bytes()),
            ct,
        )
        .await
        .unwrap();
    let s = r.status().as_u16();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&b)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into()));
    (s, v)
}

fn req(c: &bulkhead_api::Client, m: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    rt().block_on(call(c, m, path, body))
}

fn create(c: &bulkhead_api::Client, body: Value) -> Value {
    let (s, v) = req(c, Method::POST, "/volumes", Some(body.clone()));
    assert_eq!(s, 201, "create {body}: {v}");
    v
}

fn delete(c: &bulkhead_api::Client, id: &str) {
    let (s, v) = req(c, Method::DELETE, &format!("/volumes/{id}"), None);
    assert_eq!(s, 204, "delete {id}: {v}");
}

/// Asserts an error answer: status, code, and a message containing `want`.
fn refused(got: (u16, Value), status: u16, code: &str, want: &str) {
    let (s, v) = got;
    assert_eq!(s, status, "{v}");
    assert_eq!(v["code"], code, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(msg.contains(want), "{msg:?} lacks {want:?}");
}

/// The fscrypt key of a volume, as the daemon derives it (the test runs as root).
fn volume_key(state: &Path, tenant: &str, key_id: &str) -> bulkhead_storage::Secret<64> {
    bulkhead_storage::Keyring::open(&state.join("keys"))
        .unwrap()
        .tenant(tenant)
        .unwrap()
        .derive("volume", key_id)
}

fn image(tenant_dir: &Path, id: &str) -> PathBuf {
    tenant_dir.join("volumes").join(format!("{id}.img"))
}

/// The volume's `data` directory as a detached mount; the path to reach it through /proc.
struct Data(std::os::fd::OwnedFd);
impl Data {
    fn open(state: &Path, tenant: &str, tenant_dir: &Path, v: &Value) -> Data {
        // A volume made from a snapshot keeps the snapshot's key id: its origin volume's id.
        let id = v["id"].as_str().unwrap();
        let key_id = v.get("key_id").and_then(|k| k.as_str()).unwrap_or(id);
        let key = volume_key(state, tenant, key_id);
        Data(bulkhead_storage::ext4img::open_data(&image(tenant_dir, id), &key, false).unwrap())
    }
    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.0.as_raw_fd()))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

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

#[test]
fn a_snapshot_round_trips_content_and_one_writer_holds_a_volume() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("vols", &[]);
    let c = d.client();
    let g = d.tenant.clone();
    let v = create(&c, json!({"name": "src", "size": "32M"}));
    let id = v["id"].as_str().unwrap().to_string();
    let marker = format!("snap-marker-{}", std::process::id());
    {
        let data = Data::open(&d.state, &d.tenant, &d.tenant_dir(), &v);
        std::fs::create_dir(data.path("dir")).unwrap();
        std::fs::write(data.path("dir/file"), &marker).unwrap();
    }
    let (s, snap) = req(&c, Method::POST, &format!("/volumes/{id}/snapshots"), None);
    assert_eq!(s, 201, "{snap}");
    assert_eq!(snap["volume"], id.as_str());
    assert_eq!(snap["size"], 32 << 20);
    let sid = snap["id"].as_str().unwrap().to_string();
    let sealed = d
        .tenant_dir()
        .join("snapshots")
        .join(format!("{sid}.sealed"));
    let raw = std::fs::read(&sealed).unwrap();
    assert!(!contains(&raw, marker.as_bytes()));
    let (_, list) = req(&c, Method::GET, &format!("/volumes/{id}/snapshots"), None);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // A volume from the snapshot: its size, the content.
    let v2 = create(&c, json!({"name": "copy", "from_snapshot": sid}));
    assert_eq!(v2["size_bytes"], 32 << 20);
    assert_eq!(v2["from_snapshot"], sid.as_str());
    {
        let mut with_key = v2.clone();
        with_key["key_id"] = json!(id);
        let data = Data::open(&d.state, &d.tenant, &d.tenant_dir(), &with_key);
        assert_eq!(
            std::fs::read_to_string(data.path("dir/file")).unwrap(),
            marker
        );
    }
    // One writer at a time, bookkept at node create.
    let id2 = v2["id"].as_str().unwrap().to_string();
    let node = |vols: Value| {
        req(
            &c,
            Method::POST,
            &format!("/hostgroup/{g}/nodes"),
            Some(json!({"volumes": vols})),
        )
    };
    let (s, n1) = node(json!([{"id": id2, "path": "/data"}]));
    assert_eq!(s, 201, "{n1}");
    let n1 = n1["hostname"].as_str().unwrap().to_string();
    // A named create's retry is the conflict rule's: the same volumes return the node, other
    // volumes are a conflict naming them.
    let named = |vols: Value| {
        req(
            &c,
            Method::POST,
            &format!("/hostgroup/{g}/nodes"),
            Some(json!({"hostname": "w1", "volumes": vols})),
        )
    };
    let (s, w1) = named(json!([{"id": id, "path": "/w"}]));
    assert_eq!(s, 201, "{w1}");
    let (s, again) = named(json!([{"id": id, "path": "//w/"}]));
    assert_eq!((s, &again["hostname"]), (200, &json!("w1")), "{again}");
    refused(
        named(json!([{"id": id, "path": "/other"}])),
        409,
        "conflict",
        "volumes",
    );
    let (s, e) = req(
        &c,
        Method::DELETE,
        &format!("/hostgroup/{g}/nodes/w1"),
        None,
    );
    assert_eq!(s, 200, "{e}");
    refused(
        node(json!([{"id": id2, "path": "/data"}])),
        409,
        "conflict",
        &n1,
    );
    refused(
        node(json!([{"id": id2, "path": "/data", "read_only": true}])),
        409,
        "conflict",
        &n1,
    );
    refused(
        req(&c, Method::DELETE, &format!("/volumes/{id2}"), None),
        409,
        "conflict",
        &n1,
    );
    refused(
        req(&c, Method::POST, &format!("/volumes/{id2}/snapshots"), None),
        409,
        "conflict",
        "consistent",
    );
    let (_, shown) = req(&c, Method::GET, &format!("/volumes/{id2}"), None);
    assert_eq!(shown["attachments"][0]["node"], n1.as_str(), "{shown}");
    // Paths are checked.
    for bad in ["data", "/proc/x", "/run", "/a/../b", "/"] {
        refused(
            node(json!([{"id": id, "path": bad}])),
            400,
            "invalid_request",
            "volumes: path",
        );
    }
    refused(
        node(json!([{"id": id, "path": "/a"}, {"id": id2, "path": "/a/b", "read_only": true}])),
        400,
        "invalid_request",
        "overlap",
    );
    refused(
        node(json!([{"id": id, "path": "/a", "exec": true}])),
        400,
        "invalid_request",
        "exec",
    );
    // Readers share.
    let (s, r1) = node(json!([{"id": id, "path": "/src", "read_only": true}]));
    assert_eq!(s, 201, "{r1}");
    let (s, r2) = node(json!([{"id": id, "path": "/src", "read_only": true}]));
    assert_eq!(s, 201, "{r2}");
    refused(
        node(json!([{"id": id, "path": "/src"}])),
        409,
        "conflict",
        "held read-only",
    );
    // (three refusals as `held`: the second writer, the reader beside it, the writer beside
    // readers; the named retry above was none)
    let (_, m) = req(&c, Method::GET, "/metrics", None);
    assert!(
        m.as_str().unwrap().contains(&format!(
            "bulkhead_volume_attach_refused_total{{tenant=\"{g}\",reason=\"held\"}} 3"
        )),
        "{m}"
    );
    // Deleting the node frees the volume.
    for n in [
        &n1,
        r1["hostname"].as_str().unwrap(),
        r2["hostname"].as_str().unwrap(),
    ] {
        let (s, e) = req(
            &c,
            Method::DELETE,
            &format!("/hostgroup/{g}/nodes/{n}"),
            None,
        );
        assert_eq!(s, 200, "{e}");
    }
    refused(
        req(&c, Method::DELETE, &format!("/volumes/{id}"), None),
        409,
        "conflict",
        "snapshots",
    );
    let (s, _) = req(
        &c,
        Method::DELETE,
        &format!("/volumes/{id}/snapshots/{sid}"),
        None,
    );
    assert_eq!(s, 204);
    assert!(!sealed.exists());
    delete(&c, &id);
    delete(&c, &id2);
    d.stop_and_assert_clean();
}

#[test]
fn a_daemon_killed_during_a_snapshot_leaves_nothing_after_restart() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("volk", &[]);
    let c = d.client();
    let v = create(&c, json!({"name": "big", "size": "2G"}));
    let id = v["id"].as_str().unwrap().to_string();
    let snaps = d.tenant_dir().join("snapshots");
    let sock = d.socket.clone();
    let post = std::thread::spawn(move || {
        let c = bulkhead_api::Client::new(bulkhead_api::Endpoint::Unix(sock));
        rt().block_on(async {
            c.send(
                Method::POST,
                &format!("/volumes/{id}/snapshots"),
                bulkhead_api::client::full_body(Vec::new()),
                None,
            )
            .await
            .map(|r| r.status().as_u16())
        })
    });
    // Kill once the sealed file is being written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let busy = std::fs::read_dir(&snaps)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name().to_string_lossy().ends_with(".tmp")
                    && e.metadata().is_ok_and(|m| m.len() > 1 << 20)
            });
        if busy {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    d.crash();
    let answer = post.join().unwrap();
    assert!(
        answer.is_err() || answer.as_ref().is_ok_and(|s| *s != 201),
        "{answer:?}"
    );
    d.spawn();
    let c = d.client();
    let id = v["id"].as_str().unwrap();
    let (s, list) = req(&c, Method::GET, &format!("/volumes/{id}/snapshots"), None);
    assert_eq!((s, list.clone()), (200, json!([])), "{list}");
    let left: Vec<_> = std::fs::read_dir(&snaps)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "files left: {left:?}");
    assert!(d
        .log()
        .contains("snapshot half-made or half-deleted; wiping it"));
    delete(&c, id);
    d.stop_and_assert_clean();
}
