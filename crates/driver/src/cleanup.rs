//! Removing what a node leaves on the host: its cgroups (found through its spec) and its
//! directory. The supervisor does it when a start fails; the daemon when it deletes a node or
//! reconciles after a crash.

use bulkhead_sandbox::Cgroups;
use std::path::Path;

use crate::spec::spec_cgroup;
use crate::DriverError;

/// Removes what a node leaves on the host: its cgroups (killing anything still in them) and
/// its directory. Safe to call on a half-created or already-removed node.
pub fn cleanup(cgroups: &Cgroups, tenant: &str, node_dir: &Path) -> Result<(), DriverError> {
    if let Some(id) = spec_cgroup(node_dir) {
        cgroups.node(tenant, &id).remove()?;
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
