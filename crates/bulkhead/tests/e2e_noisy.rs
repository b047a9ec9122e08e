//! Noisy neighbours (#12, ADR 0027) on the real kernel: every tenant's cgroup level with the
//! same CPU weight, the daemon and the supervisors in the protected `bulkhead/_daemon`,
//! `dedicated_cores` pinning a group's nodes to cores no other node gets, the refusal when the
//! host has too few, and nothing left (cgroups, reservations) after a stop.
//!
//! Reservations are host-wide: the tests here run one at a time (`SERIAL`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use common::shared::Shared;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn v1() -> bool {
    Path::new("/sys/fs/cgroup/cpu/tasks").exists()
}

fn read(p: impl AsRef<Path>) -> String {
    let p = p.as_ref();
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The CPUs the host's cpuset offers, as a list of numbers.
fn host_cpus() -> Vec<u32> {
    let f = if v1() {
        "/sys/fs/cgroup/cpuset/cpuset.cpus"
    } else {
        "/sys/fs/cgroup/cpuset.cpus.effective"
    };
    bulkhead_core::cores::CpuList::parse(&read(f))
        .unwrap()
        .0
        .into_iter()
        .collect()
}

/// `Cpus_allowed_list` of a process.
fn cpus_allowed(pid: i64) -> String {
    read(format!("/proc/{pid}/status"))
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// The cgroup path of a process in one v1 hierarchy (v2: the unified one).
fn cgroup_of(pid: i64, controller: &str) -> String {
    read(format!("/proc/{pid}/cgroup"))
        .lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, ctrls, path) = (p.next()?, p.next()?, p.next()?);
            let hit = if v1() {
                ctrls.split(',').any(|c| c == controller)
            } else {
                ctrls.is_empty()
            };
            hit.then(|| path.to_string())
        })
        .unwrap_or_default()
}

/// A file of a cgroup under `bulkhead/` (`rel`), in `controller`'s v1 hierarchy or on v2.
fn cg_file(controller: &str, rel: &str, v1_file: &str, v2_file: &str) -> String {
    if v1() {
        read(format!(
            "/sys/fs/cgroup/{controller}/bulkhead/{rel}/{v1_file}"
        ))
    } else {
        read(format!("/sys/fs/cgroup/bulkhead/{rel}/{v2_file}"))
    }
}

