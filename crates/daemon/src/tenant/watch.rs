//! Node exits as they happen: the daemon keeps one `wait` open on each live node's control
//! channel (`bulkhead_driver::control`); when the node's init exits, the supervisor answers
//! with its status and the tenant marks the node Stopped (`remove.rs`), so `GET /nodes` tells
//! the truth before any exec has to find out. A watch ends with its node (delete) or with the
//! daemon; a restarted daemon watches the nodes it re-adopts.

use bulkhead_driver::control::{client, Request, State};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// The running watches, by node.
#[derive(Default)]
pub struct Watch(Mutex<HashMap<String, tokio::task::AbortHandle>>);

impl Watch {
    fn tasks(&self) -> std::sync::MutexGuard<'_, HashMap<String, tokio::task::AbortHandle>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for the init of the node in `node_dir` to exit, then runs `exited` with the
    /// supervisor's answer. Errors (a supervisor that died, or one older than the control
    /// channel) leave the node as it is: the next exec or copy finds out, as it always did.
    pub fn start<F, Fut>(&self, node: &str, node_dir: PathBuf, exited: F)
    where
        F: FnOnce(State) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let task = tokio::spawn(async move {
            if let Ok(state) = client::request_async(&node_dir, Request::Wait, None).await {
                exited(state).await;
            }
        });
        if let Some(old) = self.tasks().insert(node.to_string(), task.abort_handle()) {
            old.abort();
        }
    }

    /// Stops watching a node that is being removed.
    pub fn stop(&self, node: &str) {
        if let Some(t) = self.tasks().remove(node) {
            t.abort();
        }
    }

    /// Forgets a watch that has answered (called from its own task, which must not abort).
    pub fn done(&self, node: &str) {
        self.tasks().remove(node);
    }
}
