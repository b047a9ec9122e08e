//! End to end: what one tenant cannot do to another, what a node cannot do to the host, and
//! that limits hold. Every check here tries to break a boundary with real syscalls.

mod common;
use common::*;
use hyper::Method;
use std::path::PathBuf;

#[test]
fn tenants_cannot_reach_each_others_nodes() {
    if !privileged() {
        return;
    }
    let a = Daemon::start("ta", &[]);
    let b = Daemon::start("tb", &[]);
    let node = a.add();
    assert_ne!(a.tenant_dir(), b.tenant_dir());
    let rt = rt();
    let cb = b.client();
    let missing = format!("{}-99", a.tenant);
    let routes = [
        (Method::POST, format!("/vm/{node}/exec?cmd=true")),
        (Method::GET, format!("/vm/{node}/cp?path=/etc/passwd")),
        (Method::POST, format!("/vm/{node}/cp?path=/tmp/x")),
        (Method::GET, format!("/vm/{node}/logs")),
        (Method::GET, format!("/vm/{node}/health")),
        (Method::GET, format!("/vm/{node}")),
        (Method::GET, format!("/vm/{node}/tags")),
        (Method::PATCH, format!("/vm/{node}/tags")),
        (Method::POST, format!("/vm/{node}/shutdown")),
        (Method::POST, format!("/vm/{node}/relaunch")),
        (Method::POST, format!("/vm/{node}/suspend")),
        (Method::POST, format!("/vm/{node}/restore")),
        (
            Method::DELETE,
            format!("/hostgroup/{}/nodes/{node}", b.tenant),
        ),
        (Method::GET, format!("/hostgroup/{}/nodes", a.tenant)),
        (
            Method::DELETE,
            format!("/hostgroup/{}/nodes/{node}", a.tenant),
        ),
    ];
    for (m, path) in routes {
        let other = rt
            .block_on(cb.send_ok(m.clone(), &path, bulkhead_api::client::full_body(""), None))
            .unwrap_err();
        assert_eq!(
            other.status().map(|s| s.as_u16()),
            Some(404),
            "{m} {path}: {other}"
        );
        // Exactly as for a node that never existed.
        let p2 = path.replace(&node, &missing);
        if p2 != path {
            let never = rt
                .block_on(cb.send_ok(m.clone(), &p2, bulkhead_api::client::full_body(""), None))
                .unwrap_err();
            assert_eq!(never.status(), other.status());
            assert_eq!(never.code(), other.code(), "{m} {path}");
        }
    }
    let listed: Vec<bulkhead_api::Node> = rt.block_on(cb.nodes()).unwrap();
    assert!(listed.is_empty());
    // The node is untouched.
    assert_eq!(a.sh(&node, "echo alive").1, "alive\n");
    // The two tenants' nodes run as different, unprivileged host uids.
    let nb = b.add();
    let map_a = a.sh(&node, "cat /proc/self/uid_map").1;
    let map_b = b.sh(&nb, "cat /proc/self/uid_map").1;
    let host_uid = |m: &str| m.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
    assert_ne!(host_uid(&map_a), host_uid(&map_b));
    assert!(host_uid(&map_a) >= 1 << 20 && host_uid(&map_b) >= 1 << 20);
    a.stop_and_assert_clean();
    b.stop_and_assert_clean();
}

