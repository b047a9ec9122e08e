//! microVM nodes (`hypervisor: qemu`), end to end. On this machine kind KVM cannot boot
//! guests, so these run under TCG (the daemon's probe decides and says so); they are few and
//! slow by nature. The guest kernel is built from Debian's package on first use.

mod common;

use common::netlab::Netns;
use common::{privileged, vm_config, Daemon};

#[test]
fn microvm_node_lifecycle_exec_copy_limits_pause_and_readoption() {
    if !privileged() {
        return;
    }
    // A network namespace of the daemon's own (no lab needed: mode none).
    let netns = Netns::new();
    let ns = netns.path();
    let mut d = Daemon::start_in(&ns, "vm", &vm_config());
    assert!(d.log().contains("microVM driver ready"), "{}", d.log());
    let node = d
        .vm_ok(&["add", &d.tenant, "--timeout", "120s"])
        .trim()
        .to_string();

    // A real guest: its own kernel (Debian's 6.1 package), not the host's.
    let (code, out, err) = d.sh(&node, "uname -r; hostname; echo hi >&2; exit 7");
    assert_eq!(code, 7, "{err}");
    let mut lines = out.lines();
    let guest_kernel = lines.next().unwrap_or_default().to_string();
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(
        guest_kernel,
        host_kernel.trim(),
        "the node runs the host's kernel"
    );
    assert!(
        guest_kernel.contains("amd64") || guest_kernel.contains("arm64"),
        "{guest_kernel}"
    );
    assert_eq!(lines.next(), Some(node.as_str()));
    assert_eq!(err.trim(), "hi");

    // Copies both ways: a file and a tree.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("sub/big.bin"), &big).unwrap();
    d.vm_ok(&["cp", src.to_str().unwrap(), &format!("{node}:/work/tree")]);
    let (_, sum, _) = d.sh(
        &node,
        "cat /work/tree/a.txt; wc -c < /work/tree/sub/big.bin",
    );
    assert_eq!(
        sum.split_whitespace().collect::<Vec<_>>(),
        vec!["alpha", "300000"]
    );
    let back = tmp.path().join("back");
    d.vm_ok(&["cp", &format!("{node}:/work/tree"), back.to_str().unwrap()]);
    assert_eq!(std::fs::read(back.join("sub/big.bin")).unwrap(), big);
    d.vm_ok(&[
        "cp",
        src.join("a.txt").to_str().unwrap(),
        &format!("{node}:/work/one.txt"),
    ]);
    let one = tmp.path().join("one.txt");
    d.vm_ok(&[
        "cp",
        &format!("{node}:/work/one.txt"),
        one.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&one).unwrap(), "alpha\n");

    // Memory: the guest has the group's RAM, and a hog dies inside the guest, not the node.
    let (_, mem, _) = d.sh(&node, "grep MemTotal /proc/meminfo");
    let kib: u64 = mem.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(kib < 256 * 1024 && kib > 128 * 1024, "MemTotal {kib} kB");
    let (code, _, _) = d.sh(&node, "head -c 600m /dev/zero | tail > /dev/null");
    assert_ne!(code, 0, "a 600 MiB hog survived in a 256 MiB guest");
    let (code, out, _) = d.sh(&node, "echo still here");
    assert_eq!((code, out.trim()), (0, "still here"));

    // The guest may write its console endlessly; the host keeps about a MiB of it.
    let t0 = std::time::Instant::now();
    let (code, _, err) = d.sh(
        &node,
        "head -c 1400000 /dev/zero | tr '\\0' x > /dev/console",
    );
    assert_eq!(code, 0, "{err}");
    let dir = d.tenant_dir().join("nodes").join(&node);
    let mut total = 0;
    for _ in 0..100 {
        total = ["console.log", "console.log.1"]
            .iter()
            .map(|f| std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0))
            .sum::<u64>();
        if total >= 1_400_000 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let cur = std::fs::metadata(dir.join("console.log")).unwrap().len();
    assert!(cur <= 1 << 20, "console.log grew to {cur} bytes");
    assert!(
        dir.join("console.log.1").exists(),
        "no rotation after {total} bytes"
    );
    eprintln!("1.4 MB through the guest console took {:?}", t0.elapsed());

    // Pause and resume (QMP stop/cont).
    d.vm_ok(&["pause", &node]);
    let o = d.vm(&["exec", &node, "--", "true"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Paused"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    d.vm_ok(&["resume", &node]);
    assert_eq!(d.sh(&node, "echo back").1.trim(), "back");

    // kill -9 of the daemon: the VM keeps running and is re-adopted.
    d.sh(&node, "echo kept > /work/kept");
    d.crash();
    d.spawn();
    assert!(d.log().contains("re-adopted running node"), "{}", d.log());
    assert_eq!(d.sh(&node, "cat /work/kept").1.trim(), "kept");

    // graceful_shutdown: true leaves the microVM running across a stop and start (the
    // daemon reads its config at start: restart it with the new one first).
    let cfg = d.config_text();
    std::fs::write(
        &d.config,
        cfg.replace("graceful_shutdown: false", "graceful_shutdown: true"),
    )
    .unwrap();
    d.crash();
    d.spawn();
    d.stop();
    let alive = std::process::Command::new("pgrep")
        .args(["-f", &format!("bulkhead.hostname={node}")])
        .output()
        .unwrap();
    assert!(
        !alive.stdout.is_empty(),
        "graceful_shutdown: true stopped the microVM"
    );
    d.spawn();
    assert_eq!(d.sh(&node, "cat /work/kept").1.trim(), "kept");
    std::fs::write(&d.config, cfg).unwrap();

    // Delete: QEMU, its cgroup and the node's files go.
    d.vm_ok(&["delete", &node]);
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("bulkhead.hostname={node}")])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "QEMU left: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    d.stop_and_assert_clean();
}

