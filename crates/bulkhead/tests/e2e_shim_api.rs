//! End to end, over a real daemon's shim socket (`config.api.shim`, #16 B1), with the raw
//! HTTP client the containerd shim uses: the socket is root's (0600) and replaced when stale,
//! a peer that is not root is refused even when the file mode lets it in, the principal
//! `shim` reaches nodes but not tokens, secrets or the audit trail, placement answers by the
//! namespace mapping, and the exec keys the shim sends work: a background `cat` fed through
//! `POST .../stdin`, a terminal resized with `POST .../resize`, rlimits and supplementary
//! groups.

mod common;

use bulkhead_api::containers::Placement;
use bulkhead_api::{BgExecStarted, BgWaitExit, BufferedExec, Client, Endpoint};
use common::exec_wire::*;
use common::*;
use hyper::Method;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn config(tenant: &str, dir: &Path) -> String {
    format!(
        "config:\n  tenant: {tenant}\n  host_groups:\n    - name: {tenant}\n      ram_mb: 128\n  hypervisor: jail\n  graceful_shutdown: false\n  api:\n    bind_address: {}\n    shim:\n      socket: {}\n      namespaces:\n        default: {tenant}\n        prod: {{ tenant: {tenant}, jail: {tenant} }}\n",
        dir.join("api.sock").display(),
        dir.join("shim.sock").display()
    )
}

