//! End to end: the file-system routes (`/vm/{node}/fs/*`, the watch stream, `bulkhead vm fs`)
//! over the real daemon and a jail node, with the wire shapes Slicer's SDKs read (ADR 0017).
//! Copies in every SDK mode: `e2e_cp.rs`.

mod common;

use bulkhead_api::client::full_body;
use common::answer::*;
use common::*;
use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use std::time::Duration;

#[test]
fn fs_routes_answer_in_the_sdks_shapes() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("fs", &[]);
    let n = d.add();
    let c = d.client();

    let mk = |body: serde_json::Value| {
        call(
            &c,
            Method::POST,
            &format!("/vm/{n}/fs/mkdir"),
            serde_json::to_vec(&body).unwrap(),
            Some("application/json"),
        )
    };
    ok(
        &mk(serde_json::json!({"path": "/work/a/b", "recursive": true, "mode": "0750"})),
        "mkdir -p",
    );
    ok(
        &mk(serde_json::json!({"path": "/work/a/b", "recursive": true})),
        "mkdir -p again",
    );
    refused(
        &mk(serde_json::json!({"path": "/work/a/b"})),
        "mkdir of an existing directory",
    );
    refused(
        &mk(serde_json::json!({"path": "/work/x/y"})),
        "mkdir without its parent",
    );
    refused(
        &mk(serde_json::json!({"path": "/w", "gpu": 1})),
        "unknown key",
    );
    refused(&mk(serde_json::json!({"path": "rel"})), "relative path");
    refused(
        &mk(serde_json::json!({"path": "/w", "mode": "999"})),
        "bad mode",
    );

    ok(
        &post(
            &c,
            &format!("/vm/{n}/cp?path=/work/a/f.txt&permissions=0640"),
            b"hello".to_vec(),
        ),
        "write a file",
    );
    let st = get(&c, &format!("/vm/{n}/fs/stat?path=/work/a/b"));
    ok(&st, "stat a directory");
    let v = st.json();
    assert_eq!(v["name"], "b");
    assert_eq!(v["type"], "directory");
    assert_eq!(v["mode"], "0750");
    let mtime = v["mtime"].as_str().unwrap();
    assert!(
        mtime.len() >= 20 && mtime.ends_with('Z') && &mtime[10..11] == "T",
        "{mtime}"
    );

    let st = get(&c, &format!("/vm/{n}/fs/stat?path=/work/a/f.txt")).json();
    assert_eq!(
        (st["type"].as_str(), st["size"].as_u64()),
        (Some("file"), Some(5))
    );
    assert_eq!(st["mode"], "0640");
    // Missing: 404, which the SDKs' stat/exists read as "does not exist".
    let miss = get(&c, &format!("/vm/{n}/fs/stat?path=/work/nothing"));
    assert_eq!(miss.status, StatusCode::NOT_FOUND, "{}", miss.text());
    assert_eq!(miss.json()["code"], "path_not_found");
    refused(
        &get(&c, &format!("/vm/{n}/fs/stat?path=work")),
        "relative stat",
    );
    refused(&get(&c, &format!("/vm/{n}/fs/stat")), "stat without path");
    refused(
        &get(&c, &format!("/vm/{n}/fs/stat?path=/w&x=1")),
        "unknown key",
    );

    let ls = get(&c, &format!("/vm/{n}/fs/readdir?path=/work/a"));
    ok(&ls, "readdir");
    let names: Vec<String> = ls
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["name"].as_str().unwrap(),
                e["type"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, ["b:directory", "f.txt:file"]);
    assert_eq!(
        get(&c, &format!("/vm/{n}/fs/readdir?path=/work/none")).status,
        StatusCode::NOT_FOUND
    );
    refused(
        &get(&c, &format!("/vm/{n}/fs/readdir?path=/work/a/f.txt")),
        "readdir of a file",
    );

    let rm = |q: &str| {
        call(
            &c,
            Method::DELETE,
            &format!("/vm/{n}/fs/remove?{q}"),
            vec![],
            None,
        )
    };
    refused(
        &rm("path=/work/a&recursive=false"),
        "remove a full directory",
    );
    refused(&rm("path=/&recursive=true"), "remove /");
    ok(&rm("path=/work/a&recursive=true"), "remove -r");
    assert_eq!(
        get(&c, &format!("/vm/{n}/fs/stat?path=/work/a")).status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(rm("path=/work/a").status, StatusCode::NOT_FOUND);

    // The CLI: bulkhead vm fs mkdir|ls|stat|rm|watch.
    d.vm_ok(&["fs", "mkdir", &n, "/work/cli/x", "-p", "--mode", "0700"]);
    d.sh(&n, "echo hi > /work/cli/f");
    let ls = d.vm_ok(&["fs", "ls", &n, "/work/cli"]);
    assert!(
        ls.contains("directory") && ls.contains(" x\n") && ls.contains(" f\n"),
        "{ls}"
    );
    let st: serde_json::Value =
        serde_json::from_str(&d.vm_ok(&["fs", "stat", &n, "/work/cli/x", "--json"])).unwrap();
    assert_eq!(st["mode"], "0700");
    let watch = {
        let (sock, n) = (d.sock().to_string(), n.clone());
        std::thread::spawn(move || {
            cli(&[
                "vm",
                "fs",
                "--socket",
                &sock,
                "watch",
                &n,
                "/work/cli",
                "--count",
                "1",
                "--timeout",
                "20s",
            ])
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    d.sh(&n, "touch /work/cli/new");
    let w = watch.join().unwrap();
    let line = String::from_utf8_lossy(&w.stdout);
    assert!(line.contains("\"path\":\"/work/cli/new\""), "{line}");
    d.vm_ok(&["fs", "rm", &n, "/work/cli", "-r"]);
    assert!(!d.vm(&["fs", "stat", &n, "/work/cli"]).status.success());

    // Whatever a caller aims at, a special or read-only place answers 4xx, never 500.
    for (m, path, body) in [
        (
            Method::DELETE,
            "fs/remove?path=/proc/1&recursive=true",
            None,
        ),
        (
            Method::DELETE,
            "fs/remove?path=/proc/sys&recursive=true",
            None,
        ),
        (
            Method::DELETE,
            "fs/remove?path=/sys/kernel&recursive=true",
            None,
        ),
        (Method::DELETE, "fs/remove?path=/dev/null", None),
        (
            Method::POST,
            "fs/mkdir",
            Some(serde_json::json!({"path": "/proc/x/y", "recursive": true})),
        ),
        (
            Method::POST,
            "fs/mkdir",
            Some(serde_json::json!({"path": "/sys/x"})),
        ),
        (
            Method::POST,
            "fs/mkdir",
            Some(serde_json::json!({"path": "/dev/null/x", "recursive": true})),
        ),
        (Method::GET, "fs/readdir?path=/dev/null", None),
        (Method::GET, "cp?path=/dev/null", None),
        (Method::GET, "cp?path=/proc/self&mode=cp-v1-binary", None),
    ] {
        let b = body
            .map(|v| serde_json::to_vec(&v).unwrap())
            .unwrap_or_default();
        let a = call(
            &c,
            m.clone(),
            &format!("/vm/{n}/{path}"),
            b,
            Some("application/json"),
        );
        assert!(
            a.status.is_client_error(),
            "{m} {path}: {} {}",
            a.status,
            a.text()
        );
    }

    // Unknown node: 404 like any other route.
    assert_eq!(
        get(&c, "/vm/nope-1/fs/stat?path=/").status,
        StatusCode::NOT_FOUND
    );
    d.stop_and_assert_clean();
}

/// Parses SSE blocks into (id, data JSON).
fn sse_events(text: &str) -> Vec<(u64, serde_json::Value)> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut id = 0;
        let mut data = None;
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().unwrap();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).unwrap());
            }
        }
        if let Some(d) = data {
            out.push((id, d));
        }
    }
    out
}

