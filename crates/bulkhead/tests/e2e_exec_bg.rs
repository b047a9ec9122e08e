//! End to end, over a real daemon and node: background execs (ADR 0016): start, list, info,
//! logs with `follow`, `from_id` and a `gap` when the ring overflowed, kill with a grace
//! before SIGKILL, wait-exit, delete, the per-node limit, scoping to the node, the CLI, what
//! a daemon restart does to them, and one in a microVM node. Foreground exec shapes:
//! `e2e_exec_wire.rs`.

mod common;

use bulkhead_api::{BgExecInfo, BgExecStarted, BgKillResponse, BgWaitExit};
use common::exec_wire::*;
use common::*;
use hyper::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[test]
fn background_execs() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("exbg", &[]);
    let n = d.add();
    let n2 = d.add();
    let rt = rt();
    let c = d.client();
    let start = |node: &str, q: &str| -> BgExecStarted {
        ok_json(
            &rt,
            &c,
            Method::POST,
            &format!("/vm/{node}/exec?background=true&stdio=base64&{q}"),
            None,
        )
    };
    let wait = |node: &str, id: &str, secs: u64| -> BgWaitExit {
        ok_json(
            &rt,
            &c,
            Method::GET,
            &format!("/vm/{node}/exec/{id}/wait-exit?timeout={secs}"),
            None,
        )
    };
    let logs = |node: &str, id: &str, q: &str| -> Vec<Value> {
        let (s, b) = send(
            &rt,
            &c,
            Method::GET,
            &format!("/vm/{node}/exec/{id}/logs{q}"),
            vec![],
        );
        assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
        ndjson(&b)
    };

    // Start, list, info, logs of a running command.
    let a = start(&n, "cmd=sh&args=-c&args=echo%20one;%20exec%20sleep%20300");
    assert!(
        a.exec_id.starts_with("ex_") && a.exec_id.len() == 35,
        "{}",
        a.exec_id
    );
    assert!(a.pid > 1 && a.ring_bytes == 1 << 20);
    let l: Vec<BgExecInfo> = ok_json(&rt, &c, Method::GET, &format!("/vm/{n}/exec"), None);
    assert_eq!(l.len(), 1);
    assert!(l[0].running && l[0].command == "sh" && l[0].args[0] == "-c");
    let deadline = Instant::now() + Duration::from_secs(10);
    let f = loop {
        let f = logs(&n, &a.exec_id, "");
        if output(&f, "stdout") == b"one\n" || Instant::now() > deadline {
            break f;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(output(&f, "stdout"), b"one\n");
    assert_eq!(
        (f[0]["type"].as_str(), f[0]["id"].as_u64()),
        (Some("started"), Some(1))
    );
    assert_eq!(f[1]["id"], 2);
    // The exec is its node's: another node answers 404, a made-up id too.
    for p in [
        format!("/vm/{n2}/exec/{}", a.exec_id),
        format!("/vm/{n}/exec/ex_{}", "0".repeat(32)),
    ] {
        let (s, b) = send(&rt, &c, Method::GET, &p, vec![]);
        assert_eq!(s, 404, "{p}: {}", String::from_utf8_lossy(&b));
    }
    // Still running: a short wait times out, delete is refused.
    let t = Instant::now();
    let w = wait(&n, &a.exec_id, 1);
    assert!(w.running && w.timed_out && t.elapsed() >= Duration::from_millis(900));
    let (s, b) = send(
        &rt,
        &c,
        Method::DELETE,
        &format!("/vm/{n}/exec/{}", a.exec_id),
        vec![],
    );
    assert_eq!(s, 409);
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["code"],
        "exec_running"
    );
    // Kill (SIGTERM by default), then the exit by name.
    let k: BgKillResponse = ok_json(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec/{}/kill", a.exec_id),
        None,
    );
    assert!(k.running && k.signal_sent == "SIGTERM" && k.pid == a.pid);
    let w = wait(&n, &a.exec_id, 10);
    assert!(!w.running && !w.timed_out);
    assert_eq!(
        (w.exit_code, w.signal.as_deref()),
        (Some(143), Some("SIGTERM"))
    );
    let last = logs(&n, &a.exec_id, "").pop().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["signal"].as_str()),
        (Some("exit"), Some("SIGTERM"))
    );
    // A kill of an ended exec sends nothing.
    let k: BgKillResponse = ok_json(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec/{}/kill", a.exec_id),
        Some(json!({"signal": "KILL"})),
    );
    assert!(!k.running && k.signal_sent.is_empty());
    // Delete: reaped, then 410, and gone from the list.
    let del: Value = ok_json(
        &rt,
        &c,
        Method::DELETE,
        &format!("/vm/{n}/exec/{}", a.exec_id),
        None,
    );
    assert_eq!(del, json!({"exec_id": a.exec_id, "reaped": true}));
    let (s, _) = send(
        &rt,
        &c,
        Method::GET,
        &format!("/vm/{n}/exec/{}", a.exec_id),
        vec![],
    );
    assert_eq!(s, 410);
    assert!(
        ok_json::<Vec<BgExecInfo>>(&rt, &c, Method::GET, &format!("/vm/{n}/exec"), None).is_empty()
    );

    // `escalate: false` sends the signal alone (#16: containerd's Kill escalates by itself):
    // a command that ignores it keeps running past the grace.
    let h = start(
        &n,
        "cmd=trap%20%27%27%20TERM;%20echo%20ready;%20sleep%20300&shell=/bin/sh",
    );
    while output(&logs(&n, &h.exec_id, ""), "stdout") != b"ready\n" {
        std::thread::sleep(Duration::from_millis(50));
    }
    let k: BgKillResponse = ok_json(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec/{}/kill", h.exec_id),
        Some(json!({"signal": "TERM", "grace_ms": 100, "escalate": false})),
    );
    assert!(k.running && k.signal_sent == "SIGTERM");
    let w = wait(&n, &h.exec_id, 2);
    assert!(w.running && w.timed_out, "{w:?}");
    let _: BgKillResponse = ok_json(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec/{}/kill", h.exec_id),
        Some(json!({"signal": "KILL"})),
    );
    assert_eq!(wait(&n, &h.exec_id, 10).exit_code, Some(137));

    // A command that ignores SIGTERM gets SIGKILL after the grace.
    let b = start(
        &n,
        "cmd=trap%20%27%27%20TERM;%20echo%20ready;%20sleep%20300&shell=/bin/sh",
    );
    while output(&logs(&n, &b.exec_id, ""), "stdout") != b"ready\n" {
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    let k: BgKillResponse = ok_json(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec/{}/kill", b.exec_id),
        Some(json!({"signal": "TERM", "grace_ms": 700})),
    );
    assert!(k.running);
    let w = wait(&n, &b.exec_id, 10);
    assert_eq!(
        (w.exit_code, w.signal.as_deref()),
        (Some(137), Some("SIGKILL"))
    );
    assert!(
        t.elapsed() >= Duration::from_millis(650),
        "{:?}",
        t.elapsed()
    );

    // Follow: frames as they come, ending with the exit; from_id resumes.
    let f_ = start(&n, "cmd=sh&args=-c&args=sleep%201;%20echo%20late");
    let f = logs(&n, &f_.exec_id, "?follow=true");
    assert_eq!(output(&f, "stdout"), b"late\n");
    assert_eq!(f.last().unwrap()["type"], "exit");
    let f = logs(&n, &f_.exec_id, "?from_id=2");
    assert_eq!(f[0]["id"], 2);
    assert!(f.iter().all(|x| x["type"] != "started"));

    // A ring overflow: the start of the output is dropped and said to be.
    let o = start(
        &n,
        "cmd=sh&args=-c&args=head%20-c%20100000%20/dev/zero&ring_bytes=4096",
    );
    assert_eq!(wait(&n, &o.exec_id, 10).exit_code, Some(0));
    let f = logs(&n, &o.exec_id, "");
    assert_eq!(f[0]["type"], "gap", "{}", f[0]);
    assert_eq!(f[0]["id"], 1);
    assert!(f[0]["dropped_frames"].as_u64().unwrap() >= 1);
    assert!(f[0]["dropped_bytes"].as_u64().unwrap() >= 100000 - 4096);
    assert!(f[0]["message"].as_str().unwrap().contains("ring_bytes"));
    // Whole frames go, so the ring keeps at most its size of the output's end.
    let kept = output(&f, "stdout");
    assert!(
        !kept.is_empty() && kept.len() <= 4096 && kept.iter().all(|b| *b == 0),
        "{}",
        kept.len()
    );
    let i: BgExecInfo = ok_json(
        &rt,
        &c,
        Method::GET,
        &format!("/vm/{n}/exec/{}", o.exec_id),
        None,
    );
    assert_eq!((i.bytes_written, i.ring_bytes), (100000, 4096));
    assert_eq!(i.bytes_dropped, 100000 - kept.len() as u64);
    assert_eq!(i.exit_code, Some(0));

    // A missing command in the background has exited 127.
    let m = start(&n, "cmd=no-such-command");
    let w = wait(&n, &m.exec_id, 5);
    assert_eq!(w.exit_code, Some(127));
    assert!(
        String::from_utf8_lossy(&output(&logs(&n, &m.exec_id, ""), "stderr")).contains("not found")
    );

    // The per-node limit (16, exited ones included), then room again after a delete.
    let mut ids = Vec::new();
    for _ in 0..16 {
        ids.push(start(&n2, "cmd=sleep&args=300").exec_id);
    }
    let (s, b) = send(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n2}/exec?background=true&cmd=true"),
        vec![],
    );
    assert_eq!(s, 429, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["code"],
        "too_many_background_execs"
    );
    let k: BgKillResponse = ok_json(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n2}/exec/{}/kill", ids[0]),
        Some(json!({"signal": "SIGKILL"})),
    );
    assert_eq!(k.signal_sent, "SIGKILL");
    wait(&n2, &ids[0], 10);
    let _: Value = ok_json(
        &rt,
        &c,
        Method::DELETE,
        &format!("/vm/{n2}/exec/{}", ids[0]),
        None,
    );
    start(&n2, "cmd=true");

    // The CLI: exec --bg, bg wait, logs, list, kill, rm.
    let id = d.vm_ok(&[
        "exec",
        &n,
        "--bg",
        "--",
        "sh",
        "-c",
        "printf 'a\\0b'; echo err >&2; exit 3",
    ]);
    let id = id.trim();
    assert!(id.starts_with("ex_"), "{id}");
    assert_eq!(
        d.vm(&["bg", "wait", &n, id, "--timeout", "10"])
            .status
            .code(),
        Some(3)
    );
    let o = d.vm(&["bg", "logs", &n, id]);
    assert_eq!(o.stdout, b"a\0b");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    assert!(d.vm_ok(&["bg", "list", &n]).contains(id));
    d.vm_ok(&["bg", "rm", &n, id]);
    assert!(!d.vm_ok(&["bg", "list", &n]).contains(id));
    let id = d.vm_ok(&["exec", &n, "--bg", "--", "sleep", "300"]);
    assert!(d
        .vm_ok(&["bg", "kill", &n, id.trim(), "--signal", "INT"])
        .contains("SIGINT"));
    assert_eq!(
        d.vm(&["bg", "wait", &n, id.trim()]).status.code(),
        Some(130)
    );

    // A deleted node takes its execs along (and their commands: the node is clean after).
    d.vm_ok(&["delete", &n2]);
    let (s, _) = send(
        &rt,
        &c,
        Method::GET,
        &format!("/vm/{n2}/exec/{}", ids[1]),
        vec![],
    );
    assert_eq!(s, 404);
    d.stop_and_assert_clean();
}

