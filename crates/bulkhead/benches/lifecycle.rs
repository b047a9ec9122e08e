//! `cargo bench -p bulkhead --bench lifecycle` (as root): node create (wait=agent) and exec
//! `true` latency, beside `bwrap --unshare-all` and plain fork+exec of the same command measured
//! in the same run, plus host memory per idle node. Prints medians, p95 and ratios to the
//! baselines. Figures, not assertions: targets are judged by reading them (docs/benchmarks.md).
//!
//! The daemon runs in a network namespace of its own, like the end-to-end tests.

use bulkhead_api::client::full_body;
use bulkhead_api::{Client, Endpoint};
use http_body_util::BodyExt;
use hyper::Method;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn time_cmd(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            ms(t.elapsed())
        })
        .collect()
}

fn row(name: &str, v: &mut [f64]) -> (f64, f64) {
    let (p50, p95) = (pct(v, 0.5), pct(v, 0.95));
    println!(
        "{name:<44} p50 {p50:>8.2} ms   p95 {p95:>8.2} ms   (n={})",
        v.len()
    );
    (p50, p95)
}

fn mem_available_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Pss:")
                    .map(|v| v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0))
            })
        })
        .unwrap_or(0)
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the lifecycle benchmark needs root");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (n_create, n_exec) = if quick { (10, 50) } else { (100, 500) };
    let dir = common::bench_dir();
    let sock = dir.path().join("api.sock");
    let tenant = format!("bench{}", std::process::id());
    // Two host groups: the tenant's own (network none) and `net` (isolated networking: a
    // veth, addresses, routes and nft rules per node).
    let yaml = format!(
        "config:\n  tenant: {tenant}\n  host_groups:\n    - name: {tenant}\n      ram_mb: 128\n    - name: net\n      ram_mb: 128\n      network: {{ mode: isolated, range: 10.250.0.0/22 }}\n  api:\n    bind_address: {}\n",
        sock.display()
    );
    let state = dir.path().join("state");
    let mut daemon = common::start_daemon(dir.path(), &yaml, &state, &sock);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = Client::new(Endpoint::Unix(sock.clone()));
    let rootfs = state.join("images/minimal/rootfs");
    let create_in = |group: &str| -> String {
        let v: serde_json::Value = rt
            .block_on(c.json(
                Method::POST,
                &format!("/hostgroup/{group}/nodes?wait=agent"),
                None,
            ))
            .unwrap();
        v["hostname"].as_str().unwrap().to_string()
    };
    let create_node = || create_in(&tenant);

    println!(
        "bulkhead lifecycle benchmark: {} cores, kernel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    println!(
        "driver jail, network none and isolated, cgroup {}",
        if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
            && !std::path::Path::new("/sys/fs/cgroup/memory").exists()
        {
            "v2"
        } else {
            "v1"
        }
    );
    println!();

    // Baselines, same command, same run.
    let mut fork = time_cmd(n_exec, || {
        Command::new("/bin/true").status().unwrap();
    });
    // bwrap and node create alternate, one sample each per round, so that drift in the
    // machine's speed (a shared VM) hits both alike and the ratio stays fair.
    let bwrap_ok = Command::new("bwrap").arg("--version").output().is_ok();
    if !bwrap_ok {
        eprintln!("bwrap not installed (apt-get install bubblewrap): no bwrap baseline");
    }
    let mut bwrap = Vec::new();
    let mut create = Vec::new();
    let mut create_net = Vec::new();
    let mut names = Vec::new();
    let mut net_names = Vec::new();
    for _ in 0..n_create {
        if bwrap_ok {
            let t = Instant::now();
            let st = Command::new("bwrap")
                .args(["--unshare-all", "--die-with-parent", "--bind"])
                .arg(&rootfs)
                .args([
                    "/",
                    "--proc",
                    "/proc",
                    "--dev",
                    "/dev",
                    "--tmpfs",
                    "/tmp",
                    "/bin/true",
                ])
                .status()
                .unwrap();
            bwrap.push(ms(t.elapsed()));
            assert!(st.success());
        }
        // Node create with wait=agent; the nodes are deleted afterwards, outside the timing.
        let t = Instant::now();
        let name = create_node();
        create.push(ms(t.elapsed()));
        names.push(name);
        let t = Instant::now();
        let name = create_in("net");
        create_net.push(ms(t.elapsed()));
        net_names.push(name);
    }
    if bwrap.is_empty() {
        bwrap.push(f64::NAN);
    }
    let node = names[0].clone();
    let exec_path = format!("/vm/{node}/exec?cmd=true&buffered=true");
    let mut exec = time_cmd(n_exec, || {
        let r = rt
            .block_on(c.send_ok(Method::POST, &exec_path, full_body(""), None))
            .unwrap();
        rt.block_on(r.into_body().collect()).unwrap();
    });
    let stream_path = format!("/vm/{node}/exec?cmd=true");
    let mut exec_stream = time_cmd(n_exec, || {
        let r = rt
            .block_on(c.send_ok(Method::POST, &stream_path, full_body(""), None))
            .unwrap();
        rt.block_on(r.into_body().collect()).unwrap();
    });

    let metrics = rt.block_on(async {
        let r = c
            .send_ok(Method::GET, "/metrics", full_body(""), None)
            .await
            .unwrap();
        String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()).into_owned()
    });
    let standby: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("bulkhead_standby_"))
        .collect();
    println!("{}", standby.join("   "));
    let (f50, _) = row("fork+exec /bin/true (baseline)", &mut fork);
    let (b50, _) = row("bwrap --unshare-all /bin/true (baseline)", &mut bwrap);
    let (c50, _) = row("node create, wait=agent", &mut create);
    let (n50, _) = row("node create, isolated network", &mut create_net);
    let (e50, _) = row("exec true, buffered (API + agent)", &mut exec);
    let (s50, _) = row("exec true, streamed NDJSON", &mut exec_stream);
    println!();
    println!(
        "create p50 / bwrap p50         = {:.2}x   (target <= 1.5x)",
        c50 / b50
    );
    println!(
        "isolated create p50            = {n50:.2} ms (target <= 10 ms), {:.2}x bwrap, +{:.2} ms over network none",
        n50 / b50,
        n50 - c50
    );
    println!(
        "exec p50 / fork+exec p50       = {:.2}x   (exec target p50 <= 2 ms: {:.2} ms)",
        e50 / f50,
        e50
    );
    println!("streamed exec p50 / fork+exec  = {:.2}x", s50 / f50);

    // Memory: delete all but a fresh set of idle nodes, then measure.
    for (g, n) in names
        .iter()
        .map(|n| (tenant.as_str(), n))
        .chain(net_names.iter().map(|n| ("net", n)))
    {
        rt.block_on(c.json::<serde_json::Value>(
            Method::DELETE,
            &format!("/hostgroup/{g}/nodes/{n}"),
            None,
        ))
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let idle = if quick { 10 } else { 20 };
    let before = mem_available_kib();
    let mut nodes = Vec::new();
    for _ in 0..idle {
        nodes.push(create_node());
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = mem_available_kib();
    let mut pss = 0;
    let mut cg = 0;
    for n in &nodes {
        let st: serde_json::Value = serde_json::from_slice(
            &std::fs::read(
                state
                    .join("tenants")
                    .join(&tenant)
                    .join("nodes")
                    .join(n)
                    .join("supervisor.json"),
            )
            .unwrap(),
        )
        .unwrap();
        pss += pss_kib(st["supervisor_pid"].as_i64().unwrap() as i32);
        let id = bulkhead_driver::spec::spec_cgroup(
            &state.join("tenants").join(&tenant).join("nodes").join(n),
        )
        .unwrap();
        let cgdir = std::path::Path::new("/sys/fs/cgroup/memory/bulkhead")
            .join(&tenant)
            .join(&id);
        let v2dir = std::path::Path::new("/sys/fs/cgroup/bulkhead")
            .join(&tenant)
            .join(&id);
        let cgdir = if cgdir.exists() { cgdir } else { v2dir };
        let usage = std::fs::read_to_string(cgdir.join("memory.usage_in_bytes"))
            .or_else(|_| std::fs::read_to_string(cgdir.join("memory.current")))
            .unwrap_or_default();
        cg += usage.trim().parse::<u64>().unwrap_or(0) / 1024;
        for p in std::fs::read_to_string(cgdir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
        {
            pss += pss_kib(p.trim().parse().unwrap_or(0));
        }
    }
    println!();
    println!("host memory per idle node ({idle} nodes):");
    println!(
        "  PSS of supervisor + node processes   {:>8.2} MiB",
        pss as f64 / 1024.0 / idle as f64
    );
    println!(
        "  node memory cgroup usage             {:>8.2} MiB",
        cg as f64 / 1024.0 / idle as f64
    );
    println!(
        "  MemAvailable drop                    {:>8.2} MiB   (target <= 2 MiB; noisy)",
        before.saturating_sub(after) as f64 / 1024.0 / idle as f64
    );

    // SAFETY: stopping the daemon this benchmark started; it deletes its nodes on SIGTERM.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}