#[test]
fn watch_streams_events_and_ends() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("fsw", &[]);
    let n = d.add();
    let c = d.client();
    d.sh(&n, "mkdir -p /work/w/sub");
    let rt = rt();
    // Two create events of *.txt under the tree, then the stream ends by itself.
    let path = format!(
        "/vm/{n}/fs/watch?paths=/work/w&recursive=true&events=create&patterns=*.txt&max_events=2"
    );
    let resp = rt
        .block_on(c.send_ok(Method::GET, &path, full_body(Vec::new()), None))
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    // The watches are set once the answer's headers are here.
    d.sh(
        &n,
        "echo x > /work/w/skip.log; echo a > /work/w/a.txt; echo b > /work/w/sub/b.txt",
    );
    let body = rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(20), resp.into_body().collect()).await
        })
        .expect("the stream did not end after max_events")
        .unwrap()
        .to_bytes();
    let ev = sse_events(&String::from_utf8_lossy(&body));
    let got: Vec<(u64, String, String)> = ev
        .iter()
        .map(|(id, v)| {
            (
                *id,
                v["type"].as_str().unwrap().into(),
                v["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, "create".into(), "/work/w/a.txt".into()),
            (2, "create".into(), "/work/w/sub/b.txt".into())
        ]
    );
    assert_eq!(ev[0].1["id"], 1);
    assert_eq!(ev[0].1["isDir"], false);
    assert!(ev[0].1["timestamp"].as_str().unwrap().ends_with('Z'));

    // A client that goes away ends its watch: the node's agent turns come back (a group
    // allows agent_concurrency of them; 80 watches opened and dropped one after another
    // would exhaust a leak).
    for _ in 0..80 {
        let p = format!("/vm/{n}/fs/watch?paths=/work/w");
        let r = rt
            .block_on(c.send_ok(Method::GET, &p, full_body(Vec::new()), None))
            .unwrap();
        drop(r);
    }
    std::thread::sleep(Duration::from_millis(500));
    ok(
        &get(&c, &format!("/vm/{n}/fs/stat?path=/work/w")),
        "after dropped watches",
    );

    // timeout= ends an idle stream.
    let p = format!("/vm/{n}/fs/watch?paths=/work/w&timeout=1s");
    let a = get(&c, &p);
    ok(&a, "watch with a timeout");
    assert!(sse_events(&a.text()).is_empty());

    for bad in [
        "",
        "paths=relative",
        "paths=/work/w&events=explode",
        "paths=/work/w&timeout=soon",
        "paths=/work/w&bogus=1",
    ] {
        refused(&get(&c, &format!("/vm/{n}/fs/watch?{bad}")), bad);
    }
    assert_eq!(
        get(&c, &format!("/vm/{n}/fs/watch?paths=/work/none")).status,
        StatusCode::NOT_FOUND
    );
    d.stop_and_assert_clean();
}