#[test]
fn node_cannot_escalate() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("sec", &[]);
    let n = d.add();
    let checks = [
        ("mount", "mount -t tmpfs none /mnt"),
        ("unshare a user namespace", "unshare -U true"),
        ("unshare a mount namespace", "unshare -m true"),
        ("raw socket (ping)", "ping -c1 -W1 127.0.0.1"),
        (
            "module load",
            "insmod /nonexistent.ko || exit 1; echo; exit 0",
        ),
        ("write to /proc/sys", "echo 1 > /proc/sys/kernel/sysrq"),
        ("read kernel memory", "head -c1 /proc/kcore | grep -q ."),
        (
            "change the clock",
            "date -s 2001-01-01 >/dev/null 2>&1; [ $(date +%Y) = 2001 ]",
        ),
        ("create a device node", "mknod /tmp/sda b 8 0"),
        ("chroot escape via pivot_root", "pivot_root / /tmp"),
        ("sysrq", "echo b > /proc/sysrq-trigger"),
    ];
    for (what, script) in checks {
        let (code, out, err) = d.sh(&n, script);
        assert_ne!(code, 0, "{what} succeeded inside a node: {out}{err}");
    }
    let status = d
        .sh(
            &n,
            "grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
        )
        .1;
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    let bnd = status
        .lines()
        .find(|l| l.starts_with("CapBnd"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap();
    let bnd = u64::from_str_radix(bnd, 16).unwrap();
    assert_eq!(
        bnd,
        bulkhead_jail::caps::kept_mask(),
        "bounding set is exactly the kept set"
    );
    for cap in [21u32, 13, 16, 12, 19] {
        // SYS_ADMIN, NET_RAW, SYS_MODULE, NET_ADMIN, SYS_PTRACE
        assert_eq!(
            bnd & (1 << cap),
            0,
            "capability {cap} left in the bounding set"
        );
    }
    // Landlock, where the kernel has it: creating a device node fails in landlock's hook
    // (EACCES) before the capability check (EPERM) is even reached.
    if bulkhead_jail::landlock::abi().is_some() {
        let (code, _, err) = d.sh(&n, "mknod /tmp/c c 1 3");
        assert_ne!(code, 0);
        assert!(
            err.contains("Permission denied"),
            "device node refused, but not by landlock: {err}"
        );
    } else if std::env::var_os("CI").is_some() {
        panic!("CI hosts must have landlock: the node's landlock domain is claimed");
    }
    // The workload cannot take down or take over its agent.
    for sig in ["KILL", "TERM", "INT", "HUP", "STOP"] {
        d.sh(&n, &format!("kill -{sig} 1"));
        assert_eq!(
            d.sh(&n, "echo agent-ok").1,
            "agent-ok\n",
            "SIG{sig} from inside stopped the agent"
        );
    }
    // A command holds its stdio and nothing else of the agent's (not its host socket).
    let fds = d.sh(&n, "ls /proc/$$/fd; true").1;
    assert_eq!(
        fds.split_whitespace().collect::<Vec<_>>(),
        vec!["0", "1", "2"],
        "a command inherited descriptors"
    );
    // Signals from inside cannot grow the node's console (on the host's disk) without bound.
    d.sh(
        &n,
        "i=0; while [ $i -lt 500 ]; do kill -TERM 1; i=$((i+1)); done",
    );
    let console = std::fs::metadata(d.tenant_dir().join("nodes").join(&n).join("console.log"))
        .unwrap()
        .len();
    assert!(console < 4096, "console grew to {console} bytes");
    let (code, _, _) = d.sh(&n, "head -c1 /proc/1/mem");
    assert_ne!(code, 0, "the workload could open the agent's memory");
    let (code, _, _) = d.sh(&n, "cat /proc/1/environ");
    assert_ne!(code, 0, "the workload could read the agent's environment");
    // The node sees only its own processes and its own hostname.
    let ps = d.sh(&n, "ls /proc | grep -c '^[0-9]'").1;
    assert!(
        ps.trim().parse::<u32>().unwrap() < 10,
        "node sees {ps} processes"
    );
    assert_eq!(d.sh(&n, "hostname").1.trim(), n);
    assert_eq!(
        d.sh(&n, "cat /proc/1/cmdline | tr '\\0' ' '").1.trim(),
        "bulkhead-agent"
    );
    // Only loopback.
    let links = d.sh(&n, "ls /sys/class/net").1;
    assert_eq!(links.split_whitespace().collect::<Vec<_>>(), vec!["lo"]);
    // The image is read-only below the node: writes land in the node's own layer.
    d.sh(&n, "echo changed > /etc/os-release");
    let other = d.add();
    assert!(d
        .sh(&other, "cat /etc/os-release")
        .1
        .contains("bulkhead minimal"));
    d.stop_and_assert_clean();
}

#[test]
fn copies_stay_inside_the_node() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("cp", &[]);
    let n = d.add();
    let rt = rt();
    let c = d.client();
    let host_marker = d.dir.path().join("escaped");
    // A symlink inside the node that points at a host path resolves inside the node.
    d.sh(
        &n,
        &format!(
            "mkdir -p /work && ln -s {} /work/esc && ln -s / /work/root",
            d.dir.path().display()
        ),
    );
    let up = |path: &str, body: &'static str| {
        rt.block_on(c.send_ok(
            Method::POST,
            &format!("/vm/{n}/cp?path={path}"),
            bulkhead_api::client::full_body(body),
            None,
        ))
    };
    // The host path does not exist inside the node, so the write fails cleanly (409) and
    // nothing appears on the host.
    let e = up("/work/esc/escaped", "x").unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(409), "{e}");
    assert!(
        !host_marker.exists(),
        "a write through a node symlink reached the host"
    );
    up("/work/root/etc/written", "y").unwrap();
    assert_eq!(d.sh(&n, "cat /etc/written").1, "y");
    for bad in [
        "/work/../etc/passwd",
        "relative/path",
        "/work/./x",
        "/a/%00b",
    ] {
        let e = up(bad, "z").unwrap_err();
        assert_eq!(e.status().map(|s| s.as_u16()), Some(400), "{bad}: {e}");
    }
    // A tar with `..` entries cannot write outside its target directory.
    let mut evil = Vec::new();
    {
        let mut b = tar::Builder::new(&mut evil);
        let mut h = tar::Header::new_gnu();
        let name = b"../../etc/evil";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(4);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, &b"evil"[..]).unwrap();
        b.finish().unwrap();
    }
    let _ = rt.block_on(c.send_ok(
        Method::POST,
        &format!("/vm/{n}/cp?path=/work/t&mode=tar"),
        bulkhead_api::client::full_body(evil),
        None,
    ));
    assert_ne!(
        d.sh(&n, "test -e /etc/evil").0,
        0,
        "tar entry escaped its target"
    );
    // Reading through a symlink to a host path reads the node's own tree.
    let e = rt
        .block_on(c.send_ok(
            Method::GET,
            &format!("/vm/{n}/cp?path=/work/esc/daemon.log"),
            bulkhead_api::client::full_body(""),
            None,
        ))
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(404));
    // Files land with the requested owner and mode; a directory target is refused in binary mode.
    let r = rt.block_on(c.send_ok(
        Method::POST,
        &format!("/vm/{n}/cp?path=/work/owned&uid=1000&gid=1000&permissions=0600"),
        bulkhead_api::client::full_body("o"),
        None,
    ));
    assert!(r.is_ok());
    assert_eq!(
        d.sh(&n, "stat -c '%u:%g:%a' /work/owned").1.trim(),
        "1000:1000:600"
    );
    let e = up("/work", "z").unwrap_err();
    assert_eq!(e.code(), Some("is_a_directory"));
    d.stop_and_assert_clean();
}

