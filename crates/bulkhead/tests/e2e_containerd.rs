//! containerd end to end (#16): Debian's containerd started by the test (its own root, state,
//! socket and config, in a network namespace the test made), an OCI image built in Rust and
//! imported with `ctr image import`, and `ctr` driving `containerd-shim-bulkhead-v2` against a
//! test daemon's `api.shim` listener. The lab and the image are proven first with Debian's
//! runc, so a failure of the bulkhead cases is the shim's or the daemon's, not the lab's.

mod common;

use common::containerd::{shim_daemon_yaml, shim_toml, Containerd, Lab, LabConfig, RUNC, RUNTIME};
use common::netlab::Netns;
use common::oci::{write_test_images, BUSYBOX, PAUSE};
use std::process::Output;
use std::time::{Duration, Instant};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Imports the test images and checks both are named.
fn import(c: &Containerd) {
    let archive = write_test_images(c.dir.path());
    let names = c.import(&archive);
    for n in [BUSYBOX, PAUSE] {
        assert!(names.lines().any(|l| l == n), "{n} not imported: {names}");
    }
}

/// The status `ctr task ls` shows for `id` (RUNNING, PAUSED, STOPPED, ...).
fn task_status(c: &Containerd, id: &str) -> String {
    let ls = c.ctr_ok(&["task", "ls"]);
    ls.lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("task {id} not listed: {ls}"))
        .to_string()
}

