//! The tenant's way to a node's agent: a turn at the node's gate (`gate.rs`), the connection
//! (a full listen backlog waited out, a gone node told apart from a gone agent), the first
//! exchange of an operation, and errors that name the node's limits.

use bulkhead_agent::client::{self as agent, AgentError};
use bulkhead_agent::proto::{Event, Request};
use bulkhead_core::{Code, DomainError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::UnixStream;

use super::gate::{agent_error, Turn, CONNECT_PATIENCE};
use super::{NodeRef, Tenant};

impl Tenant {
    /// Waits for a turn at `node`'s agent (bounded queue, bounded wait), or answers 503.
    pub async fn agent_turn(&self, node: &NodeRef) -> Result<Turn, DomainError> {
        let limit = self
            .cfg
            .group(node.group())
            .map(|g| g.agent_concurrency)
            .unwrap_or(bulkhead_core::config::DEFAULT_AGENT_CONCURRENCY);
        self.gates
            .turn(node.name(), limit, &self.counters.rejected_busy)
            .await
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
                self.mark_stopped(node).await;
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
            (Ok(()), Ok(Ok(ev))) => Ok(ev),
            (Ok(()), Ok(Err(e))) => Err(self.lost(node, e).await),
            (Err(e), _) => Err(self.lost(node, e.into()).await),
            (Ok(()), Err(_)) => Err(DomainError::new(
                Code::AgentTimeout,
                format!("node {node:?}'s agent did not answer within 30s"),
            )),
        }
    }

    /// A connection to the agent broke: 409 when the node has stopped, else 502.
    async fn lost(&self, node: &str, e: AgentError) -> DomainError {
        if !self.node_alive(node) {
            self.mark_stopped(node).await;
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
