//! End to end: copies in every mode Slicer's SDKs send (cp-v1 placement and headers, Go's
//! archive/tar with sized directory headers, GNU tar both ways, exclude, chunked copy with
//! abort) over the real daemon and a jail node (ADR 0017). The fs routes: `e2e_fs.rs`.

mod common;

use base64::Engine;
use common::answer::*;
use common::*;
use hyper::Method;

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