#[test]
fn memory_and_pids_limits_hold() {
    if !privileged() {
        return;
    }
    let d = Daemon::start_edited("lim", &["--ram-mb", "64"], |y| {
        y.replace("    network:", "    pids_max: 64\n    network:")
    });
    let hog = d.add();
    let calm = d.add();
    d.sh(&calm, "echo calm > /tmp/state");
    // Hold far more than 64 MiB in one process.
    let (code, _, _) = d.sh(
        &hog,
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    );
    assert_ne!(code, 0, "the memory hog was not stopped");
    let oom = d.cgroup_file_v1_v2(&hog, "memory", "memory.oom_control", "memory.events");
    let kills: u64 = oom
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(kills >= 1, "no OOM kill recorded: {oom}");
    assert_eq!(
        d.sh(&calm, "cat /tmp/state").1,
        "calm\n",
        "the other node was affected"
    );
    assert_eq!(
        d.sh(&hog, "echo agent-alive").1,
        "agent-alive\n",
        "the OOM killer took the agent"
    );
    // A fork bomb stops at pids_max. busybox sh gives up at the first failed fork, so the
    // host side reads the node's cgroup: the cap was hit, and never exceeded.
    let _ = d.sh(
        &hog,
        "i=0; while [ $i -lt 200 ]; do sleep 3 & i=$((i+1)); done",
    );
    let pids = |f: &str| d.cgroup_file(&hog, "pids", f);
    let current: u32 = pids("pids.current").trim().parse().unwrap();
    assert!(current <= 64, "{current} pids in a node capped at 64");
    let hit: u64 = pids("pids.events")
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(hit >= 1, "the fork bomb never hit the cap");
    assert_eq!(d.sh(&calm, "echo ok").1, "ok\n");
    // Once the sleeps end, the capped node works again.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(d.sh(&hog, "echo recovered").1, "recovered\n");
    d.stop_and_assert_clean();
}

