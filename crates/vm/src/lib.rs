//! The microVM driver (`hypervisor: qemu`): a node is a QEMU `-M microvm` guest whose PID 1 is
//! bulkhead's agent. The API, the CLI and the agent protocol are the jail's: the node's
//! supervisor serves the node's `agent.sock` and carries each connection over the guest's
//! virtio-serial port ([`bulkhead_agent::mux`]).
//!
//! - [`driver`]: the daemon's side ([`bulkhead_driver::Driver`], registry entry `driver::ENTRY`): guest
//!   kernel, initramfs and accelerator at open; a node's disk and [`VmSpec`]; QMP pause;
//! - [`node`]: the supervisor's side ([`bulkhead_driver::Launcher`]): the confined QEMU, its
//!   console, and the agent relay over virtio-serial;
//! - [`kernel`]: guest kernel and modules from Debian's package; the per-tenant initramfs;
//! - [`disk`]: a node's root disk, an ext4 image made from the image's tree;
//! - [`qemu`]: the QEMU command line (pure, unit-tested);
//! - [`confine`]: QEMU's own confinement (the namespaces from `bulkhead_sandbox::ns`), an
//!   unprivileged uid of the tenant's range, a minimal root with only its own files, no
//!   capabilities, QEMU's seccomp sandbox;
//! - [`probe`]: whether KVM really boots a guest here (a `/dev/kvm` that opens is no proof).

pub mod confine;
pub mod cpio;
pub mod disk;
pub mod driver;
pub mod kernel;
pub mod node;
pub mod probe;
pub mod qemu;
pub mod qmp;
pub use bulkhead_agent::unix_path; // connects past sun_path's 108 bytes (#16: long node names)

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// uid (and gid) QEMU runs as inside the node's user namespace: `uid_base + QEMU_UID` on the host.
pub const QEMU_UID: u32 = 1000;
/// Memory the node's cgroup allows beyond the guest's RAM: QEMU itself, its TCG translation
/// cache (capped at 64 MiB) and device buffers.
pub const MEMORY_OVERHEAD: u64 = 256 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Everything the supervisor needs to boot one microVM node (host paths): the qemu driver's
/// part of the node's spec ([`bulkhead_driver::NodeSpec::params`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmSpec {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    /// The node's directory for QEMU's files: `disk.ext4`, `agent.serial`, `qmp.sock`.
    pub vm_dir: PathBuf,
    pub accel: Accel,
    pub mem_mib: u64,
    pub vcpus: u32,
    pub hostname: String,
    /// The guest's network (isolated or bridge mode): a virtio-net device on the tap in
    /// QEMU's namespace, configured by the guest's init from the kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<GuestNet>,
    /// Start waiting for a suspended guest's state (`-incoming defer`) instead of booting:
    /// the daemon feeds it the memory file over QMP (ADR 0018).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incoming: bool,
    /// A persistent node's root disk is `disk.luks`, a LUKS image QEMU opens with the node's
    /// key (#13, persistent nodes; [`disk::make_encrypted`]) instead of the plain `disk.ext4`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted_root: bool,
    /// Supervisor side only: the pipe QEMU reads the LUKS key from (`/proc/self/fd/N`),
    /// inherited; never in the spec.
    #[serde(skip)]
    pub root_key_fd: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestNet {
    pub address: std::net::Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: std::net::Ipv4Addr,
    pub dns: Vec<std::net::Ipv4Addr>,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("guest kernel: {0}")]
    Kernel(String),
    #[error("node disk: {0}")]
    Disk(String),
    #[error("starting QEMU: {0}")]
    Launch(String),
}
