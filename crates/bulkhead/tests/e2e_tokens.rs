//! API tokens end to end (issue #11, ADR 0022), through the real binary: a one-tenant daemon
//! on TCP loopback in a network namespace of its own, whose legacy bearer token (global-admin)
//! makes the first tokens. Developer, viewer and tenant-admin tokens each do what their role
//! allows and get 403 for the rest; an expired or revoked token is 401 at once; the list never
//! carries a secret or hash; escalation is refused; bad bodies are 400 naming the field; and
//! the `bulkhead token` verbs work, `--json` too.

mod common;

use bulkhead_api::{Client, Endpoint};
use common::{privileged, BIN};
use hyper::Method;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const LEGACY: &str = "tokens-e2e-legacy-0123456789abcdef";
const ADDR: &str = "127.0.0.1:18181";

/// A one-tenant daemon (common::Daemon) with a TCP listener beside its socket, whose configured
/// single token is the legacy global-admin one.
struct TcpDaemon {
    d: common::Daemon,
    _token: tempfile::TempDir,
}

impl std::ops::Deref for TcpDaemon {
    type Target = common::Daemon;
    fn deref(&self) -> &common::Daemon {
        &self.d
    }
}

impl TcpDaemon {
    fn start() -> TcpDaemon {
        let dir = common::test_dir();
        let token = dir.path().join("token");
        std::fs::write(&token, LEGACY).unwrap();
        let tcp = format!(
            "  api:\n    tcp: {{ bind: \"{ADDR}\", token_file: {} }}\n",
            token.display()
        );
        let d = common::Daemon::start_edited("tok", &["--ram-mb", "64", "--count", "1"], |y| {
            y.replace("  api:\n", &tcp)
        });
        TcpDaemon { d, _token: dir }
    }

    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.d.pid())
    }

    /// One request with `token` (or none), from inside the daemon's namespace.
    fn http(&self, token: Option<&str>, method: Method, path: &str, body: &str) -> (u16, String) {
        http(&self.netns(), ADDR, token, method, path, body)
    }

    /// `bulkhead ARGS --url http://ADDR --token TOKEN` inside the daemon's namespace.
    fn cli(&self, token: &str, args: &[&str]) -> Output {
        Command::new("nsenter")
            .arg(format!("--net={}", self.netns()))
            .args(["--", BIN])
            .args(args)
            .env("BULKHEAD_URL", format!("http://{ADDR}"))
            .env("BULKHEAD_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn cli_ok(&self, token: &str, args: &[&str]) -> String {
        let o = self.cli(token, args);
        assert!(
            o.status.success(),
            "bulkhead {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Makes a token with the legacy (global-admin) token, or `by`: its secret and id.
    fn token(&self, by: &str, role: &str, ttl: &str) -> (String, String) {
        let (st, body) = self.http(
            Some(by),
            Method::POST,
            "/tokens",
            &format!(
                r#"{{"name":"t-{role}","tenant":"{}","role":"{role}","ttl":"{ttl}"}}"#,
                self.tenant
            ),
        );
        assert_eq!(st, 201, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        (
            v["token"].as_str().unwrap().to_string(),
            v["id"].as_str().unwrap().to_string(),
        )
    }

    fn stop_and_assert_clean(self) {
        self.d.stop_and_assert_clean();
    }
}

/// One request to `addr` with `token` (or none), from a thread inside the network namespace
/// `netns`: (status, body).
fn http(
    netns: &str,
    addr: &str,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: &str,
) -> (u16, String) {
    let ns = std::fs::File::open(netns).unwrap();
    let (addr, token, path, body) = (
        addr.to_string(),
        token.map(str::to_string),
        path.to_string(),
        body.to_string(),
    );
    std::thread::spawn(move || {
        // SAFETY: moves this thread (only) into the daemon's network namespace.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        send(Endpoint::Tcp { addr, token }, method, &path, &body)
    })
    .join()
    .unwrap()
}

/// One request on `ep`: (status, body).
fn send(ep: Endpoint, method: Method, path: &str, body: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        use http_body_util::BodyExt;
        let ct = (!body.is_empty()).then_some("application/json");
        let r = Client::new(ep)
            .send(
                method,
                path,
                bulkhead_api::client::full_body(body.to_string()),
                ct,
            )
            .await
            .unwrap();
        let status = r.status().as_u16();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&b).into_owned())
    })
}

