//! `cargo bench -p bulkhead --bench e2b` (as root; `-- --quick` for fewer samples): issue
//! #15's benchmark. E2B's official Python SDK (PyPI `e2b`, installed by
//! `scripts/sdk-tools.sh OUT e2b`), unchanged, timed from `Sandbox.create()` to the first
//! stdout chunk of `commands.run("echo hi")` (inside the Python process; the kill after it is
//! not timed), beside the same flow through bulkhead's own API in the same run: create a node
//! (`POST /hostgroup/{g}/nodes?wait=agent`) then exec `echo hi` (buffered) with
//! bulkhead_api::Client, delete untimed. One daemon with the E2B listener on loopback in a
//! network namespace of its own; rounds alternate between the two so drift hits both alike.
//! Prints p50 and p95 of each and the ratio of the p50s. Figures, not assertions
//! (docs/benchmarks.md).

use bulkhead_api::client::full_body;
use bulkhead_api::{Client, Endpoint};
use http_body_util::BodyExt;
use hyper::Method;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common.rs"]
#[allow(dead_code)] // its start_daemon leaves loopback down; the E2B listener needs it up
mod common;

const E2B: &str = "127.0.0.1:13916";

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the e2b benchmark needs root");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, per_round) = if quick { (2, 5) } else { (5, 10) };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tools = std::env::var_os("BULKHEAD_SDK_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/sdk-tools"));
    let st = Command::new(root.join("scripts/sdk-tools.sh"))
        .arg(&tools)
        .arg("e2b")
        .status()
        .expect("run scripts/sdk-tools.sh");
    assert!(st.success(), "scripts/sdk-tools.sh OUT e2b failed");
    let venv = tools.join("e2b-venv");

    let dir = common::bench_dir();
    let admin = dir.path().join("admin.sock");
    let tenant = format!("e2bb{}", std::process::id());
    let state = dir.path().join("state");
    let yaml = format!(
        "config:\n  graceful_shutdown: false\n  tenants:\n    - name: {tenant}\n      host_groups:\n        - name: {tenant}\n          ram_mb: 256\n          storage_size: 192M\n  api:\n    bind_address: {}\n    tenant_sockets: {}\n    e2b: {{ bind: \"{E2B}\" }}\n",
        admin.display(),
        dir.path().join("tenants").display()
    );
    std::fs::write(dir.path().join("t.yaml"), yaml).unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    // Loopback up in the daemon's own namespace: the E2B listener is TCP on 127.0.0.1.
    let mut daemon = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(common::BIN)
        .arg("up")
        .arg(dir.path().join("t.yaml"))
        .arg("--state-dir")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    let daemon_log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    while !daemon_log().contains("ready on") {
        assert!(Instant::now() < deadline, "daemon did not start");
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "daemon exited: {}",
            daemon_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let netns = format!("/proc/{}/ns/net", daemon.id());
    let key = {
        let o = Command::new(common::BIN)
            .args(["token", "create", "--socket"])
            .arg(&admin)
            .args([
                "--tenant",
                &tenant,
                "--role",
                "developer",
                "--name",
                "bench",
                "--e2b",
            ])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "token create --e2b: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = Client::new(Endpoint::Unix(
        dir.path().join("tenants").join(format!("{tenant}.sock")),
    ));
    let own = |n: usize| -> Vec<f64> {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                let v: serde_json::Value = rt
                    .block_on(c.json(
                        Method::POST,
                        &format!("/hostgroup/{tenant}/nodes?wait=agent"),
                        None,
                    ))
                    .unwrap();
                let node = v["hostname"].as_str().unwrap().to_string();
                let r = rt
                    .block_on(c.send_ok(
                        Method::POST,
                        &format!("/vm/{node}/exec?cmd=echo&args=hi&buffered=true"),
                        full_body(""),
                        None,
                    ))
                    .unwrap();
                let body = rt.block_on(r.into_body().collect()).unwrap().to_bytes();
                let ms = t.elapsed().as_secs_f64() * 1e3;
                assert!(body.windows(2).any(|w| w == b"hi"), "{body:?}");
                rt.block_on(c.json::<serde_json::Value>(
                    Method::DELETE,
                    &format!("/hostgroup/{tenant}/nodes/{node}"),
                    None,
                ))
                .unwrap();
                ms
            })
            .collect()
    };
    let sdk = |n: usize| -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let out = Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .arg("--")
            .arg(venv.join("bin/python"))
            .arg(venv.join("e2b_bench.py"))
            .env("E2B_API_KEY", &key)
            .env("E2B_API_URL", format!("http://{E2B}"))
            .env("E2B_SANDBOX_URL", format!("http://{E2B}"))
            .env("E2BBENCH_TEMPLATE", &tenant)
            .env("E2BBENCH_N", n.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "E2B SDK bench: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let list = |k: &str| -> Vec<f64> {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        (list("samples_ms"), list("create_ms"), list("again_ms"))
    };
    // Warm-up (standby supervisors, the SDK's imports and connection pool are per process).
    own(2);
    sdk(2);
    let (mut a, mut b, mut bc, mut ba) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        if i % 2 == 0 {
            a.extend(own(per_round));
        }
        let (s, c, again) = sdk(per_round);
        b.extend(s);
        bc.extend(c);
        ba.extend(again);
        if i % 2 == 1 {
            a.extend(own(per_round));
        }
    }
    let (a50, a95) = (pct(&mut a, 0.5), pct(&mut a, 0.95));
    let (b50, b95) = (pct(&mut b, 0.5), pct(&mut b, 0.95));
    println!(
        "create to first output of `echo hi`, jail node (minimal image), {rounds} alternating rounds of {per_round}; {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!(
        "bulkhead API (create wait=agent + exec, UNIX socket)  p50 {:>8.1} ms   p95 {:>8.1} ms   (n={})",
        a50,
        a95,
        a.len()
    );
    println!(
        "E2B Python SDK (Sandbox.create + commands.run, TCP)   p50 {:>8.1} ms   p95 {:>8.1} ms   (n={})",
        b50,
        b95,
        b.len()
    );
    println!(
        "  of which Sandbox.create() returned after            p50 {:>8.1} ms   p95 {:>8.1} ms",
        pct(&mut bc, 0.5),
        pct(&mut bc, 0.95)
    );
    println!(
        "  a second commands.run, same sandbox (not in the sample) p50 {:>6.1} ms   p95 {:>8.1} ms",
        pct(&mut ba, 0.5),
        pct(&mut ba, 0.95)
    );
    println!("E2B SDK p50 / bulkhead API p50 = {:.2}x", b50 / a50);

    // SAFETY: stopping the daemon this benchmark started, by its pid.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}
