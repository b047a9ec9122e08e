//! Per-node admission for agent operations (exec, copy in and out), and how agent failures
//! read as domain errors.
//!
//! Each node takes at most its host group's `agent_concurrency` operations at once: every exec
//! costs the node a few pids (the agent's threads and the command), and an agent's listen
//! backlog is finite. Further requests wait in a bounded queue for a bounded time; beyond
//! either bound they are refused with 503 `node_busy` and a `Retry-After`, naming the limit.

use bulkhead_agent::client::{AgentError, CopyIn, CopyOut, ExecSession};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use bulkhead_core::{Code, DomainError};

/// Requests that may wait for a node's agent beyond those it runs.
pub const MAX_WAITING_PER_NODE: usize = 1024;
/// How long a request waits for its turn before it is refused.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a connect retries while the agent's listen backlog is full.
pub(super) const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

struct Gate {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    limit: u32,
}

/// The gates of this daemon's nodes, by node name.
#[derive(Default)]
pub struct Gates(Mutex<HashMap<String, Arc<Gate>>>);

impl Gates {
    /// Waits for a turn at `node`'s agent (bounded queue, bounded wait), or answers 503.
    pub async fn turn(
        &self,
        node: &str,
        limit: u32,
        rejected: &AtomicU64,
    ) -> Result<Turn, DomainError> {
        let gate = {
            let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(node.to_string())
                .or_insert_with(|| {
                    Arc::new(Gate {
                        running: Arc::new(Semaphore::new(limit as usize)),
                        waiting: AtomicUsize::new(0),
                        limit,
                    })
                })
                .clone()
        };
        if let Ok(p) = gate.running.clone().try_acquire_owned() {
            return Ok(Turn(p));
        }
        if gate.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING_PER_NODE {
            gate.waiting.fetch_sub(1, Ordering::SeqCst);
            rejected.fetch_add(1, Ordering::Relaxed);
            return Err(busy(
                node,
                gate.limit,
                &format!("{MAX_WAITING_PER_NODE} more are waiting"),
            ));
        }
        let _w = Waiting(&gate.waiting);
        match tokio::time::timeout(MAX_WAIT, gate.running.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(Turn(p)),
            _ => {
                rejected.fetch_add(1, Ordering::Relaxed);
                Err(busy(
                    node,
                    gate.limit,
                    &format!("this request waited {}s for a turn", MAX_WAIT.as_secs()),
                ))
            }
        }
    }

    /// Forgets a node's gate (its node is gone); operations still holding a turn keep theirs.
    pub fn remove(&self, node: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node);
    }
}

/// A turn at a node's agent: held for as long as the operation runs, streaming included.
pub struct Turn(#[allow(dead_code)] OwnedSemaphorePermit);

struct Waiting<'a>(&'a AtomicUsize);
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn busy(node: &str, limit: u32, why: &str) -> DomainError {
    DomainError::new(
        Code::NodeBusy,
        format!(
            "node {node:?} already runs its limit of {limit} exec/copy operations \
             (host group key agent_concurrency) and {why}: retry later"
        ),
    )
    .retry_after(1)
}

/// An agent failure as a domain error: the agent's own refusals keep their codes
/// ([`DomainError::from_agent`]); an answer that does not fit is ours to explain (500); a
/// feature the node's (older) agent lacks is refused; anything else means the agent could
/// not be reached.
pub fn agent_error(e: AgentError) -> DomainError {
    match e {
        AgentError::Remote { code, message } => DomainError::from_agent(&code, message),
        e @ AgentError::Unexpected { .. } => DomainError::internal(e.to_string()),
        e @ AgentError::Unsupported { .. } => DomainError::new(Code::Unsupported, e.to_string()),
        e @ AgentError::Timeout(_) => DomainError::new(Code::AgentTimeout, e.to_string()),
        e => DomainError::new(Code::AgentUnreachable, e.to_string()),
    }
}

/// An exec in a node, over its agent's socket.
pub type UnixExec = ExecSession<ReadHalf<UnixStream>, WriteHalf<UnixStream>>;
/// A download from a node.
pub type UnixCopyOut = CopyOut<ReadHalf<UnixStream>, WriteHalf<UnixStream>>;
/// An upload into a node.
pub type UnixCopyIn = CopyIn<ReadHalf<UnixStream>, WriteHalf<UnixStream>>;