fn code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).unwrap()["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn tokens_grant_their_role_expire_and_revoke_at_once() {
    if !privileged() {
        return;
    }
    let d = TcpDaemon::start();
    let node = format!("{}-1", d.tenant);
    let exec = format!("/vm/{node}/exec?cmd=echo&args=hi");

    // The legacy token still works (global-admin).
    assert_eq!(d.http(Some(LEGACY), Method::GET, "/nodes", "").0, 200);
    // No credentials, a wrong one, an unknown bh_ one: 401.
    for t in [None, Some("wrong-token-0123456789"), Some("bh_unknown")] {
        let (st, body) = d.http(t, Method::GET, "/nodes", "");
        assert_eq!(
            (st, code(&body).as_str()),
            (401, "unauthorized"),
            "{t:?}: {body}"
        );
    }

    // A developer token lists and execs; it may not manage tokens.
    let (dev, dev_id) = d.token(LEGACY, "developer", "1h");
    let (st, body) = d.http(Some(&dev), Method::GET, "/nodes", "");
    assert_eq!(st, 200, "{body}");
    assert!(body.contains(&node), "{body}");
    let (st, body) = d.http(Some(&dev), Method::POST, &exec, "");
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("hi"), "{body}");
    assert_eq!(d.http(Some(&dev), Method::GET, "/tokens", "").0, 403);

    // A viewer token lists, but exec and token create are 403.
    let (viewer, _) = d.token(LEGACY, "viewer", "1h");
    assert_eq!(d.http(Some(&viewer), Method::GET, "/nodes", "").0, 200);
    let (st, body) = d.http(Some(&viewer), Method::POST, &exec, "");
    assert_eq!((st, code(&body).as_str()), (403, "forbidden"), "{body}");
    let req = format!(r#"{{"name":"v","tenant":"{}","role":"viewer"}}"#, d.tenant);
    assert_eq!(d.http(Some(&viewer), Method::POST, "/tokens", &req).0, 403);

    // A tenant-admin token makes and revokes a developer token; the revoked one is 401 at once.
    let (admin, _) = d.token(LEGACY, "tenant-admin", "1h");
    let (dev2, dev2_id) = d.token(&admin, "developer", "1h");
    assert_eq!(d.http(Some(&dev2), Method::GET, "/nodes", "").0, 200);
    let (st, body) = d.http(
        Some(&admin),
        Method::DELETE,
        &format!("/tokens/{dev2_id}"),
        "",
    );
    assert_eq!(st, 204, "{body}");
    let (st, body) = d.http(Some(&dev2), Method::GET, "/nodes", "");
    assert_eq!(st, 401, "{body}");
    assert!(body.contains("was revoked"), "{body}");
    // Unknown id: 404; not an id: 400.
    let unknown = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    assert_eq!(
        d.http(
            Some(&admin),
            Method::DELETE,
            &format!("/tokens/{unknown}"),
            ""
        )
        .0,
        404
    );
    assert_eq!(
        d.http(Some(&admin), Method::DELETE, "/tokens/nope", "").0,
        400
    );

    // No escalation: a tenant-admin may not make a global-admin token (nor any token without a
    // tenant).
    let (st, body) = d.http(
        Some(&admin),
        Method::POST,
        "/tokens",
        r#"{"name":"root","role":"global-admin"}"#,
    );
    assert_eq!((st, code(&body).as_str()), (403, "forbidden"), "{body}");

    // Bad bodies: 400 naming the field.
    let t = &d.tenant;
    for (body, field) in [
        (
            format!(r#"{{"name":"x","tenant":"{t}","role":"root"}}"#),
            "role",
        ),
        (
            r#"{"name":"x","tenant":"nosuch","role":"viewer"}"#.to_string(),
            "tenant",
        ),
        (
            format!(r#"{{"name":"x","tenant":"{t}","role":"viewer","ttl":"0s"}}"#),
            "ttl",
        ),
        (
            format!(r#"{{"name":"x","tenant":"{t}","role":"viewer","ttl":"9000h"}}"#),
            "ttl",
        ),
        (
            format!(r#"{{"name":"x","tenant":"{t}","role":"viewer","tenatn":"x"}}"#),
            "tenatn",
        ),
        (format!(r#"{{"tenant":"{t}","role":"viewer"}}"#), "name"),
        (
            format!(r#"{{"name":"X Y","tenant":"{t}","role":"viewer"}}"#),
            "name",
        ),
    ] {
        let (st, resp) = d.http(Some(LEGACY), Method::POST, "/tokens", &body);
        assert_eq!(st, 400, "{body}: {resp}");
        assert!(resp.contains(field), "{body}: {resp}");
    }

    // The list: every token, never a secret or hash.
    let (st, list) = d.http(Some(LEGACY), Method::GET, "/tokens", "");
    assert_eq!(st, 200);
    for secret in [&dev, &viewer, &admin, &dev2] {
        assert!(!list.contains(&secret[3..]), "a secret is listed: {list}");
    }
    assert!(!list.contains("hash"), "{list}");
    let v: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(v.len(), 4);
    let state = |id: &str| {
        v.iter().find(|t| t["id"] == id).unwrap()["state"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(state(&dev_id), "active");
    assert_eq!(state(&dev2_id), "revoked");
    // A tenant-admin sees its tenant's tokens too.
    let (st, body) = d.http(Some(&admin), Method::GET, "/tokens", "");
    assert_eq!(st, 200, "{body}");

    // A short token works, then is 401 once expired, without a restart.
    let (short, _) = d.token(LEGACY, "viewer", "2s");
    assert_eq!(d.http(Some(&short), Method::GET, "/nodes", "").0, 200);
    std::thread::sleep(Duration::from_millis(3100));
    let (st, body) = d.http(Some(&short), Method::GET, "/nodes", "");
    assert_eq!(st, 401, "{body}");
    assert!(body.contains("has expired"), "{body}");

    // The CLI: create prints only the secret on stdout; list and revoke, --json too.
    let o = d.cli(
        &admin,
        &[
            "token",
            "create",
            "--tenant",
            t,
            "--role",
            "developer",
            "--ttl",
            "1h",
            "--name",
            "ci",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let secret = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        secret.starts_with("bh_") && !secret.contains(' '),
        "{secret}"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("shown only now"));
    assert!(d.cli_ok(&secret, &["vm", "list"]).contains(&node));
    let created: serde_json::Value = serde_json::from_str(&d.cli_ok(
        &admin,
        &[
            "token", "create", "--tenant", t, "--role", "viewer", "--name", "ci2", "--json",
        ],
    ))
    .unwrap();
    assert!(created["token"].as_str().unwrap().starts_with("bh_"));
    let id = created["id"].as_str().unwrap();
    let table = d.cli_ok(&admin, &["token", "list"]);
    assert!(
        table.contains(id) && table.contains("ci2") && table.contains("expires"),
        "{table}"
    );
    assert!(!table.contains(&secret[3..]));
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&d.cli_ok(&admin, &["token", "list", "--json"])).unwrap();
    assert!(listed.iter().any(|t| t["id"] == id));
    let revoked: serde_json::Value =
        serde_json::from_str(&d.cli_ok(&admin, &["token", "revoke", id, "--json"])).unwrap();
    assert_eq!(revoked["revoked"], true);
    assert!(d.cli_ok(&admin, &["token", "list"]).contains("revoked"));
    // A viewer's create fails with the daemon's 403.
    let o = d.cli(
        &viewer,
        &[
            "token", "create", "--tenant", t, "--role", "viewer", "--name", "v",
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("forbidden"));

    d.stop_and_assert_clean();
}

/// A shared daemon of two tenants, TCP without a single token (API tokens only): tokens made
/// on the admin socket (global-admin) and on tenant a's socket (tenant-admin@a) act in their
/// tenant alone; a tenant-admin neither sees, revokes nor mints tokens of another tenant.
#[test]
fn tokens_of_a_shared_daemon_stay_in_their_tenant() {
    if !privileged() {
        return;
    }
    const SHARED_ADDR: &str = "127.0.0.1:18182";
    let s = common::shared::Shared::start("", &format!("    tcp: {{ bind: \"{SHARED_ADDR}\" }}\n"));
    let (a, b) = (s.a.clone(), s.b.clone());
    let ns = s.netns_path().display().to_string();
    let mk = |ep: Endpoint, body: String| {
        let (st, resp) = send(ep, Method::POST, "/tokens", &body);
        (st, resp)
    };
    let admin = || Endpoint::Unix(s.admin.clone());
    let sock_a = || Endpoint::Unix(s.tenant_sock(&a));
    let secret = |resp: &str| -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(resp).unwrap();
        (
            v["token"].as_str().unwrap().into(),
            v["id"].as_str().unwrap().into(),
        )
    };
    // global-admin (admin socket): a tenant-less global-admin token, and a developer of b.
    let (st, r) = mk(admin(), r#"{"name":"root","role":"global-admin"}"#.into());
    assert_eq!(st, 201, "{r}");
    let (root, _) = secret(&r);
    let (st, r) = mk(
        admin(),
        format!(r#"{{"name":"dev-b","tenant":"{b}","role":"developer"}}"#),
    );
    assert_eq!(st, 201, "{r}");
    let (dev_b, dev_b_id) = secret(&r);
    // tenant-admin@a (its socket): a tenant-admin token of a; not b, not global-admin.
    let (st, r) = mk(
        sock_a(),
        format!(r#"{{"name":"adm-a","tenant":"{a}","role":"tenant-admin"}}"#),
    );
    assert_eq!(st, 201, "{r}");
    let (adm_a, _) = secret(&r);
    let (st, r) = mk(
        sock_a(),
        format!(r#"{{"name":"x","tenant":"{b}","role":"viewer"}}"#),
    );
    assert_eq!((st, code(&r).as_str()), (403, "forbidden"), "{r}");
    let (st, r) = mk(sock_a(), r#"{"name":"x","role":"global-admin"}"#.into());
    assert_eq!(st, 403, "{r}");

    // Over TCP: each token sees its own tenant's groups only; the global one sees both.
    let groups = |t: &str| {
        let (st, body) = http(&ns, SHARED_ADDR, Some(t), Method::GET, "/hostgroup", "");
        assert_eq!(st, 200, "{body}");
        body
    };
    let g = groups(&dev_b);
    assert!(g.contains(&b) && !g.contains(&a), "{g}");
    let g = groups(&adm_a);
    assert!(g.contains(&a) && !g.contains(&b), "{g}");
    let g = groups(&root);
    assert!(g.contains(&a) && g.contains(&b), "{g}");
    // No single token on this daemon: anything but an API token is 401.
    assert_eq!(
        http(
            &ns,
            SHARED_ADDR,
            Some("0123456789abcdef0123"),
            Method::GET,
            "/hostgroup",
            ""
        )
        .0,
        401
    );

    // tenant-admin@a lists a's tokens only, and b's token does not exist for it.
    let (st, list) = http(&ns, SHARED_ADDR, Some(&adm_a), Method::GET, "/tokens", "");
    assert_eq!(st, 200, "{list}");
    let v: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    assert!(v.iter().all(|t| t["tenant"] == a.as_str()), "{list}");
    assert!(!v.is_empty());
    let (st, _) = http(
        &ns,
        SHARED_ADDR,
        Some(&adm_a),
        Method::DELETE,
        &format!("/tokens/{dev_b_id}"),
        "",
    );
    assert_eq!(st, 404);
    assert!(groups(&dev_b).contains(&b), "still valid");
    // b's developer may not list tokens at all; the global token lists all three and revokes.
    assert_eq!(
        http(&ns, SHARED_ADDR, Some(&dev_b), Method::GET, "/tokens", "").0,
        403
    );
    let (_, list) = http(&ns, SHARED_ADDR, Some(&root), Method::GET, "/tokens", "");
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&list)
            .unwrap()
            .len(),
        3
    );
    let (st, _) = http(
        &ns,
        SHARED_ADDR,
        Some(&root),
        Method::DELETE,
        &format!("/tokens/{dev_b_id}"),
        "",
    );
    assert_eq!(st, 204);
    assert_eq!(
        http(
            &ns,
            SHARED_ADDR,
            Some(&dev_b),
            Method::GET,
            "/hostgroup",
            ""
        )
        .0,
        401
    );
    s.stop_and_assert_clean();
}
