//! End to end: the file-system routes (`/vm/{node}/fs/*`, the watch stream) and copies in every
//! mode Slicer's SDKs send (cp-v1, Go's tar, GNU tar, chunked copy), over the real daemon and
//! a jail node, with the wire shapes the SDKs read (ADR 0017).

mod common;

use base64::Engine;
use bulkhead_api::client::{enc, full_body};
use bulkhead_api::Client;
use common::*;
use http_body_util::BodyExt;
use hyper::{HeaderMap, Method, StatusCode};
use std::time::Duration;

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, k: &str) -> &str {
        self.headers
            .get(k)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
}

fn call(c: &Client, m: Method, path: &str, body: Vec<u8>, ct: Option<&str>) -> Answer {
    rt().block_on(async {
        let r = c.send(m, path, full_body(body), ct).await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
        Answer {
            status,
            headers,
            body,
        }
    })
}

fn get(c: &Client, path: &str) -> Answer {
    call(c, Method::GET, path, Vec::new(), None)
}

fn post(c: &Client, path: &str, body: Vec<u8>) -> Answer {
    call(
        c,
        Method::POST,
        path,
        body,
        Some("application/octet-stream"),
    )
}

fn ok(a: &Answer, what: &str) {
    assert_eq!(a.status, StatusCode::OK, "{what}: {}", a.text());
}

/// A 4xx with the `{"error","code"}` body.
fn refused(a: &Answer, what: &str) -> String {
    assert!(
        a.status.is_client_error(),
        "{what}: {} {}",
        a.status,
        a.text()
    );
    let v = a.json();
    assert!(v["code"].is_string(), "{what}: {v}");
    v["error"].as_str().unwrap().to_string()
}

/// A tar header block as Go's `archive/tar` writes it: ustar, a directory's `Size` kept
/// (no data follows it), checksum over the block.
fn go_header(name: &str, kind: u8, size: u64, mode: u32) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(format!("{mode:07o}\0").as_bytes());
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"14711265000\0");
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// What the Go SDK's StreamTarArchive sends for a tree: names relative to the tree,
/// directories with a size of 4096 and no data.
fn go_tar(files: &[(&str, &[u8])], dirs: &[&str]) -> Vec<u8> {
    let mut t = Vec::new();
    for d in dirs {
        t.extend(go_header(&format!("{d}/"), b'5', 4096, 0o755));
    }
    for (name, data) in files {
        t.extend(go_header(name, b'0', data.len() as u64, 0o644));
        let mut d = data.to_vec();
        d.resize(data.len().div_ceil(512) * 512, 0);
        t.extend(d);
    }
    t.extend(vec![0u8; 1024]);
    t
}

