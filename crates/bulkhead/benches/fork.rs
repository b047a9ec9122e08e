//! `cargo bench -p bulkhead --bench fork` (as root; `-- --quick` for a short run): fork-to-ready
//! (`POST /vm/commits/{id}/fork?wait=agent`) beside a plain create (`wait=agent`) in the same
//! run, alternating one of each per round so that drift hits both alike; and the commit
//! itself for a node with 64 MiB written. Figures, not assertions (docs/benchmarks.md).

use bulkhead_api::{Client, Endpoint};
use hyper::Method;
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

fn row(name: &str, v: &mut [f64]) -> f64 {
    let (p50, p95) = (pct(v, 0.5), pct(v, 0.95));
    println!(
        "{name:<44} p50 {p50:>8.2} ms   p95 {p95:>8.2} ms   (n={})",
        v.len()
    );
    p50
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the fork benchmark needs root");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, commits) = if quick { (5, 2) } else { (30, 5) };
    let dir = common::bench_dir();
    let sock = dir.path().join("api.sock");
    let tenant = format!("fork{}", std::process::id());
    let yaml = format!(
        "config:\n  tenant: {tenant}\n  host_groups:\n    - name: {tenant}\n      ram_mb: 256\n  api:\n    bind_address: {}\n",
        sock.display()
    );
    let state = dir.path().join("state");
    let mut daemon = common::start_daemon(dir.path(), &yaml, &state, &sock);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = Client::new(Endpoint::Unix(sock.clone()));
    let post = |path: &str| -> serde_json::Value {
        rt.block_on(c.json(Method::POST, path, None))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    };
    let delete = |node: &str| {
        let _: serde_json::Value = rt
            .block_on(c.json(
                Method::DELETE,
                &format!("/hostgroup/{tenant}/nodes/{node}"),
                None,
            ))
            .unwrap();
    };
    println!(
        "bulkhead fork benchmark: {} cores, driver jail, network none",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    let src = post(&format!("/hostgroup/{tenant}/nodes?wait=agent"))["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    let cmd = "mkdir -p /opt/app && head -c 67108864 /dev/urandom > /opt/app/blob && for i in $(seq 500); do echo $i > /opt/app/f$i; done";
    let out = std::process::Command::new(common::BIN)
        .args(["vm", "exec", &src, "--socket"])
        .arg(&sock)
        .args(["--", "sh", "-c", cmd])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut commit_ms = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..commits {
        let t = Instant::now();
        let v = post(&format!("/vm/{src}/commit"));
        commit_ms.push(ms(t.elapsed()));
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    let id = ids[0].clone();
    let mut create = Vec::new();
    let mut fork = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let n = post(&format!("/hostgroup/{tenant}/nodes?wait=agent"));
        create.push(ms(t.elapsed()));
        delete(n["hostname"].as_str().unwrap());
        let t = Instant::now();
        let n = post(&format!("/vm/commits/{id}/fork?wait=agent"));
        fork.push(ms(t.elapsed()));
        delete(n["hostname"].as_str().unwrap());
    }
    println!();
    row("commit (64 MiB + 500 files written)", &mut commit_ms);
    let pc = row("create, wait=agent", &mut create);
    let pf = row("fork, wait=agent (fork-to-ready)", &mut fork);
    println!("fork / create p50 ratio: {:.2}", pf / pc);
    delete(&src);
    for id in ids {
        let _ = rt.block_on(c.send_ok(
            Method::DELETE,
            &format!("/vm/commits/{id}"),
            bulkhead_api::client::full_body(bytes::Bytes::new()),
            None,
        ));
    }
    // SAFETY: signalling the daemon this benchmark started, by its pid.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}
