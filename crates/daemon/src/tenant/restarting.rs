//! A node being started again (relaunch, restore; #13, issue 13): its record is `Creating`
//! as a first create's is, but it was made and its directory (a persistent node's layer, a
//! microVM's disk) is what must outlive a daemon that dies meanwhile. A mark in the node's
//! directory, written (and synced) before the transition to `Creating` and removed once the
//! node left it, tells reconciliation which `Creating` node to keep.
//!
//! Invariants:
//! - a node is `Creating` in a relaunch or restore only while its directory holds the mark
//!   (a stale mark on a node in any other state means nothing);
//! - reconciliation keeps such a node as a failed start would: nothing of it runs, a memory
//!   file is wiped (a restored guest may have run), and it is `Stopped`.

use bulkhead_core::{DomainError, NodeState};
use std::path::{Path, PathBuf};

use super::power::drop_memory;
use super::Tenant;

/// The mark's file name in the node's directory.
pub(super) const RESTARTING: &str = "restarting";

/// The mark of a start again; removed when dropped (once the node is no longer `Creating`).
pub(super) struct Restarting(PathBuf);

impl Restarting {
    /// Marks the node in `node_dir` as being started again, durably.
    pub(super) fn begin(node_dir: &Path) -> Result<Self, DomainError> {
        let path = node_dir.join(RESTARTING);
        let write = || -> std::io::Result<()> {
            let f = std::fs::File::create(&path)?;
            f.sync_all()?;
            std::fs::File::open(node_dir)?.sync_all()
        };
        write().map_err(|e| {
            DomainError::internal(format!("marking {} before a start: {e}", path.display()))
        })?;
        Ok(Restarting(path))
    }
}

impl Drop for Restarting {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Tenant {
    /// At a daemon start: whether a `Creating` node was being started again (so it had been
    /// made) rather than created.
    pub(super) fn was_restarting(&self, name: &str) -> bool {
        self.node_dir(name).join(RESTARTING).exists()
    }

    /// At a daemon start, for a node whose relaunch or restore the daemon's end cut short:
    /// its processes end (supervisor, cgroup, sockets, network rules), a memory file is
    /// wiped, and it is Stopped with its directory; relaunch starts it again.
    pub(super) async fn keep_interrupted_start(&self, name: &str) {
        self.clear_processes(name).await;
        let dir = self.node_dir(name);
        drop_memory(dir.clone()).await; // #13: the guest's RAM, wiped
        let _ = self.store.set_status(name, NodeState::Stopped).await;
        let _ = std::fs::remove_file(dir.join(RESTARTING));
    }
}