/// This machine kind has cgroup v1 only; a microVM guest runs a kernel with a full cgroup v2
/// hierarchy. So the jail driver's cgroup v2 path is proven there: bulkhead itself (the same
/// static binaries) runs inside a guest on cgroup2, and its node's limits, OOM accounting,
/// freezer and cleanup are checked in the guest's real v2 files.
#[test]
fn jail_driver_on_cgroup_v2_inside_a_microvm() {
    if !privileged() {
        return;
    }
    let netns = Netns::new();
    let ns = netns.path();
    let d = Daemon::start_in(
        &ns,
        "v2",
        &vm_config()
            .replace("ram_mb: 256", "ram_mb: 1024")
            .replace("storage_size: 256M", "storage_size: 1G"),
    );
    let node = d
        .vm_ok(&["add", &d.tenant, "--timeout", "120s"])
        .trim()
        .to_string();
    // The same binaries as on the host (static), copied into the guest.
    let bins = tempfile::tempdir().unwrap();
    let dir = std::path::Path::new(common::BIN).parent().unwrap();
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
bulkhead new g2 --socket /run/g2.sock --ram-mb 64 --storage-size 32M > /tmp/g2.yaml || exit 11
setsid bulkhead up /tmp/g2.yaml --state-dir /var/lib/bh > /tmp/up.log 2>&1 < /dev/null &
for i in $(seq 300); do [ -S /run/g2.sock ] && grep -q "ready on" /tmp/up.log && break; sleep 0.2; done
grep -q 'cgroup="v2"' /tmp/up.log || { cat /tmp/up.log; exit 12; }
n=$(bulkhead vm add g2 --socket /run/g2.sock) || { cat /tmp/up.log; exit 13; }
id=$(sed -n 's/.*"cgroup": *"\(c[0-9a-f]*\)".*/\1/p' /var/lib/bh/tenants/g2/nodes/$n/spec.json)
cg=/sys/fs/cgroup/bulkhead/g2/$id
echo "limits $(cat $cg/memory.max) $(cat $cg/memory.swap.max) $(cat $cg/pids.max) $(cat $cg/cpu.max)"
bulkhead vm exec --socket /run/g2.sock $n -- sh -c 'head -c 200m /dev/zero | tail > /dev/null'
echo "hog $?"
echo "oom $(sed -n 's/^oom_kill //p' $cg/memory.events)"
bulkhead vm pause --socket /run/g2.sock $n >/dev/null && echo "frozen $(cat $cg/cgroup.freeze)"
bulkhead vm resume --socket /run/g2.sock $n >/dev/null
echo "after $(bulkhead vm exec --socket /run/g2.sock $n -- echo ok)"
bulkhead vm delete --socket /run/g2.sock $n >/dev/null
[ -e $cg ] && echo "left $cg"
kill $(pidof bulkhead)
for i in $(seq 100); do pidof bulkhead >/dev/null || break; sleep 0.1; done
[ -e /sys/fs/cgroup/bulkhead ] && echo "left /sys/fs/cgroup/bulkhead"
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
    assert_eq!(line("limits"), "67108864 0 1024 100000 100000", "{out}");
    assert_eq!(line("hog"), "137", "{out}");
    assert!(line("oom").parse::<u64>().unwrap_or(0) >= 1, "{out}");
    assert_eq!(line("frozen"), "1", "{out}");
    assert_eq!(line("after"), "ok", "{out}");
    assert!(!out.contains("left "), "{out}");
    assert!(
        !out.contains("log: "),
        "warnings in the guest daemon's log:\n{out}"
    );
    d.stop_and_assert_clean();
}

/// microVM configs that could never boot are refused up front, naming the key, instead of
/// timing out at the first create (each of these used to cost a 60 s wait and a 408).
#[test]
fn impossible_microvm_configs_are_refused_with_the_key_named() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("ram_mb: 256", "ram_mb: 32", "host_groups[0].ram_mb", true),
        // Checked against the host by `validate` and again by `up` (core::host).
        (
            "ram_mb: 256",
            "ram_gb: 100000",
            "host_groups[0].ram_gb",
            true,
        ),
        (
            "ram_mb: 256",
            "ram_mb: 256\n      vcpu: 256",
            "host_groups[0].vcpu",
            true,
        ),
    ];
    for (i, (from, to, want, at_validate)) in cases.into_iter().enumerate() {
        let tenant = common::unique_tenant("vbad");
        let cfg = vm_config()
            .replace(from, to)
            .replace("TENANT", &tenant)
            .replace(
                "SOCKET",
                dir.path().join(format!("{i}.sock")).to_str().unwrap(),
            );
        let p = dir.path().join(format!("{i}.yaml"));
        std::fs::write(&p, cfg).unwrap();
        let o = common::cli(&["validate", p.to_str().unwrap()]);
        assert_eq!(!o.status.success(), at_validate, "case {i}");
        let t0 = std::time::Instant::now();
        let o = std::process::Command::new("unshare")
            .args(["--net", "--", common::BIN, "up"])
            .arg(&p)
            .arg("--state-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "case {i} started: {err}");
        assert!(err.contains(want), "case {i}: {err:?} does not name {want}");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "case {i} took {:?} to be refused",
            t0.elapsed()
        );
        common::assert_clean(&tenant, &dir.path().join("tenants").join(&tenant));
    }
}
