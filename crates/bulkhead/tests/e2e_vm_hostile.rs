//! The hostile-tenant campaign against the microVM driver, end to end (`hypervisor: qemu`,
//! under TCG on this machine kind, like `e2e_vm.rs`).

mod common;

use common::{privileged, vm_config, Daemon};

/// QEMU's process as the host sees it: the one whose command line names the node.
fn qemu_pid(node: &str) -> Option<i32> {
    let o = std::process::Command::new("pgrep")
        .args(["-f", &format!("qemu.*bulkhead.hostname={node} ")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
}

fn status_of(d: &Daemon, node: &str) -> String {
    let list = d.vm_ok(&["list", "--json"]);
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    nodes
        .iter()
        .find(|n| n["hostname"] == node)
        .map(|n| n["status"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| "gone".into())
}

/// The hostile-tenant campaign against the microVM driver: another tenant's API, QEMU's
/// confinement seen from the host, the guest's view of the host, copies racing symlink swaps
/// in the guest, many streams on one agent channel (one of them never read), port forwards
/// into a guest, and kill -9 of QEMU, of a node's supervisor and of the daemon.
#[test]
fn microvm_hostile_tenant_campaign() {
    use common::netlab::{self, NetLab};
    use hyper::Method;
    if !privileged() {
        return;
    }
    let lab = NetLab::new();
    let host = lab.host_ns();
    let mut a = Daemon::start_in(
        &host,
        "vh",
        &vm_config().replace(
            "storage_size: 256M\n",
            "storage_size: 256M\n      network: { mode: isolated, range: 10.75.0.0/24 }\n",
        ),
    );
    let b = Daemon::start_in(
        &host,
        "vb",
        &vm_config().replace("  hypervisor: qemu\n", "").replace(
            "storage_size: 256M\n",
            "storage_size: 256M\n      network: { mode: isolated, range: 10.76.0.0/24 }\n",
        ),
    );
    let v1 = a
        .vm_ok(&["add", &a.tenant, "--timeout", "120s"])
        .trim()
        .to_string();

    // 1. Another tenant's API: every route on this microVM answers 404, like a missing node.
    let missing = format!("{}-99", a.tenant);
    let routes = [
        (Method::POST, "/vm/NODE/exec?cmd=true"),
        (Method::GET, "/vm/NODE/cp?path=/etc/hostname"),
        (Method::POST, "/vm/NODE/cp?path=/tmp/x"),
        (Method::GET, "/vm/NODE/logs"),
        (Method::GET, "/vm/NODE/health"),
        (Method::POST, "/vm/NODE/pause"),
        (Method::POST, "/vm/NODE/resume"),
        (Method::GET, "/vm/NODE"),
        (Method::GET, "/vm/NODE/tags"),
        (Method::PATCH, "/vm/NODE/tags"),
        (Method::POST, "/vm/NODE/shutdown"),
        (Method::POST, "/vm/NODE/suspend"),
        (Method::POST, "/vm/NODE/restore"),
        (Method::POST, "/vm/NODE/relaunch"),
        (Method::GET, "/vm/NODE/forwards"),
        (Method::POST, "/vm/NODE/forwards"),
        (Method::DELETE, "/vm/NODE/forwards/18080"),
        (Method::DELETE, "/hostgroup/BGROUP/nodes/NODE"),
        (Method::DELETE, "/hostgroup/AGROUP/nodes/NODE"),
    ];
    let rt = common::rt();
    let cb = b.client();
    let answer = |m: &Method, p: &str| {
        let body = if p.ends_with("/forwards") && *m == Method::POST {
            r#"{"host_port": 0, "node_port": 80}"#
        } else {
            ""
        };
        let e = rt
            .block_on(cb.send_ok(
                m.clone(),
                p,
                bulkhead_api::client::full_body(body.as_bytes().to_vec()),
                Some("application/json"),
            ))
            .unwrap_err();
        (e.status().map(|s| s.as_u16()), e.code().map(str::to_string))
    };
    for (m, p) in routes {
        let p = p.replace("AGROUP", &a.tenant).replace("BGROUP", &b.tenant);
        let other = answer(&m, &p.replace("NODE", &v1));
        assert_eq!(other.0, Some(404), "{m} {p}: {other:?}");
        assert_eq!(other, answer(&m, &p.replace("NODE", &missing)), "{m} {p}");
    }
    assert_eq!(
        status_of(&a, &v1),
        "Running",
        "another tenant changed the node"
    );

    // 2. QEMU as the host sees it: the tenant's unprivileged uid, no capabilities,
    // no_new_privs, seccomp, namespaces of its own, the node's cgroup, and a root with
    // nothing but its own files.
    let pid = qemu_pid(&v1).expect("QEMU of the node");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}:")))
            .unwrap_or_default()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let uid = (bulkhead_core::uid_base(&a.tenant) + bulkhead_vm::QEMU_UID).to_string();
    assert_eq!(field("Uid"), [uid.as_str(); 4].join(" "), "{status}");
    assert_eq!(field("Gid"), [uid.as_str(); 4].join(" "), "{status}");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(field(cap), "0000000000000000", "{cap}: {status}");
    }
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2", "QEMU's sandbox is not on");
    for ns in ["user", "pid", "mnt", "net", "uts", "ipc"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "QEMU shares the host's {ns} namespace");
    }
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cg.contains(&format!("/bulkhead/{}/", a.tenant)),
        "QEMU outside the node's cgroup: {cg}"
    );
    let names = |p: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root{p}"))
            .unwrap_or_else(|e| panic!("QEMU's {p}: {e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let top = names("/");
    let allowed = [
        "bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "usr", "vm",
    ];
    assert!(
        top.iter().all(|n| allowed.contains(&n.as_str())),
        "QEMU's root holds more than its own files: {top:?}"
    );
    assert_eq!(names("/etc"), ["ld.so.cache"]);
    assert_eq!(names("/boot"), ["initramfs", "vmlinux"]);
    let dev = names("/dev");
    assert!(
        dev.iter()
            .all(|n| ["null", "zero", "random", "urandom", "kvm"].contains(&n.as_str())),
        "QEMU's /dev: {dev:?} (its tap comes as an fd: it needs no /dev/net/tun)"
    );
    let vm = names("/vm");
    assert!(
        vm.iter()
            .all(|n| !n.contains("..") && !n.starts_with("spec")),
        "{vm:?}"
    );

    // 3. From inside the guest, as root: one disk (its own), no shared filesystem, no host file.
    let marker = format!("/tmp/bulkhead-campaign-{}", std::process::id());
    std::fs::write(&marker, "host secret").unwrap();
    let (code, out, err) = a.sh(
        &v1,
        &format!(
            "id -u; cat /proc/partitions | awk 'NR>2 {{print $4}}' | sort | tr '\\n' ' '; echo; \
             grep -cE ' (9p|virtiofs|nfs|fuse)' /proc/mounts; \
             test -e {marker} && echo SEEN || echo unseen"
        ),
    );
    std::fs::remove_file(&marker).unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "the workload is root of its guest");
    assert_eq!(lines[1].trim(), "vda", "guest block devices: {out}");
    assert_eq!(lines[2], "0", "a shared filesystem in the guest: {out}");
    assert_eq!(lines[3], "unseen");
    // Nor can it take the agent's channel: the port is held by the agent.
    let (code, out, err) = a.sh(
        &v1,
        "for p in /dev/vport*; do (exec 3<>$p) 2>/dev/null && echo opened $p; done; true",
    );
    assert!(
        code == 0 && !out.contains("opened"),
        "the workload opened the agent's port: {out}{err}"
    );

    // 4. Copies racing a symlink swap in the guest: the agent resolves paths in the guest, so a
    // swap can at most redirect a copy to another guest file; on the host, whatever the
    // guest sends is unpacked below the target only.
    a.sh(
        &v1,
        "mkdir -p /work/real && echo inside > /work/real/f && ln -s /etc /work/etc-link && hostname > /etc/guest-mark",
    );
    let (_, out, _) = a.sh(
        &v1,
        "setsid sh -c 'while :; do ln -sfn / /work/sw; rm -f /work/sw; cp -r /work/real /work/sw; rm -rf /work/sw; done' \
         </dev/null >/dev/null 2>&1 & echo started",
    );
    assert_eq!(out.trim(), "started");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("up"), "up\n").unwrap();
    for i in 0..4 {
        let dst = tmp.path().join(format!("out{i}"));
        let _ = a.vm(&["cp", &format!("{v1}:/work/sw"), dst.to_str().unwrap()]);
        let _ = a.vm(&[
            "cp",
            tmp.path().join("up").to_str().unwrap(),
            &format!("{v1}:/work/sw/up{i}"),
        ]);
    }
    // Nothing in the host's target left it, and no link in it leads out of it.
    let walk = std::process::Command::new("find")
        .arg(tmp.path())
        .args(["-type", "l"])
        .output()
        .unwrap();
    for l in String::from_utf8_lossy(&walk.stdout).lines() {
        let t = std::fs::read_link(l).unwrap();
        assert!(
            t.is_relative() && !t.to_string_lossy().contains(".."),
            "{l} -> {}",
            t.display()
        );
    }
    // A link in the guest resolves in the guest: its /etc, not the host's.
    let got = tmp.path().join("hn");
    a.vm_ok(&[
        "cp",
        &format!("{v1}:/work/etc-link/guest-mark"),
        got.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), v1);
    a.sh(&v1, "pkill -f 'ln -sfn' ; true");

    // 5. Load on one agent channel: one exec whose client never reads its output, and many
    // concurrent execs next to it, each with its own exit status and output.
    let mut stalled = std::os::unix::net::UnixStream::connect(&a.socket).unwrap();
    std::io::Write::write_all(
        &mut stalled,
        format!("POST /vm/{v1}/exec?cmd=yes HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let t0 = std::time::Instant::now();
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..24)
            .map(|i| {
                let a = &a;
                let v1 = &v1;
                s.spawn(move || {
                    let (code, out, err) =
                        a.sh(v1, &format!("echo out{i}; echo err{i} >&2; exit {}", i % 7));
                    (i, code, out, err)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let took = t0.elapsed();
    for (i, code, out, err) in results {
        assert_eq!(
            (code, out.trim(), err.trim()),
            (
                i % 7,
                format!("out{i}").as_str(),
                format!("err{i}").as_str()
            ),
            "exec {i}"
        );
    }
    eprintln!("24 concurrent execs next to an unread stream took {took:?}");
    drop(stalled);
    assert_eq!(a.sh(&v1, "echo fine").1.trim(), "fine");

    // 6. A port forward into the guest; then crash churn.
    let (code, _, err) = a.sh(
        &v1,
        "setsid nc -ll -p 8080 -e cat </dev/null >/dev/null 2>&1 & \
         for i in $(seq 100); do grep -q ':1F90 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 && exit 0; sleep 0.1; done; exit 1",
    );
    assert_eq!(code, 0, "{err}");
    a.vm_ok(&["forward", &v1, "18090:8080"]);
    let echo = |msg: &'static str| {
        netlab::in_ns(&host, move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", 18090)).ok()?;
            s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .ok()?;
            s.write_all(msg.as_bytes()).ok()?;
            let mut b = vec![0u8; msg.len()];
            s.read_exact(&mut b).ok()?;
            Some(String::from_utf8_lossy(&b).into_owned())
        })
    };
    assert_eq!(echo("hello\n").as_deref(), Some("hello\n"));

    // kill -9 of QEMU: the node is reported Stopped, delete removes everything.
    let v2 = a
        .vm_ok(&["add", &a.tenant, "--timeout", "120s"])
        .trim()
        .to_string();
    let q2 = qemu_pid(&v2).unwrap();
    // SAFETY: killing the QEMU this test's daemon started, by its pid.
    unsafe { libc::kill(q2, libc::SIGKILL) };
    // As for a jail whose init died: the next exec finds it and the node reads Stopped.
    let mut err = String::new();
    for _ in 0..50 {
        let o = a.vm(&["exec", &v2, "--", "true"]);
        err = String::from_utf8_lossy(&o.stderr).into_owned();
        if err.contains("has stopped") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(err.contains("has stopped"), "{err}");
    assert_eq!(status_of(&a, &v2), "Stopped", "a node whose QEMU died");
    a.vm_ok(&["delete", &v2]);
    assert!(!a.tenant_dir().join("nodes").join(&v2).exists());

    // kill -9 of a node's supervisor while the daemon is down, then of the daemon: at restart
    // the lost node is removed with its QEMU; the other is re-adopted with its forward.
    let v3 = a
        .vm_ok(&["add", &a.tenant, "--timeout", "120s"])
        .trim()
        .to_string();
    a.crash();
    let sup = a.supervisor_state(&v3)["supervisor_pid"].as_i64().unwrap() as i32;
    // SAFETY: killing the supervisor this test's daemon started, by its recorded pid.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    a.spawn();
    assert_eq!(status_of(&a, &v3), "gone", "a node whose supervisor died");
    assert_eq!(qemu_pid(&v3), None, "QEMU of a lost node left running");
    assert!(!a.tenant_dir().join("nodes").join(&v3).exists());
    assert_eq!(echo("again\n").as_deref(), Some("again\n"));

    // QEMU killed while its node is being created: the create fails at once, quoting the
    // node's console, instead of waiting out its timeout; nothing of the node is left.
    let next = format!("{}-4", a.tenant);
    let t0 = std::time::Instant::now();
    let adder = {
        let (sock, tenant) = (a.sock().to_string(), a.tenant.clone());
        std::thread::spawn(move || {
            common::cli(&["vm", "add", "--socket", &sock, &tenant, "--timeout", "120s"])
        })
    };
    let mut killed = false;
    for _ in 0..400 {
        // Once QEMU has opened the agent channel (the supervisor then reports the node up),
        // before the guest's agent answers.
        let serial = a
            .tenant_dir()
            .join("nodes")
            .join(&next)
            .join("vm/agent.serial");
        if let Some(q) = qemu_pid(&next).filter(|_| serial.exists()) {
            std::thread::sleep(std::time::Duration::from_millis(100));
            // SAFETY: killing the QEMU this test's daemon started, by its pid.
            unsafe { libc::kill(q, libc::SIGKILL) };
            killed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    assert!(killed, "no QEMU appeared for {next}");
    let o = adder.join().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the create of a killed VM succeeded");
    assert!(err.contains("node_failed") && err.contains(&next), "{err}");
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(30),
        "a dead node's create took {:?} to fail",
        t0.elapsed()
    );
    assert_eq!(status_of(&a, &next), "gone");
    assert!(!a.tenant_dir().join("nodes").join(&next).exists());

    // Delete with a forwarded connection open: the connection ends (a guest leaves no FIN
    // behind when QEMU dies), the forward goes.
    let open = netlab::in_ns(&host, || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", 18090)).unwrap();
        s.write_all(b"x\n").unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        s
    });
    a.vm_ok(&["delete", &v1]);
    let ended = netlab::in_ns(&host, move || {
        use std::io::Read;
        let mut s = open;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut b = [0u8; 16];
        !matches!(s.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
    });
    assert!(ended, "a connection into a deleted microVM stayed open");
    assert_eq!(echo("gone\n"), None);
    for n in [&v1, &v2, &v3, &next] {
        assert_eq!(qemu_pid(n), None, "QEMU of {n} left");
    }
    a.stop_and_assert_clean();
    b.stop_and_assert_clean();
    let (_, links) = lab.host_sh("ip -br link; nft list tables");
    assert!(
        !links
            .lines()
            .any(|l| l.starts_with("bv") || l.contains("bulkhead")),
        "left in the host namespace: {links}"
    );
}
