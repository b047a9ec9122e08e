//! The supervisor's side of a driver: starting the node's process(es) from the spec and what
//! the supervisor prepared. A separate trait from [`crate::Driver`] because it runs in another
//! process under other rules: the supervisor is single-threaded until the launcher's last
//! clone, holds no state but the spec, and outlives the daemon.

use bulkhead_sandbox::NodeCgroup;
use std::fs::File;
use std::os::unix::net::UnixListener;

use crate::{DriverError, NodeSpec};

/// What the supervisor hands a launcher.
#[derive(Debug)]
pub struct NodeStart<'a> {
    pub spec: &'a NodeSpec,
    /// The node's cgroup, created with the spec's limits.
    pub cgroup: &'a NodeCgroup,
    /// The supervisor already sits in the node's cgroup (a standby): the node's process is
    /// born inside. Otherwise the launcher moves it in before it runs anything of the node's.
    pub inside: bool,
    /// The node's `agent.sock`, bound (root only).
    pub agent_listener: UnixListener,
    /// The node's `console.log`, open for appending.
    pub console: File,
    /// The keys of the spec's volumes (`spec.volumes`), by key id; checked by the supervisor
    /// against the daemon's instruction (every volume has one).
    pub volume_keys: &'a crate::instruction::VolumeKeys,
}

/// A driver's supervisor side.
pub trait Launcher: Sync {
    /// Starts the node and returns the pid of its init: the one child the supervisor waits
    /// for, whose exit ends the node. It runs in the single-threaded supervisor: it may start
    /// threads only after its last clone. On error nothing of the node may be left running.
    fn start(&self, node: NodeStart<'_>) -> Result<i32, DriverError>;

    /// #16: makes (`Some(mounts, readonly)`) or removes (`None`) a container's mounts under
    /// `root` in the mount namespace of the node whose init is `init_pid`. Called from the
    /// supervisor's single-threaded control loop; must not leave a thread or a child behind.
    /// A driver whose node's agent mounts (a microVM guest) keeps this default.
    fn container_mounts(
        &self,
        _init_pid: i32,
        _root: &str,
        _mounts: Option<(&[bulkhead_agent::containers::ContainerMount], bool)>,
    ) -> Result<(), DriverError> {
        Err(DriverError::Refused(
            "this driver's supervisor does not make container mounts: the node's agent does".into(),
        ))
    }
}
