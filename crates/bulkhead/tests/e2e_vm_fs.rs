//! The file-system routes and Slicer's copy modes on a microVM node (the guest's agent speaks
//! the same protocol version 3 over virtio-serial): one node, the routes the SDKs use, under
//! TCG here (ADR 0017).

mod common;

use base64::Engine;
use bulkhead_api::client::full_body;
use common::answer::*;
use common::netlab::Netns;
use common::{privileged, rt, vm_config, Daemon};
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use std::time::Duration;

#[test]
fn microvm_fs_routes_and_cp_v1() {
    if !privileged() {
        return;
    }
    let netns = Netns::new();
    let d = Daemon::start_in(&netns.path(), "vmfs", &vm_config());
    let n = d
        .vm_ok(&["add", &d.tenant, "--timeout", "180s"])
        .trim()
        .to_string();
    let c = d.client();
    let mk = serde_json::json!({"path": "/root/w/sub", "recursive": true});
    let a = call(
        &c,
        Method::POST,
        &format!("/vm/{n}/fs/mkdir"),
        serde_json::to_vec(&mk).unwrap(),
        Some("application/json"),
    );
    ok(&a, "mkdir in the guest");
    ok(
        &post(&c, &format!("/vm/{n}/cp?path=/root/w/sub/f.txt&mode=cp-v1-binary&copy_semantics=cp-v1&source_name=f.txt&source_type=file"), b"guest".to_vec()),
        "cp-v1-binary upload",
    );
    let st = get(&c, &format!("/vm/{n}/fs/stat?path=/root/w/sub/f.txt")).json();
    assert_eq!(
        (st["type"].as_str(), st["size"].as_u64()),
        (Some("file"), Some(5))
    );
    assert_eq!(
        get(&c, &format!("/vm/{n}/fs/stat?path=/root/none")).status,
        StatusCode::NOT_FOUND
    );
    let ls = get(&c, &format!("/vm/{n}/fs/readdir?path=/root/w")).json();
    assert_eq!(ls[0]["name"], "sub");
    let a = get(
        &c,
        &format!("/vm/{n}/cp?path=/root/w&mode=cp-v1-tar&copy_semantics=cp-v1"),
    );
    ok(&a, "cp-v1-tar download");
    assert_eq!(a.header("x-slicer-source-type"), "directory");
    assert_eq!(
        a.header("x-slicer-source-name-base64"),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("w")
    );
    let names: Vec<String> = tar::Archive::new(&a.body[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["sub", "sub/f.txt"]);

    // A watch in the guest.
    let rt = rt();
    let p = format!("/vm/{n}/fs/watch?paths=/root/w&max_events=1&events=create");
    let resp = rt
        .block_on(c.send_ok(Method::GET, &p, full_body(Vec::new()), None))
        .unwrap();
    d.sh(&n, "touch /root/w/new");
    let body = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(60), resp.into_body().collect()).await
        })
        .expect("no event from the guest")
        .unwrap()
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("\"path\":\"/root/w/new\""),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let o = d.vm(&[
        "exec",
        &n,
        "--",
        "/usr/local/bin/slicer-agent",
        "upload",
        "check",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("chunked-copy-v2"),
        "{o:?}"
    );
    ok(
        &call(
            &c,
            Method::DELETE,
            &format!("/vm/{n}/fs/remove?path=/root/w&recursive=true"),
            vec![],
            None,
        ),
        "remove -r",
    );
    d.stop_and_assert_clean();
}
