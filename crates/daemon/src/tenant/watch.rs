//! Node exits as they happen: the daemon keeps one `wait` open on each live node's control
//! channel (`bulkhead_driver::control`); when the node's init exits, the supervisor answers
//! with its status and the node becomes Stopped, so `GET /nodes` tells the truth before any
//! exec has to find out. A watch ends with its node (delete) or with the daemon; a restarted
//! daemon watches the nodes it re-adopts.

use bulkhead_driver::control::{client, Request, State};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::Tenant;

/// The running watches, by node.
#[derive(Default)]
pub(super) struct Watch(Mutex<HashMap<String, tokio::task::AbortHandle>>);

impl Watch {
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Tenant {
    /// Watches a node that runs (after its create, or when a restarted daemon adopts it).
    pub(super) fn watch(self: &Arc<Self>, name: &str) {
        let dir = self.node_dir(name);
        let tenant = Arc::downgrade(self);
        let node = name.to_string();
        let task = tokio::spawn(async move {
            // Errors (a supervisor that died, or one older than the control channel) leave
            // the node as it is: the next exec or copy finds out, as it always did.
            if let Ok(state) = client::request_async(&dir, Request::Wait, None).await {
                if let Some(t) = tenant.upgrade() {
                    t.exited(&node, &state);
                }
            }
        });
        if let Some(old) = self
            .watch
            .tasks()
            .insert(name.to_string(), task.abort_handle())
        {
            old.abort();
        }
    }

    /// Stops watching a node that is being removed.
    pub(super) fn unwatch(&self, name: &str) {
        if let Some(t) = self.watch.tasks().remove(name) {
            t.abort();
        }
    }

    fn exited(&self, name: &str, state: &State) {
        self.watch.tasks().remove(name);
        if let Some(exit) = state.exit() {
            tracing::info!(node = %name, %exit, init_pid = state.init_pid, "the node's init exited; the node is Stopped until deleted");
        }
        self.mark_stopped(name);
    }
}
