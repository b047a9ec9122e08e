//! Suspend to disk and restore of a microVM node (ADR 0018), end to end under TCG: the
//! guest's memory goes to a file in the node's directory, QEMU ends, the node is Suspended
//! (`Stopped` on Slicer's wire); restore starts a fresh QEMU that loads the file, and a
//! process started before the suspend is still there, with its state, afterwards. One test:
//! microVMs under TCG are slow.

mod common;

use common::netlab::Netns;
use common::{privileged, vm_config, Daemon};

#[test]
fn microvm_suspend_to_disk_and_restore_keeps_a_process_and_its_state() {
    if !privileged() {
        return;
    }
    let netns = Netns::new();
    let d = Daemon::start_in(&netns.path(), "susp", &vm_config());
    let node = d
        .vm_ok(&["add", &d.tenant, "--timeout", "120s"])
        .trim()
        .to_string();
    // A process whose state lives only in memory: a shell counting in a variable. The exec
    // waits for its first count, so that it has left the exec's process group (which ends
    // with the exec) before the exec does.
    let (code, pid, err) = d.sh(
        &node,
        "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/n.t; mv /tmp/n.t /tmp/n; sleep 0.1; done' \
         </dev/null >/dev/null 2>&1 & \
         for i in $(seq 300); do [ -e /tmp/n ] && break; sleep 0.1; done; echo $!",
    );
    assert_eq!(code, 0, "{err}");
    let pid = pid.trim().to_string();
    let count = |d: &Daemon| -> u64 {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (_, out, err) = d.sh(&node, "cat /tmp/n 2>&1; echo; ps 2>&1 | head -20");
            if let Ok(n) = out.lines().next().unwrap_or_default().trim().parse::<u64>() {
                return n;
            }
            assert!(std::time::Instant::now() < until, "no count: {out} {err}");
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    };
    let before = count(&d);
    let init_before = d.supervisor_state(&node)["init_pid"].as_i64().unwrap();

    let out = d.vm_ok(&["suspend", &node]);
    assert!(out.contains("Suspended"), "{out}");
    let dir = d.tenant_dir().join("nodes").join(&node);
    let mem = std::fs::metadata(dir.join("suspended.mem")).expect("the memory file");
    assert!(mem.len() > 1 << 20, "memory file of {} bytes", mem.len());
    // Nothing of the node runs: exec says it is suspended; lists say Stopped.
    let o = d.vm(&["exec", &node, "--", "true"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Suspended"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let list = d.vm_ok(&["list", "--json"]);
    assert!(list.contains("\"Stopped\""), "{list}");
    assert!(d
        .vm_ok(&["describe", &node])
        .contains("state:     Suspended"));
    // Its QEMU (the node's init) has ended: its memory is on disk only.
    let init = d.supervisor_state(&node)["init_pid"].as_i64().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{init}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z "),
        "QEMU still runs: {stat}"
    );

    let out = d.vm_ok(&["restore", &node]);
    assert!(out.contains("Running"), "{out}");
    let init_after = d.supervisor_state(&node)["init_pid"].as_i64().unwrap();
    assert_ne!(
        init_before, init_after,
        "a fresh QEMU runs the restored guest"
    );
    // The same process, still counting from where it was: its memory came back.
    let (code, _, err) = d.sh(&node, &format!("kill -0 {pid}"));
    assert_eq!(
        code, 0,
        "the process started before the suspend is gone: {err}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = count(&d);
    assert!(after > before, "{before} -> {after}");
    assert!(
        !dir.join("suspended.mem").exists(),
        "the memory file is removed after restore"
    );
    d.stop_and_assert_clean();
}