#[test]
fn cpu_quota_throttles() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("cpu", &["--vcpu", "1"]);
    let n = d.add();
    // Busy loops on a one-CPU quota must be throttled. Three loops for two seconds, so that
    // the other tests of this file running beside it on a two-core machine still leave the
    // node more than one CPU's worth in some of its 100 ms periods.
    d.sh(
        &n,
        "for i in 1 2; do (timeout 2 sh -c 'while :; do :; done' &); done; \
         timeout 2 sh -c 'while :; do :; done'; true",
    );
    let stat = d.cgroup_file(&n, "cpu", "cpu.stat");
    let throttled: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(throttled > 0, "no throttling recorded: {stat}");
    d.stop_and_assert_clean();
}

#[test]
fn api_socket_is_owner_only_and_tcp_needs_the_token() {
    if !privileged() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = Daemon::start("sock", &[]);
    let md = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    assert_eq!(md.uid(), 0);
    // What a node leaves on the host is private to root: its output, its spec, the state.
    let n = d.add();
    d.sh(&n, "echo secret-output");
    let node_dir = d.tenant_dir().join("nodes").join(&n);
    for (p, want) in [
        (node_dir.clone(), 0o711),
        (node_dir.join("console.log"), 0o600),
        (node_dir.join("spec.json"), 0o600),
        (node_dir.join("agent.sock"), 0o600),
        (d.tenant_dir().join("state.db"), 0o600),
    ] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, want, "{} is {mode:o}", p.display());
    }
    d.stop_and_assert_clean();

    // TCP inside the daemon's own network namespace; clients join it with nsenter.
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-e2e-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef").unwrap();
    let tenant = unique_tenant("tcp");
    let yaml = cli_ok(&["new", &tenant, "--api-bind", "127.0.0.1:18080"]).replace(
        "  api:\n",
        &format!("  api:\n    token_file: {}\n", token.display()),
    );
    let cfg = dir.path().join("tenant.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    let state = shared_state();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    /// Stops the daemon even when an assertion below fails, so a failed test leaks nothing.
    struct Stop(std::process::Child, PathBuf);
    impl Drop for Stop {
        fn drop(&mut self) {
            // SAFETY: stopping the daemon this test started, by its pid.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let child = std::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", UP_IN_NETNS, BIN, "up"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&state)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let guard = Stop(child, state.join("tenants").join(&tenant));
    let netns = format!("--net=/proc/{}/ns/net", guard.0.id());
    let list = |tok: &str| {
        std::process::Command::new("nsenter")
            .args([
                netns.as_str(),
                "--",
                BIN,
                "vm",
                "list",
                "--url",
                "http://127.0.0.1:18080",
                "--token",
                tok,
            ])
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(dir.path().join("daemon.log"))
        .unwrap_or_default()
        .contains("ready on")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "tcp daemon did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let ok = list("0123456789abcdef0123456789abcdef");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = list("wrong-token-wrong-token-wrong");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    drop(guard);
}

#[test]
fn storage_size_bounds_the_writable_layer() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("disk", &["--storage-size", "16M", "--ram-mb", "256"]);
    let n = d.add();
    let (code, _, err) = d.sh(&n, "dd if=/dev/zero of=/work/big bs=1M count=32");
    assert_ne!(code, 0, "wrote 32 MiB into a 16 MiB layer");
    assert!(err.contains("No space left"), "{err}");
    d.sh(&n, "rm -f /work/big");
    let rt = rt();
    let e = rt
        .block_on(d.client().send_ok(
            hyper::Method::POST,
            &format!("/vm/{n}/cp?path=/work/upload"),
            bulkhead_api::client::full_body(vec![0u8; 24 << 20]),
            None,
        ))
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(507), "{e}");
    assert_eq!(d.sh(&n, "ls -A /work").1, "", "a partial upload was left");
    // The node still works once space is free.
    assert_eq!(
        d.sh(&n, "echo ok > /work/small && cat /work/small").1,
        "ok\n"
    );
    d.stop_and_assert_clean();
}
