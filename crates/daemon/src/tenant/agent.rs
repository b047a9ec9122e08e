//! Per-node admission for agent operations (exec, copy in and out) and the connection to the
//! node's agent.
//!
//! Each node takes at most its host group's `agent_concurrency` operations at once: every exec
//! costs the node a few pids (the agent's threads and the command), and an agent's listen
//! backlog is finite. Further requests wait in a bounded queue for a bounded time; beyond
//! either bound they are refused with 503 `node_busy` and a `Retry-After`, naming the limit.

use bulkhead_agent::client::{self as agent, AgentError};
use bulkhead_agent::proto::{Event, Request};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use bulkhead_core::{Code, DomainError};

use super::{NodeRef, Tenant};

/// Requests that may wait for a node's agent beyond those it runs.
pub const MAX_WAITING_PER_NODE: usize = 1024;
/// How long a request waits for its turn before it is refused.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// How long a connect retries while the agent's listen backlog is full.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

struct Gate {
    running: Arc<Semaphore>,
    waiting: AtomicUsize,
    limit: u32,
}

/// The gates of this daemon's nodes, by node name.
#[derive(Default)]
pub struct Gates(Mutex<HashMap<String, Arc<Gate>>>);

impl Gates {
    /// Forgets a node's gate (its node is gone); operations still holding a turn keep theirs.
    pub fn remove(&self, node: &str) {
        self.0.lock().unwrap().remove(node);
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

impl Tenant {
    /// Waits for a turn at `node`'s agent (bounded queue, bounded wait), or answers 503.
    pub async fn agent_turn(&self, node: &NodeRef) -> Result<Turn, DomainError> {
        let (node, group) = (node.name(), node.group());
        let gate = {
            let limit = self
                .cfg
                .group(group)
                .map(|g| g.agent_concurrency)
                .unwrap_or(bulkhead_core::config::DEFAULT_AGENT_CONCURRENCY);
            let mut m = self.gates.0.lock().unwrap();
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
            self.counters.rejected_busy.fetch_add(1, Ordering::Relaxed);
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
                self.counters.rejected_busy.fetch_add(1, Ordering::Relaxed);
                Err(busy(
                    node,
                    gate.limit,
                    &format!("this request waited {}s for a turn", MAX_WAIT.as_secs()),
                ))
            }
        }
    }

    /// Connects to a node's agent. A full listen backlog (EAGAIN) is waited out for a while,
    /// then answered 503; only an agent that is really gone is a 502 (or 409 when the whole
    /// node has stopped).
    pub async fn connect_agent(&self, node_ref: &NodeRef) -> Result<UnixStream, DomainError> {
        let node = node_ref.name();
        let deadline = Instant::now() + CONNECT_PATIENCE;
        let mut pause = Duration::from_millis(5);
        loop {
            let e = match UnixStream::connect(self.agent_socket(node_ref)).await {
                Ok(s) => return Ok(s),
                Err(e) => e,
            };
            if !self.node_alive(node) {
                self.mark_stopped(node);
                return Err(DomainError::new(
                    Code::NodeNotRunning,
                    format!(
                        "node {node:?} has stopped (its init exited): delete it and create another"
                    ),
                ));
            }
            if e.raw_os_error() != Some(libc::EAGAIN) {
                return Err(agent_error(AgentError::Connect(e)));
            }
            if Instant::now() >= deadline {
                return Err(DomainError::new(
                    Code::AgentBusy,
                    format!(
                        "node {node:?}'s agent accepts no more connections for now (its listen \
                         queue stayed full for {}s): retry later",
                        CONNECT_PATIENCE.as_secs()
                    ),
                )
                .retry_after(1));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Sends an operation's request and reads the agent's first event. An agent that refused
    /// the connection at once (no thread left for it) may have closed it before the request
    /// was written: its answer is still read, so a refusal is not mistaken for a lost agent.
    pub async fn open_op<R, W>(
        &self,
        node_ref: &NodeRef,
        rd: &mut R,
        wr: &mut W,
        req: &Request,
    ) -> Result<Event, DomainError>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let node = node_ref.name();
        let sent = agent::send_request(wr, req).await;
        let answer = tokio::time::timeout(Duration::from_secs(30), agent::expect_event(rd)).await;
        match (sent, answer) {
            (_, Ok(Err(e @ AgentError::Remote { .. }))) => {
                Err(self.explain(node_ref, agent_error(e)))
            }
            (Ok(()), Ok(r)) => r.map_err(|e| self.lost(node, e)),
            (Err(e), _) => Err(self.lost(node, e.into())),
            (Ok(()), Err(_)) => Err(DomainError::new(
                Code::AgentTimeout,
                format!("node {node:?}'s agent did not answer within 30s"),
            )),
        }
    }

    /// A connection to the agent broke: 409 when the node has stopped, else 502.
    fn lost(&self, node: &str, e: AgentError) -> DomainError {
        if !self.node_alive(node) {
            self.mark_stopped(node);
            return DomainError::new(
                Code::NodeNotRunning,
                format!(
                    "node {node:?} has stopped (its init exited): delete it and create another"
                ),
            );
        }
        agent_error(e)
    }

    /// Rewrites the agent's `pids_limit` refusal so that it names the node's limit.
    pub fn explain(&self, node: &NodeRef, e: DomainError) -> DomainError {
        let (node, group) = (node.name(), node.group());
        if e.code != Code::PidsLimit {
            return e;
        }
        let pids = self.cfg.group(group).map(|g| g.pids_max).unwrap_or(0);
        DomainError {
            message: format!(
                "node {node:?} is at its pids limit (pids_max: {pids} processes and threads, \
                 host group {group:?}), so it cannot start the request: {}; wait for its \
                 processes to end, or raise pids_max",
                e.message
            ),
            ..e
        }
    }
}

/// An agent failure as a domain error: the agent's own refusals keep their codes
/// ([`DomainError::from_agent`]); anything else means the agent could not be reached.
pub fn agent_error(e: AgentError) -> DomainError {
    match e {
        AgentError::Remote { code, message } => DomainError::from_agent(&code, message),
        e => DomainError::new(Code::AgentUnreachable, e.to_string()),
    }
}
