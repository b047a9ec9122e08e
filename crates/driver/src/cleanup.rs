//! Removing what a node leaves on the host: its cgroups and its directory. The supervisor does
//! it when a start fails; the daemon when it deletes a node or reconciles after a crash.

use bulkhead_sandbox::Cgroups;
use std::path::Path;

use crate::DriverError;

/// Removes the node's cgroup `cgroup` (killing anything still in it; the id comes from the
/// daemon's state or the supervisor's spec) and its directory. Safe on a half-created or
/// already-removed node.
pub fn cleanup(
    cgroups: &Cgroups,
    tenant: &str,
    cgroup: Option<&str>,
    node_dir: &Path,
) -> Result<(), DriverError> {
    if let Some(id) = cgroup {
        cgroups.node(tenant, id).remove()?;
    }
    match std::fs::remove_dir_all(node_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DriverError::Io {
            what: format!("removing {}", node_dir.display()),
            source: e,
        }),
    }
}
