//! The tenant's way to a node's agent: a turn at the node's gate (`gate.rs`), the connection
//! (a full listen backlog waited out, a gone node told apart from a gone agent), the
//! operations through the typed agent client, and errors that name the node's limits.

use bulkhead_agent::client::{
    AgentClient, AgentConn, AgentError, AgentInfo, CopyInRequest, UnixConn,
};
use bulkhead_agent::proto::ExecRequest;
use bulkhead_core::{Code, DomainError};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;

use super::gate::{agent_error, Turn, UnixCopyIn, UnixCopyOut, UnixExec, CONNECT_PATIENCE};
use super::{NodeRef, Tenant};

/// How long the agent may take to answer an operation's request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

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
    async fn connect_agent(&self, node_ref: &NodeRef) -> Result<UnixStream, DomainError> {
        let node = node_ref.name();
        let deadline = Instant::now() + CONNECT_PATIENCE;
        let mut pause = Duration::from_millis(5);
        loop {
            let e = match bulkhead_agent::unix_path::connect_async(&self.agent_socket(node_ref))
                .await
            {
                Ok(s) => return Ok(s),
                Err(e) => e,
            };
            if !self.node_alive(node).await {
                self.mark_stopped(node).await;
                return Err(DomainError::new(
                    Code::NodeNotRunning,
                    format!(
                        "node {node:?} has stopped (its init exited): `POST /vm/{node}/relaunch` starts it again, or delete it"
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

    /// One operation's connection to the node's agent, through the typed client
    /// (`bulkhead_agent::client`); the first answer is awaited for [`ANSWER_TIMEOUT`].
    pub(super) async fn agent_conn(&self, node: &NodeRef) -> Result<UnixConn, DomainError> {
        let s = self.connect_agent(node).await?;
        Ok(AgentConn::new(s).with_answer_timeout(ANSWER_TIMEOUT))
    }

    /// Starts a command in the node.
    pub async fn exec(&self, node: &NodeRef, req: ExecRequest) -> Result<UnixExec, DomainError> {
        let conn = self.agent_conn(node).await?;
        match conn.exec(req).await {
            Ok(s) => Ok(s),
            Err(e) => Err(self.open_error(node, e).await),
        }
    }

    /// Starts reading a file (or, with `tar`, a tree) out of the node.
    pub async fn copy_out(
        &self,
        node: &NodeRef,
        path: &str,
        tar: bool,
    ) -> Result<UnixCopyOut, DomainError> {
        let conn = self.agent_conn(node).await?;
        match conn.copy_out(path, tar).await {
            Ok(c) => Ok(c),
            Err(e) => Err(self.open_error(node, e).await),
        }
    }

    /// Starts an upload into the node. The agent answers only at its end, so a failure here
    /// is its refusal of the connection (said as it is) or a broken connection.
    pub async fn copy_in(
        &self,
        node: &NodeRef,
        req: CopyInRequest,
    ) -> Result<UnixCopyIn, DomainError> {
        let conn = self.agent_conn(node).await?;
        conn.copy_in(req)
            .await
            .map_err(|e| self.agent_failed(node, e))
    }

    /// Asks the node's agent who it is (one connection, no turn: health checks).
    pub async fn ping_agent(&self, node: &NodeRef) -> Result<AgentInfo, AgentError> {
        AgentClient::new(self.agent_socket(node)).ping().await
    }

    /// An agent failure in the middle of an operation: its refusals name the node's limits.
    pub fn agent_failed(&self, node: &NodeRef, e: AgentError) -> DomainError {
        self.explain(node, agent_error(e))
    }

    /// How opening an operation failed: the agent's refusal (naming the node's limits), no
    /// answer in time (504), or a broken connection (409 when the node has stopped, else 502).
    pub(super) async fn open_error(&self, node_ref: &NodeRef, e: AgentError) -> DomainError {
        let node = node_ref.name();
        match e {
            AgentError::Timeout(t) => DomainError::new(
                Code::AgentTimeout,
                format!(
                    "node {node:?}'s agent did not answer within {}s",
                    t.as_secs()
                ),
            ),
            e @ (AgentError::Io(_) | AgentError::Closed | AgentError::Protocol(_)) => {
                self.lost(node, e).await
            }
            e => self.agent_failed(node_ref, e),
        }
    }

    /// A connection to the agent broke: 409 when the node has stopped, else 502.
    async fn lost(&self, node: &str, e: AgentError) -> DomainError {
        if !self.node_alive(node).await {
            self.mark_stopped(node).await;
            return DomainError::new(
                Code::NodeNotRunning,
                format!(
                    "node {node:?} has stopped (its init exited): `POST /vm/{node}/relaunch` starts it again, or delete it"
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
