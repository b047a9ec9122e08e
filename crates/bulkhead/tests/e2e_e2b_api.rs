//! E2B's API end to end (#15, A; ADR 0036), raw HTTP against a real shared daemon (two
//! tenants) with `config.api.e2b`, in a network namespace of its own: `bulkhead token create
//! --e2b` keys (`e2b_<hex>`) in `X-API-KEY`; every control-plane route (create v1 and v2,
//! templates, list v1 and v2 with metadata and state filters and `x-next-token` pages, info,
//! timeout, refreshes, pause, resume, connect, logs, metrics, kill); E2B's error bodies
//! (`{"code": <status>, "message"}`); tenant isolation (a key of tenant B gets 404 for tenant
//! A's sandbox); a passing timeout ends a sandbox (or pauses it with `autoPause`); and the
//! in-sandbox API's access token (401 without it, with a wrong one or another sandbox's; 502
//! for a sandbox that does not exist; by header and by `<port>-<id>.<domain>` host).

mod common;

use common::privileged;
use common::shared::Shared;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const ADDR: &str = "127.0.0.1:13000";
const DOMAIN: &str = "sb.test";

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
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
    /// E2B's error body: `{"code": <the status>, "message": "..."}`; the message.
    fn e2b_error(&self, status: u16, what: &str) -> String {
        assert_eq!(self.status, status, "{what}: {}", self.text());
        let v = self.json();
        assert_eq!(v["code"], json!(status), "{what}: {v}");
        let m = v["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {v}"));
        assert!(!m.is_empty(), "{what}");
        m.to_string()
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
}

/// One HTTP/1.1 request to the E2B listener from a thread inside the daemon's namespace.
fn raw(netns: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let ns = std::fs::File::open(netns).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {ADDR}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    std::thread::spawn(move || {
        // SAFETY: moves this thread (only) into the daemon's network namespace.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let mut s = std::net::TcpStream::connect(ADDR).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
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
    })
    .join()
    .unwrap()
}

struct E2b {
    s: Shared,
    netns: String,
}

impl E2b {
    fn key(&self, method: &str, path: &str, key: &str, body: &str) -> Resp {
        raw(&self.netns, method, path, &[("X-API-KEY", key)], body)
    }
    /// An E2B key (`bulkhead token create --e2b`) of `role` in `tenant`, through the CLI on
    /// the admin socket.
    fn make_key(&self, tenant: &str, role: &str) -> String {
        let out = common::cli_ok(&[
            "token",
            "create",
            "--socket",
            self.s.admin.to_str().unwrap(),
            "--tenant",
            tenant,
            "--role",
            role,
            "--e2b",
        ]);
        out.trim().to_string()
    }
    fn create(&self, key: &str, body: Value) -> Value {
        let r = self.key("POST", "/v2/sandboxes", key, &body.to_string());
        assert_eq!(r.status, 201, "create {body}: {}", r.text());
        r.json()
    }
    fn info(&self, key: &str, id: &str) -> Resp {
        self.key("GET", &format!("/sandboxes/{id}"), key, "")
    }
    fn in_sandbox(&self, id: &str, token: Option<&str>, path: &str) -> Resp {
        let mut h = vec![("E2b-Sandbox-Id", id), ("E2b-Sandbox-Port", "49983")];
        if let Some(t) = token {
            h.push(("X-Access-Token", t));
        }
        raw(&self.netns, "GET", path, &h, "")
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{what}: not within {limit:?}");
}

#[test]
fn e2b_control_plane_keys_isolation_and_access_tokens() {
    if !privileged() {
        return;
    }
    let s = Shared::start(
        "",
        &format!("    e2b: {{ bind: \"{ADDR}\", domain: {DOMAIN} }}\n"),
    );
    let netns = s.netns_path().display().to_string();
    let e = E2b { s, netns };
    let (a, b) = (e.s.a.clone(), e.s.b.clone());

    // Keys in E2B's form, from the CLI.
    let ka = e.make_key(&a, "developer");
    let kb = e.make_key(&b, "developer");
    let va = e.make_key(&a, "viewer");
    for k in [&ka, &kb, &va] {
        let hex = k.strip_prefix("e2b_").unwrap_or_else(|| panic!("{k}"));
        assert!(
            hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()),
            "{k}"
        );
    }

