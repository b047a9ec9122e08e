//! `cargo bench -p bulkhead --bench microvm` (as root): microVM boot-to-agent-ready (node
//! create with `wait=agent`, through the API) beside a bare QEMU boot of the same kernel and
//! initramfs to its init (the KVM probe guest: no disk, no agent channel, no confinement),
//! measured alternately in the same run. Says whether KVM or TCG was used. Figures, not
//! assertions (docs/benchmarks.md).

use bulkhead_api::{Client, Endpoint};
use hyper::Method;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common.rs"]
mod common;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the microVM benchmark needs root");
        return;
    }
    let n: usize = if std::env::args().any(|a| a == "--quick") {
        3
    } else {
        7
    };
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-vmbench-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let sock = dir.path().join("api.sock");
    let tenant = format!("vmbench{}", std::process::id());
    let state = dir.path().join("state");
    let yaml = format!(
        "config:\n  tenant: {tenant}\n  host_groups:\n    - name: {tenant}\n      ram_mb: 256\n      storage_size: 256M\n  hypervisor: qemu\n  api:\n    bind_address: {}\n",
        sock.display()
    );
    let mut daemon = common::start_daemon(dir.path(), &yaml, &state, &sock);
    let dlog = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    let accel = if dlog.contains("accel=\"kvm\"") || dlog.contains("microVMs use KVM") {
        bulkhead_vm::Accel::Kvm
    } else {
        bulkhead_vm::Accel::Tcg
    };
    let kernel = bulkhead_vm::kernel::current(&state).expect("guest kernel built by the daemon");
    let initramfs = state
        .join("tenants")
        .join(&tenant)
        .join("vm/initramfs.cpio");
    let qemu = Command::new("sh")
        .args(["-c", "command -v qemu-system-x86_64"])
        .output()
        .unwrap();
    let qemu = std::path::PathBuf::from(String::from_utf8_lossy(&qemu.stdout).trim());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let c = Client::new(Endpoint::Unix(sock.clone()));
    println!(
        "bulkhead microVM benchmark: {} cores, host kernel {}, guest kernel {}, accel {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        kernel.release,
        accel.as_str()
    );
    let (mut bare, mut node) = (Vec::new(), Vec::new());
    for _ in 0..n {
        let t = bulkhead_vm::probe::boot(
            &qemu,
            &kernel.vmlinux,
            &initramfs,
            accel,
            Duration::from_secs(60),
        )
        .expect("bare boot");
        bare.push(t.as_secs_f64() * 1e3);
        let t0 = Instant::now();
        let v: serde_json::Value = rt
            .block_on(c.json(
                Method::POST,
                &format!("/hostgroup/{tenant}/nodes?wait=agent&timeout=120s"),
                None,
            ))
            .unwrap();
        node.push(t0.elapsed().as_secs_f64() * 1e3);
        let name = v["hostname"].as_str().unwrap().to_string();
        rt.block_on(c.json::<serde_json::Value>(
            Method::DELETE,
            &format!("/hostgroup/{tenant}/nodes/{name}"),
            None,
        ))
        .unwrap();
    }
    let (b, m) = (median(&mut bare), median(&mut node));
    println!("bare QEMU boot to init (same kernel + initramfs)  p50 {b:8.0} ms   (n={n})");
    println!("node create, wait=agent (boot to agent ready)     p50 {m:8.0} ms   (n={n})");
    println!("node / bare = {:.2}x   (target <= 1.2x)", m / b);
    // SAFETY: signalling the daemon this benchmark started.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
}
