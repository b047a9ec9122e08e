//! `cargo bench -p bulkhead --bench sdk_exec` (as root): the exec round trip (`echo hi`,
//! buffered) through Slicer's Go SDK (its `ExecBuffered`, in the check program built by
//! scripts/sdk-tools.sh, timing each call inside the Go process) beside bulkhead's own client
//! (bulkhead_api::Client, as the lifecycle benchmark uses), against the same daemon and node,
//! in alternating rounds of the same run. Prints medians, p90s and the ratio. `--quick`: fewer.

use bulkhead_api::client::full_body;
use bulkhead_api::{Client, Endpoint};
use http_body_util::BodyExt;
use hyper::Method;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[path = "common.rs"]
mod common;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the sdk_exec benchmark needs root");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, per_round) = if quick { (3, 50) } else { (6, 200) };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tools = std::env::var_os("BULKHEAD_SDK_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/sdk-tools"));
    let st = Command::new(root.join("scripts/sdk-tools.sh"))
        .arg(&tools)
        .status()
        .expect("run scripts/sdk-tools.sh");
    assert!(st.success(), "scripts/sdk-tools.sh failed");

    let dir = common::bench_dir();
    let sock = dir.path().join("api.sock");
    let tenant = format!("sdkb{}", std::process::id());
    let yaml = format!(
        "config:\n  tenant: {tenant}\n  host_groups:\n    - name: {tenant}\n      ram_mb: 128\n  api:\n    bind_address: {}\n",
        sock.display()
    );
    let state = dir.path().join("state");
    let mut daemon = common::start_daemon(dir.path(), &yaml, &state, &sock);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = Client::new(Endpoint::Unix(sock.clone()));
    let v: serde_json::Value = rt
        .block_on(c.json(
            Method::POST,
            &format!("/hostgroup/{tenant}/nodes?wait=agent"),
            None,
        ))
        .unwrap();
    let node = v["hostname"].as_str().unwrap().to_string();

    let path = format!("/vm/{node}/exec?cmd=echo&args=hi&buffered=true");
    let own = |n: usize| -> Vec<f64> {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                let r = rt
                    .block_on(c.send_ok(Method::POST, &path, full_body(""), None))
                    .unwrap();
                let body = rt.block_on(r.into_body().collect()).unwrap().to_bytes();
                let us = t.elapsed().as_secs_f64() * 1e6;
                assert!(body.windows(2).any(|w| w == b"hi"), "{body:?}");
                us
            })
            .collect()
    };
    let go = |n: usize| -> Vec<f64> {
        let out = Command::new(tools.join("bin/sdkcheck"))
            .env("SDK_SET", "bench")
            .env("SDK_URL", &sock)
            .env("SDK_GROUP", &tenant)
            .env("SDK_NODE", &node)
            .env("SDK_N", n.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "Go SDK bench: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["samples_us"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    own(20); // warm-up; the Go program warms up inside itself
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.extend(own(per_round));
        b.extend(go(per_round));
    }
    let (a50, a90) = (pct(&mut a, 0.5), pct(&mut a, 0.9));
    let (b50, b90) = (pct(&mut b, 0.5), pct(&mut b, 0.9));
    println!(
        "exec round trip, `echo hi` buffered, jail node, UNIX socket; {rounds} alternating rounds of {per_round}; {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "bulkhead client (bulkhead_api::Client)  p50 {:>8.1} us   p90 {:>8.1} us   (n={})",
        a50,
        a90,
        a.len()
    );
    println!(
        "Slicer Go SDK (ExecBuffered)            p50 {:>8.1} us   p90 {:>8.1} us   (n={})",
        b50,
        b90,
        b.len()
    );
    println!("Go SDK p50 / bulkhead client p50 = {:.2}x", b50 / a50);

    rt.block_on(c.json::<serde_json::Value>(
        Method::DELETE,
        &format!("/hostgroup/{tenant}/nodes/{node}"),
        None,
    ))
    .ok();
    // SAFETY: stopping the daemon this benchmark started, by its pid.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}
