//! Whether KVM works here. A `/dev/kvm` that opens is no proof (nested or paravirtualised
//! hosts may refuse real guests), so the probe boots the real kernel and initramfs with
//! `bulkhead.probe=1`: the guest's init prints [`bulkhead_agent::guest::PROBE_OK`] and powers
//! off. Only that line counts. The probe is our own guest (no tenant input), run directly.

use crate::{Accel, VmSpec};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Boots the probe guest with `accel`; Ok when it reported, Err with the reason otherwise.
pub fn boot(
    qemu: &Path,
    kernel: &Path,
    initramfs: &Path,
    accel: Accel,
    timeout: Duration,
) -> Result<Duration, String> {
    if accel == Accel::Kvm {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map_err(|e| format!("/dev/kvm: {e}"))?;
    }
    let spec = VmSpec {
        qemu: qemu.to_path_buf(),
        kernel: kernel.to_path_buf(),
        initramfs: initramfs.to_path_buf(),
        vm_dir: "/nonexistent".into(),
        accel,
        mem_mib: 128,
        vcpus: 1,
        hostname: "probe".into(),
        net: None,
        incoming: false,
        encrypted_root: false,
        root_key_fd: None,
    };
    let args: Vec<String> = crate::qemu::args(&spec, true, None, &[])
        .into_iter()
        .map(|a| {
            a.replace("/boot/vmlinux", &kernel.to_string_lossy())
                .replace("/boot/initramfs", &initramfs.to_string_lossy())
        })
        .collect();
    let t0 = Instant::now();
    let mut child = Command::new(qemu)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running {}: {e}", qemu.display()))?;
    let mut out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&all).contains(bulkhead_agent::guest::PROBE_OK) {
                let _ = tx.send(true);
                return;
            }
        }
        let _ = tx.send(false);
    });
    let ok = rx.recv_timeout(timeout).unwrap_or(false);
    let took = t0.elapsed();
    let _ = child.kill();
    let out = child.wait_with_output().ok();
    if ok {
        return Ok(took);
    }
    let err = out
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_default();
    Err(if err.is_empty() {
        format!("the probe guest did not report within {timeout:?}")
    } else {
        format!("QEMU: {}", err.lines().last().unwrap_or_default())
    })
}
