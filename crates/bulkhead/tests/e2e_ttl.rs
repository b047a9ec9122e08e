//! End to end, over the real daemon (#15, B: node TTL, ADR 0037): a node created with a
//! `timeout` is deleted once it passes (GET 404), with a `node.expired` event and an audit
//! line of the daemon's; bad timeouts are 400s naming the field; `POST /vm/{node}/timeout`
//! extends (the node outlives its first timeout), clears, and sets `on_expiry: "pause"` (the
//! node is paused and its timeout cleared); `bulkhead vm add --ttl`; and across a restart of
//! the daemon an expiry is kept, and one that passed while the daemon was down is acted on
//! at start.

mod common;

use common::exec_wire::{ndjson, send};
use common::*;
use hyper::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn call(
    rt: &tokio::runtime::Runtime,
    c: &bulkhead_api::Client,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let b = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let (s, b) = send(rt, c, m, path, b);
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// Polls `f` until it gives something or `secs` pass.
fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Seconds since the Unix epoch of an RFC 3339 UTC time as the daemon writes it
/// (`2026-01-31T12:00:00Z`).
fn epoch_secs(t: &str) -> u64 {
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days * 86400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)) as u64
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The tenant's kept events of `kind`.
fn events_of(rt: &tokio::runtime::Runtime, c: &bulkhead_api::Client, kind: &str) -> Vec<Value> {
    let (s, b) = send(rt, c, Method::GET, "/events?follow=false", vec![]);
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    ndjson(&b)
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

fn create(
    rt: &tokio::runtime::Runtime,
    c: &bulkhead_api::Client,
    g: &str,
    body: Value,
) -> (u16, Value) {
    call(
        rt,
        c,
        Method::POST,
        &format!("/hostgroup/{g}/nodes?wait=agent"),
        Some(body),
    )
}

#[test]
fn a_node_is_deleted_once_its_timeout_passes() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("ttl", &[]);
    let (rt, c) = (rt(), d.client());
    let g = d.tenant.clone();
    // Bad timeouts: 400s naming the field, and no node made.
    for (bad, code) in [
        (json!(0), "out_of_range"),
        (json!(-5), "out_of_range"),
        (json!("721h"), "out_of_range"),
        (json!(2592001), "out_of_range"),
        (json!("soon"), "invalid_request"),
        (json!(1.5), "invalid_request"),
        (json!(true), "invalid_request"),
    ] {
        let (s, b) = create(&rt, &c, &g, json!({ "timeout": bad }));
        assert_eq!(s, 400, "{bad}: {b}");
        assert_eq!(b["code"], code, "{bad}: {b}");
        assert!(b["error"].as_str().unwrap().contains("timeout"), "{b}");
    }
    let (_, nodes) = call(&rt, &c, Method::GET, "/nodes", None);
    assert_eq!(nodes.as_array().unwrap().len(), 0, "{nodes}");

    // A node without a timeout has no expires_at; one with 2 s has it, and is gone after.
    let (s, b) = create(&rt, &c, &g, json!({}));
    assert_eq!(s, 201, "{b}");
    let keep = b["hostname"].as_str().unwrap().to_string();
    let (s, b) = create(&rt, &c, &g, json!({ "timeout": 2 }));
    let made = Instant::now();
    assert_eq!(s, 201, "{b}");
    let n = b["hostname"].as_str().unwrap().to_string();
    let (s, desc) = call(&rt, &c, Method::GET, &format!("/vm/{n}"), None);
    assert_eq!(s, 200, "{desc}");
    let at = epoch_secs(desc["expires_at"].as_str().expect("expires_at"));
    let now = now_secs();
    assert!(at >= now && at <= now + 3, "expires_at {at}, now {now}");
    let (_, nodes) = call(&rt, &c, Method::GET, "/nodes", None);
    let listed = |name: &str| {
        nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["hostname"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(listed(&n)["expires_at"], desc["expires_at"]);
    assert!(listed(&keep).get("expires_at").is_none(), "{nodes}");
    // Still there a second in; gone (404) once 2 s passed, within the sweeper's precision.
    std::thread::sleep(Duration::from_millis(1000).saturating_sub(made.elapsed()));
    assert_eq!(call(&rt, &c, Method::GET, &format!("/vm/{n}"), None).0, 200);
    until(8, "the expired node to go", || {
        (call(&rt, &c, Method::GET, &format!("/vm/{n}"), None).0 == 404).then_some(())
    });
    let took = made.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "deleted {took:?} after its create returned, timeout 2s"
    );
    assert_eq!(
        call(&rt, &c, Method::GET, &format!("/vm/{keep}"), None).0,
        200
    );
    // The event and the daemon's audit line.
    let ev = events_of(&rt, &c, "node.expired");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["node"], n.as_str());
    assert!(
        ev[0]["detail"]["reason"]
            .as_str()
            .unwrap()
            .contains("deleted"),
        "{ev:?}"
    );
    let (s, b) = send(
        &rt,
        &c,
        Method::GET,
        &format!("/audit?action=expire&tenant={}", d.tenant),
        vec![],
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let lines = ndjson(&b);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["object"], format!("node/{n}"));
    assert_eq!(lines[0]["principal"], "daemon");
    d.stop_and_assert_clean();
}

