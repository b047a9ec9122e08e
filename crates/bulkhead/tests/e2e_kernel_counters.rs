//! A hostile tenant against the kernel's host-wide counters (issue #8, item 1): a node takes
//! all it can of each per-user or global kernel object it can reach, and the host and another
//! tenant's node must still get theirs. The probe is a small static C program
//! (`tests/probes/kcounters.c`) built here with the host's gcc and copied into the nodes.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const EMFILE: &str = "errno=24";

/// Builds the probe once per test process.
fn probe() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probes/kcounters.c");
        let out = std::env::temp_dir().join(format!("bulkhead-kcounters-{}", std::process::id()));
        let o = std::process::Command::new("gcc")
            .args(["-static", "-O1", "-o"])
            .arg(&out)
            .arg(&src)
            .output()
            .expect("gcc (scripts/setup.sh installs it)");
        assert!(
            o.status.success(),
            "building the probe: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    })
}

/// Runs the probe on the host (as root, the bystander) and returns its line.
fn on_host(args: &[&str]) -> String {
    let o = std::process::Command::new(probe())
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Copies the probe into a node as /tmp/kc.
fn install(d: &Daemon, node: &str) {
    d.vm_ok(&["cp", probe().to_str().unwrap(), &format!("{node}:/tmp/kc")]);
    let (code, _, err) = d.sh(node, "chmod 755 /tmp/kc");
    assert_eq!(code, 0, "{err}");
}

/// Runs the probe in a node and returns its line.
fn in_node(d: &Daemon, node: &str, args: &str) -> String {
    let (code, out, err) = d.sh(node, &format!("/tmp/kc {args}"));
    assert_eq!(code, 0, "kc {args}: {out}{err}");
    out.trim().to_string()
}

/// Starts the probe in a node with `hold` (it keeps what it took, in a session of its own that
/// outlives the exec) and returns its line once it has taken everything it could. The exec
/// waits for that line: the agent ends an exec's process group when the exec ends, and the
/// probe is only safe from that once it has run setsid.
fn hold_in_node(d: &Daemon, node: &str, args: &str, tag: &str) -> String {
    let out = format!("/tmp/{tag}.out");
    let (code, line, err) = d.sh(
        node,
        &format!(
            "setsid /tmp/kc {args} hold > {out} 2>&1 < /dev/null &
             i=0; while [ ! -s {out} ] && [ $i -lt 400 ]; do sleep 0.05; i=$((i+1)); done; cat {out}"
        ),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !line.trim().is_empty(),
        "the probe in {node} never reported ({args})"
    );
    line.trim().to_string()
}

fn field(line: &str, key: &str) -> i64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[test]
fn a_node_cannot_exhaust_per_user_kernel_counts_of_the_host_or_another_tenant() {
    if !privileged() {
        return;
    }
    let a = Daemon::start("kca", &[]);
    let b = Daemon::start("kcb", &[]);
    let hog = a.add();
    let other = b.add();
    install(&a, &hog);
    install(&b, &other);

    // inotify instances: the node takes all it can and holds them.
    let took = hold_in_node(&a, &hog, "inotify 100000", "ino");
    eprintln!("hostile node: {took}");
    assert!(field(&took, "opened") >= 100, "{took}");
    assert!(took.ends_with(EMFILE), "{took}");
    // The host (root) and the other tenant's node still get theirs.
    let host = on_host(&["inotify", "16"]);
    eprintln!("host root meanwhile: {host}");
    assert_eq!(host, "inotify opened=16 errno=0");
    assert_eq!(
        in_node(&b, &other, "inotify 16"),
        "inotify opened=16 errno=0"
    );

    // POSIX message-queue bytes (RLIMIT_MSGQUEUE, counted per user up the namespace chain).
    let took = hold_in_node(&a, &hog, "mq 1000", "mq");
    eprintln!("hostile node: {took}");
    assert!(took.ends_with(EMFILE), "{took}");
    let host = on_host(&["mq", "3"]);
    eprintln!("host root meanwhile: {host}");
    assert_eq!(host, "mq opened=3 errno=0");
    assert_eq!(in_node(&b, &other, "mq 3"), "mq opened=3 errno=0");

    // Pending signals (RLIMIT_SIGPENDING, counted per user up the namespace chain).
    let took = hold_in_node(&a, &hog, "sigq 10000000", "sigq");
    eprintln!("hostile node: {took}");
    assert!(took.ends_with("errno=11"), "{took}");
    let host = on_host(&["sigq", "16"]);
    eprintln!("host root meanwhile: {host}");
    assert_eq!(host, "sigq queued=16 errno=0");
    assert_eq!(in_node(&b, &other, "sigq 16"), "sigq queued=16 errno=0");

    // Pipe buffers: counted per host uid (the tenant's) and charged to the node's memory.
    let took = hold_in_node(&a, &hog, "pipes 100000", "pipes");
    eprintln!("hostile node: {took}");
    assert!(field(&took, "grown") > 0, "{took}");
    assert_eq!(on_host(&["pipe-size"]), "pipe-size bytes=65536");
    assert_eq!(in_node(&b, &other, "pipe-size"), "pipe-size bytes=65536");

    // What has only a global limit, or no per-node share at all, is out of reach.
    assert_eq!(in_node(&a, &hog, "aio"), "aio result=-1 errno=38");
    assert_eq!(in_node(&a, &hog, "userns"), "userns result=-1 errno=1");
    assert_eq!(in_node(&a, &hog, "keyctl"), "keyctl result=-1 errno=1");
    // AF_VSOCK is not scoped to a network namespace: answered as by a kernel without it.
    assert_eq!(in_node(&a, &hog, "vsock"), "vsock result=-1 errno=97");

    // Open files have only a host-wide limit, fs.file-max; each open file is charged to the
    // node's memory, so once the daemon raised the limit beyond what the host's memory could
    // hold, no node can reach it.
    let file_max: u64 = std::fs::read_to_string("/proc/sys/fs/file-max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    eprintln!("fs.file-max {file_max}, MemTotal {mem_kb} kB");
    assert!(
        file_max >= mem_kb * 1024 / 128,
        "fs.file-max {file_max} is reachable"
    );

    // The daemon's own descriptors: soft limit raised to the hard one, so the connection caps
    // (not EMFILE) are what bound a flood.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", a.pid())).unwrap();
    let nofile: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect();
    assert_eq!(
        nofile[0], nofile[1],
        "soft RLIMIT_NOFILE not raised: {nofile:?}"
    );

    // The seccomp policy and the kept CAP_SYS_CHROOT agree: build tools may chroot.
    let (code, _, err) = a.sh(&hog, "mkdir -p /tmp/r && chroot / /bin/true");
    assert_eq!(code, 0, "chroot in a node: {err}");

    a.stop_and_assert_clean();
    b.stop_and_assert_clean();
}

#[test]
fn kernel_limits_bound_each_node() {
    if !privileged() {
        return;
    }
    let d = Daemon::start_edited("kcl", &[], |y| {
        y.replace(
            "    network:",
            "    kernel_limits:\n      inotify_instances: 8\n      inotify_watches: 100\n    network:",
        )
    });
    let node = d.add();
    install(&d, &node);
    assert_eq!(
        in_node(&d, &node, "inotify 50"),
        "inotify opened=8 errno=24"
    );
    // ENOSPC: the watch limit of the node's user namespace.
    assert_eq!(
        in_node(&d, &node, "watches 500"),
        "watches added=100 errno=28"
    );
    // The node cannot raise its own limits (no CAP_SYS_RESOURCE).
    let (code, _, _) = d.sh(&node, "echo 1000 > /proc/sys/user/max_inotify_instances");
    assert_ne!(code, 0, "a node raised its own inotify limit");
    assert_eq!(
        in_node(&d, &node, "inotify 50"),
        "inotify opened=8 errno=24"
    );
    d.stop_and_assert_clean();
}
