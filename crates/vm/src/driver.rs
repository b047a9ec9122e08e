//! The microVM's daemon side (`hypervisor: qemu`): at open, the guest kernel (built from
//! Debian's package on first use, like the minimal image), the tenant's initramfs (its agent as
//! the guest's init), and the accelerator, decided by booting a probe guest under KVM; per
//! node, its root disk and [`VmSpec`]; pause through QMP; what a microVM requires of a config.

use bulkhead_core::config::key_err;
use bulkhead_core::host::mib;
use bulkhead_core::{ConfigError, HostFacts, HostGroup, TenantConfig};
use bulkhead_driver::{
    Driver, DriverEntry, DriverError, DriverInfo, HostEnv, NodePrep, NodeRef, Start,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::{kernel, Accel, GuestNet, VmSpec, MEMORY_OVERHEAD, QEMU_UID};

/// The microVM in the registry.
pub const ENTRY: DriverEntry = DriverEntry {
    name: "qemu",
    check,
    warnings: |_| Vec::new(),
    open,
    launcher: &crate::node::QemuLauncher,
};

/// Overrides the KVM probe: `kvm` or `tcg`.
pub const ACCEL_ENV: &str = "BULKHEAD_QEMU_ACCEL";
/// Least guest RAM (32 MiB hangs at boot; 128 MiB is proven).
pub const MIN_VM_RAM: u64 = 128 << 20;
/// QEMU's monitor socket in a node's `vm/` directory.
pub const QMP_SOCKET: &str = "vm/qmp.sock";

/// The microVM driver, opened for one tenant.
pub struct QemuDriver {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub accel: Accel,
    /// Image trees (unshifted: the guest has its own kernel and uids).
    pub images: PathBuf,
    pub image: String,
    pub uid_base: u32,
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

/// A microVM needs RAM its guest boots in, RAM plus QEMU's overhead within the host's memory
/// (a guest that cannot fit would otherwise only time out at boot), and a disk within the
/// state directory's filesystem.
fn check(cfg: &TenantConfig, host: &HostFacts) -> Result<(), ConfigError> {
    for (i, g) in cfg.groups.iter().enumerate() {
        let p = format!("config.host_groups[{i}]");
        let ram_key = g.ram_key.unwrap_or("ram_mb");
        if g.ram_bytes < MIN_VM_RAM {
            return Err(key_err(
                format!("{p}.{ram_key}"),
                format!(
                    "a microVM (hypervisor: qemu) needs at least {} MiB: its guest kernel and agent do not boot in less",
                    MIN_VM_RAM >> 20
                ),
            ));
        }
        if g.ram_bytes.saturating_add(MEMORY_OVERHEAD) > host.mem_total_bytes {
            return Err(key_err(
                format!("{p}.{ram_key}"),
                format!(
                    "a microVM with {} of RAM (plus {} for QEMU) does not fit this host's {} of memory: lower {ram_key} of host group {:?}",
                    mib(g.ram_bytes),
                    mib(MEMORY_OVERHEAD),
                    mib(host.mem_total_bytes),
                    g.name
                ),
            ));
        }
        if let Some(fs) = host.state_fs_bytes {
            if g.storage_bytes > fs {
                return Err(key_err(
                    format!("{p}.storage_size"),
                    format!(
                        "storage_size {} is larger than the whole filesystem of the state directory ({}), where each microVM node's disk lives: give at most storage_size: {}M, or move state_dir to a larger filesystem",
                        mib(g.storage_bytes),
                        mib(fs),
                        fs >> 20
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn open(env: &HostEnv<'_>) -> Result<Arc<dyn Driver>, DriverError> {
    Ok(Arc::new(QemuDriver::open(env)?))
}

impl QemuDriver {
    pub fn open(env: &HostEnv<'_>) -> Result<Self, DriverError> {
        let unavailable = |e: crate::VmError| DriverError::Unavailable(e.to_string());
        let qemu = find_qemu().ok_or_else(|| {
            DriverError::Unavailable(format!(
                "hypervisor: qemu needs qemu-system-{} (apt-get install qemu-system-x86)",
                std::env::consts::ARCH
            ))
        })?;
        let k = match kernel::current(env.state_root) {
            Some(k) => k,
            None => {
                tracing::info!(
                    "building the guest kernel from Debian's linux-image package (first use)"
                );
                kernel::build(env.state_root, None).map_err(unavailable)?
            }
        };
        let dir = env.tenant_dir.join("vm");
        std::fs::create_dir_all(&dir)
            .map_err(DriverError::io(format!("creating {}", dir.display())))?;
        let initramfs = dir.join("initramfs.cpio");
        kernel::initramfs(&k, env.agent_bin, &initramfs).map_err(unavailable)?;
        let accel = match std::env::var(ACCEL_ENV).as_deref() {
            Ok("tcg") => {
                tracing::info!("{ACCEL_ENV}=tcg: microVMs use TCG (software emulation)");
                Accel::Tcg
            }
            Ok("kvm") => Accel::Kvm,
            _ => match crate::probe::boot(
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
        tracing::info!(accel = accel.as_str(), kernel = %k.vmlinux.display(), "microVM driver ready");
        Ok(QemuDriver {
            qemu,
            kernel: k.vmlinux,
            initramfs,
            accel,
            images: env.state_root.join("images"),
            image: env.image.to_string(),
            uid_base: env.uid_base,
        })
    }

    /// Makes the node's `vm/` directory (QEMU's, owned by its uid) and root disk: a persistent
    /// node's encrypted under `key` (#13).
    fn make_disk(
        &self,
        node_dir: &Path,
        disk_bytes: u64,
        image_tree: Option<&Path>,
        key: Option<&[u8; 64]>,
    ) -> Result<PathBuf, DriverError> {
        let owner = self.uid_base + QEMU_UID;
        let vm_dir = node_dir.join("vm");
        std::fs::create_dir_all(&vm_dir)
            .map_err(DriverError::io(format!("creating {}", vm_dir.display())))?;
        std::os::unix::fs::chown(&vm_dir, Some(owner), Some(owner))
            .map_err(DriverError::io("chown vm dir"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&vm_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(DriverError::io("chmod vm dir"))?;
        // A commit's tree (#13), else the image's.
        let tree = image_tree.map_or_else(
            || self.images.join(&self.image).join("rootfs"),
            Path::to_path_buf,
        );
        match key {
            Some(k) => crate::disk::make_encrypted(
                &tree,
                &vm_dir.join(crate::disk::LUKS_DISK),
                disk_bytes,
                owner,
                k,
            ),
            None => crate::disk::make(&tree, &vm_dir.join("disk.ext4"), disk_bytes, owner),
        }
        .map_err(|e| DriverError::Failed(format!("preparing the microVM: {e}")))?;
        Ok(vm_dir)
    }
}

/// Before a node's QEMU starts again (relaunch, restore): everything its previous QEMU left
/// in `vm/` but the disk goes (files wiped, #13). The directory is QEMU's, so a compromised one could have left
/// a symlink where the new QEMU's sockets will be, for the root supervisor (which connects
/// to `agent.serial` as soon as QEMU starts) or the daemon (`qmp.sock`) to follow.
fn clear_sockets(vm_dir: &Path) -> Result<(), DriverError> {
    let entries = std::fs::read_dir(vm_dir)
        .map_err(DriverError::io(format!("reading {}", vm_dir.display())))?;
    for e in entries.flatten() {
        if e.file_name() == "disk.ext4" || e.file_name() == crate::disk::LUKS_DISK {
            continue;
        }
        let p = e.path();
        let meta = std::fs::symlink_metadata(&p);
        // #13: a regular file (a crashed encryption's plaintext scratch disk, say) or a tree
        // may hold the tenant's data: wiped, not just unlinked.
        let r = match meta {
            Ok(m) if m.is_dir() => bulkhead_storage::wipe::wipe_tree(&p).map(drop),
            Ok(m) if m.is_file() => bulkhead_storage::wipe::wipe_file(&p).map(drop),
            _ => std::fs::remove_file(&p).map_err(|source| bulkhead_storage::wipe::WipeError::Io {
                what: "removing",
                path: p.clone(),
                source,
            }),
        };
        r.map_err(|e| DriverError::Failed(format!("clearing the microVM's directory: {e}")))?;
    }
    Ok(())
}

impl Driver for QemuDriver {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn prepare_node(&self, node: NodePrep<'_>) -> Result<bulkhead_driver::Params, DriverError> {
        // The guest owns the node's address; QEMU's namespace only bridges its tap.
        let net = match node.network {
            bulkhead_net::NetworkPlan::Veth(v) => {
                v.guest_tap = Some(self.uid_base + QEMU_UID);
                Some(GuestNet {
                    address: v.address,
                    prefix_len: v.prefix_len,
                    gateway: v.gateway,
                    dns: v.dns_servers.clone(),
                })
            }
            bulkhead_net::NetworkPlan::Loopback => None,
        };
        // A node that starts again keeps its disk (its files, and for a restore the disk the
        // suspended memory refers to).
        // A persistent node's disk is a LUKS image (#13), kept across daemon restarts too.
        let encrypted_root = node.persistent_key.is_some();
        let disk = match encrypted_root {
            true => node.node_dir.join("vm").join(crate::disk::LUKS_DISK),
            false => node.node_dir.join("vm/disk.ext4"),
        };
        let vm_dir = if node.start != Start::Fresh && disk.exists() {
            let vm_dir = node.node_dir.join("vm");
            clear_sockets(&vm_dir)?;
            vm_dir
        } else if encrypted_root && node.start != Start::Fresh {
            return Err(DriverError::Failed(format!(
                "the persistent disk {} is gone: delete the node",
                disk.display()
            )));
        } else {
            self.make_disk(
                node.node_dir,
                node.group.storage_bytes,
                node.image_tree,
                node.persistent_key,
            )?
        };
        let spec = VmSpec {
            qemu: self.qemu.clone(),
            kernel: self.kernel.clone(),
            initramfs: self.initramfs.clone(),
            vm_dir,
            accel: self.accel,
            mem_mib: node.ram_bytes >> 20,
            vcpus: node.cpus,
            hostname: node.hostname.to_string(),
            net,
            incoming: node.start == Start::Restore,
            encrypted_root,
            root_key_fd: None,
        };
        bulkhead_driver::Params::of(&spec).map_err(|e| DriverError::Failed(e.to_string()))
    }

    fn memory_overhead(&self) -> u64 {
        MEMORY_OVERHEAD
    }

    /// QMP `stop`/`cont`: the guest's vCPUs stop; QEMU itself keeps serving.
    fn set_paused(&self, node: NodeRef<'_>, paused: bool) -> Result<(), DriverError> {
        let cmd = if paused { "stop" } else { "cont" };
        crate::qmp::execute(
            &node.node_dir.join(QMP_SOCKET),
            self.uid_base + QEMU_UID,
            cmd,
        )
        .map(|_| ())
        .map_err(DriverError::Failed)
    }

    /// The cgroup's figures, and the node's disk as the host sees it: its size, and the
    /// blocks the guest has written (deleted files stay counted until the guest discards).
    fn stats(&self, node: NodeRef<'_>) -> Result<bulkhead_driver::NodeStats, DriverError> {
        use std::os::unix::fs::MetadataExt;
        let mut s = bulkhead_driver::NodeStats::of_cgroup(node.cgroup);
        // A plain node's disk, or a persistent one's LUKS image (#13).
        let disk = ["disk.ext4", crate::disk::LUKS_DISK]
            .iter()
            .find_map(|f| std::fs::metadata(node.node_dir.join("vm").join(f)).ok());
        if let Some(m) = disk {
            let used = (m.blocks() * 512).min(m.len());
            s.disk = Some(bulkhead_sandbox::usage::DiskSpace {
                total: m.len(),
                free: m.len() - used,
            });
        }
        Ok(s)
    }

    /// QMP: stop the vCPUs, then migrate the guest's state into `file` (handed to QEMU as an
    /// fd, so its sandbox needs no path and no new process). QEMU is left stopped.
    fn suspend(&self, node: NodeRef<'_>, file: &Path) -> Result<(), DriverError> {
        crate::qmp::save(
            &node.node_dir.join(QMP_SOCKET),
            self.uid_base + QEMU_UID,
            file,
        )
        .map_err(DriverError::Failed)
    }

    /// QMP: feed the memory file to a QEMU started with `-incoming defer`; it runs on.
    fn restore(&self, node: NodeRef<'_>, file: &Path) -> Result<(), DriverError> {
        crate::qmp::load(
            &node.node_dir.join(QMP_SOCKET),
            self.uid_base + QEMU_UID,
            file,
        )
        .map_err(DriverError::Failed)
    }

    /// Volumes (#13, attach): disks for QEMU; the guest's agent mounts them when the daemon asks.
    /// Persistent nodes (#13): the root disk as a LUKS image, kept across starts.
    fn persistence(&self) -> bulkhead_driver::Persistence {
        bulkhead_driver::Persistence::EncryptedDisk
    }

    fn volume_attach(&self) -> bulkhead_driver::VolumeAttach {
        bulkhead_driver::VolumeAttach::GuestAgent
    }

    fn storage_limit(&self, g: &HostGroup, _ram_bytes: u64) -> String {
        format!(
            "the node's disk is full: it holds storage_size {} MiB of host group {:?}",
            g.storage_bytes >> 20,
            g.name
        )
    }

    fn info(&self) -> DriverInfo {
        DriverInfo {
            accel: Some(self.accel.as_str().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HostFacts = HostFacts {
        mem_total_bytes: 8 << 30,
        cpus: 4,
        state_fs_bytes: Some(100 << 30),
    };

    fn cfg(group: &str) -> TenantConfig {
        TenantConfig::parse(&format!(
            "config:\n  hypervisor: qemu\n  host_groups:\n    - name: t1\n{group}\n"
        ))
        .unwrap()
    }

    fn err(c: &TenantConfig, host: &HostFacts) -> String {
        check(c, host).unwrap_err().to_string()
    }

    #[test]
    fn too_little_ram_is_refused_naming_the_key_given() {
        let e = err(&cfg("      ram_mb: 32"), &HOST);
        assert!(
            e.contains("host_groups[0].ram_mb") && e.contains("128 MiB"),
            "{e}"
        );
        let e = err(&cfg("      ram_bytes: 33554432"), &HOST);
        assert!(e.contains("host_groups[0].ram_bytes"), "{e}");
        check(&cfg("      ram_mb: 128"), &HOST).unwrap();
    }

    #[test]
    fn ram_plus_qemu_beyond_the_host_is_refused() {
        let e = err(&cfg("      ram_gb: 8"), &HOST);
        assert!(
            e.contains("host_groups[0].ram_gb") && e.contains("256 MiB for QEMU"),
            "{e}"
        );
        check(&cfg("      ram_mb: 7936"), &HOST).unwrap();
    }

    #[test]
    fn disks_beyond_the_state_filesystem_are_refused() {
        check(&cfg("      storage_size: 50G"), &HOST).unwrap();
        let e = err(&cfg("      storage_size: 200G"), &HOST);
        assert!(
            e.contains("storage_size 204800 MiB") && e.contains("102400 MiB"),
            "{e}"
        );
        // Unknown filesystem size: nothing to check the disk against.
        let unknown = HostFacts {
            state_fs_bytes: None,
            ..HOST
        };
        check(&cfg("      storage_size: 200G"), &unknown).unwrap();
    }
}
