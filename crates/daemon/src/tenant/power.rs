//! What the tenant's power operations share with the rest of the tenant context (ADR 0018):
//! how far a start waits ([`Wait`]), where a suspended node's memory is kept, the set of
//! nodes a power operation is under way for (one at a time per node), and [`to_completion`],
//! which every operation that changes a node's state runs in: a caller that goes away never
//! stops one halfway (ADR 0025).

use bulkhead_core::{Code, DomainError};
use std::collections::HashSet;
use std::sync::Mutex;

/// How far a create, relaunch or restore waits before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    None,
    /// Until the node's agent answers.
    Agent,
    /// Until the agent answers and the node's userdata (if any) has run.
    Userdata,
}

/// The file a suspended node's memory is kept in, in its directory.
pub const MEMORY_FILE: &str = "suspended.mem";

/// Drops the memory file in `node_dir` (after a relaunch, a restore, or a restore whose
/// guest ran): #13, it is the guest's RAM, so it is overwritten with zeros and synced before
/// it is unlinked (`bulkhead_storage::wipe`). Nothing to do when there is none. A file that
/// cannot be wiped stays, to be wiped with the node's directory.
pub(super) async fn drop_memory(node_dir: std::path::PathBuf) {
    let file = node_dir.join(MEMORY_FILE);
    let r = tokio::task::spawn_blocking(move || match bulkhead_storage::wipe::wipe_file(&file) {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    })
    .await;
    match r {
        Ok(Err(e)) => tracing::error!(error = %e, "cannot wipe a dropped memory file"),
        Err(e) => tracing::error!(error = %e, "wiping a dropped memory file panicked"),
        Ok(Ok(())) => {}
    }
}

/// Runs `op` in a task of its own and answers what it answers. An HTTP handler's future is
/// dropped when its client disconnects; an operation that changes a node's state (create,
/// relaunch, restore, suspend, shutdown) must not stop at whatever `.await` it had reached (a
/// node left `Creating`, its cleanup never run), so it runs to its end here whether or not
/// anyone still waits for its answer.
pub(super) async fn to_completion<T: Send + 'static>(
    op: impl std::future::Future<Output = Result<T, DomainError>> + Send + 'static,
) -> Result<T, DomainError> {
    tokio::spawn(op)
        .await
        .map_err(|e| DomainError::internal(format!("node operation task: {e}")))?
}

/// The nodes a power operation is under way for.
#[derive(Default)]
pub struct PowerOps(Mutex<HashSet<String>>);

/// A node's place in [`PowerOps`], given back when dropped.
pub struct PowerOp<'a>(&'a PowerOps, String);

impl Drop for PowerOp<'_> {
    fn drop(&mut self) {
        self.0
             .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

impl PowerOps {
    pub(super) fn begin(&self, node: &str) -> Result<PowerOp<'_>, DomainError> {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(node.to_string()) {
            return Err(DomainError::new(
                Code::PowerOpInProgress,
                format!("node {node:?} is being shut down, relaunched, suspended or restored: retry once that is done"),
            ));
        }
        Ok(PowerOp(self, node.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second power operation on the same node is a conflict (409), never an overload (5xx);
    /// another node, or the same node once the first is done, goes ahead.
    #[test]
    fn one_power_operation_per_node_and_a_second_is_a_conflict() {
        let ops = PowerOps::default();
        let first = ops.begin("g-1").unwrap();
        let e = ops.begin("g-1").err().unwrap();
        assert_eq!(e.code, Code::PowerOpInProgress);
        assert_eq!(
            crate::error::status(e.code),
            axum::http::StatusCode::CONFLICT
        );
        let _other = ops.begin("g-2").unwrap();
        drop(first);
        ops.begin("g-1").unwrap();
    }
}