fn tar_names(t: &[u8]) -> Vec<String> {
    tar::Archive::new(t)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

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

#[test]
fn copies_in_every_mode_the_sdks_send() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("cpv1", &[]);
    let n = d.add();
    let c = d.client();
    d.sh(&n, "mkdir -p /work");
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);

    // Go's archive/tar: directory headers with a size and no data (used to be a 500).
    let t = go_tar(
        &[("gotree/f.txt", b"hello"), ("gotree/sub/g", b"gg")],
        &["gotree", "gotree/sub"],
    );
    ok(
        &post(&c, &format!("/vm/{n}/cp?path=/work/go&mode=tar"), t),
        "Go tar upload",
    );
    assert_eq!(
        d.sh(&n, "cat /work/go/gotree/f.txt /work/go/gotree/sub/g")
            .1,
        "hellogg"
    );

    // cp-v1-tar into an existing directory: lands under source_name (the SDK's CpToVM).
    let t = go_tar(&[("f.txt", b"v1"), ("sub/g", b"g1")], &["sub"]);
    let q = "mode=cp-v1-tar&copy_semantics=cp-v1&source_name=proj&source_type=directory";
    ok(
        &post(
            &c,
            &format!("/vm/{n}/cp?path=/work&{q}&uid=1000&gid=1000"),
            t.clone(),
        ),
        "cp-v1-tar",
    );
    assert_eq!(d.sh(&n, "cat /work/proj/f.txt /work/proj/sub/g").1, "v1g1");
    assert_eq!(d.sh(&n, "stat -c %u:%g /work/proj/sub/g").1, "1000:1000\n");
    // ... to a new path: the tree takes that name; with copy_contents into the path itself.
    ok(
        &post(&c, &format!("/vm/{n}/cp?path=/work/renamed&{q}"), t.clone()),
        "to a new name",
    );
    assert_eq!(d.sh(&n, "cat /work/renamed/f.txt").1, "v1");
    ok(
        &post(
            &c,
            &format!("/vm/{n}/cp?path=/work/go&{q}&copy_contents=true"),
            t,
        ),
        "copy_contents",
    );
    assert_eq!(d.sh(&n, "cat /work/go/f.txt").1, "v1");

    // cp-v1-binary: into a directory under source_name, or to the path; uid/gid; the SDKs'
    // "not given" uid is not given.
    let q = "mode=cp-v1-binary&copy_semantics=cp-v1&source_name=x.bin&source_type=file";
    ok(
        &post(
            &c,
            &format!("/vm/{n}/cp?path=/work/&{q}&permissions=0755"),
            b"XB".to_vec(),
        ),
        "into dir",
    );
    assert_eq!(
        d.sh(&n, "cat /work/x.bin; stat -c %a /work/x.bin").1,
        "XB755\n"
    );
    ok(
        &post(
            &c,
            &format!("/vm/{n}/cp?path=/work/y.bin&{q}&uid=4294967295&gid=4294967295"),
            b"Y".to_vec(),
        ),
        "to a name",
    );
    assert_eq!(d.sh(&n, "cat /work/y.bin").1, "Y");
    let e = refused(
        &post(
            &c,
            &format!("/vm/{n}/cp?path=/work/nodir/&{q}"),
            b"z".to_vec(),
        ),
        "missing dir/",
    );
    assert!(e.contains("does not exist"), "{e}");

    // Downloads: cp-v1-binary with the source headers.
    let a = get(
        &c,
        &format!("/vm/{n}/cp?path=/work/x.bin&mode=cp-v1-binary&copy_semantics=cp-v1"),
    );
    ok(&a, "cp-v1-binary download");
    assert_eq!(a.body, b"XB");
    assert_eq!(a.header("x-slicer-source-type"), "file");
    assert_eq!(a.header("x-slicer-source-name-base64"), b64("x.bin"));
    assert_eq!(a.header("x-slicer-file-mode"), "0755");
    // ReadFile sends only path; permissions on GET is accepted.
    let a = get(&c, &format!("/vm/{n}/cp?path=/work/y.bin&permissions=0600"));
    ok(&a, "plain GET");
    assert_eq!(a.body, b"Y");

    // cp-v1-tar of a directory: names relative to it, no ./ entry; exclude leaves out.
    d.sh(&n, "echo l > /work/proj/drop.log");
    let a = get(
        &c,
        &format!("/vm/{n}/cp?path=/work/proj&mode=cp-v1-tar&copy_semantics=cp-v1&exclude=*.log"),
    );
    ok(&a, "cp-v1-tar download");
    assert_eq!(a.header("x-slicer-source-type"), "directory");
    assert_eq!(a.header("x-slicer-source-name-base64"), b64("proj"));
    let names = tar_names(&a.body);
    assert_eq!(names, ["f.txt", "sub", "sub/g"]);
    // Of a file: refused; cp-v1-recursive answers either.
    refused(
        &get(&c, &format!("/vm/{n}/cp?path=/work/x.bin&mode=cp-v1-tar")),
        "tar of a file",
    );
    let a = get(
        &c,
        &format!("/vm/{n}/cp?path=/work/x.bin&mode=cp-v1-recursive&copy_semantics=cp-v1"),
    );
    assert_eq!(
        (a.header("x-slicer-source-type"), a.body.as_slice()),
        ("file", &b"XB"[..])
    );
    let a = get(
        &c,
        &format!("/vm/{n}/cp?path=/work/proj/.&mode=cp-v1-recursive&copy_semantics=cp-v1"),
    );
    assert_eq!(a.header("x-slicer-source-type"), "directory");
    assert!(tar_names(&a.body).contains(&"sub/g".to_string()));
    // The legacy tar mode has no ./ entries either.
    let a = get(&c, &format!("/vm/{n}/cp?path=/work/proj&mode=tar"));
    assert!(
        tar_names(&a.body).iter().all(|n| !n.starts_with('.')),
        "{:?}",
        tar_names(&a.body)
    );
    // A directory in binary mode says Slicer's words (the SDK's legacy fallback reads them).
    let e = refused(
        &get(&c, &format!("/vm/{n}/cp?path=/work/proj")),
        "binary of a dir",
    );
    assert!(e.contains("must specify a file not a directory"), "{e}");

    // GNU tar both ways.
    let dir = test_dir();
    std::fs::create_dir_all(dir.path().join("src/deep")).unwrap();
    std::fs::write(dir.path().join("src/deep/file"), b"gnu").unwrap();
    let out = std::process::Command::new("tar")
        .args([
            "-C",
            dir.path().join("src").to_str().unwrap(),
            "-cf",
            "-",
            ".",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    ok(
        &post(
            &c,
            &format!("/vm/{n}/cp?path=/work/gnu&mode=tar"),
            out.stdout,
        ),
        "GNU tar upload",
    );
    let a = get(&c, &format!("/vm/{n}/cp?path=/work/gnu&mode=tar"));
    let back = dir.path().join("back");
    std::fs::create_dir(&back).unwrap();
    let mut tar_x = std::process::Command::new("tar")
        .args(["-C", back.to_str().unwrap(), "-xf", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    tar_x.stdin.take().unwrap().write_all(&a.body).unwrap();
    assert!(tar_x.wait().unwrap().success());
    assert_eq!(std::fs::read(back.join("deep/file")).unwrap(), b"gnu");

    // Bad input: 4xx naming the problem, never a 500.
    for (m, q) in [
        (Method::POST, "path=/work/z&mode=cp-v1-recursive"),
        (Method::GET, "path=/work/z&mode=zip"),
        (Method::POST, "path=relative"),
        (
            Method::POST,
            "path=/work/z&mode=cp-v1-binary&source_name=a%2Fb",
        ),
        (
            Method::POST,
            "path=/work/z&mode=cp-v1-binary&source_type=directory",
        ),
        (Method::POST, "path=/work/z&copy_semantics=cp-v9"),
        (Method::POST, "path=/work/z&uid=-1"),
        (Method::GET, "path=/work/nothing&mode=cp-v1-tar"),
    ] {
        let a = call(
            &c,
            m.clone(),
            &format!("/vm/{n}/cp?{q}"),
            b"x".to_vec(),
            None,
        );
        refused(&a, q);
    }
    let a = post(
        &c,
        &format!("/vm/{n}/cp?path=/work/z&mode=cp-v1-recursive"),
        vec![],
    );
    assert!(
        a.text().contains("invalid mode: cp-v1-recursive"),
        "{}",
        a.text()
    );
    // A tar that is not one.
    refused(
        &post(
            &c,
            &format!("/vm/{n}/cp?path=/work/t&mode=tar"),
            vec![7u8; 1500],
        ),
        "garbage tar",
    );
    let _ = enc("");
    d.stop_and_assert_clean();
}

fn sha256_hex(data: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(data)?;
            ch.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

/// The Go SDK's CpToVMChunked, step by step over the API: check, chunks, manifest, finalise;
/// and abort, which leaves no session behind.
#[test]
fn chunked_copy_like_the_sdk() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("chunk", &[]);
    let n = d.add();
    let c = d.client();
    d.sh(&n, "mkdir -p /work/dst");
    let o = d.vm(&[
        "exec",
        &n,
        "--",
        "/usr/local/bin/slicer-agent",
        "upload",
        "check",
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("chunked-copy-v2"));

    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let session = "/work/dst/.slicer-upload-00112233445566778899aabbccddeeff";
    let mut chunks = Vec::new();
    for (i, part) in data.chunks(100_000).enumerate() {
        let p = format!("/vm/{n}/cp?path={session}/chunks/{i:06}.chunk&mode=binary&permissions=0600&uid=0&gid=0");
        ok(&post(&c, &p, part.to_vec()), "chunk");
        chunks
            .push(serde_json::json!({"index": i, "size": part.len(), "sha256": sha256_hex(part)}));
    }
    let manifest = serde_json::json!({
        "version": 2, "mode": "binary", "destination": "/work/dst", "uid": 1000, "gid": 1000,
        "permissions": "0640", "size": data.len(), "copy_semantics": "cp-v1",
        "source_name": "big.bin", "source_type": "file", "chunks": chunks,
    });
    let mp = format!("{session}/manifest.json");
    ok(
        &post(
            &c,
            &format!("/vm/{n}/cp?path={mp}&mode=binary&permissions=0600"),
            serde_json::to_vec(&manifest).unwrap(),
        ),
        "manifest",
    );
    let o = d.vm(&[
        "exec",
        &n,
        "--",
        "/usr/local/bin/slicer-agent",
        "upload",
        "finalise",
        "--manifest",
        &mp,
        "--uid",
        "1000",
        "--gid",
        "1000",
    ]);
    assert!(
        o.status.success(),
        "finalise: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let a = get(&c, &format!("/vm/{n}/cp?path=/work/dst/big.bin"));
    assert_eq!(a.body, data);
    assert_eq!(a.header("x-slicer-file-mode"), "0640");
    assert_eq!(d.sh(&n, "stat -c %u:%g /work/dst/big.bin").1, "1000:1000\n");
    assert_eq!(
        d.sh(&n, "ls -A /work/dst").1,
        "big.bin\n",
        "the session was left behind"
    );

    // A manifest that does not match its chunks: nothing written, the session wiped.
    ok(
        &post(
            &c,
            &format!("/vm/{n}/cp?path={session}/chunks/000000.chunk"),
            b"abc".to_vec(),
        ),
        "chunk",
    );
    let bad = serde_json::json!({
        "version": 2, "mode": "binary", "destination": "/work/dst/other", "uid": 0, "gid": 0,
        "size": 3, "copy_semantics": "cp-v1", "source_name": "other", "source_type": "file",
        "chunks": [{"index": 0, "size": 3, "sha256": "00".repeat(32)}],
    });
    ok(
        &post(
            &c,
            &format!("/vm/{n}/cp?path={mp}"),
            serde_json::to_vec(&bad).unwrap(),
        ),
        "manifest",
    );
    let o = d.vm(&[
        "exec",
        &n,
        "--",
        "/usr/local/bin/slicer-agent",
        "upload",
        "finalise",
        "--manifest",
        &mp,
    ]);
    assert!(!o.status.success());
    assert_eq!(d.sh(&n, "ls -A /work/dst").1, "big.bin\n");

    // Abort removes an unfinished session; it refuses any other directory.
    ok(
        &post(
            &c,
            &format!("/vm/{n}/cp?path={session}/chunks/000000.chunk"),
            b"abc".to_vec(),
        ),
        "chunk",
    );
    let o = d.vm(&[
        "exec",
        &n,
        "--",
        "/usr/local/bin/slicer-agent",
        "upload",
        "abort",
        "--manifest",
        &mp,
        "--uid",
        "0",
        "--gid",
        "0",
    ]);
    assert!(
        o.status.success(),
        "abort: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(d.sh(&n, "ls -A /work/dst").1, "big.bin\n");
    let o = d.vm(&[
        "exec",
        &n,
        "--",
        "/usr/local/bin/slicer-agent",
        "upload",
        "abort",
        "--manifest",
        "/work/dst/manifest.json",
    ]);
    assert!(!o.status.success());
    assert_eq!(d.sh(&n, "ls -A /work").1, "dst\n");
    d.stop_and_assert_clean();
}
