//! The daemon's side of the microVM driver: at start, the guest kernel (built from Debian's
//! package on first use, like the minimal image), the tenant's initramfs (its agent as the
//! guest's init), and the accelerator, decided by booting a probe guest under KVM; per node,
//! the node's root disk and its [`VmSpec`].

use bulkhead_vm::{kernel, Accel, VmSpec};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Overrides the KVM probe: `kvm` or `tcg`.
pub const ACCEL_ENV: &str = "BULKHEAD_QEMU_ACCEL";

/// One node's microVM inputs.
pub struct NodeVm {
    pub node_dir: PathBuf,
    pub image: String,
    pub hostname: String,
    pub ram_bytes: u64,
    pub vcpus: u32,
    pub disk_bytes: u64,
    pub uid_base: u32,
    pub net: Option<bulkhead_vm::GuestNet>,
}

pub struct VmRuntime {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: Accel,
    /// Image trees (unshifted: the guest has its own kernel and uids).
    pub images: PathBuf,
}

fn find_qemu() -> Option<PathBuf> {
    let name = format!("qemu-system-{}", std::env::consts::ARCH);
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(&name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.exists())
}

/// Whether every group's microVM fits this host's memory with QEMU's stated overhead on top
/// (the guest RAM alone and the vCPUs were checked against the host by `core::host` before).
/// A guest that cannot fit would otherwise only time out at boot.
pub fn fits_host(groups: &[bulkhead_core::config::HostGroup]) -> Result<(), String> {
    let Some(total) = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib << 10)
    }) else {
        return Ok(());
    };
    for (i, g) in groups.iter().enumerate() {
        if g.ram_bytes + bulkhead_vm::MEMORY_OVERHEAD > total {
            return Err(format!(
                "config.host_groups[{i}] ({}): a microVM with {} MiB of RAM (plus {} MiB for QEMU) does not fit this host's {} MiB of memory: lower its ram_gb/ram_mb",
                g.name,
                g.ram_bytes >> 20,
                bulkhead_vm::MEMORY_OVERHEAD >> 20,
                total >> 20
            ));
        }
    }
    Ok(())
}

impl VmRuntime {
    pub fn prepare(state_root: &Path, tenant_dir: &Path, agent_bin: &Path) -> Result<Self, String> {
        let qemu = find_qemu().ok_or_else(|| {
            format!(
                "hypervisor: qemu needs qemu-system-{} (apt-get install qemu-system-x86)",
                std::env::consts::ARCH
            )
        })?;
        let k = match kernel::current(state_root) {
            Some(k) => k,
            None => {
                tracing::info!(
                    "building the guest kernel from Debian's linux-image package (first use)"
                );
                kernel::build(state_root, None).map_err(|e| e.to_string())?
            }
        };
        let dir = tenant_dir.join("vm");
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let initramfs = dir.join("initramfs.cpio");
        kernel::initramfs(&k, agent_bin, &initramfs).map_err(|e| e.to_string())?;
        let accel = match std::env::var(ACCEL_ENV).as_deref() {
            Ok("tcg") => {
                tracing::info!("{ACCEL_ENV}=tcg: microVMs use TCG (software emulation)");
                Accel::Tcg
            }
            Ok("kvm") => Accel::Kvm,
            _ => match bulkhead_vm::probe::boot(
                &qemu,
                &k.vmlinux,
                &initramfs,
                Accel::Kvm,
                Duration::from_secs(20),
            ) {
                Ok(t) => {
                    tracing::info!(
                        boot_ms = t.as_millis() as u64,
                        "KVM boots guests here: microVMs use KVM"
                    );
                    Accel::Kvm
                }
                Err(why) => {
                    tracing::warn!(reason = %why, "KVM cannot boot a guest here: microVMs fall back to TCG (software emulation, much slower)");
                    Accel::Tcg
                }
            },
        };
        Ok(VmRuntime {
            qemu,
            kernel: k.vmlinux,
            initramfs,
            accel,
            images: state_root.join("images"),
        })
    }

    /// Makes the node's `vm/` directory and root disk, and returns its spec.
    pub fn node(&self, n: &NodeVm) -> Result<VmSpec, String> {
        let NodeVm {
            node_dir,
            image,
            hostname,
            ram_bytes,
            vcpus,
            disk_bytes,
            uid_base,
            net,
        } = n;
        let owner = uid_base + bulkhead_vm::QEMU_UID;
        let vm_dir = node_dir.join("vm");
        std::fs::create_dir_all(&vm_dir)
            .map_err(|e| format!("creating {}: {e}", vm_dir.display()))?;
        std::os::unix::fs::chown(&vm_dir, Some(owner), Some(owner))
            .map_err(|e| format!("chown vm dir: {e}"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&vm_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod vm dir: {e}"))?;
        let tree = self.images.join(image).join("rootfs");
        bulkhead_vm::disk::make(&tree, &vm_dir.join("disk.ext4"), *disk_bytes, owner)
            .map_err(|e| e.to_string())?;
        Ok(VmSpec {
            qemu: self.qemu.clone(),
            kernel: self.kernel.clone(),
            initramfs: self.initramfs.clone(),
            vm_dir,
            accel: self.accel,
            mem_mib: ram_bytes >> 20,
            vcpus: *vcpus,
            hostname: hostname.clone(),
            net: net.clone(),
        })
    }
}
