//! The supervisor's control channel (`supervisor.sock`, ADR 0015), end to end: it reports how
//! a node's init ended (a signal, an exit code), keeps answering until the node is deleted,
//! and the API shows the node Stopped without an exec having to find out, also across a
//! daemon restart.

mod common;

use bulkhead_driver::control::client::request;
use bulkhead_driver::control::{ExitStatus, Phase, Request};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const ANSWER: Option<Duration> = Some(Duration::from_secs(5));

fn status_of(d: &Daemon, node: &str) -> Option<bulkhead_api::NodeStatus> {
    let nodes: Vec<bulkhead_api::Node> =
        serde_json::from_str(&d.vm_ok(&["list", "--json"])).unwrap();
    nodes
        .into_iter()
        .find(|n| n.hostname == node)
        .map(|n| n.status)
}

/// Waits until the API lists `node` as Stopped; panics after 10 s.
fn until_stopped(d: &Daemon, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = status_of(d, node);
        if st == Some(bulkhead_api::NodeStatus::Stopped) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} is still {st:?} after its init exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn the_supervisor_reports_how_the_init_ended_and_the_api_shows_stopped() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("ctl", &[]);
    let (a, b) = (d.add(), d.add());
    let dir = |n: &str| d.tenant_dir().join("nodes").join(n);
    let sup = d.supervisor_state(&a);
    let (init, sup_pid) = (
        sup["init_pid"].as_i64().unwrap(),
        sup["supervisor_pid"].as_i64().unwrap(),
    );

    let sock = dir(&a).join("supervisor.sock");
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the control socket is root's only");
    let s = request(&dir(&a), Request::State, ANSWER).unwrap();
    assert_eq!(s.phase, Phase::Running);
    assert_eq!(
        (s.init_pid as i64, s.supervisor_pid as i64),
        (init, sup_pid)
    );
    assert_eq!(status_of(&d, &a), Some(bulkhead_api::NodeStatus::Running));

    // A wait parks until the init is gone; SIGKILL from outside ends it.
    let da = dir(&a);
    let waiter =
        std::thread::spawn(move || request(&da, Request::Wait, Some(Duration::from_secs(30))));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!waiter.is_finished(), "wait answered while the init ran");
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // SAFETY: killing the init of a node this test created, by its recorded pid.
    unsafe { libc::kill(init as i32, libc::SIGKILL) };
    let w = waiter.join().unwrap().unwrap();
    match w.phase {
        Phase::Exited { exit, at_unix_ms } => {
            assert_eq!(exit, ExitStatus::Signal(libc::SIGKILL));
            assert!(
                at_unix_ms >= t0 && at_unix_ms < t0 + 10_000,
                "{at_unix_ms} vs {t0}"
            );
        }
        p => panic!("wait answered {p:?}"),
    }
    // The supervisor stays, and says so again; there is nothing left to signal.
    assert!(
        alive(sup_pid),
        "the supervisor left before the node was deleted"
    );
    let again = request(&dir(&a), Request::State, ANSWER).unwrap();
    assert_eq!(again, w);
    let e = request(&dir(&a), Request::Kill { signal: 15 }, ANSWER).unwrap_err();
    assert!(e.to_string().contains("exited"), "{e}");
    // The daemon heard it too: no exec needed for the API to say Stopped.
    until_stopped(&d, &a);

    // SIGTERM through the channel: the agent ends its node and exits 0.
    let s = request(&dir(&b), Request::Kill { signal: 15 }, ANSWER).unwrap();
    assert_eq!(
        s.phase,
        Phase::Running,
        "kill answers with the state it found"
    );
    let w = request(&dir(&b), Request::Wait, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(w.exit(), Some(ExitStatus::Code(0)), "{w:?}");
    until_stopped(&d, &b);
    let o = d.vm(&["exec", &b, "--", "true"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has stopped"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let bad = request(&dir(&b), Request::Kill { signal: 0 }, ANSWER).unwrap_err();
    assert!(bad.to_string().contains("not a signal"), "{bad}");

    // Delete ends the supervisor and its channel.
    d.vm_ok(&["delete", &a]);
    assert!(!alive(sup_pid), "the supervisor outlived its node's delete");
    assert!(!sock.exists());
    d.vm_ok(&["delete", &b]);
    d.stop_and_assert_clean();
}

#[test]
fn an_init_that_exits_while_the_daemon_is_down_reads_stopped_after_restart() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("ctlr", &[]);
    let (gone, kept) = (d.add(), d.add());
    d.crash();
    let init = d.supervisor_state(&gone)["init_pid"].as_i64().unwrap();
    // SAFETY: killing the init of a node this test created, by its recorded pid.
    unsafe { libc::kill(init as i32, libc::SIGKILL) };
    let dir = d.tenant_dir().join("nodes").join(&gone);
    let w = request(&dir, Request::Wait, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(w.exit(), Some(ExitStatus::Signal(libc::SIGKILL)));
    d.spawn();
    assert_eq!(
        status_of(&d, &gone),
        Some(bulkhead_api::NodeStatus::Stopped)
    );
    assert_eq!(
        status_of(&d, &kept),
        Some(bulkhead_api::NodeStatus::Running)
    );
    assert_eq!(d.sh(&kept, "echo up").1, "up\n");
    // The re-adopted node is watched again: its exit shows up without an exec.
    let init = d.supervisor_state(&kept)["init_pid"].as_i64().unwrap();
    // SAFETY: as above.
    unsafe { libc::kill(init as i32, libc::SIGKILL) };
    until_stopped(&d, &kept);
    d.vm_ok(&["delete", &gone]);
    d.vm_ok(&["delete", &kept]);
    d.stop_and_assert_clean();
}
