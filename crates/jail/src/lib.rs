//! The `jail` driver: a node is a process tree in new user, pid, mount, net, uts, ipc and
//! cgroup namespaces, rooted in an overlay of a read-only image, with capabilities limited,
//! no_new_privs, a seccomp allowlist, and cgroup limits.
//!
//! Process model: the daemon starts one [`supervisor`] per node (`bulkhead supervise SPEC`). The
//! supervisor creates the node's cgroups and its agent socket, clones the node's init (the
//! agent) into new namespaces, and then only waits. The daemon can die and come back; the
//! supervisor and the node carry on, and the daemon re-adopts them from its state.
//!
//! Nothing is mounted in the host's mount namespace: every mount of a node lives in the node's
//! own mount namespace and disappears with it. What remains on the host per node is a
//! directory, an agent socket and cgroups, which [`cleanup`] and reconciliation remove.

pub mod caps;
pub mod cgroup;
pub mod image;
pub mod landlock;
pub mod seccomp;
mod setup;
pub mod supervisor;
mod vm_node;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use cgroup::{CgroupError, Cgroups, Limits};

/// Everything the supervisor needs to start one node; written by the daemon as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JailSpec {
    pub tenant: String,
    pub node: String,
    /// Name of the node's cgroup under `bulkhead/<tenant>/`: an opaque id, because a standby
    /// supervisor creates (and enters) it before it knows which node it will run.
    pub cgroup: String,
    pub hostname: String,
    /// Holds `rootfs/` (mount point), `scratch/`, `agent.sock`, `console.log`, `supervisor.json`.
    pub node_dir: PathBuf,
    /// The tenant's copy of the image, owned by the tenant's host uid range.
    pub lower: PathBuf,
    /// The static bulkhead binary that runs as the node's agent.
    pub agent_bin: PathBuf,
    pub uid_base: u32,
    pub uid_count: u32,
    pub limits: Limits,
    /// Size of the writable layer (a tmpfs inside the node's mount namespace).
    pub storage_bytes: u64,
    /// `/proc/sys/user/` entries the node's init writes inside its own user namespace before
    /// it drops its capabilities (`bulkhead_core::kernel_limits`). Names are plain words.
    #[serde(default)]
    pub user_sysctls: Vec<(String, u64)>,
    pub network: bulkhead_net::NetworkPlan,
    /// The compiled seccomp filters ([`seccomp::encode`]); empty means compile the policy here.
    #[serde(default)]
    pub seccomp: Vec<Vec<u64>>,
    /// Set for a microVM node (`hypervisor: qemu`): the supervisor boots QEMU instead of
    /// cloning a jail, and carries the agent's streams over the guest's serial port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm: Option<bulkhead_vm::VmSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("seccomp policy: {0}")]
    Seccomp(String),
    #[error("node setup failed: {0}")]
    Setup(String),
    #[error("image: {0}")]
    Image(String),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> JailError {
    let what = what.into();
    move |source| JailError::Io { what, source }
}

/// Files the supervisor leaves in the node directory.
pub mod files {
    pub const AGENT_SOCKET: &str = "agent.sock";
    pub const CONSOLE_LOG: &str = "console.log";
    pub const SUPERVISOR: &str = "supervisor.json";
    pub const SPEC: &str = "spec.json";
    pub const ROOTFS: &str = "rootfs";
    pub const SCRATCH: &str = "scratch";
}

/// What the supervisor records once the node runs, so a restarted daemon can find it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SupervisorState {
    pub supervisor_pid: i32,
    /// Start time of the supervisor in clock ticks since boot (field 22 of /proc/PID/stat),
    /// which tells a live supervisor from an unrelated process that reused its pid.
    pub supervisor_start: u64,
    pub init_pid: i32,
}

/// Start time (clock ticks since boot) of a process, or `None` when it does not exist.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // A zombie has exited: it only waits for its parent to reap it.
    if matches!(fields.next()?, "Z" | "X") {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Whether the supervisor recorded in `state` is still the same live process.
pub fn supervisor_alive(state: &SupervisorState) -> bool {
    process_start_time(state.supervisor_pid) == Some(state.supervisor_start)
}

/// Records a node's supervisor (written by the daemon, from outside the node's cgroup, so
/// that the file's page cache is never charged to the node).
pub fn write_supervisor_state(node_dir: &Path, state: &SupervisorState) -> std::io::Result<()> {
    let tmp = node_dir.join(".supervisor.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(state).unwrap_or_default())?;
    std::fs::rename(&tmp, node_dir.join(files::SUPERVISOR))
}

pub fn read_supervisor_state(node_dir: &Path) -> Option<SupervisorState> {
    let bytes = std::fs::read(node_dir.join(files::SUPERVISOR)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The cgroup id a node's spec names, if the node got as far as having a spec.
pub fn spec_cgroup(node_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(node_dir.join(files::SPEC)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["cgroup"].as_str().map(str::to_string)
}

/// Removes what a node leaves on the host: its cgroups (killing anything still in them) and
/// its directory. Safe to call on a half-created or already-removed node.
pub fn cleanup(cgroups: &Cgroups, tenant: &str, node_dir: &Path) -> Result<(), JailError> {
    if let Some(id) = spec_cgroup(node_dir) {
        cgroups.node(tenant, &id).remove()?;
    }
    match std::fs::remove_dir_all(node_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(JailError::Io {
            what: format!("removing {}", node_dir.display()),
            source: e,
        }),
    }
}