/// Runs `bulkhead vm list --socket S` as uid/gid 65534: (success, stderr).
fn as_nobody(sock: &Path) -> (bool, String) {
    let o = std::process::Command::new(BIN)
        .args(["vm", "list", "--socket", sock.to_str().unwrap()])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn status(rt: &tokio::runtime::Runtime, c: &Client, m: Method, path: &str) -> (u16, Value) {
    let (s, b) = send(rt, c, m, path, vec![]);
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

#[test]
fn the_shim_socket_and_what_the_shim_may_do() {
    if !privileged() {
        return;
    }
    let tenant = unique_tenant("shim");
    let dir = test_dir();
    let shim_sock = dir.path().join("shim.sock");
    // A stale socket (nobody answers) is replaced at start.
    drop(std::os::unix::net::UnixListener::bind(&shim_sock).unwrap());
    assert!(shim_sock.exists());
    let yaml = config(&tenant, dir.path());
    let mut d = Daemon::start_with_yaml(tenant.clone(), dir, &yaml);
    assert!(
        d.log().contains("listening (containerd shim)"),
        "{}",
        d.log()
    );
    let meta = std::fs::metadata(&shim_sock).unwrap();
    assert_eq!(
        (meta.mode() & 0o777, meta.uid()),
        (0o600, 0),
        "the shim socket is root's alone"
    );

    let rt = rt();
    let shim = Client::new(Endpoint::Unix(shim_sock.clone()));

    // Placement: the mapped namespaces, the "*"-less rest refused, drivers.
    let p: Placement = ok_json(
        &rt,
        &shim,
        Method::GET,
        "/shim/placement?namespace=default&driver=jail",
        None,
    );
    assert_eq!(
        (p.tenant.as_str(), p.hostgroup.as_str()),
        (tenant.as_str(), tenant.as_str())
    );
    let p: Placement = ok_json(
        &rt,
        &shim,
        Method::GET,
        "/shim/placement?namespace=prod",
        None,
    );
    assert_eq!(p.hostgroup, tenant);
    let (s, b) = status(
        &rt,
        &shim,
        Method::GET,
        "/shim/placement?namespace=team-x&driver=jail",
    );
    assert_eq!((s, b["code"].as_str()), (403, Some("policy_denied")), "{b}");
    assert_eq!(
        b["error"],
        "kubernetes namespace team-x maps to no tenant: add it to config.api.shim.namespaces"
    );
    let (s, b) = status(
        &rt,
        &shim,
        Method::GET,
        "/shim/placement?namespace=default&driver=qemu",
    );
    assert_eq!(s, 400, "{b}");
    let e = b["error"].as_str().unwrap();
    assert!(
        e.contains("no qemu host group") && e.contains("config.api.shim.namespaces.default.qemu"),
        "{e}"
    );
    let (s, b) = status(
        &rt,
        &shim,
        Method::GET,
        "/shim/placement?namespace=default&driver=runc",
    );
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("use jail or qemu"),
        "{b}"
    );
    // Another listener does not answer placement.
    let (s, _) = status(
        &rt,
        &d.client(),
        Method::GET,
        "/shim/placement?namespace=default",
    );
    assert_eq!(s, 404);

    // The shim principal: nodes yes; tokens, secrets, the audit trail no.
    for path in ["/tokens", "/secrets", "/audit"] {
        let (s, b) = status(&rt, &shim, Method::GET, path);
        assert_eq!(
            (s, b["code"].as_str()),
            (403, Some("forbidden")),
            "{path}: {b}"
        );
        assert!(
            b["error"].as_str().unwrap().starts_with("shim (shim@"),
            "{b}"
        );
    }
    let (s, b) = send(
        &rt,
        &shim,
        Method::POST,
        "/tokens",
        serde_json::to_vec(&json!({"name": "x", "tenant": tenant, "role": "shim", "ttl": "1h"}))
            .unwrap(),
    );
    assert!(s == 403 || s == 400, "{s} {}", String::from_utf8_lossy(&b));
    let n = {
        let v: Value = ok_json(
            &rt,
            &shim,
            Method::POST,
            &format!("/hostgroup/{tenant}/nodes?wait=agent"),
            Some(json!({"tags": ["containerd-ns=default"]})),
        );
        v["hostname"].as_str().unwrap().to_string()
    };

    // A background `cat` with stdin: written in two requests, closed by the second.
    let cat: BgExecStarted = ok_json(
        &rt,
        &shim,
        Method::POST,
        &format!("/vm/{n}/exec?cmd=cat&background=true&stdin=true"),
        None,
    );
    let stdin = |id: &str, q: &str, body: &[u8]| -> (u16, Value) {
        let (s, b) = send(
            &rt,
            &shim,
            Method::POST,
            &format!("/vm/{n}/exec/{id}/stdin{q}"),
            body.to_vec(),
        );
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    };
    let (s, b) = stdin(&cat.exec_id, "", b"hello ");
    assert_eq!((s, b["bytes_written"].as_u64()), (200, Some(6)), "{b}");
    let (s, b) = stdin(&cat.exec_id, "?close=true", b"shim\n");
    assert_eq!((s, b["stdin_closed"].as_bool()), (200, Some(true)), "{b}");
    let w: BgWaitExit = ok_json(
        &rt,
        &shim,
        Method::GET,
        &format!("/vm/{n}/exec/{}/wait-exit?timeout=10", cat.exec_id),
        None,
    );
    assert_eq!(w.exit_code, Some(0), "cat ends at the end of its stdin");
    let (s, b) = send(
        &rt,
        &shim,
        Method::GET,
        &format!("/vm/{n}/exec/{}/logs", cat.exec_id),
        vec![],
    );
    assert_eq!(s, 200);
    assert_eq!(output(&ndjson(&b), "stdout"), b"hello shim\n");
    // Input to an exec that has ended, or never had stdin, or has no terminal: 409.
    let (s, b) = stdin(&cat.exec_id, "", b"more");
    assert_eq!((s, b["code"].as_str()), (409, Some("conflict")), "{b}");
    let sleeper: BgExecStarted = ok_json(
        &rt,
        &shim,
        Method::POST,
        &format!("/vm/{n}/exec?cmd=sleep&args=30&background=true"),
        None,
    );
    let (s, b) = stdin(&sleeper.exec_id, "", b"x");
    assert_eq!((s, b["code"].as_str()), (409, Some("conflict")), "{b}");
    assert!(
        b["error"].as_str().unwrap().contains("without stdin"),
        "{b}"
    );
    let (s, b) = send(
        &rt,
        &shim,
        Method::POST,
        &format!("/vm/{n}/exec/{}/resize", sleeper.exec_id),
        br#"{"cols":100,"rows":30}"#.to_vec(),
    );
    assert_eq!(s, 409, "{}", String::from_utf8_lossy(&b));
    let _ = send(
        &rt,
        &shim,
        Method::POST,
        &format!("/vm/{n}/exec/{}/kill", sleeper.exec_id),
        br#"{"signal":"KILL"}"#.to_vec(),
    );

    // A terminal: its size, then a resize, seen by the command.
    let tty: BgExecStarted = ok_json(
        &rt,
        &shim,
        Method::POST,
        &format!("/vm/{n}/exec?cmd=sh&args=-c&args=stty%20size;%20read%20x;%20stty%20size&background=true&tty=true&cols=91&rows=17"),
        None,
    );
    let out = |id: &str| {
        let (_, b) = send(
            &rt,
            &shim,
            Method::GET,
            &format!("/vm/{n}/exec/{id}/logs"),
            vec![],
        );
        String::from_utf8_lossy(&output(&ndjson(&b), "stdout")).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out(&tty.exec_id).contains("17 91") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(out(&tty.exec_id).contains("17 91"), "{}", out(&tty.exec_id));
    let (s, b) = send(
        &rt,
        &shim,
        Method::POST,
        &format!("/vm/{n}/exec/{}/resize", tty.exec_id),
        br#"{"cols":120,"rows":40}"#.to_vec(),
    );
    assert_eq!(s, 204, "{}", String::from_utf8_lossy(&b));
    let (s, b) = send(
        &rt,
        &shim,
        Method::POST,
        &format!("/vm/{n}/exec/{}/resize", tty.exec_id),
        br#"{"cols":0,"rows":40}"#.to_vec(),
    );
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&b));
    let (s, b) = stdin(&tty.exec_id, "", b"go\r");
    assert_eq!(s, 200, "{b}");
    let w: BgWaitExit = ok_json(
        &rt,
        &shim,
        Method::GET,
        &format!("/vm/{n}/exec/{}/wait-exit?timeout=10", tty.exec_id),
        None,
    );
    assert_eq!(w.exit_code, Some(0));
    assert!(
        out(&tty.exec_id).contains("40 120"),
        "{}",
        out(&tty.exec_id)
    );

    // rlimits and supplementary groups (the agent's, #16 B2).
    let run = |q: &str| -> BufferedExec {
        ok_json(
            &rt,
            &shim,
            Method::POST,
            &format!("/vm/{n}/exec?buffered=true&{q}"),
            None,
        )
    };
    let r = run("cmd=sh&args=-c&args=ulimit%20-n;%20ulimit%20-Hn&rlimit=RLIMIT_NOFILE:123:456");
    assert_eq!(r.stdout, "123\n456\n", "{r:?}");
    let r = run("cmd=id&args=-G&uid=1000&gid=1000&groups=27,44");
    assert_eq!(r.stdout.trim(), "1000 27 44", "{r:?}");
    let (s, b) = status(
        &rt,
        &shim,
        Method::POST,
        &format!("/vm/{n}/exec?cmd=id&rlimit=NOFILE:1:2"),
    );
    assert_eq!(s, 400, "{b}");
    let (s, b) = status(
        &rt,
        &shim,
        Method::POST,
        &format!("/vm/{n}/exec?cmd=id&container=nope"),
    );
    assert_eq!((s, b["code"].as_str()), (404, Some("not_found")), "{b}");

    // A peer that is not root: kept out by the file mode, and refused by the listener when
    // the mode is loosened.
    let (ok, err) = as_nobody(&shim_sock);
    assert!(
        !ok && err.to_lowercase().contains("permission denied"),
        "{err}"
    );
    std::fs::set_permissions(&shim_sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (ok, err) = as_nobody(&shim_sock);
    assert!(!ok && err.contains("root peers only"), "{err}");
    std::fs::set_permissions(&shim_sock, std::fs::Permissions::from_mode(0o600)).unwrap();

    // The socket goes with the daemon.
    d.stop();
    assert!(
        !shim_sock.exists(),
        "the shim socket is removed at shutdown"
    );
}
