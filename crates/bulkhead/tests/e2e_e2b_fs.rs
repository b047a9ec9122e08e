//! E2B's in-sandbox file system end to end (#15, D), raw HTTP against a real shared daemon's
//! E2B listener in a network namespace of its own, as the SDKs send it (sandbox id and access
//! token headers): `/files` uploads (octet-stream, gzip, multipart with one and several files)
//! and downloads with E2B's path rule and users, `/health`, `/envs`; `filesystem.Filesystem`
//! over Connect (JSON and proto): Stat (and `exists` as Stat's `not_found`), MakeDir (again:
//! `already_exists`), ListDir with depth, Move, Remove, the polled watcher and the WatchDir
//! stream; files and directories owned by the named user; errors as the SDKs map them.

mod common;

use common::privileged;
use common::shared::Shared;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const ADDR: &str = "127.0.0.1:13001";

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
    fn ok(&self, what: &str) -> &Self {
        assert_eq!(self.status, 200, "{what}: {}", self.text());
        self
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
    out
}

/// A connection to the E2B listener from a thread inside the daemon's namespace.
fn connect(netns: &str) -> std::net::TcpStream {
    let ns = std::fs::File::open(netns).unwrap();
    std::thread::spawn(move || {
        // SAFETY: moves this thread (only) into the daemon's network namespace.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let s = std::net::TcpStream::connect(ADDR).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s
    })
    .join()
    .unwrap()
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {ADDR}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut b = req.into_bytes();
    b.extend_from_slice(body);
    b
}

