//! Noisy neighbours on one shared daemon (issue #12), pass/fail only: what the P5 benchmark
//! (`benches/noisy.rs`) relies on. A tenant's fork bomb stops at its node's `pids_max` and
//! keeps hitting it while the other tenant still creates nodes and execs, and the bomb's node can still be deleted; a
//! tenant's memory hog is OOM-killed inside its own node (its agent survives) while the other
//! tenant's node keeps its state and records no OOM kill. No timing thresholds here:
//! performance lives in the benchmark.

mod common;

use common::shared::Shared;
use common::*;
use hyper::Method;
use std::time::{Duration, Instant};

/// The aggressor (tenant `b`)'s limits per node.
const PIDS: u32 = 64;

/// A shared daemon whose second tenant's group has `pids_max: 64`.
fn start() -> Shared {
    let pids = format!("          pids_max: {PIDS}\n");
    Shared::start_with_groups(&["", &pids], "", "")
}

/// A file of `node`'s cgroup (tenant `t`), v1 or v2 name. The node's cgroup directory is
/// searched below bulkhead's (at most four levels, `t` in its path), not spelled out.
fn cgroup(s: &Shared, t: &str, node: &str, controller: &str, v1: &str, v2: &str) -> String {
    let id = bulkhead_driver::spec::spec_cgroup(
        &s.state.join("tenants").join(t).join("nodes").join(node),
    )
    .expect("node spec names its cgroup");
    let root = std::path::Path::new("/sys/fs/cgroup");
    let mut level = vec![
        root.join(controller).join("bulkhead"),
        root.join("bulkhead"),
    ];
    for _ in 0..4 {
        let mut next = Vec::new();
        for d in level {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if !p.is_dir() {
                    continue;
                }
                if e.file_name() == id.as_str() && p.components().any(|c| c.as_os_str() == t) {
                    return std::fs::read_to_string(p.join(v1))
                        .or_else(|_| std::fs::read_to_string(p.join(v2)))
                        .unwrap_or_else(|e| panic!("{}: {v1} / {v2}: {e}", p.display()));
                }
                next.push(p);
            }
        }
        level = next;
    }
    panic!("no cgroup {id} of tenant {t} below /sys/fs/cgroup/{controller}/bulkhead or /sys/fs/cgroup/bulkhead")
}

/// The number after `key ` in a flat-keyed cgroup file.
fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Runs `sh -c script` in `node` through `sock`: (exit code, stdout).
fn sh(s: &Shared, sock: &std::path::Path, node: &str, script: &str) -> (i32, String) {
    let o = s.vm(sock, &["exec", node, "--", "sh", "-c", script]);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn delete(c: &bulkhead_api::Client, group: &str, node: &str) {
    rt().block_on(c.json::<serde_json::Value>(
        Method::DELETE,
        &format!("/hostgroup/{group}/nodes/{node}"),
        None,
    ))
    .unwrap_or_else(|e| panic!("delete {node}: {e}"));
}

#[test]
fn a_fork_bomb_stays_at_its_nodes_pids_limit() {
    if !privileged() {
        return;
    }
    let s = start();
    let (v, a) = (s.a.clone(), s.b.clone());
    let (sv, sa) = (s.tenant_sock(&v), s.tenant_sock(&a));
    let calm = s.add(&sv, &v);
    assert_eq!(sh(&s, &sv, &calm, "echo calm > /tmp/state").0, 0);
    let bomb = s.add(&sa, &a);
    // The classic bomb, started again every 0.1 s by watch (a lone busybox bomb dies out at
    // its first failed fork), in the background, a second after the exec's answer (a bomb
    // that fills the node before the agent can answer is ended with a 429 pids_limit).
    let path = format!(
        "/vm/{bomb}/exec?cmd=sh&args=-c&args={}&background=true",
        bulkhead_api::client::enc(
            "sleep 1; exec watch -n 0.1 -t 'f(){ f | f & }; f' >/dev/null 2>&1"
        )
    );
    rt().block_on(
        s.tenant_client(&a)
            .json::<serde_json::Value>(Method::POST, &path, None),
    )
    .expect("start the fork bomb");
    // It reaches the node's cap, and never goes beyond it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = cgroup(&s, &a, &bomb, "pids", "pids.events", "pids.events");
        if field(&events, "max") >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the fork bomb never hit pids_max: {events}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let current: u32 = cgroup(&s, &a, &bomb, "pids", "pids.current", "pids.current")
        .trim()
        .parse()
        .unwrap();
    assert!(current <= PIDS, "{current} pids in a node capped at {PIDS}");
    let hits = || {
        field(
            &cgroup(&s, &a, &bomb, "pids", "pids.events", "pids.events"),
            "max",
        )
    };
    let before = hits();
    // The other tenant, while the bomb runs: its node keeps its state, execs, and a new node
    // starts and execs.
    assert_eq!(sh(&s, &sv, &calm, "cat /tmp/state"), (0, "calm\n".into()));
    let fresh = s.add(&sv, &v);
    assert_eq!(sh(&s, &sv, &fresh, "echo fresh"), (0, "fresh\n".into()));
    // The bomb kept forking meanwhile: its cap was hit again (watched for a few seconds, since
    // on a loaded host the other tenant's work can fall between two of the bomb's rounds).
    let deadline = Instant::now() + Duration::from_secs(10);
    while hits() <= before {
        assert!(
            Instant::now() < deadline,
            "the bomb stopped forking while the other tenant worked"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The bomb's node can be deleted (every process of it ends), and its tenant goes on.
    delete(&s.tenant_client(&a), &a, &bomb);
    let listed = s.vm(&sa, &["list"]);
    assert!(
        !String::from_utf8_lossy(&listed.stdout).contains(&bomb),
        "{bomb} still listed"
    );
    let next = s.add(&sa, &a);
    assert_eq!(sh(&s, &sa, &next, "echo next"), (0, "next\n".into()));
    s.stop_and_assert_clean();
}

#[test]
fn a_memory_hog_is_killed_inside_its_own_node() {
    if !privileged() {
        return;
    }
    let s = start();
    let (v, a) = (s.a.clone(), s.b.clone());
    let (sv, sa) = (s.tenant_sock(&v), s.tenant_sock(&a));
    let calm = s.add(&sv, &v);
    assert_eq!(sh(&s, &sv, &calm, "echo calm > /tmp/state").0, 0);
    let hog = s.add(&sa, &a);
    // One shell holding ~200 MB in a node of 128 MiB.
    let (code, out) = sh(
        &s,
        &sa,
        &hog,
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    );
    assert_ne!(code, 0, "the memory hog was not stopped: {out}");
    let oom = |t: &str, n: &str| {
        let f = cgroup(&s, t, n, "memory", "memory.oom_control", "memory.events");
        field(&f, "oom_kill")
    };
    assert!(oom(&a, &hog) >= 1, "no OOM kill recorded in the hog's node");
    // The hog's node lives on (its agent was not the victim) ...
    assert_eq!(sh(&s, &sa, &hog, "echo alive"), (0, "alive\n".into()));
    // ... and the other tenant's node was never touched.
    assert_eq!(oom(&v, &calm), 0, "the other tenant's node saw an OOM kill");
    assert_eq!(sh(&s, &sv, &calm, "cat /tmp/state"), (0, "calm\n".into()));
    let fresh = s.add(&sv, &v);
    assert_eq!(sh(&s, &sv, &fresh, "echo fresh"), (0, "fresh\n".into()));
    s.stop_and_assert_clean();
}