/// Waits (up to 10 s) until a supervisor is back in `bulkhead/_daemon` in every hierarchy
/// that matters here: a standby steps out of its node's cgroup just after answering `ready`.
fn settled(sup: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let cpuset = v1() && Path::new("/sys/fs/cgroup/cpuset/tasks").exists();
    let home = |c: &str| cgroup_of(sup, c) == "/bulkhead/_daemon";
    while !(home("cpu") && (!cpuset || home("cpuset"))) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn node_dir(s: &Shared, t: &str, node: &str) -> PathBuf {
    s.state.join("tenants").join(t).join("nodes").join(node)
}

/// (supervisor pid, init pid, cgroup id) of a node.
fn node_pids(s: &Shared, t: &str, node: &str) -> (i64, i64, String) {
    let d = node_dir(s, t, node);
    let v: serde_json::Value = serde_json::from_str(&read(d.join("supervisor.json"))).unwrap();
    let id = bulkhead_driver::spec::spec_cgroup(&d).expect("the spec names the node's cgroup");
    (
        v["supervisor_pid"].as_i64().unwrap(),
        v["init_pid"].as_i64().unwrap(),
        id,
    )
}

/// What `Cpus_allowed_list` a command run by exec inside the node sees.
fn cpus_inside(s: &Shared, t: &str, node: &str) -> String {
    let o = s.vm(
        &s.tenant_sock(t),
        &[
            "exec",
            node,
            "--",
            "grep",
            "Cpus_allowed_list",
            "/proc/self/status",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .split(':')
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn daemon_pid(s: &Shared) -> i64 {
    // `unshare` and `sh -c ... exec` both exec: the child is the daemon.
    let p = s.netns_path();
    p.parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.file_name())
        .and_then(|p| p.to_str())
        .and_then(|p| p.parse().ok())
        .unwrap()
}

#[test]
fn tenants_get_equal_weights_and_the_daemon_a_protected_cgroup() {
    if !common::privileged() {
        return;
    }
    let _g = serial();
    let s = Shared::start("", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    let na = s.add(&s.tenant_sock(&a), &a);
    let nb = s.add(&s.tenant_sock(&b), &b);
    // Equal CPU weights at the tenant level, the daemon's four times that.
    let weight = |rel: &str| cg_file("cpu", rel, "cpu.shares", "cpu.weight");
    assert_eq!(weight(&a), weight(&b));
    let (tenant_w, daemon_w) = if v1() {
        ("1024", "4096")
    } else {
        ("100", "400")
    };
    assert_eq!(weight(&a), tenant_w);
    assert_eq!(weight("_daemon"), daemon_w);
    // The daemon and each node's supervisor sit in bulkhead/_daemon; the node's init in its
    // tenant's cgroup.
    let d = daemon_pid(&s);
    assert_eq!(cgroup_of(d, "cpu"), "/bulkhead/_daemon", "the daemon");
    for (t, n) in [(&a, &na), (&b, &nb)] {
        let (sup, init, id) = node_pids(&s, t, n);
        settled(sup);
        assert_eq!(
            cgroup_of(sup, "cpu"),
            "/bulkhead/_daemon",
            "{n}'s supervisor"
        );
        assert_eq!(
            cgroup_of(init, "cpu"),
            format!("/bulkhead/{t}/{id}"),
            "{n}'s init"
        );
        if v1() && Path::new("/sys/fs/cgroup/cpuset/tasks").exists() {
            assert_eq!(cgroup_of(init, "cpuset"), format!("/bulkhead/{t}/{id}"));
        }
    }
    s.stop_and_assert_clean();
}

#[test]
fn dedicated_cores_pin_a_group_and_no_other_node_runs_there() {
    if !common::privileged() {
        return;
    }
    let cpus = host_cpus();
    if cpus.len() < 2 {
        eprintln!("SKIP: dedicated cores need a host with 2 CPUs or more");
        return;
    }
    let _g = serial();
    let s = Shared::start_with_groups(&["          dedicated_cores: 1\n", ""], "", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    // The highest CPU is a's; everything else is shared.
    let mine = cpus.last().unwrap().to_string();
    let rest =
        bulkhead_core::cores::CpuList(cpus[..cpus.len() - 1].iter().copied().collect()).to_string();
    assert_eq!(
        read(format!("/run/bulkhead/cores/{mine}")),
        format!("{a}/{a}"),
        "the reservation is recorded host-wide"
    );
    let na = s.add(&s.tenant_sock(&a), &a);
    let na2 = s.add(&s.tenant_sock(&a), &a);
    let nb = s.add(&s.tenant_sock(&b), &b);
    for n in [&na, &na2] {
        let (_, init, id) = node_pids(&s, &a, n);
        assert_eq!(cpus_allowed(init), mine, "{n}'s init");
        assert_eq!(
            cg_file("cpuset", &format!("{a}/{id}"), "cpuset.cpus", "cpuset.cpus"),
            mine
        );
        assert_eq!(cpus_inside(&s, &a, n), mine, "a command in {n}");
    }
    let (sup, init, id) = node_pids(&s, &b, &nb);
    assert_eq!(cpus_allowed(init), rest, "the other tenant's node");
    assert_eq!(
        cg_file("cpuset", &format!("{b}/{id}"), "cpuset.cpus", "cpuset.cpus"),
        rest
    );
    assert_eq!(
        cpus_inside(&s, &b, &nb),
        rest,
        "a command in the other tenant's node"
    );
    // Nor do the daemon and the supervisors run on the reserved core.
    assert_eq!(cpus_allowed(daemon_pid(&s)), rest, "the daemon");
    settled(sup);
    assert_eq!(cpus_allowed(sup), rest, "a supervisor");
    let (a_sup, _, _) = node_pids(&s, &a, &na);
    settled(a_sup);
    assert_eq!(cpus_allowed(a_sup), rest, "the pinned node's supervisor");
    // The core goes back at stop (assert_clean checks /run/bulkhead/cores for both tenants).
    s.stop_and_assert_clean();
    assert!(!Path::new(&format!("/run/bulkhead/cores/{mine}")).exists());
}

/// Runs `bulkhead up` for `yaml` (expected to fail) and returns its exit success and output.
fn up_fails(yaml: &str) -> String {
    let dir = common::test_dir();
    let cfg = dir.path().join("t.yaml");
    std::fs::write(
        &cfg,
        yaml.replace("SOCKET", dir.path().join("a.sock").to_str().unwrap()),
    )
    .unwrap();
    let state = dir.path().join("state");
    let o = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            common::UP_IN_NETNS,
            common::BIN,
            "up",
        ])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !o.status.success(),
        "bulkhead up should have refused:\n{out}"
    );
    out
}

#[test]
fn too_many_dedicated_cores_are_refused_at_start() {
    if !common::privileged() {
        return;
    }
    let _g = serial();
    let n = host_cpus().len();
    let t = common::unique_tenant("nz");
    let cfg = |cores: usize| {
        format!("config:\n  tenant: {t}\n  host_groups:\n    - name: g\n      dedicated_cores: {cores}\n  graceful_shutdown: false\n  api:\n    bind_address: SOCKET\n")
    };
    // All the host's CPUs: one must stay for the daemon and the shared nodes.
    let out = up_fails(&cfg(n));
    assert!(
        out.contains(&format!("offers {n} CPUs"))
            && out.contains("one CPU always stays outside every reservation")
            && out.contains(&format!("{t}/g {n}")),
        "{out}"
    );
    // Zero is a config error naming the key.
    let out = up_fails(&cfg(0));
    assert!(out.contains("host_groups[0].dedicated_cores"), "{out}");
    // Two tenants of one daemon whose reservations together exceed the pool.
    if n == 2 {
        let (t1, t2) = (common::unique_tenant("nz"), common::unique_tenant("nz"));
        let yaml = format!("config:\n  graceful_shutdown: false\n  tenants:\n    - name: {t1}\n      host_groups:\n        - name: {t1}\n          dedicated_cores: 1\n    - name: {t2}\n      host_groups:\n        - name: {t2}\n          dedicated_cores: 1\n  api:\n    bind_address: SOCKET\n");
        let out = up_fails(&yaml);
        assert!(
            out.contains(&format!("{t1}/{t1} 1, {t2}/{t2} 1"))
                || out.contains(&format!("{t2}/{t2} 1, {t1}/{t1} 1")),
            "{out}"
        );
        for x in [&t1, &t2] {
            common::assert_clean(x, Path::new("/nonexistent"));
        }
    }
    common::assert_clean(&t, Path::new("/nonexistent"));
}

/// Every process in a node's cgroup (a microVM: its QEMU and the threads' owner).
fn procs_of(t: &str, id: &str) -> Vec<i64> {
    let f = if v1() {
        format!("/sys/fs/cgroup/cpuset/bulkhead/{t}/{id}/cgroup.procs")
    } else {
        format!("/sys/fs/cgroup/bulkhead/{t}/{id}/cgroup.procs")
    };
    read(f).lines().filter_map(|l| l.parse().ok()).collect()
}

/// A microVM's QEMU lives in its node's cgroup: pinning holds for it as for a jail.
#[test]
fn a_microvm_with_dedicated_cores_runs_its_qemu_there() {
    if !common::privileged() {
        return;
    }
    let cpus = host_cpus();
    if cpus.len() < 2 {
        eprintln!("SKIP: dedicated cores need a host with 2 CPUs or more");
        return;
    }
    let _g = serial();
    let netns = common::netlab::Netns::new();
    let d = common::Daemon::start_in(
        &netns.path(),
        "nq",
        &common::vm_config().replace("ram_mb: 256", "ram_mb: 256\n      dedicated_cores: 1"),
    );
    let node = d
        .vm_ok(&["add", &d.tenant, "--timeout", "120s"])
        .trim()
        .to_string();
    let mine = cpus.last().unwrap().to_string();
    let id = bulkhead_driver::spec::spec_cgroup(&d.tenant_dir().join("nodes").join(&node)).unwrap();
    let procs = procs_of(&d.tenant, &id);
    assert!(!procs.is_empty());
    let mut saw_qemu = false;
    for p in procs {
        let comm = read(format!("/proc/{p}/comm"));
        saw_qemu |= comm.starts_with("qemu");
        assert_eq!(
            cpus_allowed(p),
            mine,
            "{comm} ({p}) in the microVM's cgroup"
        );
        // Each of QEMU's threads (vCPUs included) too.
        for t in std::fs::read_dir(format!("/proc/{p}/task"))
            .unwrap()
            .flatten()
        {
            let st = read(t.path().join("status"));
            let l = st
                .lines()
                .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
                .unwrap();
            assert_eq!(l.trim(), mine, "a thread of {comm}");
        }
    }
    assert!(saw_qemu, "no QEMU in the node's cgroup");
    d.stop_and_assert_clean();
}

/// The v2 code for real: a daemon inside a microVM whose guest mounts only cgroup v2 (the
/// host here is v1), with two tenants, one group with a dedicated core.
#[test]
fn cgroup_v2_weights_daemon_group_and_dedicated_cores_inside_a_microvm() {
    if !common::privileged() {
        return;
    }
    let _g = serial();
    let netns = common::netlab::Netns::new();
    let d = common::Daemon::start_in(
        &netns.path(),
        "nv",
        &common::vm_config()
            .replace("ram_mb: 256", "ram_mb: 1024\n      vcpu: 2")
            .replace("storage_size: 256M", "storage_size: 1G"),
    );
    let node = d
        .vm_ok(&["add", &d.tenant, "--timeout", "180s"])
        .trim()
        .to_string();
    let bins = tempfile::tempdir().unwrap();
    let dir = Path::new(common::BIN).parent().unwrap();
    for b in ["bulkhead", "bulkhead-supervisor", "bulkhead-agent"] {
        std::fs::copy(dir.join(b), bins.path().join(b)).unwrap();
    }
    d.vm_ok(&[
        "cp",
        bins.path().to_str().unwrap(),
        &format!("{node}:/usr/local/bin"),
    ]);
    let script = r#"
set -u
export PATH=/usr/local/bin:$PATH
mount -t cgroup2 none /sys/fs/cgroup || exit 10
mkdir -p /run
cat > /tmp/n.yaml <<Y
config:
  graceful_shutdown: false
  tenants:
    - name: ta
      host_groups:
        - name: ga
          ram_mb: 64
          storage_size: 32M
          dedicated_cores: 1
    - name: tb
      host_groups:
        - name: gb
          ram_mb: 64
          storage_size: 32M
  api:
    bind_address: /run/admin.sock
Y
setsid bulkhead up /tmp/n.yaml --state-dir /var/lib/bh > /tmp/up.log 2>&1 < /dev/null &
for i in $(seq 300); do [ -S /run/admin.sock ] && grep -q "ready on" /tmp/up.log && break; sleep 0.2; done
grep -q "ready on" /tmp/up.log || { cat /tmp/up.log; exit 12; }
B=/sys/fs/cgroup/bulkhead
echo "cpus $(cat /sys/fs/cgroup/cpuset.cpus.effective)"
echo "weights $(cat $B/ta/cpu.weight) $(cat $B/tb/cpu.weight) $(cat $B/_daemon/cpu.weight)"
echo "daemon $(sed -n 's/^0:://p' /proc/$(pidof bulkhead)/cgroup)"
echo "daemoncpus $(awk '/Cpus_allowed_list/{print $2}' /proc/$(pidof bulkhead)/status)"
na=$(bulkhead vm add ga --socket /run/admin.sock) || { cat /tmp/up.log; exit 13; }
nb=$(bulkhead vm add gb --socket /run/admin.sock) || { cat /tmp/up.log; exit 14; }
echo "pinned $(bulkhead vm exec --socket /run/admin.sock $na -- awk '/Cpus_allowed_list/{print $2}' /proc/self/status)"
echo "shared $(bulkhead vm exec --socket /run/admin.sock $nb -- awk '/Cpus_allowed_list/{print $2}' /proc/self/status)"
echo "claim $(cat /run/bulkhead/cores/1)"
kill $(pidof bulkhead)
for i in $(seq 100); do pidof bulkhead >/dev/null || break; sleep 0.1; done
[ -e $B ] && echo "left $B $(ls $B)"
[ -e /run/bulkhead/cores/1 ] && echo "left claim"
# The guest has no mkfs.ext4: the daemon rightly warns that volumes cannot be encrypted here.
grep -E 'WARN|ERROR' /tmp/up.log | grep -v 'storage protection not available' | sed 's/^/log: /'
exit 0
"#;
    let (code, out, err) = d.sh(&node, script);
    assert_eq!(code, 0, "{out}{err}");
    let line = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k} ")))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(line("cpus"), "0-1", "{out}");
    assert_eq!(line("weights"), "100 100 400", "{out}");
    assert_eq!(line("daemon"), "/bulkhead/_daemon", "{out}");
    assert_eq!(line("daemoncpus"), "0", "{out}");
    assert_eq!(line("pinned"), "1", "{out}");
    assert_eq!(line("shared"), "0", "{out}");
    assert_eq!(line("claim"), "ta/ga", "{out}");
    assert!(!out.contains("left "), "{out}");
    assert!(
        !out.contains("log: "),
        "warnings in the guest daemon's log:\n{out}"
    );
    d.stop_and_assert_clean();
}

/// A daemon that crashes keeps its group's cores (its pinned node runs on); started again it
/// takes the same ones and re-adopts the node; a stop then gives everything back.
#[test]
fn a_crashed_daemon_gets_its_cores_back_and_a_stop_removes_everything() {
    if !common::privileged() {
        return;
    }
    let cpus = host_cpus();
    if cpus.len() < 2 {
        eprintln!("SKIP: dedicated cores need a host with 2 CPUs or more");
        return;
    }
    let _g = serial();
    let mine = cpus.last().unwrap().to_string();
    let mut d = common::Daemon::start_edited("nc", &[], |y| {
        y.replace("    ram_mb:", "    dedicated_cores: 1\n    ram_mb:")
    });
    assert!(
        read(d.config.clone()).contains("dedicated_cores: 1"),
        "{}",
        read(d.config.clone())
    );
    let n = d.add();
    let init = d.supervisor_state(&n)["init_pid"].as_i64().unwrap();
    assert_eq!(cpus_allowed(init), mine);
    let claim = format!("/run/bulkhead/cores/{mine}");
    let owner = read(&claim);
    assert!(owner.starts_with(&format!("{}/", d.tenant)), "{owner}");
    d.crash();
    assert_eq!(read(&claim), owner, "the claim outlives a crash");
    assert_eq!(cpus_allowed(init), mine, "the node runs on where it was");
    d.spawn();
    assert_eq!(read(&claim), owner);
    assert_eq!(
        d.supervisor_state(&n)["init_pid"].as_i64().unwrap(),
        init,
        "re-adopted"
    );
    assert_eq!(cpus_allowed(init), mine);
    d.stop_and_assert_clean();
    assert!(!Path::new(&claim).exists());
}

/// A start that fails after its cores were claimed (here: its API socket cannot be made)
/// leaves no claim behind: the cores are free for the next daemon.
#[test]
fn a_start_that_fails_after_the_claim_leaves_no_claim() {
    if !common::privileged() {
        return;
    }
    if host_cpus().len() < 2 {
        eprintln!("SKIP: dedicated cores need a host with 2 CPUs or more");
        return;
    }
    let _g = serial();
    let t = common::unique_tenant("nf");
    let dir = common::test_dir();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let sock = blocker.join("a.sock");
    let out = up_fails(&format!("config:\n  tenant: {t}\n  host_groups:\n    - name: g\n      dedicated_cores: 1\n  graceful_shutdown: false\n  api:\n    bind_address: {}\n", sock.display()));
    assert!(out.contains("not-a-dir"), "{out}");
    common::assert_clean(&t, Path::new("/nonexistent"));
}
