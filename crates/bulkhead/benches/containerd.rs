//! `cargo bench -p bulkhead --bench containerd` (as root; `-- --quick` for fewer runs): issue
//! #16's benchmark. Pod start to first output through containerd: `ctr run --rm` of the test
//! busybox image (`tests/common/oci.rs`) running `echo ready`, timed from spawning `ctr` to the
//! first `ready` on its stdout (the task's exit and delete after it are not timed), under
//! `containerd-shim-bulkhead-v2` (a jail node of a test daemon) beside Debian's runc, in the
//! same run against the same containerd (the lab of `tests/common/containerd.rs`: its own
//! root, state and socket, in a network namespace of its own). Runs alternate between the two
//! so drift hits both alike. Prints p50 and p95 of each and the ratio of the p50s. Figures,
//! not assertions (docs/benchmarks.md).

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use common::containerd::{shim_daemon_yaml, shim_toml, Containerd, Lab, RUNC, RUNTIME};
use common::oci::{write_test_images, BUSYBOX};

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// One `ctr run --rm` with `rt`; the time to the first `ready` on stdout, in milliseconds.
fn once(c: &Containerd, rt: &[&str], id: &str) -> Result<f64, String> {
    let mut a = vec!["run", "--rm"];
    a.extend_from_slice(rt);
    a.extend_from_slice(&[BUSYBOX, id, "echo", "ready"]);
    let mut cmd = c.ctr_command(&a);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn().expect("run ctr");
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    let mut first = None;
    while let Ok(n) = out.read(&mut buf) {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if first.is_none() && seen.windows(5).any(|w| w == b"ready") {
            first = Some(t.elapsed());
        }
    }
    let st = child.wait().unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    let _ = c.ctr(&["container", "delete", id]);
    match first {
        Some(f) if st.success() => Ok(f.as_secs_f64() * 1000.0),
        _ => Err(format!(
            "ctr run {rt:?} ({st}): {}{}",
            String::from_utf8_lossy(&seen),
            err.trim()
        )),
    }
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the containerd benchmark needs root");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 5 } else { 15 };
    let lab = Lab::start("ctrb", &shim_daemon_yaml(false), None);
    let c = &lab.containerd;
    let archive = write_test_images(c.dir.path());
    c.import(&archive);
    let cfg = shim_toml(c.dir.path(), "jail.toml", &lab.daemon.shim_socket(), "jail");
    let bulkhead = [
        "--runtime",
        RUNTIME,
        "--runtime-config-path",
        cfg.to_str().unwrap(),
    ];
    let runc = ["--runtime", RUNC];
    // One of each first, untimed: caches warm, the shim binary paged in.
    c.track("warm-r");
    c.track("warm-b");
    once(c, &runc, "warm-r").expect("runc");
    // The bulkhead side may fail (a part of #16 not merged yet): runc's figures still print.
    let mut failed = once(c, &bulkhead, "warm-b").err();
    let (mut r, mut b) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let (ir, ib) = (format!("r{i}"), format!("b{i}"));
        c.track(&ir);
        c.track(&ib);
        r.push(once(c, &runc, &ir).expect("runc"));
        if failed.is_none() {
            match once(c, &bulkhead, &ib) {
                Ok(ms) => b.push(ms),
                Err(e) => failed = Some(e),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (r50, r95) = (pct(&mut r, 0.5), pct(&mut r, 0.95));
    println!("containerd: ctr run --rm {BUSYBOX} echo ready, spawn to first output, {runs} runs each, alternating");
    println!("  runc (Debian)            p50 {r50:8.1} ms   p95 {r95:8.1} ms");
    match failed {
        None => {
            let (b50, b95) = (pct(&mut b, 0.5), pct(&mut b, 0.95));
            println!("  bulkhead shim (jail)     p50 {b50:8.1} ms   p95 {b95:8.1} ms");
            println!("  ratio bulkhead/runc p50  {:.2}x", b50 / r50);
        }
        Some(e) => println!("  bulkhead shim (jail)     failed: {e}"),
    }
    lab.stop_and_assert_clean();
}
