//! Seccomp violations as a detection signal (#14, part C; ADR 0033), end to end: a jail node
//! makes system calls its policy denies (unshare, mount: EPERM), the kernel logs an audit
//! record for each (the filters carry SECCOMP_FILTER_FLAG_LOG), and the daemon counts them as
//! that node's `bulkhead_seccomp_violations_total{tenant,node}` and emits `seccomp.violation`
//! events naming the node, the call and the process (on `GET /events` and in its log). A
//! second node that makes no such call keeps no counter and no event, and the calls answer
//! exactly as before (EPERM).

mod common;

use std::time::{Duration, Instant};

use common::answer::get;
use common::{privileged, Daemon};

/// This node's counter in a /metrics text (0 when it has none).
fn violations(metrics: &str, tenant: &str, node: &str) -> u64 {
    let key = format!("bulkhead_seccomp_violations_total{{tenant=\"{tenant}\",node=\"{node}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The tenant's kept `seccomp.violation` events (`GET /events`, `follow=false`).
fn violation_events(c: &bulkhead_api::Client, tenant: &str) -> Vec<serde_json::Value> {
    let a = get(c, &format!("/events?since=0&follow=false&tenant={tenant}"));
    assert!(a.status.is_success(), "GET /events: {}", a.text());
    a.body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap())
        .filter(|e| e["kind"] == "seccomp.violation")
        .collect()
}

/// Whether the kernel logs seccomp errno answers at all (a host setting, see
/// docs/detection.md); CI's host does.
fn errno_logged() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_logged")
        .is_ok_and(|a| a.split_whitespace().any(|x| x == "errno"))
}

#[test]
fn a_denied_syscall_in_a_jail_node_counts_for_that_node() {
    if !privileged() {
        return;
    }
    if !errno_logged() && std::env::var_os("CI").is_none() {
        eprintln!("skipped: this kernel does not log seccomp errno answers (actions_logged)");
        return;
    }
    let d = Daemon::start("seccomp", &[]);
    let c = d.client();
    let metrics = get(&c, "/metrics").text();
    assert!(
        metrics.contains("\nbulkhead_seccomp_watch_up 1\n"),
        "the kernel log reader is not running:\n{metrics}\n{}",
        d.log()
    );
    let node = d.add();
    let quiet = d.add();
    // Each node runs in an audit session of its own (the supervisor's, inherited by every
    // process of the node), not the daemon's: that is what names the node of a record whose
    // process has exited.
    let session = |pid: i64| {
        std::fs::read_to_string(format!("/proc/{pid}/sessionid"))
            .unwrap()
            .trim()
            .to_string()
    };
    let s1 = session(
        d.supervisor_state(&node)["supervisor_pid"]
            .as_i64()
            .unwrap(),
    );
    let s2 = session(
        d.supervisor_state(&quiet)["supervisor_pid"]
            .as_i64()
            .unwrap(),
    );
    let own = session(d.pid() as i64);
    assert!(
        s1 != s2 && s1 != own && s2 != own && s1 != "4294967295",
        "sessions: node {s1}, quiet {s2}, daemon {own}"
    );
    // Quiet work first: ordinary commands make no denied call (no false positives from libc,
    // the agent or busybox).
    let (code, _, err) = d.sh(&quiet, "ls / >/dev/null; echo hi | cat; sleep 0.2");
    assert_eq!(code, 0, "{err}");

    // Two denied calls by processes that exit at once, as a probe would: each answers EPERM.
    // The kernel's printk rate limit is host-wide (10 audit messages per 5 s): when something
    // else on the host spent it, the calls are made again after the next interval.
    let logged = |d: &Daemon, name: &str| {
        d.log().lines().any(|l| {
            l.contains("seccomp violation")
                && l.contains(&format!("node=\"{node}\""))
                && l.contains(&format!("name=\"{name}\""))
        })
    };
    let until = Instant::now() + Duration::from_secs(40);
    let mut m = String::new();
    'probe: while Instant::now() < until {
        let (code, _, err) = d.sh(&node, "unshare -m true; mount -t tmpfs x /mnt; exit 0");
        assert_eq!(code, 0, "{err}");
        // busybox says EPERM its own way for each.
        assert!(
            err.contains("unshare(0x20000): Operation not permitted")
                && err.contains("mount: permission denied"),
            "the denied calls must still answer EPERM: {err}"
        );
        let next = Instant::now() + Duration::from_secs(6);
        while Instant::now() < next {
            m = get(&c, "/metrics").text();
            if violations(&m, &d.tenant, &node) >= 2 && logged(&d, "unshare") && logged(&d, "mount")
            {
                break 'probe;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let n = violations(&m, &d.tenant, &node);
    assert!(
        n >= 2,
        "the node's counter is {n}, want at least 2:\n{m}\n{}",
        d.log()
    );
    assert_eq!(
        violations(&m, &d.tenant, &quiet),
        0,
        "the quiet node has violations:\n{m}\n{}",
        d.log()
    );
    // The event, in the daemon's log and on the tenant's event stream: one per call, naming
    // the node, the call (number and name) and the process; none for the quiet node.
    for name in ["unshare", "mount"] {
        assert!(
            logged(&d, name),
            "no seccomp.violation for {name} of {node} in the log:\n{}",
            d.log()
        );
    }
    let ev = violation_events(&c, &d.tenant);
    for name in ["unshare", "mount"] {
        assert!(
            ev.iter().any(|e| e["node"] == node.as_str()
                && e["tenant"] == d.tenant.as_str()
                && e["detail"]["name"] == name
                && e["detail"]["syscall"].as_i64().is_some()
                && e["detail"]["pid"].as_i64().is_some()),
            "no seccomp.violation event for {name} of {node} on GET /events: {ev:?}"
        );
    }
    assert!(
        ev.iter().all(|e| e["node"] == node.as_str()),
        "violation events for another node than {node}: {ev:?}"
    );
    d.stop_and_assert_clean();
}
