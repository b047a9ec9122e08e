//! The tenant's file-system operations in a node (agent protocol version 3, the `fs`
//! capability): each asks the agent what it speaks first, so a node that started with an
//! older agent gets a clear `unsupported` refusal naming its version instead of a request the
//! agent would misread.

use bulkhead_agent::client::{AgentConn, AgentInfo, FsWatch, MkdirRequest, UnixConn};
use bulkhead_agent::proto::{FsInfo, CAP_FS};
use bulkhead_core::DomainError;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::UnixStream;

use super::gate::UnixCopyOut;
use super::{NodeRef, Tenant};

/// A watch in a node, over its agent's socket.
pub type UnixWatch = FsWatch<ReadHalf<UnixStream>, WriteHalf<UnixStream>>;

impl Tenant {
    /// What the node's agent says of itself (one connection of its own).
    pub async fn agent_info(&self, node: &NodeRef) -> Result<AgentInfo, DomainError> {
        let conn = self.agent_conn(node).await?;
        match conn.ping().await {
            Ok(i) => Ok(i),
            Err(e) => Err(self.open_error(node, e).await),
        }
    }

    /// Whether the node's agent has the file-system operations.
    pub async fn agent_has_fs(&self, node: &NodeRef) -> Result<bool, DomainError> {
        Ok(self.agent_info(node).await?.has(CAP_FS))
    }

    /// A connection that knows what the agent speaks.
    async fn fs_conn(&self, node: &NodeRef) -> Result<UnixConn, DomainError> {
        let info = self.agent_info(node).await?;
        let conn: UnixConn = self.agent_conn(node).await?;
        Ok(AgentConn::with_peer(conn, Some(info)))
    }

    pub async fn fs_stat(&self, node: &NodeRef, path: &str) -> Result<FsInfo, DomainError> {
        let r = self.fs_conn(node).await?.stat(path).await;
        self.fs_result(node, r).await
    }

    pub async fn fs_read_dir(
        &self,
        node: &NodeRef,
        path: &str,
    ) -> Result<Vec<FsInfo>, DomainError> {
        let r = self.fs_conn(node).await?.read_dir(path).await;
        self.fs_result(node, r).await
    }

    pub async fn fs_mkdir(&self, node: &NodeRef, req: MkdirRequest) -> Result<(), DomainError> {
        let r = self.fs_conn(node).await?.mkdir(req).await;
        self.fs_result(node, r).await
    }

    pub async fn fs_remove(
        &self,
        node: &NodeRef,
        path: &str,
        recursive: bool,
    ) -> Result<(), DomainError> {
        let r = self.fs_conn(node).await?.remove(path, recursive).await;
        self.fs_result(node, r).await
    }

    /// Renames `from` to `to` in the node (#15: E2B's `Move`; needs the agent's `rename`).
    pub async fn fs_rename(&self, node: &NodeRef, from: &str, to: &str) -> Result<(), DomainError> {
        let r = self.fs_conn(node).await?.rename(from, to).await;
        self.fs_result(node, r).await
    }

    /// Starts a watch; its watches are set in the node when this returns.
    pub async fn fs_watch(
        &self,
        node: &NodeRef,
        paths: Vec<String>,
        recursive: bool,
    ) -> Result<UnixWatch, DomainError> {
        let r = self.fs_conn(node).await?.watch(paths, recursive).await;
        self.fs_result(node, r).await
    }

    /// A tar download leaving out `exclude` (an agent without `fs` is refused when there are
    /// patterns, since it would ignore them).
    pub async fn copy_out_excluding(
        &self,
        node: &NodeRef,
        path: &str,
        exclude: Vec<String>,
    ) -> Result<UnixCopyOut, DomainError> {
        let conn = if exclude.is_empty() {
            self.agent_conn(node).await?
        } else {
            self.fs_conn(node).await?
        };
        let r = conn.copy_out_excluding(path, exclude).await;
        self.fs_result(node, r).await
    }

    async fn fs_result<T>(
        &self,
        node: &NodeRef,
        r: Result<T, bulkhead_agent::client::AgentError>,
    ) -> Result<T, DomainError> {
        match r {
            Ok(v) => Ok(v),
            Err(e) => Err(self.open_error(node, e).await),
        }
    }
}