/// ADR 0016: background execs live in the daemon's memory; when it stops, its sessions close,
/// the agent kills their commands, and the restarted daemon lists none.
#[test]
fn background_execs_end_with_the_daemon() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("exbgr", &[]);
    let n = d.add();
    let rt = rt();
    let c = d.client();
    let s: BgExecStarted = ok_json(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec?background=true&cmd=sleep&args=31337"),
        None,
    );
    let (_, ps, _) = d.sh(&n, "ps -o args | grep -c '^sleep 31337' || true");
    assert_eq!(ps.trim(), "1");
    d.crash();
    d.spawn();
    let c = d.client();
    let l: Vec<BgExecInfo> = ok_json(&rt, &c, Method::GET, &format!("/vm/{n}/exec"), None);
    assert!(l.is_empty(), "{l:?}");
    let (st, _) = send(
        &rt,
        &c,
        Method::GET,
        &format!("/vm/{n}/exec/{}", s.exec_id),
        vec![],
    );
    assert_eq!(st, 404);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, ps, _) = d.sh(&n, "ps -o args | grep -c '^sleep 31337' || true");
        if ps.trim() == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the background command outlived its daemon"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    d.stop_and_assert_clean();
}

/// The same session-holding background exec in a microVM node (the agent's frames travel over
/// virtio-serial): output through the ring, a kill, the exit by name.
#[test]
fn background_exec_in_a_microvm() {
    if !privileged() {
        return;
    }
    let netns = common::netlab::Netns::new();
    let d = Daemon::start_in(&netns.path(), "exbgvm", &vm_config());
    let n = d
        .vm_ok(&["add", &d.tenant, "--timeout", "180s"])
        .trim()
        .to_string();
    let rt = rt();
    let c = d.client();
    let s: BgExecStarted = ok_json(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec?background=true&stdio=base64&cmd=sh&args=-c&args=echo%20vm;%20exec%20sleep%20300"),
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, b) = send(
            &rt,
            &c,
            Method::GET,
            &format!("/vm/{n}/exec/{}/logs", s.exec_id),
            vec![],
        );
        if output(&ndjson(&b), "stdout") == b"vm\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no output from the microVM's background exec"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let k: BgKillResponse = ok_json(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec/{}/kill", s.exec_id),
        Some(json!({"signal": "TERM", "grace_ms": 10000})),
    );
    assert!(k.running && k.signal_sent == "SIGTERM");
    let w: BgWaitExit = ok_json(
        &rt,
        &c,
        Method::GET,
        &format!("/vm/{n}/exec/{}/wait-exit?timeout=60", s.exec_id),
        None,
    );
    assert_eq!(
        (w.exit_code, w.signal.as_deref()),
        (Some(143), Some("SIGTERM"))
    );
    d.stop_and_assert_clean();
}