fn wait_status(c: &Containerd, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = task_status(c, id);
        if s == want {
            return;
        }
        assert!(Instant::now() < deadline, "task {id} is {s}, not {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The daemon lists no node (before it is stopped: stopping deletes nodes, hiding a leak).
fn assert_no_nodes(lab: &Lab) {
    let nodes: serde_json::Value =
        serde_json::from_str(&lab.daemon.vm_ok(&["list", "--json"])).expect("vm list --json");
    let n = nodes
        .as_array()
        .or_else(|| nodes.get("nodes").and_then(|v| v.as_array()))
        .map(Vec::len);
    assert_eq!(n, Some(0), "nodes left: {nodes}");
}

/// Deletes a task and its container (`ctr task delete`, `ctr container delete`).
fn remove(c: &Containerd, id: &str) {
    c.ctr_ok(&["task", "delete", id]);
    c.ctr_ok(&["container", "delete", id]);
}

/// Lifecycle cases the two runtimes share: output and exit code, exec, exec with a TTY,
/// SIGTERM and SIGKILL, pause and resume, delete. `rt` is the `ctr run` runtime arguments.
fn lifecycle(c: &Containerd, rt: &[&str]) {
    // Output and exit code, --rm.
    let id = "once";
    c.track(id);
    let mut a = vec!["run", "--rm"];
    a.extend_from_slice(rt);
    a.extend_from_slice(&[BUSYBOX, id, "sh", "-c", "echo hi; id -u; exit 3"]);
    let o = c.ctr(&a);
    assert_eq!(o.status.code(), Some(3), "ctr run: {}", text(&o));
    assert_eq!(stdout(&o), "hi\n0\n", "ctr run: {}", text(&o));

    // A long task: exec with and without a TTY, pause/resume, SIGTERM.
    let id = "long";
    c.track(id);
    let mut a = vec!["run", "-d"];
    a.extend_from_slice(rt);
    // A shell that ends on SIGTERM: under runc it is its pid namespace's init, which has no
    // default action for SIGTERM.
    a.extend_from_slice(&[
        BUSYBOX,
        id,
        "sh",
        "-c",
        "trap 'exit 143' TERM; sleep 600 & wait",
    ]);
    c.ctr_ok(&a);
    wait_status(c, id, "RUNNING");
    let o = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        id,
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7), "exec: {}", text(&o));
    assert_eq!(stdout(&o), "out\n", "exec: {}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "err\n",
        "exec: {}",
        text(&o)
    );
    let (code, out) = c.ctr_tty(
        &[
            "task",
            "exec",
            "--tty",
            "--exec-id",
            "e2",
            id,
            "sh",
            "-c",
            "[ -t 0 ] && [ -t 1 ] && tty && exit 5",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(code, 5, "exec --tty: {out}");
    assert!(
        out.contains("/dev/pts/"),
        "exec --tty has no terminal: {out}"
    );

    c.ctr_ok(&["task", "pause", id]);
    wait_status(c, id, "PAUSED");
    c.ctr_ok(&["task", "resume", id]);
    wait_status(c, id, "RUNNING");
    let o = c.ctr(&["task", "exec", "--exec-id", "e3", id, "echo", "back"]);
    assert_eq!(stdout(&o), "back\n", "exec after resume: {}", text(&o));

    c.ctr_ok(&["task", "kill", "-s", "SIGTERM", id]);
    wait_status(c, id, "STOPPED");
    remove(c, id);

    // SIGKILL to a process that ignores SIGTERM.
    let id = "stubborn";
    c.track(id);
    let mut a = vec!["run", "-d"];
    a.extend_from_slice(rt);
    a.extend_from_slice(&[
        BUSYBOX,
        id,
        "sh",
        "-c",
        "trap '' TERM; while :; do sleep 1; done",
    ]);
    c.ctr_ok(&a);
    wait_status(c, id, "RUNNING");
    c.ctr_ok(&["task", "kill", "-s", "SIGTERM", id]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(task_status(c, id), "RUNNING", "SIGTERM was to be ignored");
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
    wait_status(c, id, "STOPPED");
    remove(c, id);
}

/// The lab and the image, proven with Debian's runc: import names both images, and the
/// shared lifecycle passes; nothing of containerd or runc is left afterwards.
#[test]
fn lab_and_image_with_runc() {
    if !common::privileged() {
        return;
    }
    let netns = Netns::new();
    let c = Containerd::start(&netns.path(), LabConfig::default());
    import(&c);
    lifecycle(&c, &["--runtime", RUNC]);
    // The pause image runs its sleep.
    c.track("pause");
    c.ctr_ok(&["run", "-d", "--runtime", RUNC, PAUSE, "pause"]);
    wait_status(&c, "pause", "RUNNING");
    c.ctr_ok(&["task", "kill", "-s", "SIGKILL", "pause"]);
    wait_status(&c, "pause", "STOPPED");
    remove(&c, "pause");
    c.stop_and_assert_clean();
}

/// The same lifecycle through `containerd-shim-bulkhead-v2` and a jail node, with the daemon
/// found through `--runtime-config-path`; nothing of the node, the lab or the daemon is left.
#[test]
fn ctr_through_the_bulkhead_shim() {
    if !common::privileged() {
        return;
    }
    let lab = Lab::start("ctrj", &shim_daemon_yaml(false), None);
    let c = &lab.containerd;
    import(c);
    let cfg = shim_toml(c.dir.path(), "jail.toml", &lab.daemon.shim_socket(), "jail");
    let rt = [
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        cfg.to_str().unwrap(),
    ];
    lifecycle(c, &rt);

    // Refused specs: the error names the field and the reason, and nothing is left of them.
    for (id, flag, needle) in [
        ("priv", "--privileged", "process.capabilities"),
        ("hostnet", "--net-host", "linux.namespaces"),
    ] {
        c.track(id);
        let mut a = vec!["run", "--rm", flag];
        a.extend_from_slice(&rt);
        a.extend_from_slice(&[BUSYBOX, id, "true"]);
        let o = c.ctr(&a);
        assert!(!o.status.success(), "{flag} was run: {}", text(&o));
        assert!(text(&o).contains(needle), "{flag}: {}", text(&o));
        let _ = c.ctr(&["container", "delete", id]);
    }
    // No node of the tenant remains (the daemon's own list).
    assert_no_nodes(&lab);
    lab.stop_and_assert_clean();
}

/// Failures around the node: a containerd restart finds the running shim again (the task
/// still runs and takes execs), and the shim's death ends the task as containerd sees it, while
/// `containerd-shim-bulkhead-v2 delete` (which containerd runs for a dead shim) removes the
/// node from `bulkhead.json`: nothing is left.
#[test]
fn a_containerd_restart_and_a_dead_shim() {
    if !common::privileged() {
        return;
    }
    let mut lab = Lab::start("ctrr", &shim_daemon_yaml(false), None);
    import(&lab.containerd);
    let cfg = shim_toml(
        lab.containerd.dir.path(),
        "jail.toml",
        &lab.daemon.shim_socket(),
        "jail",
    );
    let cfg = cfg.to_str().unwrap().to_string();
    let id = "keep";
    lab.containerd.track(id);
    lab.containerd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        &cfg,
        BUSYBOX,
        id,
        "sleep",
        "600",
    ]);
    wait_status(&lab.containerd, id, "RUNNING");
    let shims = lab.containerd.shim_pids();
    assert_eq!(shims.len(), 1, "one shim: {shims:?}");

    // containerd restarts: the same shim serves the task, which still runs and takes execs.
    lab.containerd.restart();
    wait_status(&lab.containerd, id, "RUNNING");
    assert_eq!(lab.containerd.shim_pids(), shims, "the shim was replaced");
    let o = lab
        .containerd
        .ctr(&["task", "exec", "--exec-id", "after", id, "echo", "still"]);
    assert_eq!(stdout(&o), "still\n", "exec after restart: {}", text(&o));

    // The shim dies: the node is the daemon's (its supervisor owns it), so it is not taken
    // down by the death itself; containerd sees the task end and runs the shim's `delete`,
    // which removes the node.
    let nodes = || -> usize {
        let v: serde_json::Value =
            serde_json::from_str(&lab.daemon.vm_ok(&["list", "--json"])).expect("vm list --json");
        v.as_array()
            .or_else(|| v.get("nodes").and_then(|n| n.as_array()))
            .map_or(0, Vec::len)
    };
    assert_eq!(nodes(), 1);
    // SAFETY: kill(2) of the shim this lab's containerd started (found by its command line
    // naming the lab's socket).
    assert_eq!(unsafe { libc::kill(shims[0] as i32, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while nodes() != 0 {
        assert!(
            Instant::now() < deadline,
            "the dead shim's node was not removed:\n{}",
            lab.containerd.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // containerd 1.6 drops a dead shim's task once its cleanup ran (or shows it STOPPED).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ls = lab.containerd.ctr_ok(&["task", "ls"]);
        let line = ls.lines().find(|l| l.split_whitespace().next() == Some(id));
        match line.and_then(|l| l.split_whitespace().nth(2)) {
            None => break,
            Some("STOPPED") => {
                lab.containerd.ctr_ok(&["task", "delete", id]);
                break;
            }
            Some(s) => assert!(
                Instant::now() < deadline,
                "task {id} is {s} after its shim died"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    lab.containerd.ctr_ok(&["container", "delete", id]);
    assert!(lab.containerd.shim_pids().is_empty());
    lab.stop_and_assert_clean();
}

/// An OOM kill in the container's node reaches containerd as a `/tasks/oom` event (from the
/// daemon's `node.oom_kill`), besides the task's exit.
#[test]
fn an_oom_kill_reaches_containerd() {
    if !common::privileged() {
        return;
    }
    let lab = Lab::start("ctro", &shim_daemon_yaml(false), None);
    let c = &lab.containerd;
    import(c);
    let cfg = shim_toml(c.dir.path(), "jail.toml", &lab.daemon.shim_socket(), "jail");
    let events_log = c.dir.path().join("events.log");
    let mut events = c
        .ctr_command(&["events"])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&events_log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ctr events");
    let id = "hog";
    c.track(id);
    // More than the node's 256 MiB, held in one shell variable. Detached (not `--rm`): the
    // daemon notices an OOM kill by sampling the node's cgroup (within seconds), and the task
    // must still be there when the event comes (a deleted task's node is gone with it).
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        cfg.to_str().unwrap(),
        BUSYBOX,
        id,
        "sh",
        "-c",
        "x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo ${#x}; sleep 600",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let log = std::fs::read_to_string(&events_log).unwrap_or_default();
        if log.lines().any(|l| l.contains("/tasks/oom")) {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "no /tasks/oom event: {log}\n{}",
            lab.daemon.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // The ctr this test started, by its pid.
    let _ = events.kill();
    let _ = events.wait();
    assert!(seen.contains("\"container_id\":\"hog\""), "{seen}");
    // The kernel picks the victim: the shell (the task ends) or a pipe's end (it sleeps on).
    let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    wait_status(c, id, "STOPPED");
    remove(c, id);
    assert_no_nodes(&lab);
    lab.stop_and_assert_clean();
}

/// One run through a microVM node (TCG here, so one run only): the shim TOML's
/// `driver = "qemu"` places the container in the tenant's qemu host group; output and exit
/// code come back, and the container's `/dev` is the guest's (a virtio disk a jail never has).
#[test]
fn ctr_through_the_bulkhead_shim_in_a_microvm() {
    if !common::privileged() {
        return;
    }
    let lab = Lab::start("ctrq", &shim_daemon_yaml(true), None);
    let c = &lab.containerd;
    import(c);
    let cfg = shim_toml(c.dir.path(), "qemu.toml", &lab.daemon.shim_socket(), "qemu");
    c.track("vm1");
    let o = c.ctr_timeout(
        &[
            "run",
            "--rm",
            "--runtime",
            RUNTIME,
            "--runtime-config-path",
            cfg.to_str().unwrap(),
            BUSYBOX,
            "vm1",
            "sh",
            "-c",
            "echo hi; ls /dev | grep -q '^vd' && echo guest; exit 3",
        ],
        Duration::from_secs(600),
    );
    assert_eq!(o.status.code(), Some(3), "ctr run (qemu): {}", text(&o));
    assert_eq!(stdout(&o), "hi\nguest\n", "ctr run (qemu): {}", text(&o));
    assert_no_nodes(&lab);
    lab.stop_and_assert_clean();
}
