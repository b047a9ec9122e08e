//! End to end: the flows of the quick start, node lifecycle, crash and restart, config errors.

mod common;
use common::*;

#[test]
fn quick_start_flow() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("qs", &[]);
    let rt = rt();
    let client = d.client();
    // Create through the raw API, as the README's curl does.
    let created: serde_json::Value = rt
        .block_on(client.json(
            hyper::Method::POST,
            &format!("/hostgroup/{}/nodes?wait=agent", d.tenant),
            Some(&serde_json::json!({"tags": ["user=alice", "job=123"]})),
        ))
        .unwrap();
    let node = created["hostname"].as_str().unwrap().to_string();
    assert_eq!(node, format!("{}-1", d.tenant));
    let other = d.add();

    let all: Vec<bulkhead_api::Node> = rt.block_on(client.get("/nodes")).unwrap();
    assert_eq!(all.len(), 2);
    let by_tag: Vec<bulkhead_api::Node> =
        rt.block_on(client.get("/nodes?tag=user%3Dalice")).unwrap();
    assert_eq!(
        by_tag
            .iter()
            .map(|n| n.hostname.as_str())
            .collect::<Vec<_>>(),
        vec![node.as_str()]
    );
    let by_prefix: Vec<bulkhead_api::Node> = rt
        .block_on(client.get(&format!("/hostgroup/{}/nodes?tag_prefix=job", d.tenant)))
        .unwrap();
    assert_eq!(by_prefix.len(), 1);
    assert_eq!(by_prefix[0].tags, vec!["user=alice", "job=123"]);
    assert!(rt
        .block_on(client.get::<serde_json::Value>("/nodes?tag=a&tag_prefix=b"))
        .is_err());
    let groups: Vec<bulkhead_api::HostGroupInfo> = rt.block_on(client.get("/hostgroup")).unwrap();
    assert_eq!(groups[0].count, 2);

    // exec prints and exits with the command's code.
    let o = d.vm(&["exec", &node, "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "hi\n");

    // cp a tree in and back out.
    let src = d.dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha").unwrap();
    std::fs::write(src.join("sub/b.bin"), vec![7u8; 300_000]).unwrap();
    d.vm_ok(&["cp", src.to_str().unwrap(), &format!("{node}:/work/dir")]);
    assert_eq!(d.sh(&node, "cat /work/dir/a.txt").1, "alpha");
    let back = d.dir.path().join("back");
    d.vm_ok(&["cp", &format!("{node}:/work/dir"), back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(back.join("sub/b.bin")).unwrap(),
        vec![7u8; 300_000]
    );
    let one = d.dir.path().join("one.txt");
    d.vm_ok(&[
        "cp",
        &format!("{node}:/work/dir/a.txt"),
        one.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(one).unwrap(), "alpha");

    let logs = d.vm_ok(&["logs", &node]);
    assert!(logs.contains("bulkhead-agent: ready"), "{logs}");
    let json = d.vm_ok(&["list", "--json"]);
    assert!(json.contains(&other));

    d.vm_ok(&["delete", &node, &other]);
    let o = d.vm(&["exec", &node, "--", "true"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_clean_nodes(&d);
    d.stop_and_assert_clean();
}

fn assert_clean_nodes(d: &Daemon) {
    let left: Vec<_> = std::fs::read_dir(d.tenant_dir().join("nodes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn daemon_crash_then_restart_readopts_nodes() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("crash", &[]);
    let node = d.add();
    d.sh(&node, "echo before > /work/state");
    d.crash();
    // The node runs on without its daemon.
    let st = d.supervisor_state(&node);
    let sup = st["supervisor_pid"].as_i64().unwrap();
    assert!(
        std::path::Path::new(&format!("/proc/{sup}")).exists(),
        "supervisor died with the daemon"
    );
    d.spawn();
    assert!(d.log().contains("re-adopted running node"), "{}", d.log());
    let (code, out, _) = d.sh(&node, "cat /work/state");
    assert_eq!((code, out.as_str()), (0, "before\n"));
    d.stop_and_assert_clean();
}

#[test]
fn restart_removes_nodes_whose_supervisor_died() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("lost", &[]);
    let node = d.add();
    d.crash();
    let st = d.supervisor_state(&node);
    let sup = st["supervisor_pid"].as_i64().unwrap() as i32;
    // SAFETY: killing the supervisor this test's daemon started, by its recorded pid.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    d.spawn();
    let nodes = d.vm_ok(&["list", "--json"]);
    assert!(!nodes.contains(&node), "lost node still listed: {nodes}");
    assert_clean_nodes(&d);
    d.stop_and_assert_clean();
}

#[test]
fn graceful_shutdown_keeps_nodes_and_count_creates_them() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("grace", &["--graceful-shutdown", "true", "--count", "2"]);
    let list = d.vm_ok(&["list", "--json"]);
    let nodes: Vec<bulkhead_api::Node> = serde_json::from_str(&list).unwrap();
    assert_eq!(nodes.len(), 2, "count: 2 creates two nodes at start");
    d.stop();
    d.spawn();
    let again: Vec<bulkhead_api::Node> =
        serde_json::from_str(&d.vm_ok(&["list", "--json"])).unwrap();
    assert_eq!(
        again.len(),
        2,
        "nodes survive a graceful stop and count does not add more"
    );
    assert_eq!(d.sh(&nodes[0].hostname, "echo ok").1, "ok\n");
    // Now delete them for real and leave the machine clean.
    for n in &again {
        d.vm_ok(&["delete", &n.hostname]);
    }
    d.stop_and_assert_clean();
}

#[test]
fn second_daemon_on_a_live_socket_is_refused() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("sock", &[]);
    let o = cli(&[
        "up",
        d.config.to_str().unwrap(),
        "--state-dir",
        d.state.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("already served"), "{err}");
    d.stop_and_assert_clean();
}

/// Issue #8: a second daemon of a tenant, with another state dir (and another socket, so
/// neither the socket probe nor anything under the state dir can be what stops it), must not
/// start: it would reconcile the first daemon's node cgroups away and kill its node.
#[test]
fn second_daemon_of_a_tenant_is_refused_whatever_its_state_dir() {
    if !privileged() {
        return;
    }
    let mut a = Daemon::start("twin", &[]);
    let node = a.add();
    let uid_claim = std::path::Path::new("/run/bulkhead/uid-ranges")
        .join(bulkhead_core::uid_base(&a.tenant).to_string());
    assert!(uid_claim.exists(), "A's uid range claim");
    let lock = std::path::Path::new("/run/bulkhead/tenants").join(format!("{}.lock", a.tenant));
    let held = std::fs::read_to_string(&lock).unwrap_or_default();

    let other = tempfile::Builder::new()
        .prefix("bulkhead-e2e-twin-")
        .tempdir()
        .unwrap();
    let state_b = other.path().join("state");
    let config_b = other.path().join("tenant.yaml");
    let sock_b = other.path().join("b.sock");
    std::fs::write(
        &config_b,
        a.config_text().replace(a.sock(), sock_b.to_str().unwrap()),
    )
    .unwrap();
    let err_b = other.path().join("b.log");
    let mut b = std::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", UP_IN_NETNS, BIN, "up"])
        .arg(&config_b)
        .arg("--state-dir")
        .arg(&state_b)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_b).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(st) = b.try_wait().unwrap() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let err = std::fs::read_to_string(&err_b).unwrap_or_default();
    if status.is_none() {
        // SAFETY: stopping the daemon this test started, by its pid.
        unsafe { libc::kill(b.id() as i32, libc::SIGTERM) };
        let _ = b.wait();
    }
    let status = status.unwrap_or_else(|| panic!("a second daemon of the tenant started:\n{err}"));
    assert!(!status.success(), "{err}");
    for want in [
        "already served".to_string(),
        format!("pid {}", a.pid()),
        a.state.display().to_string(),
        a.config.display().to_string(),
        "stop that daemon".to_string(),
    ] {
        assert!(err.contains(&want), "{err:?} does not name {want:?}");
    }
    assert!(
        !state_b.join("tenants").exists(),
        "the refused daemon made tenant state"
    );
    // A and its node are untouched: the node runs and answers, the claims are A's still.
    assert!(a.exited().is_none(), "daemon A died:\n{}", a.log());
    let (code, out, _) = a.sh(&node, "echo alive");
    assert_eq!((code, out.as_str()), (0, "alive\n"));
    assert!(
        uid_claim.exists(),
        "the refused daemon removed A's uid claim"
    );
    assert!(held.contains(&format!("\"pid\":{}", a.pid())), "{held}");
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), held);

    // A crash leaves the lock file but not the lock: the next daemon starts and re-adopts.
    a.crash();
    a.spawn();
    assert!(a.log().contains("re-adopted running node"), "{}", a.log());
    let (code, out, _) = a.sh(&node, "echo again");
    assert_eq!((code, out.as_str()), (0, "again\n"));
    a.stop_and_assert_clean();
    assert!(
        !lock.exists(),
        "a clean stop removes the tenant's lock file"
    );
}

#[test]
fn bad_configs_are_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = cli_ok(&["new", "cfgt", "--socket", "/tmp/x.sock"]);
    let cases = [
        (good.replace("vcpu: 1", "vcpus: 1"), "vcpus"),
        (
            good.replace("storage_size: 1G", "storage_size: lots"),
            "storage_size",
        ),
        (
            good.replace("mode: none", "mode: none\n      drop: [\"10.0.0.0/33\"]"),
            "network.drop[0]",
        ),
        (
            good.replace("hypervisor: jail", "hypervisor: xen"),
            "config.hypervisor",
        ),
        (
            good.replace("name: cfgt", "name: Bad_Name"),
            "host_groups[0].name",
        ),
        (
            good.replace(
                "  host_groups:\n  - name: cfgt",
                "  host_groups:\n  - name: dup\n  - name: dup",
            ),
            "defined twice",
        ),
        // Issue #8: sizes the host cannot give are refused, naming the host's figure.
        (
            good.replace("ram_mb: 512", "ram_mb: 999999999999"),
            "host_groups[0].ram_mb: ram_mb 999999999999 is more than this host's memory",
        ),
        (
            good.replace("vcpu: 1", "vcpu: 256"),
            "CPU(s) this host lets bulkhead use",
        ),
        (
            good.replace("storage_size: 1G", "storage_size: 1000000T"),
            "host_groups[0].storage_size",
        ),
        (
            good.replace("ram_mb: 512", "ram_gb: 18446744073709551615"),
            "beyond any host",
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("c{i}.yaml"));
        std::fs::write(&p, text).unwrap();
        let o = cli(&["validate", p.to_str().unwrap()]);
        assert!(!o.status.success(), "case {i} passed validation:\n{text}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(want),
            "case {i}: {err:?} does not name {want:?}"
        );
        let o = cli(&[
            "up",
            p.to_str().unwrap(),
            "--state-dir",
            dir.path().to_str().unwrap(),
        ]);
        assert!(!o.status.success(), "up started on bad config {i}");
    }
    let o = cli(&["new", "x", "--net", "sideways"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("network.mode"));
    let o = cli(&["vm", "list"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--socket"));
    let o = cli(&["vm", "list", "--socket", "/nonexistent/sock"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect"));
}

#[test]
fn a_node_whose_init_died_reports_stopped_and_deletes_cleanly() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("died", &[]);
    let n = d.add();
    let st = d.supervisor_state(&n);
    // SAFETY: killing the init of a node this test created (from outside its pid namespace).
    unsafe { libc::kill(st["init_pid"].as_i64().unwrap() as i32, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = d.vm(&["exec", &n, "--", "true"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("has stopped"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let nodes: Vec<bulkhead_api::Node> =
        serde_json::from_str(&d.vm_ok(&["list", "--json"])).unwrap();
    assert_eq!(nodes[0].status, bulkhead_api::NodeStatus::Stopped);
    d.vm_ok(&["delete", &n]);
    d.stop_and_assert_clean();
}

#[test]
fn a_node_being_created_answers_409() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("slow", &[]);
    // Hold every standby supervisor of this test's daemon, so the next create hangs midway.
    let standbys = || -> Vec<i32> {
        let o = std::process::Command::new("pgrep")
            .args(["-f", "--", &format!("--standby {} ", d.tenant)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while standbys().len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the standby pool never filled"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let held = standbys();
    for p in &held {
        // SAFETY: pausing supervisors this test's daemon started, by pid.
        unsafe { libc::kill(*p, libc::SIGSTOP) };
    }
    let sock = d.sock().to_string();
    let g = d.tenant.clone();
    let create = std::thread::spawn(move || {
        cli(&["vm", "add", &g, "--socket", &sock, "--hostname", "slowpoke"])
    });
    let rt = rt();
    let c = d.client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let nodes: Vec<bulkhead_api::Node> = rt.block_on(c.nodes()).unwrap();
        if nodes
            .iter()
            .any(|n| n.hostname == "slowpoke" && n.status == bulkhead_api::NodeStatus::Creating)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node never showed as Creating"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let exec = rt
        .block_on(c.send_ok(
            hyper::Method::POST,
            "/vm/slowpoke/exec?cmd=true",
            bulkhead_api::client::full_body(""),
            None,
        ))
        .unwrap_err();
    assert_eq!(
        (exec.status().map(|s| s.as_u16()), exec.code()),
        (Some(409), Some("node_not_ready")),
        "{exec}"
    );
    let del = d.vm(&["delete", "slowpoke"]);
    assert!(!del.status.success());
    assert!(
        String::from_utf8_lossy(&del.stderr).contains("409"),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    for p in &held {
        // SAFETY: resuming the supervisors paused above.
        unsafe { libc::kill(*p, libc::SIGCONT) };
    }
    let o = create.join().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(d.sh("slowpoke", "echo up").1, "up\n");
    d.stop_and_assert_clean();
}

#[test]
fn pause_freezes_a_jail_node_and_resume_thaws_it() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("pz", &[]);
    let node = d.add();
    // A counter that only advances while the node runs. It is started in a session of its
    // own (an exec's process group dies with the exec) and awaited within the same exec; each
    // value is written whole (rename), so a read never sees a half-written file.
    let (code, _, err) = d.sh(
        &node,
        "setsid sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/n.t; mv /tmp/n.t /tmp/n; sleep 0.05; done' </dev/null >/dev/null 2>&1 & \
         for i in $(seq 100); do [ -s /tmp/n ] && exit 0; sleep 0.05; done; exit 1",
    );
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    d.vm_ok(&["pause", &node]);
    let freezer = d.cgroup_file_v1_v2(&node, "freezer", "freezer.state", "cgroup.freeze");
    assert!(
        freezer.trim() == "FROZEN" || freezer.trim() == "1",
        "{freezer}"
    );
    let o = d.vm(&["exec", &node, "--", "true"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Paused"));
    // Pausing twice is a conflict, not a silent success.
    assert!(!d.vm(&["pause", &node]).status.success());
    d.vm_ok(&["resume", &node]);
    let (_, a, _) = d.sh(&node, "cat /tmp/n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (_, b, _) = d.sh(&node, "cat /tmp/n");
    let (a, b): (u64, u64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
    assert!(
        b > a,
        "the counter did not advance after resume: {a} -> {b}"
    );
    let nodes = d.vm_ok(&["list", "--json"]);
    assert!(nodes.contains("\"Running\""), "{nodes}");
    d.stop_and_assert_clean();
}
