//! Removing what a node leaves on the host: its cgroups and its directory. The daemon does it
//! when it deletes a node, when a create fails, at delete-all at stop, and when it reconciles
//! after a crash (lost, half-made and unexplained nodes). A supervisor whose start fails
//! removes only what it made for that start (the node's cgroup and sockets), never the
//! directory (#13): a relaunch or restore that fails keeps the node, and with it a persistent
//! node's layer, a microVM's disk and a suspended node's memory file.
//!
//! Invariant (#13, storage isolation): a node's directory never goes by a plain unlink.
//! Every regular file in it — a microVM's root disk (`vm/disk.ext4`, the guest's writes in
//! plaintext), its LUKS disk and any plaintext scratch of one, a suspended microVM's memory
//! file (guest RAM), a persistent jail's layer image, console logs — is overwritten with
//! zeros, synced and unlinked ([`wipe_node_dir`], `bulkhead_storage::wipe::wipe_tree`:
//! symlinks never followed, mount points never crossed), so no later tenant's file reuses
//! its blocks with the data still on them.

use bulkhead_sandbox::Cgroups;
use std::path::Path;

use crate::DriverError;

/// Removes the node's cgroup `cgroup` (killing anything still in it; the id comes from the
/// daemon's state or the supervisor's spec) and wipes its directory ([`wipe_node_dir`]).
/// Safe on a half-created or already-removed node.
pub fn cleanup(
    cgroups: &Cgroups,
    tenant: &str,
    cgroup: Option<&str>,
    node_dir: &Path,
) -> Result<(), DriverError> {
    if let Some(id) = cgroup {
        cgroups.node(tenant, id).remove()?;
    }
    wipe_node_dir(node_dir)
}

/// Overwrites every regular file under `node_dir` with zeros, syncs, and removes the tree.
/// A directory that is not there is nothing to do. On an error (a mount under it, an I/O
/// error) what is left stays in place, for the caller to report and reconciliation to retry:
/// it is never unlinked unwiped. Blocking: costs a write of each file's allocated bytes.
pub fn wipe_node_dir(node_dir: &Path) -> Result<(), DriverError> {
    match bulkhead_storage::wipe::wipe_tree(node_dir) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(DriverError::Failed(format!(
            "wiping the node's directory: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_node_directory_is_wiped_not_just_unlinked() {
        let d = tempfile::tempdir().unwrap();
        let node = d.path().join("n");
        std::fs::create_dir_all(node.join("vm")).unwrap();
        let mark = b"tenant-data-on-a-reused-disk";
        let disk = node.join("vm/disk.ext4");
        std::fs::write(&disk, mark.repeat(1000)).unwrap();
        std::fs::write(node.join("suspended.mem"), mark).unwrap();
        let held = [
            std::fs::File::open(&disk).unwrap(),
            std::fs::File::open(node.join("suspended.mem")).unwrap(),
        ];
        let cg = Cgroups::at(d.path().join("cg"), bulkhead_sandbox::cgroup::Version::V2);
        cleanup(&cg, "t", None, &node).unwrap();
        assert!(!node.exists());
        for mut f in held {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf).unwrap();
            assert!(!buf.is_empty() && buf.iter().all(|b| *b == 0), "data left");
        }
        // Gone already: nothing to do.
        cleanup(&cg, "t", None, &node).unwrap();
    }
}