fn parse(all: &[u8]) -> Resp {
    let end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = all[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

struct Sandbox {
    netns: String,
    id: String,
    token: String,
}

impl Sandbox {
    fn send(&self, method: &str, path: &str, extra: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut h = vec![
            ("E2b-Sandbox-Id", self.id.as_str()),
            ("E2b-Sandbox-Port", "49983"),
            ("X-Access-Token", self.token.as_str()),
        ];
        h.extend_from_slice(extra);
        let mut s = connect(&self.netns);
        s.write_all(&request(method, path, &h, body)).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        parse(&all)
    }
    /// A unary Connect call with a JSON body, as user `user` (Basic header) when given.
    fn rpc(&self, method: &str, user: Option<&str>, body: Value) -> Resp {
        let auth = user.map(|u| format!("Basic {}", b64(&format!("{u}:"))));
        let mut h = vec![
            ("Content-Type", "application/json"),
            ("Connect-Protocol-Version", "1"),
        ];
        if let Some(a) = &auth {
            h.push(("Authorization", a.as_str()));
        }
        self.send(
            "POST",
            &format!("/filesystem.Filesystem/{method}"),
            &h,
            body.to_string().as_bytes(),
        )
    }
    fn upload(&self, query: &str, body: &[u8], extra: &[(&str, &str)]) -> Resp {
        let mut h = vec![("Content-Type", "application/octet-stream")];
        h.extend_from_slice(extra);
        self.send("POST", &format!("/files?{query}"), &h, body)
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Connect's error body: the code string.
fn connect_code(r: &Resp) -> String {
    r.json()["code"].as_str().unwrap_or("?").to_string()
}

fn e2b_error(r: &Resp, status: u16, what: &str) -> String {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let v = r.json();
    assert_eq!(v["code"], json!(status), "{what}: {v}");
    v["message"].as_str().unwrap().to_string()
}

fn names(r: &Resp) -> Vec<String> {
    let mut v: Vec<String> = r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// Envelopes (flags, payload) in a Connect stream's bytes.
fn envelopes(mut b: &[u8]) -> Vec<(u8, Value)> {
    let mut out = Vec::new();
    while b.len() >= 5 {
        let n = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        if b.len() < 5 + n {
            break;
        }
        out.push((b[0], serde_json::from_slice(&b[5..5 + n]).unwrap()));
        b = &b[5 + n..];
    }
    out
}

#[test]
fn e2b_files_and_filesystem_through_the_agent() {
    if !privileged() {
        return;
    }
    let s = Shared::start("", &format!("    e2b: {{ bind: \"{ADDR}\" }}\n"));
    let netns = s.netns_path().display().to_string();
    let key = common::cli_ok(&[
        "token",
        "create",
        "--socket",
        s.admin.to_str().unwrap(),
        "--tenant",
        &s.a,
        "--role",
        "developer",
        "--e2b",
    ])
    .trim()
    .to_string();
    let body = json!({"templateID": "base", "timeout": 600, "envVars": {"FOO": "bar"}}).to_string();
    let mut c = connect(&netns);
    c.write_all(&request(
        "POST",
        "/v2/sandboxes",
        &[("X-API-KEY", &key), ("Content-Type", "application/json")],
        body.as_bytes(),
    ))
    .unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    let r = parse(&all);
    assert_eq!(r.status, 201, "create: {}", r.text());
    let created = r.json();
    let sb = Sandbox {
        netns: netns.clone(),
        id: created["sandboxID"].as_str().unwrap().to_string(),
        token: created["envdAccessToken"].as_str().unwrap().to_string(),
    };

    // /health, /envs.
    assert_eq!(sb.send("GET", "/health", &[], b"").status, 204);
    let r = sb.send("GET", "/envs", &[], b"");
    assert_eq!(r.ok("envs").json(), json!({"FOO": "bar"}));

    // Octet-stream upload, relative to the user's home; download it back.
    let r = sb.upload("path=hello.txt&username=user", b"hi there", &[]);
    assert_eq!(
        r.ok("octet upload").json(),
        json!([{"name": "hello.txt", "type": "file", "path": "/home/user/hello.txt"}])
    );
    let r = sb.send("GET", "/files?path=~/hello.txt&username=user", &[], b"");
    assert_eq!(r.ok("download").body, b"hi there");
    // Absolute path, gzip body, parents made on the way.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&b"zipped ".repeat(1000)).unwrap();
    let gz = gz.finish().unwrap();
    sb.upload(
        "path=/home/user/deep/er/z.txt&username=user",
        &gz,
        &[("Content-Encoding", "gzip")],
    )
    .ok("gzip upload");
    let r = sb.send(
        "GET",
        "/files?path=/home/user/deep/er/z.txt&username=root",
        &[],
        b"",
    );
    assert_eq!(r.ok("gzip download").body, b"zipped ".repeat(1000));
    // Multipart: two files named by their part's file name, no path parameter.
    let bnd = "XyZbOuNdArY";
    let mut mp = Vec::new();
    for (name, data) in [("d/a.txt", "alpha"), ("/tmp/b.txt", "beta")] {
        mp.extend_from_slice(
            format!(
                "--{bnd}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n{data}\r\n"
            )
            .as_bytes(),
        );
    }
    mp.extend_from_slice(format!("--{bnd}--\r\n").as_bytes());
    let ct = format!("multipart/form-data; boundary={bnd}");
    let r = sb.send(
        "POST",
        "/files?username=user",
        &[("Content-Type", ct.as_str())],
        &mp,
    );
    let paths: Vec<String> = r
        .ok("multipart")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["/home/user/d/a.txt", "/tmp/b.txt"]);
    let r = sb.send("GET", "/files?path=/tmp/b.txt", &[], b"");
    assert_eq!(r.ok("multipart download").body, b"beta");

    // /files errors as the SDKs map them.
    let m = e2b_error(
        &sb.send("GET", "/files?path=/nope&username=user", &[], b""),
        404,
        "missing",
    );
    assert!(m.contains("/nope"), "{m}");
    e2b_error(
        &sb.send("GET", "/files?path=/tmp", &[], b""),
        400,
        "a directory",
    );
    let m = e2b_error(
        &sb.upload("path=x&username=admin", b"x", &[]),
        400,
        "unknown user",
    );
    assert!(m.contains("root") && m.contains("user"), "{m}");
    e2b_error(
        &sb.upload("username=user", b"x", &[]),
        400,
        "octet-stream without path",
    );
    e2b_error(
        &sb.send(
            "POST",
            "/files?path=x",
            &[("Content-Type", "text/plain")],
            b"x",
        ),
        400,
        "content type",
    );
    e2b_error(
        &sb.upload("path=/tmp&username=user", b"x", &[]),
        400,
        "onto a directory",
    );

    // Stat: the named user's file, owned by them; `exists` of a missing path is not_found.
    let r = sb.rpc("Stat", Some("user"), json!({"path": "hello.txt"}));
    let e = &r.ok("stat").json()["entry"];
    assert_eq!(e["type"], "FILE_TYPE_FILE", "{e}");
    assert_eq!(
        (e["owner"].as_str(), e["group"].as_str()),
        (Some("user"), Some("user")),
        "{e}"
    );
    assert_eq!(e["size"].to_string().trim_matches('"'), "8", "{e}");
    assert_eq!(e["permissions"], "-rw-r--r--", "{e}");
    let r = sb.rpc("Stat", Some("user"), json!({"path": "deep/er"}));
    assert_eq!(
        r.ok("stat dir").json()["entry"]["owner"],
        "user",
        "parents are the user's"
    );
    let r = sb.rpc("Stat", Some("user"), json!({"path": "no/such"}));
    assert_eq!(
        (r.status, connect_code(&r)),
        (404, "not_found".into()),
        "{}",
        r.text()
    );
    let r = sb.rpc("Stat", Some("admin"), json!({"path": "x"}));
    assert_eq!(connect_code(&r), "invalid_argument", "{}", r.text());
    // The proto codec: StatRequest{path} by hand (field 1, length-delimited).
    let p = b"/home/user/hello.txt";
    let mut msg = vec![0x0a, p.len() as u8];
    msg.extend_from_slice(p);
    let r = sb.send(
        "POST",
        "/filesystem.Filesystem/Stat",
        &[("Content-Type", "application/proto")],
        &msg,
    );
    assert_eq!(
        r.ok("proto stat").header("content-type"),
        Some("application/proto")
    );
    assert!(r.body.windows(9).any(|w| w == b"hello.txt"));

    // MakeDir (again: already_exists), ListDir with depth, Move, Remove.
    sb.rpc("MakeDir", Some("user"), json!({"path": "x/y"}))
        .ok("mkdir");
    let r = sb.rpc("MakeDir", Some("user"), json!({"path": "x/y"}));
    assert_eq!(connect_code(&r), "already_exists", "{}", r.text());
    let r = sb.rpc("Stat", Some("root"), json!({"path": "/home/user/x"}));
    assert_eq!(r.ok("stat x").json()["entry"]["owner"], "user");
    let r = sb.rpc(
        "ListDir",
        Some("user"),
        json!({"path": "/home/user", "depth": 1}),
    );
    let one = names(r.ok("list 1"));
    assert!(
        one.contains(&"/home/user/x".to_string()) && !one.contains(&"/home/user/x/y".to_string()),
        "{one:?}"
    );
    let r = sb.rpc("ListDir", Some("user"), json!({"path": "~", "depth": 3}));
    let three = names(r.ok("list 3"));
    for want in [
        "/home/user/x/y",
        "/home/user/d/a.txt",
        "/home/user/deep/er/z.txt",
    ] {
        assert!(three.contains(&want.to_string()), "{want} in {three:?}");
    }
    let r = sb.rpc("ListDir", Some("user"), json!({"path": "hello.txt"}));
    assert_eq!(
        connect_code(&r),
        "invalid_argument",
        "list a file: {}",
        r.text()
    );
    let r = sb.rpc(
        "Move",
        Some("user"),
        json!({"source": "hello.txt", "destination": "moved/h.txt"}),
    );
    assert_eq!(
        r.ok("move").json()["entry"]["path"],
        "/home/user/moved/h.txt"
    );
    let r = sb.send("GET", "/files?path=moved/h.txt&username=user", &[], b"");
    assert_eq!(r.ok("moved download").body, b"hi there");
    let r = sb.rpc(
        "Move",
        Some("user"),
        json!({"source": "gone", "destination": "g2"}),
    );
    assert_eq!(connect_code(&r), "not_found", "{}", r.text());
    sb.rpc("Remove", Some("user"), json!({"path": "x"}))
        .ok("remove");
    let r = sb.rpc("Stat", Some("user"), json!({"path": "x"}));
    assert_eq!(connect_code(&r), "not_found", "{}", r.text());
    let r = sb.rpc("Remove", Some("user"), json!({"path": "x"}));
    assert_eq!(connect_code(&r), "not_found", "{}", r.text());

    // The polled watcher (what the sync SDK's watch_dir uses).
    sb.rpc("MakeDir", Some("user"), json!({"path": "w"}))
        .ok("mkdir w");
    let r = sb.rpc(
        "CreateWatcher",
        Some("user"),
        json!({"path": "w", "recursive": false}),
    );
    let wid = r.ok("create watcher").json()["watcherId"]
        .as_str()
        .unwrap()
        .to_string();
    sb.upload("path=w/f.txt&username=user", b"1", &[])
        .ok("write in w");
    let t = Instant::now();
    let mut seen = Vec::new();
    while t.elapsed() < Duration::from_secs(20)
        && !seen.iter().any(|e: &Value| e["name"] == "f.txt")
    {
        let r = sb.rpc("GetWatcherEvents", Some("user"), json!({"watcherId": wid}));
        seen.extend(
            r.ok("events").json()["events"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        seen.iter()
            .any(|e| e["name"] == "f.txt" && e["type"] == "EVENT_TYPE_CREATE"),
        "{seen:?}"
    );
    sb.rpc("RemoveWatcher", Some("user"), json!({"watcherId": wid}))
        .ok("remove watcher");
    let r = sb.rpc("GetWatcherEvents", Some("user"), json!({"watcherId": wid}));
    assert_eq!(connect_code(&r), "not_found", "{}", r.text());

    // The WatchDir stream: a start event, then the change, over connect+json envelopes.
    let req = json!({"path": "/home/user/w"}).to_string();
    let mut env = vec![0u8];
    env.extend_from_slice(&(req.len() as u32).to_be_bytes());
    env.extend_from_slice(req.as_bytes());
    let mut w = connect(&netns);
    w.write_all(&request(
        "POST",
        "/filesystem.Filesystem/WatchDir",
        &[
            ("E2b-Sandbox-Id", sb.id.as_str()),
            ("X-Access-Token", sb.token.as_str()),
            ("Content-Type", "application/connect+json"),
            ("Connect-Timeout-Ms", "15000"),
        ],
        &env,
    ))
    .unwrap();
    // Read until the start event is in, then make a change.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let has = |got: &[u8], what: &[u8]| got.windows(what.len()).any(|x| x == what);
    while !has(&got, b"start") {
        let n = w.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    sb.upload("path=w/g.txt&username=user", b"2", &[])
        .ok("write g");
    // The stream ends at its deadline (15 s) with deadline_exceeded; read to the end.
    w.read_to_end(&mut got).unwrap();
    let r = parse(&got);
    assert_eq!(r.status, 200);
    let evs = envelopes(&r.body);
    assert!(evs[0].1.get("start").is_some(), "{evs:?}");
    assert!(
        evs.iter().any(|(_, v)| v["filesystem"]["name"] == "g.txt"),
        "{evs:?}"
    );
    let (flags, last) = evs.last().unwrap();
    assert_eq!(*flags, 2, "{evs:?}");
    assert_eq!(last["error"]["code"], "deadline_exceeded", "{evs:?}");

    // Another sandbox's token cannot read this one's files (A's confinement).
    let r = Sandbox {
        netns: netns.clone(),
        id: sb.id.clone(),
        token: "0".repeat(64),
    }
    .send("GET", "/files?path=/tmp/b.txt", &[], b"");
    assert_eq!(r.status, 401, "{}", r.text());

    s.stop_and_assert_clean();
}
