//! `cargo bench -p bulkhead --bench audit` (as root; `-- --quick` for fewer samples): what the
//! audit trail (#14, ADR 0031) adds to node create (wait=agent) and exec `true` latency. Two
//! one-tenant daemons in the same run, one with `audit.enabled: true` (the default), one with
//! `false`; samples alternate between them (and which goes first), so drift in the machine's
//! speed hits both alike. Prints p50s and the on/off ratios (the bound: at most 1.05).
//! Figures, not assertions (docs/benchmarks.md).

use bulkhead_api::client::full_body;
use bulkhead_api::{Client, Endpoint};
use http_body_util::BodyExt;
use hyper::Method;
use std::time::Instant;

#[path = "common.rs"]
mod common;

fn p50(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn p95(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * 0.95).round() as usize]
}

struct Side {
    name: &'static str,
    tenant: String,
    client: Client,
    daemon: std::process::Child,
    nodes: Vec<String>,
    create: Vec<f64>,
    exec: Vec<f64>,
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the audit benchmark needs root");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (n_create, n_exec) = if quick { (20, 300) } else { (100, 2000) };
    let dir = common::bench_dir();
    let state = dir.path().join("state");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut sides: Vec<Side> = [("audit on", "true"), ("audit off", "false")]
        .into_iter()
        .enumerate()
        .map(|(i, (name, enabled))| {
            let d = dir.path().join(format!("d{i}"));
            std::fs::create_dir(&d).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711)).unwrap();
            let sock = d.join("api.sock");
            let tenant = format!("audb{}x{i}", std::process::id());
            let yaml = format!(
                "config:\n  tenant: {tenant}\n  host_groups:\n    - name: {tenant}\n      ram_mb: 128\n  audit:\n    enabled: {enabled}\n  api:\n    bind_address: {}\n",
                sock.display()
            );
            let daemon = common::start_daemon(&d, &yaml, &state, &sock);
            Side {
                name,
                tenant,
                client: Client::new(Endpoint::Unix(sock)),
                daemon,
                nodes: Vec::new(),
                create: Vec::new(),
                exec: Vec::new(),
            }
        })
        .collect();
    println!(
        "bulkhead audit benchmark: {} cores, kernel {}, {} build",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    for round in 0..n_create {
        for k in 0..2 {
            let s = &mut sides[(round + k) % 2];
            let t = Instant::now();
            let v: serde_json::Value = rt
                .block_on(s.client.json(
                    Method::POST,
                    &format!("/hostgroup/{}/nodes?wait=agent", s.tenant),
                    None,
                ))
                .unwrap();
            s.create.push(t.elapsed().as_secs_f64() * 1000.0);
            s.nodes.push(v["hostname"].as_str().unwrap().to_string());
        }
    }
    let paths: Vec<String> = sides
        .iter()
        .map(|s| format!("/vm/{}/exec?cmd=true&buffered=true", s.nodes[0]))
        .collect();
    for round in 0..n_exec {
        for k in 0..2 {
            let i = (round + k) % 2;
            let s = &mut sides[i];
            let t = Instant::now();
            let r = rt
                .block_on(
                    s.client
                        .send_ok(Method::POST, &paths[i], full_body(""), None),
                )
                .unwrap();
            rt.block_on(r.into_body().collect()).unwrap();
            s.exec.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let lines = rt.block_on(async {
        let r = sides[0]
            .client
            .send_ok(Method::GET, "/metrics", full_body(""), None)
            .await
            .unwrap();
        let m = String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes())
            .into_owned();
        m.lines()
            .filter(|l| l.starts_with("bulkhead_audit_"))
            .map(String::from)
            .collect::<Vec<_>>()
    });
    let mut p = Vec::new();
    for s in &mut sides {
        let (c50, c95) = (p50(&mut s.create), p95(&mut s.create));
        let (e50, e95) = (p50(&mut s.exec), p95(&mut s.exec));
        println!(
            "{:<10} create wait=agent p50 {c50:>8.2} ms  p95 {c95:>8.2} ms (n={})   exec true p50 {e50:>6.3} ms  p95 {e95:>6.3} ms (n={})",
            s.name,
            s.create.len(),
            s.exec.len()
        );
        p.push((c50, e50));
    }
    println!(
        "on/off: create p50 {:.3}x, exec p50 {:.3}x   (bound: <= 1.05x)",
        p[0].0 / p[1].0,
        p[0].1 / p[1].1
    );
    println!("{}", lines.join("\n"));
    // The recording itself, in process: what `Audit::record` costs a request (the writer
    // thread's work is off the request's path), and how fast the writer drains.
    let n = if quick { 20_000 } else { 60_000 }; // within the queue: none dropped
    let tmp = common::bench_dir();
    let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[1u8; 32]).unwrap();
    let trail = bulkhead_daemon::audit::Audit::start(
        tmp.path(),
        "bench",
        pair,
        &bulkhead_core::config::audit::AuditConfig::default(),
    )
    .unwrap();
    let rec = bulkhead_daemon::audit::Record {
        request_id: "01JF0000000000000000000000".into(),
        principal: "uid:0".into(),
        via: "socket".into(),
        tenant: "bench".into(),
        action: "exec_in_node".into(),
        object: "node/bench-1".into(),
        outcome: "allowed".into(),
        reason: String::new(),
    };
    let t = Instant::now();
    for _ in 0..n {
        trail.record(rec.clone());
    }
    let call = t.elapsed();
    trail.flush();
    let drained = t.elapsed();
    trail.close();
    println!(
        "Audit::record: {:.2} us per call (a Record clone and a channel send; n={n}); the writer drained {n} lines in {:.0} ms ({:.0} lines/s); dropped {}",
        call.as_secs_f64() * 1e6 / n as f64,
        drained.as_secs_f64() * 1000.0,
        n as f64 / drained.as_secs_f64(),
        trail.stats().dropped.load(std::sync::atomic::Ordering::Relaxed)
    );
    for s in &mut sides {
        // SAFETY: stopping a daemon this benchmark started; it deletes its nodes on SIGTERM.
        unsafe { libc::kill(s.daemon.id() as i32, libc::SIGTERM) };
        let _ = s.daemon.wait();
    }
}
