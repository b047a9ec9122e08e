//! The `jail` driver: a node is a process tree in new user, pid, mount, net, uts, ipc and
//! cgroup namespaces, rooted in an overlay of a read-only image, with capabilities limited,
//! no_new_privs, a seccomp allowlist, and cgroup limits.
//!
//! - [`driver`]: the daemon's side ([`bulkhead_driver::Driver`], registry entry `driver::ENTRY`): the tenant's shifted image
//!   copy and compiled seccomp filters at open, the node's [`JailParams`], the cgroup freezer
//!   for pause, the config checks of a jail;
//! - [`start`] (with `setup`): the supervisor's side ([`bulkhead_driver::Launcher`]): clones
//!   the node's init through `bulkhead_sandbox::ns`, which mounts, pivots, locks down and execs
//!   the agent;
//! - `persist`: a persistent node's encrypted writable layer, opened by the supervisor and
//!   moved into place by the init instead of a tmpfs (#13);
//! - `volumes`: a node's volumes, opened by the supervisor and moved into place by the init
//!   (#13);
//! - [`caps`], [`seccomp`], [`landlock`]: the lock-down policy, as data with reasons;
//! - [`image`]: the image store (read-only trees, the tenant's uid-shifted copies), which the
//!   microVM driver reads too.
//!
//! Nothing is mounted in the host's mount namespace: every mount of a node lives in the node's
//! own mount namespace and disappears with it. What remains on the host per node is a
//! directory, an agent socket and cgroups, which `bulkhead_driver::spec::cleanup` and
//! reconciliation remove.

pub mod caps;
mod containers; // container mounts made by the supervisor (#16)
pub mod driver;
pub mod image;
pub mod landlock;
mod persist; // persistent nodes (#13)
pub mod seccomp;
mod setup;
pub mod start;
mod volumes;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The jail's part of a node's spec ([`bulkhead_driver::NodeSpec::params`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JailParams {
    /// The tenant's copy of the image, owned by the tenant's host uid range.
    pub lower: PathBuf,
    /// The static bulkhead binary that runs as the node's agent.
    pub agent_bin: PathBuf,
    /// Size of the writable layer (a tmpfs inside the node's mount namespace).
    pub storage_bytes: u64,
    /// `/proc/sys/user/` entries the node's init writes inside its own user namespace before
    /// it drops its capabilities (`bulkhead_core::kernel_limits`). Names are plain words.
    #[serde(default)]
    pub user_sysctls: Vec<(String, u64)>,
    /// The compiled seccomp filters ([`seccomp::encode`]); empty means compile the policy here.
    #[serde(default)]
    pub seccomp: Vec<Vec<u64>>,
}

#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("seccomp policy: {0}")]
    Seccomp(String),
    #[error("node setup failed: {0}")]
    Setup(String),
    #[error("image: {0}")]
    Image(String),
}

impl From<JailError> for bulkhead_driver::DriverError {
    fn from(e: JailError) -> Self {
        match e {
            JailError::Io { what, source } => bulkhead_driver::DriverError::Io { what, source },
            e => bulkhead_driver::DriverError::Failed(e.to_string()),
        }
    }
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> JailError {
    let what = what.into();
    move |source| JailError::Io { what, source }
}
