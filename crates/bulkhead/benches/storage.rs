//! `cargo bench -p bulkhead --bench storage` (as root; `-- --quick` for a short run): volume
//! create and delete latency (`POST /volumes`: record, sparse file, `mkfs.ext4 -O encrypt`,
//! a detached mount to set the fscrypt policy on `data`, rename; `DELETE`: wipe and unlink)
//! beside a plain `mkfs.ext4` of a sparse file of the same size in the same run, and node
//! create latency with one volume attached beside one without (issue #13: "volume create and
//! attach latency"). Figures, not assertions (docs/benchmarks.md).

use bulkhead_api::{Client, Endpoint};
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

fn row(name: &str, v: &mut [f64]) -> f64 {
    let (p50, p95) = (pct(v, 0.5), pct(v, 0.95));
    println!(
        "{name:<48} p50 {p50:>8.2} ms   p95 {p95:>8.2} ms   (n={})",
        v.len()
    );
    p50
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the storage benchmark needs root");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 5 } else { 30 };
    let size = "256M";
    let dir = common::bench_dir();
    let sock = dir.path().join("api.sock");
    let tenant = format!("benchvol{}", std::process::id());
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
    let post = |path: &str, body: serde_json::Value| -> serde_json::Value {
        rt.block_on(c.json(Method::POST, path, Some(&body)))
            .unwrap()
    };
    let del = |path: &str| {
        rt.block_on(c.send_ok(
            Method::DELETE,
            path,
            bulkhead_api::client::full_body(Vec::new()),
            None,
        ))
        .unwrap();
    };
    // Warm up (keyring, page cache of mkfs).
    let v = post(
        "/volumes",
        serde_json::json!({"name": "warm", "size": size}),
    );
    del(&format!("/volumes/{}", v["id"].as_str().unwrap()));

    let (mut create, mut delete, mut mkfs) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let t = Instant::now();
        let v = post(
            "/volumes",
            serde_json::json!({"name": format!("v{i}"), "size": size}),
        );
        create.push(ms(t.elapsed()));
        let t = Instant::now();
        del(&format!("/volumes/{}", v["id"].as_str().unwrap()));
        delete.push(ms(t.elapsed()));
        // Baseline: the same size, sparse, plain mkfs.ext4 (no encryption, no mount).
        let img = dir.path().join("baseline.img");
        let t = Instant::now();
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(256 << 20).unwrap();
        drop(f);
        let st = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "nodiscard"])
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success());
        mkfs.push(ms(t.elapsed()));
        std::fs::remove_file(&img).unwrap();
    }
    println!("volume create and delete ({size}, n={n}):");
    let c50 = row("POST /volumes (encrypted ext4, ready)", &mut create);
    row("DELETE /volumes/{id} (wipe + unlink)", &mut delete);
    let m50 = row("baseline: truncate + mkfs.ext4 (same size)", &mut mkfs);
    println!("{:<48} {:.2}x", "create p50 / mkfs p50", c50 / m50);

    // Attach: a node create with one volume beside one without.
    let vol = post("/volumes", serde_json::json!({"name": "att", "size": size}));
    let vid = vol["id"].as_str().unwrap().to_string();
    let (mut plain, mut with) = (Vec::new(), Vec::new());
    let group = tenant.clone();
    for i in 0..n {
        let body = if i % 2 == 0 {
            serde_json::json!({})
        } else {
            serde_json::json!({"volumes": [{"id": vid, "path": "/data"}]})
        };
        let t = Instant::now();
        let node = post(&format!("/hostgroup/{group}/nodes?wait=agent"), body);
        let took = ms(t.elapsed());
        if i % 2 == 0 {
            plain.push(took)
        } else {
            with.push(took)
        }
        del(&format!(
            "/hostgroup/{group}/nodes/{}",
            node["hostname"].as_str().unwrap()
        ));
    }
    println!("node create, wait=agent:");
    let p = row("without a volume", &mut plain);
    let w = row("with one volume attached (read-write)", &mut with);
    println!("{:<48} {:+.2} ms", "attach cost (p50 difference)", w - p);
    del(&format!("/volumes/{vid}"));
    // SAFETY: signalling the daemon this benchmark started, by its pid.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}
