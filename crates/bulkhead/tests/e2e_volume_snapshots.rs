//! Volume snapshots (issue #13), through the real daemon: a snapshot round-trips content into
//! a new volume (never holding the plaintext), one writer holds a volume at a time (bookkept at
//! node create, counted, a named create's retry answered by the conflict rule), and a daemon
//! killed (-9) during a snapshot leaves no snapshot and no file after its restart.

mod common;

use common::*;
use hyper::Method;
use serde_json::{json, Value};

#[path = "common/volumes.rs"]
mod vols;
use vols::*;

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
