//! End to end, over the real daemon (#14, part B): the event stream `GET /events` (NDJSON,
//! cursors, `since`, `follow`), lifecycle events (created, deleted, stopped, and the daemon's
//! own deletes at stop and reconciliation, each also a line of the tenant's audit trail,
//! which verifies), kept across a daemon restart and a crash with cursors that go on; an
//! authorization denial spike; the integrity check of the daemon's binaries and config (a
//! daemon run from copies of the binaries, one replaced by rename, the config edited); and
//! the event webhook, delivered to a small HTTP server of the test on the daemon's loopback,
//! with a retry after a failed delivery.

mod common;

use common::exec_wire::{ndjson, send};
use common::netlab::in_ns;
use common::shared::Shared;
use common::*;
use hyper::Method;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The kept events (`follow=false`), with `q` added to the query.
fn kept(rt: &tokio::runtime::Runtime, c: &bulkhead_api::Client, q: &str) -> Vec<Value> {
    let (s, b) = send(
        rt,
        c,
        Method::GET,
        &format!("/events?follow=false{q}"),
        vec![],
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    ndjson(&b)
}

/// (kind, node) of each event.
fn kinds(ev: &[Value]) -> Vec<(String, String)> {
    ev.iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["node"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn cursors(ev: &[Value]) -> Vec<u64> {
    ev.iter().map(|e| e["cursor"].as_u64().unwrap()).collect()
}

/// Polls `f` until it gives something or `secs` pass.
fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const EVENTS_YAML: &str = "  events:\n    keep: 1000\n";

#[test]
fn lifecycle_events_resume_follow_and_survive_a_restart() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start_edited("evl", &[], |y| y + EVENTS_YAML);
    let (rt, c) = (rt(), d.client());
    let g = d.tenant.clone();
    let n1 = d.add();
    let (s, b) = send(
        &rt,
        &c,
        Method::DELETE,
        &format!("/hostgroup/{g}/nodes/{n1}"),
        vec![],
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let n2 = d.add();
    let (s, b) = send(&rt, &c, Method::POST, &format!("/vm/{n2}/shutdown"), vec![]);
    assert!(s < 300, "{s} {}", String::from_utf8_lossy(&b));
    let ev = until(30, "node.stopped", || {
        let ev = kept(&rt, &c, "");
        ev.iter().any(|e| e["kind"] == "node.stopped").then_some(ev)
    });
    let want = |k: &str, n: &str| (k.to_string(), n.to_string());
    assert_eq!(
        kinds(&ev),
        vec![
            want("node.created", &n1),
            want("node.deleted", &n1),
            want("node.created", &n2),
            want("node.stopped", &n2),
        ]
    );
    let cur = cursors(&ev);
    assert!(cur.windows(2).all(|w| w[1] == w[0] + 1), "{cur:?}");
    assert!(ev.iter().all(|e| e["tenant"] == d.tenant.as_str()));
    // since=: only what came after.
    let after = kept(&rt, &c, &format!("&since={}", cur[1]));
    assert_eq!(cursors(&after), cur[2..].to_vec());
    assert!(kept(&rt, &c, &format!("&since={}", cur[3])).is_empty());
    // Bad input is a 400 naming the problem.
    for q in ["since=abc", "follow=maybe", "nope=1"] {
        let (s, b) = send(&rt, &c, Method::GET, &format!("/events?{q}"), vec![]);
        assert_eq!(s, 400, "{q}: {}", String::from_utf8_lossy(&b));
    }

    // follow (the default): the stream stays open and new events arrive on it.
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    write!(
        s,
        "GET /events?since={} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        cur[3]
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let n3 = d.add();
    let mut got = Vec::new();
    let line = until(30, "the followed node.created", || {
        let mut buf = [0u8; 4096];
        if let Ok(n) = s.read(&mut buf) {
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        text.lines()
            .find(|l| l.starts_with("{\"cursor\":"))
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
    });
    assert!(String::from_utf8_lossy(&got).contains("application/x-ndjson"));
    assert_eq!(line["cursor"].as_u64(), Some(cur[3] + 1), "{line}");
    assert_eq!(
        (line["kind"].as_str(), line["node"].as_str()),
        (Some("node.created"), Some(n3.as_str()))
    );
    drop(s);

    // A restart: the stop deletes the nodes (graceful_shutdown: false) as the daemon's own
    // change; every event is still there with its cursor, and new ones follow the last.
    let before = kept(&rt, &c, "");
    // A follower open across the stop: the daemon ends its stream (the stop does not wait
    // for it), so the reader sees the end.
    let mut f = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    write!(f, "GET /events?since=0 HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    f.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = [0u8; 64];
    assert!(f.read(&mut head).unwrap() > 0);
    let t0 = Instant::now();
    d.stop();
    let mut rest = Vec::new();
    let ended = f.read_to_end(&mut rest);
    assert!(ended.is_ok(), "the stream ended: {ended:?}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    d.spawn();
    let c = d.client();
    let again = kept(&rt, &c, "");
    assert_eq!(again[..before.len()], before[..], "kept across the restart");
    let at_stop = &again[before.len()..];
    let mut deleted: Vec<String> = at_stop
        .iter()
        .filter(|e| e["kind"] == "node.deleted")
        .map(|e| e["node"].as_str().unwrap().to_string())
        .collect();
    deleted.sort();
    assert_eq!(deleted, vec![n2.clone(), n3.clone()], "{at_stop:?}");
    assert!(at_stop.iter().all(|e| e["detail"]["reason"]
        .as_str()
        .is_some_and(|r| r.contains("daemon stopped"))));
    let last = *cursors(&again).last().unwrap();
    assert!(cursors(&again).windows(2).all(|w| w[1] == w[0] + 1));
    let n4 = d.add();
    let new = kept(&rt, &c, &format!("&since={last}"));
    assert_eq!(kinds(&new), vec![want("node.created", &n4)]);
    assert_eq!(cursors(&new), vec![last + 1]);
    // A refused volume attach (an id that is not the tenant's) is an event too.
    let body = r#"{"volumes": [{"id": "01JAAAAAAAAAAAAAAAAAAAAAAA", "path": "/data"}]}"#;
    let (s, b) = rt.block_on(async {
        use http_body_util::BodyExt;
        let r = c
            .send(
                Method::POST,
                &format!("/hostgroup/{g}/nodes"),
                bulkhead_api::client::full_body(body.as_bytes().to_vec()),
                Some("application/json"),
            )
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.into_body().collect().await.unwrap().to_bytes())
    });
    assert_eq!(s, 404, "{}", String::from_utf8_lossy(&b));
    let refused = kept(&rt, &c, &format!("&since={}", last + 1));
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["kind"], "volume.attach_refused");
    assert_eq!(refused[0]["detail"]["reason"], "not_found");
    // The metric counts this start's events.
    let (_, m) = send(&rt, &c, Method::GET, "/metrics", vec![]);
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains(&format!(
            "bulkhead_events_total{{tenant=\"{}\"}} 2",
            d.tenant
        )),
        "{m}"
    );
    // A crash, and the node's supervisor gone meanwhile: reconciliation removes the node and
    // says so (`node.lost`, the daemon's own change).
    let before = *cursors(&kept(&rt, &c, "")).last().unwrap();
    d.crash();
    let sup = d.supervisor_state(&n4)["supervisor_pid"].as_i64().unwrap() as i32;
    // SAFETY: killing the supervisor this test's daemon started, by its recorded pid.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(200));
    d.spawn();
    let c = d.client();
    let lost = kept(&rt, &c, &format!("&since={before}"));
    assert_eq!(kinds(&lost), vec![want("node.lost", &n4)], "{lost:?}");
    // After a crash, cursors jump past the reservation (never one that may have been streamed).
    assert!(cursors(&lost)[0] > before, "{lost:?}");
    assert!(lost[0]["detail"]["reason"]
        .as_str()
        .unwrap()
        .contains("supervisor"));
    // Each of the daemon's own changes is also a line of the tenant's audit trail
    // (`Tenant::by_daemon`: principal `daemon`, via `internal`), and the trail verifies.
    for (action, nodes) in [
        ("delete_at_stop", vec![n2.clone(), n3.clone()]),
        ("reconcile", vec![n4.clone()]),
    ] {
        let (s, b) = send(
            &rt,
            &c,
            Method::GET,
            &format!("/audit?action={action}&tenant={}", d.tenant),
            vec![],
        );
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        let lines = ndjson(&b);
        let mut objects: Vec<&str> = lines.iter().filter_map(|l| l["object"].as_str()).collect();
        objects.sort();
        let want: Vec<String> = nodes.iter().map(|n| format!("node/{n}")).collect();
        assert_eq!(objects, want, "{lines:?}");
        assert!(
            lines.iter().all(|l| l["principal"] == "daemon"
                && l["via"] == "internal"
                && l["outcome"] == "allowed"
                && l["tenant"] == d.tenant.as_str()),
            "{lines:?}"
        );
    }
    d.stop();
    let dir = d.tenant_dir().join("audit");
    let mut files: Vec<(u64, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            let num = n
                .strip_prefix("audit-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()?;
            Some((num, e.path().to_str()?.to_string()))
        })
        .collect();
    files.sort();
    let mut args = vec!["audit", "verify"];
    args.extend(files.iter().map(|f| f.1.as_str()));
    let o = cli(&args);
    assert!(
        o.status.success() && !files.is_empty(),
        "audit verify {files:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_clean(&d.tenant, &d.tenant_dir());
}

#[test]
fn a_denial_spike_raises_an_event() {
    if !privileged() {
        return;
    }
    let s = Shared::start(
        "  detection:\n    denial_spike: {threshold: 5, window: 60s}\n",
        "",
    );
    let rt = rt();
    let (admin, ca) = (s.admin_client(), s.tenant_client(&s.a));
    // tenant a's admin probes tenant b's group: each is a denial in b (answered 404).
    for i in 0..4 {
        let (st, _) = send(
            &rt,
            &ca,
            Method::GET,
            &format!("/hostgroup/{}/nodes", s.b),
            vec![],
        );
        assert_eq!(st, 404, "{i}");
    }
    let q = format!("&tenant={}", s.b);
    assert!(kept(&rt, &admin, &q).is_empty(), "below the threshold");
    send(
        &rt,
        &ca,
        Method::GET,
        &format!("/hostgroup/{}/nodes", s.b),
        vec![],
    );
    let ev = kept(&rt, &admin, &q);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["kind"], "auth.denial_spike");
    assert_eq!(ev[0]["detail"]["denials"], 5);
    assert_eq!(ev[0]["detail"]["threshold"], 5);
    let who = ev[0]["detail"]["principal"].as_str().unwrap().to_string();
    assert!(!who.is_empty());
    // More in the same window: no second event. Tenant a saw nothing of it.
    for _ in 0..5 {
        send(
            &rt,
            &ca,
            Method::GET,
            &format!("/hostgroup/{}/nodes", s.b),
            vec![],
        );
    }
    assert_eq!(kept(&rt, &admin, &q).len(), 1);
    assert!(kept(&rt, &ca, "").is_empty());
    // The per-principal counter; the admin must name a tenant among several.
    let (_, m) = send(&rt, &admin, Method::GET, "/metrics", vec![]);
    let m = String::from_utf8_lossy(&m);
    let line = format!(
        "bulkhead_auth_denials_total{{tenant=\"{}\",principal=\"{who}\"}} 10",
        s.b
    );
    assert!(m.contains(&line), "{line} in\n{m}");
    let (st, b) = send(&rt, &admin, Method::GET, "/events?follow=false", vec![]);
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    // Tenant a's admin may not read tenant b's events: 404, as for a tenant that does not exist.
    let (st, _) = send(
        &rt,
        &ca,
        Method::GET,
        &format!("/events?follow=false{q}"),
        vec![],
    );
    assert_eq!(st, 404);
    s.stop_and_assert_clean();
}

fn sha256(p: &Path) -> String {
    ring::digest::digest(&ring::digest::SHA256, &std::fs::read(p).unwrap())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Replaces `p` by a changed copy, renamed over it (as an upgrade or an attacker would).
fn replace(p: &Path, extra: &[u8]) {
    let tmp = p.with_extension("new");
    let mut bytes = std::fs::read(p).unwrap();
    bytes.extend_from_slice(extra);
    std::fs::write(&tmp, bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, p).unwrap();
}

#[test]
fn a_changed_binary_or_config_raises_the_integrity_event() {
    if !privileged() {
        return;
    }
    // The daemon runs from copies of the binaries, so that one can be replaced.
    let dir = test_dir();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for b in ["bulkhead", "bulkhead-supervisor", "bulkhead-agent"] {
        std::fs::copy(Path::new(BIN).with_file_name(b), bin.join(b)).unwrap();
    }
    let tenant = unique_tenant("evi");
    let socket = dir.path().join("api.sock");
    let config = dir.path().join("tenant.yaml");
    let yaml = cli_ok(&["new", &tenant, "--socket", socket.to_str().unwrap()])
        + "  detection:\n    integrity_interval: 1s\n";
    std::fs::write(&config, &yaml).unwrap();
    let state = shared_state();
    let log = dir.path().join("daemon.log");
    let child = Command::new("unshare")
        .args(["--net", "--", "sh", "-c", UP_IN_NETNS])
        .arg(bin.join("bulkhead"))
        .arg("up")
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("daemon.err")).unwrap())
        .spawn()
        .unwrap();
    let read_log = || {
        std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(dir.path().join("daemon.err")).unwrap_or_default()
    };
    until(120, "the daemon from copies", || {
        read_log().contains("ready on").then_some(())
    });
    let (rt, c) = (
        rt(),
        bulkhead_api::Client::new(bulkhead_api::Endpoint::Unix(socket.clone())),
    );
    let info = |rt: &tokio::runtime::Runtime| -> Value {
        let (s, b) = send(rt, &c, Method::GET, "/info", vec![]);
        assert_eq!(s, 200);
        serde_json::from_slice(&b).unwrap()
    };
    let i = info(&rt);
    let files = i["integrity"].as_array().unwrap().clone();
    let names: Vec<&str> = files.iter().map(|f| f["file"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "bulkhead",
            "bulkhead-supervisor",
            "bulkhead-agent",
            "config"
        ]
    );
    for (f, p) in files.iter().zip([
        bin.join("bulkhead"),
        bin.join("bulkhead-supervisor"),
        bin.join("bulkhead-agent"),
        config.clone(),
    ]) {
        assert_eq!(f["sha256"].as_str().unwrap(), sha256(&p), "{f}");
        assert_eq!(f["changed"], false);
        // The socket's root peer is global-admin: it sees the paths.
        assert_eq!(f["path"].as_str().unwrap(), p.to_str().unwrap());
    }
    assert!(kept(&rt, &c, "").is_empty(), "nothing changed yet");

    replace(&bin.join("bulkhead-agent"), b"tampered");
    let ev = until(30, "integrity.changed for the agent", || {
        let ev = kept(&rt, &c, "");
        (!ev.is_empty()).then_some(ev)
    });
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["kind"], "integrity.changed");
    let det = &ev[0]["detail"];
    assert_eq!(det["file"], "bulkhead-agent");
    assert_eq!(det["sha256_at_start"], files[2]["sha256"]);
    assert_eq!(
        det["sha256_now"].as_str().unwrap(),
        sha256(&bin.join("bulkhead-agent"))
    );
    assert_eq!(det["changed_since_start"], true);
    let agent = &info(&rt)["integrity"][2];
    assert_eq!(
        (agent["changed"].as_bool(), agent["sha256_now"].as_str()),
        (Some(true), det["sha256_now"].as_str())
    );
    let (_, m) = send(&rt, &c, Method::GET, "/metrics", vec![]);
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.contains("bulkhead_integrity_changed{file=\"bulkhead-agent\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("bulkhead_integrity_changed{file=\"bulkhead\"} 0"),
        "{m}"
    );

    // The config, edited in place.
    std::fs::write(&config, yaml + "# edited\n").unwrap();
    let ev = until(30, "integrity.changed for the config", || {
        let ev = kept(&rt, &c, &format!("&since={}", ev[0]["cursor"]));
        (!ev.is_empty()).then_some(ev)
    });
    assert_eq!(ev.len(), 1, "one event per change: {ev:?}");
    assert_eq!(ev[0]["detail"]["file"], "config");

    stop_daemon(child, Duration::from_secs(30), read_log);
    let _ = std::fs::remove_dir_all(state.join("tenants").join(&tenant));
}

#[test]
fn the_webhook_gets_every_event_with_a_retry_after_a_failure() {
    if !privileged() {
        return;
    }
    let d = Daemon::start_edited("evw", &[], |y| {
        y + "  events:\n    webhook: {url: 'http://127.0.0.1:9100/events', timeout: 2s, retries: 10, buffer: 100}\n"
    });
    // The test's HTTP server, on the daemon's loopback (its network namespace): the first
    // delivery is answered 500, every later one 200.
    let l = in_ns(Path::new(&format!("/proc/{}/ns/net", d.pid())), || {
        std::net::TcpListener::bind("127.0.0.1:9100").unwrap()
    });
    let seen: Arc<Mutex<Vec<(u16, Value)>>> = Default::default();
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for (i, conn) in l.incoming().enumerate() {
            let Ok(mut s) = conn else { return };
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            while !got.ends_with(b"}") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&got).into_owned();
            let Some((head, body)) = text.split_once("\r\n\r\n") else {
                continue;
            };
            assert!(head.starts_with("POST /events HTTP/1.1"), "{head}");
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: application/json"),
                "{head}"
            );
            let status = if i == 0 { 500 } else { 200 };
            seen2
                .lock()
                .unwrap()
                .push((status, serde_json::from_str(body).unwrap()));
            let _ = write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    let n = d.add();
    let (rt, c) = (rt(), d.client());
    let (s, _) = send(
        &rt,
        &c,
        Method::DELETE,
        &format!("/hostgroup/{}/nodes/{n}", d.tenant),
        vec![],
    );
    assert_eq!(s, 200);
    let got = until(30, "both events delivered", || {
        let g = seen.lock().unwrap().clone();
        (g.iter().filter(|(s, _)| *s == 200).count() >= 2).then_some(g)
    });
    // The first delivery failed (500) and the same event came again.
    assert_eq!(got[0].0, 500);
    assert_eq!(got[1].1, got[0].1, "retried: the same event");
    let ok: Vec<&Value> = got
        .iter()
        .filter(|(s, _)| *s == 200)
        .map(|(_, e)| e)
        .collect();
    assert_eq!(ok[0]["kind"], "node.created");
    assert_eq!(ok[1]["kind"], "node.deleted");
    assert_eq!(ok[0]["node"], n.as_str());
    assert_eq!(
        ok[1]["cursor"].as_u64(),
        ok[0]["cursor"].as_u64().map(|c| c + 1)
    );
    // What the stream has is what the webhook got.
    let stream = kept(&rt, &c, "");
    assert_eq!(stream, ok.into_iter().cloned().collect::<Vec<_>>());
    let (_, m) = send(&rt, &c, Method::GET, "/metrics", vec![]);
    let m = String::from_utf8_lossy(&m);
    let t = &d.tenant;
    assert!(
        m.contains(&format!(
            "bulkhead_event_webhook_delivered_total{{tenant=\"{t}\"}} 2"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "bulkhead_event_webhook_retries_total{{tenant=\"{t}\"}} 1"
        )),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "bulkhead_event_webhook_dropped_total{{tenant=\"{t}\"}} 0"
        )),
        "{m}"
    );
    d.stop_and_assert_clean();
}