    // Authentication: none, unknown, malformed → 401 in E2B's body.
    let r = raw(&e.netns, "GET", "/v2/sandboxes", &[], "");
    r.e2b_error(401, "no key");
    let bad = format!("e2b_{}", "0".repeat(64));
    e.key("GET", "/v2/sandboxes", &bad, "")
        .e2b_error(401, "unknown key");
    // The same key as a bearer token works too.
    let r = raw(
        &e.netns,
        "GET",
        "/v2/sandboxes",
        &[("Authorization", &format!("Bearer {ka}"))],
        "",
    );
    assert_eq!(r.status, 200, "bearer: {}", r.text());

    // Create (v2, the SDKs'): the fields the SDKs read.
    let one = e.create(
        &ka,
        json!({"templateID": "base", "timeout": 300, "metadata": {"user": "alice", "n": "1"},
               "envVars": {"FOO": "bar"}, "secure": true, "autoPause": false}),
    );
    let id1 = one["sandboxID"].as_str().unwrap().to_string();
    assert!(id1.starts_with(&format!("{a}-")), "{one}");
    assert_eq!(one["templateID"], "base");
    assert_eq!(one["domain"], DOMAIN);
    assert!(
        one["clientID"].as_str().is_some_and(|c| !c.is_empty()),
        "{one}"
    );
    assert!(
        one["envdVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("0.")),
        "{one}"
    );
    let tok1 = one["envdAccessToken"].as_str().unwrap().to_string();
    assert_eq!(tok1.len(), 64, "{one}");
    // Create (v1), naming the host group as the template.
    let r = e.key(
        "POST",
        "/sandboxes",
        &ka,
        &json!({"templateID": a, "timeout": 300, "metadata": {"user": "bob"}}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let two = r.json();
    let id2 = two["sandboxID"].as_str().unwrap().to_string();
    let tok2 = two["envdAccessToken"].as_str().unwrap().to_string();
    assert_ne!(tok1, tok2);

    // Caller mistakes: 404 template, 400 options and bodies, never 500.
    let r = e.key("POST", "/v2/sandboxes", &ka, r#"{"templateID":"nope"}"#);
    assert!(r.e2b_error(404, "template").contains("template"));
    let r = e.key(
        "POST",
        "/v2/sandboxes",
        &ka,
        r#"{"templateID":"base","mcp":{"x":{}}}"#,
    );
    assert!(r.e2b_error(400, "mcp").contains("mcp"));
    e.key("POST", "/v2/sandboxes", &ka, "{not json")
        .e2b_error(400, "bad json");
    e.key(
        "POST",
        "/v2/sandboxes",
        &ka,
        r#"{"templateID":"base","envVars":{"A=B":"x"}}"#,
    )
    .e2b_error(400, "envVars name");
    e.key(
        "POST",
        "/v2/sandboxes",
        &ka,
        r#"{"templateID":"base","timeout":0}"#,
    )
    .e2b_error(400, "timeout 0");
    e.key("GET", "/v2/sandboxes?limit=0", &ka, "")
        .e2b_error(400, "limit 0");
    e.key("GET", "/v2/sandboxes?state=gone", &ka, "")
        .e2b_error(400, "state");
    // A viewer may not create.
    e.key("POST", "/v2/sandboxes", &va, r#"{"templateID":"base"}"#)
        .e2b_error(403, "viewer");

    // Info: the owner's key; a viewer's (no access token: it would grant exec); B's: 404.
    let r = e.info(&ka, &id1);
    assert_eq!(r.status, 200, "{}", r.text());
    let d = r.json();
    assert_eq!(d["state"], "running");
    assert_eq!(d["metadata"]["user"], "alice");
    assert_eq!(d["envdAccessToken"], tok1.as_str());
    assert!(d["cpuCount"].as_u64().unwrap() >= 1 && d["memoryMB"].as_u64().unwrap() > 0);
    assert_eq!(d["lifecycle"]["onTimeout"], "kill");
    let end1 = d["endAt"].as_str().unwrap().to_string();
    let r = e.info(&va, &id1);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("envdAccessToken").is_none(), "{}", r.text());
    e.info(&kb, &id1)
        .e2b_error(404, "tenant B's key on A's sandbox");
    e.key("DELETE", &format!("/sandboxes/{id1}"), &kb, "")
        .e2b_error(404, "B kills A's");
    e.key(
        "POST",
        &format!("/sandboxes/{id1}/timeout"),
        &kb,
        r#"{"timeout":5}"#,
    )
    .e2b_error(404, "B sets A's timeout");
    e.info(&ka, &format!("{a}-nosuch"))
        .e2b_error(404, "missing");

    // Lists: v2 with metadata and state filters and pages; v1; B sees none of A's.
    let ids = |r: &Resp| -> Vec<String> {
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["sandboxID"].as_str().unwrap().to_string())
            .collect()
    };
    let r = e.key("GET", "/v2/sandboxes", &ka, "");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut all = ids(&r);
    all.sort();
    let mut want = vec![id1.clone(), id2.clone()];
    want.sort();
    assert_eq!(all, want);
    let r = e.key("GET", "/v2/sandboxes?metadata=user%3Dalice", &ka, "");
    assert_eq!(ids(&r), vec![id1.clone()], "{}", r.text());
    let r = e.key(
        "GET",
        "/v2/sandboxes?metadata=user%3Dalice%26n%3D2",
        &ka,
        "",
    );
    assert!(ids(&r).is_empty(), "{}", r.text());
    let r = e.key("GET", "/v2/sandboxes?state=paused", &ka, "");
    assert!(ids(&r).is_empty());
    let r = e.key("GET", "/v2/sandboxes?limit=1", &ka, "");
    let first = ids(&r);
    assert_eq!(first.len(), 1);
    let next = r.header("x-next-token").expect("a next page").to_string();
    let r = e.key(
        "GET",
        &format!("/v2/sandboxes?limit=1&nextToken={next}"),
        &ka,
        "",
    );
    let second = ids(&r);
    assert_eq!(second.len(), 1);
    assert_ne!(first, second);
    assert!(r.header("x-next-token").is_none(), "last page");
    let r = e.key("GET", "/sandboxes?metadata=user%3Dbob", &ka, "");
    assert_eq!(ids(&r), vec![id2.clone()], "{}", r.text());
    assert!(ids(&e.key("GET", "/v2/sandboxes", &kb, "")).is_empty());

    // Timeout and refreshes: /timeout moves the end; /refreshes never shortens it.
    let r = e.key(
        "POST",
        &format!("/sandboxes/{id1}/timeout"),
        &ka,
        r#"{"timeout":3600}"#,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let end2 = e.info(&ka, &id1).json()["endAt"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(end2 > end1, "{end1} → {end2}");
    let r = e.key(
        "POST",
        &format!("/sandboxes/{id1}/refreshes"),
        &ka,
        r#"{"duration":30}"#,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(e.info(&ka, &id1).json()["endAt"], end2.as_str());
    e.key(
        "POST",
        &format!("/sandboxes/{id1}/timeout"),
        &ka,
        r#"{"timeout":"x"}"#,
    )
    .e2b_error(400, "timeout not a number");

    // Pause, resume, connect.
    let p = |path: &str, body: &str| e.key("POST", &format!("/sandboxes/{id1}/{path}"), &ka, body);
    let r = p("pause", "");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(e.info(&ka, &id1).json()["state"], "paused");
    p("pause", "").e2b_error(409, "pause twice");
    let r = p("resume", r#"{"timeout":600}"#);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["sandboxID"], id1.as_str());
    p("resume", "").e2b_error(409, "resume a running one");
    let r = e.key(
        "POST",
        &format!("/v2/sandboxes/{id1}/connect"),
        &ka,
        r#"{"timeout":600}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["envdAccessToken"], tok1.as_str());
    p("pause", "");
    let r = e.key(
        "POST",
        &format!("/sandboxes/{id1}/connect"),
        &ka,
        r#"{"timeout":600}"#,
    );
    assert_eq!(r.status, 201, "connect resumes: {}", r.text());
    assert_eq!(e.info(&ka, &id1).json()["state"], "running");

    // Logs and metrics.
    let r = e.key("GET", &format!("/sandboxes/{id1}/logs"), &ka, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["logs"].is_array() && r.json()["logEntries"].is_array());
    let r = e.key("GET", &format!("/v2/sandboxes/{id1}/logs?limit=5"), &ka, "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["logs"].as_array().unwrap().len() <= 5);
    let r = e.key("GET", &format!("/sandboxes/{id1}/metrics"), &ka, "");
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert!(m[0]["memTotal"].as_u64().unwrap() > 0, "{m}");

    // The in-sandbox API's access token.
    e.in_sandbox(&id1, None, "/health")
        .e2b_error(401, "no access token");
    e.in_sandbox(&id1, Some(&"0".repeat(64)), "/health")
        .e2b_error(401, "wrong token");
    e.in_sandbox(&id1, Some(&tok2), "/health")
        .e2b_error(401, "another sandbox's token");
    let r = e.in_sandbox(&id1, Some(&tok1), "/health");
    assert!(r.status < 300, "its own token: {} {}", r.status, r.text());
    // The sandbox's envVars are its environment (`GET /envs`, D's, from the record).
    let r = e.in_sandbox(&id1, Some(&tok1), "/envs");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["FOO"], "bar", "{}", r.text());
    let other = e.in_sandbox(&id2, Some(&tok2), "/envs").json();
    assert!(
        other.get("FOO").is_none(),
        "another sandbox's envVars: {other}"
    );
    e.in_sandbox(&format!("{a}-nosuchsandbox"), Some(&tok1), "/health")
        .e2b_error(502, "no such sandbox");
    // By host name, and only port 49983.
    let host = format!("49983-{id1}.{DOMAIN}");
    let r = raw(
        &e.netns,
        "GET",
        "/health",
        &[("Host", &host), ("X-Access-Token", &tok2)],
        "",
    );
    r.e2b_error(401, "host form, another's token");
    let r = raw(
        &e.netns,
        "GET",
        "/health",
        &[("Host", &host), ("X-Access-Token", &tok1)],
        "",
    );
    assert!(r.status < 300, "host form: {} {}", r.status, r.text());
    let r = raw(
        &e.netns,
        "GET",
        "/health",
        &[
            ("Host", &format!("8080-{id1}.{DOMAIN}")),
            ("X-Access-Token", &tok1),
        ],
        "",
    );
    r.e2b_error(404, "another port");
    // A sandbox's token reaches its own in-sandbox API only, never the control plane.
    let r = e.in_sandbox(&id1, Some(&tok1), "/sandboxes");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = raw(
        &e.netns,
        "GET",
        "/v2/sandboxes",
        &[("X-Access-Token", &tok1)],
        "",
    );
    r.e2b_error(401, "an access token is no API key");

    // A passing timeout ends a sandbox; with autoPause it pauses it.
    let short = e.create(&ka, json!({"templateID": "base", "timeout": 2}));
    let sid = short["sandboxID"].as_str().unwrap().to_string();
    let paus = e.create(
        &ka,
        json!({"templateID": "base", "timeout": 2, "autoPause": true}),
    );
    let pid = paus["sandboxID"].as_str().unwrap().to_string();
    wait_for("the short sandbox ends", Duration::from_secs(60), || {
        e.info(&ka, &sid).status == 404
    });
    wait_for(
        "the autoPause sandbox pauses",
        Duration::from_secs(60),
        || e.info(&ka, &pid).json()["state"] == "paused",
    );
    assert_eq!(e.info(&ka, &pid).json()["lifecycle"]["onTimeout"], "pause");

    // Kill: 204, then 404 (info and kill), and its in-sandbox API is gone (502).
    let r = e.key("DELETE", &format!("/sandboxes/{id1}"), &ka, "");
    assert_eq!(r.status, 204, "{}", r.text());
    e.info(&ka, &id1).e2b_error(404, "killed");
    e.key("DELETE", &format!("/sandboxes/{id1}"), &ka, "")
        .e2b_error(404, "killed twice");
    e.in_sandbox(&id1, Some(&tok1), "/health")
        .e2b_error(502, "a killed sandbox");

    let E2b { s, .. } = e;
    s.stop_and_assert_clean();
}