#[test]
fn timeouts_extend_clear_pause_and_survive_a_restart() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("ttlx", &["--graceful-shutdown", "true"]);
    let (rt, c) = (rt(), d.client());
    let expires = |c: &bulkhead_api::Client, n: &str| -> Option<String> {
        let (s, b) = call(&rt, c, Method::GET, &format!("/vm/{n}"), None);
        assert_eq!(s, 200, "{b}");
        b["expires_at"].as_str().map(str::to_string)
    };
    let set = |c: &bulkhead_api::Client, n: &str, body: Value| {
        call(
            &rt,
            c,
            Method::POST,
            &format!("/vm/{n}/timeout"),
            Some(body),
        )
    };

    // `vm add --ttl`: checked by the CLI (naming --ttl), then the create's timeout.
    let o = d.vm(&["add", &d.tenant, "--ttl", "soon"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--ttl \"soon\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let n1 = d
        .vm_ok(&["add", &d.tenant, "--ttl", "3s"])
        .trim()
        .to_string();
    let first = epoch_secs(&expires(&c, &n1).expect("--ttl sets expires_at"));
    assert!(first <= now_secs() + 4, "{first}");
    // Extended to an hour: it outlives its first timeout.
    let (s, b) = set(&c, &n1, json!({ "timeout": "1h" }));
    assert_eq!(s, 200, "{b}");
    let later = epoch_secs(b["expires_at"].as_str().unwrap());
    assert!(later >= now_secs() + 3590, "{b}");
    // Bad bodies are 400s; another name is 404.
    for (body, code) in [
        (json!({}), "invalid_request"),
        (json!({ "timeout": "x" }), "invalid_request"),
        (json!({ "timeout": 0 }), "out_of_range"),
        (
            json!({ "timeout": 5, "on_expiry": "kill" }),
            "invalid_request",
        ),
        (json!({ "timeout": 5, "ttl": 5 }), "invalid_request"),
    ] {
        let (s, b) = set(&c, &n1, body.clone());
        assert_eq!((s, b["code"].as_str()), (400, Some(code)), "{body}: {b}");
    }
    assert_eq!(set(&c, "nope-1", json!({ "timeout": 5 })).0, 404);

    // on_expiry pause: the node is paused and its timeout cleared.
    let n2 = d.add();
    let (s, b) = set(&c, &n2, json!({ "timeout": 2, "on_expiry": "pause" }));
    assert_eq!(s, 200, "{b}");
    assert!(b["expires_at"].is_string(), "{b}");
    let paused = until(8, "the node to be paused", || {
        let (_, b) = call(&rt, &c, Method::GET, &format!("/vm/{n2}"), None);
        (b["state"] == "Paused").then_some(b)
    });
    assert!(paused.get("expires_at").is_none(), "{paused}");
    let ev = events_of(&rt, &c, "node.expired");
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["node"], n2.as_str());
    assert!(ev[0]["detail"]["reason"]
        .as_str()
        .unwrap()
        .contains("paused"));
    // Cleared with null.
    let n3 = d.add();
    set(&c, &n3, json!({ "timeout": 600 }));
    let (s, b) = set(&c, &n3, json!({ "timeout": null }));
    assert_eq!(s, 200, "{b}");
    assert!(b.get("expires_at").is_none(), "{b}");

    // n1 outlived its first 3 s.
    std::thread::sleep(Duration::from_secs(first.saturating_sub(now_secs()) + 2));
    assert_eq!(expires(&c, &n1).map(|t| epoch_secs(&t)), Some(later));

    // A restart (graceful_shutdown: true keeps the nodes): n1's expiry is kept; n4's passes
    // while the daemon is down and is acted on at start.
    let n4 = d.add();
    let (s, b) = set(&c, &n4, json!({ "timeout": 2 }));
    assert_eq!(s, 200, "{b}");
    d.stop();
    std::thread::sleep(Duration::from_secs(3));
    d.spawn();
    let c = d.client();
    assert_eq!(expires(&c, &n1).map(|t| epoch_secs(&t)), Some(later));
    until(
        5,
        "the node expired while the daemon was down to go",
        || (call(&rt, &c, Method::GET, &format!("/vm/{n4}"), None).0 == 404).then_some(()),
    );
    let ev = events_of(&rt, &c, "node.expired");
    assert!(ev.iter().any(|e| e["node"] == n4.as_str()), "{ev:?}");
    for n in [&n1, &n2, &n3] {
        d.vm_ok(&["delete", n]);
    }
    d.stop_and_assert_clean();
}
