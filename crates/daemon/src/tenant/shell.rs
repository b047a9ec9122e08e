//! A command on a pseudo-terminal (the `shell` WebSocket): the agent is asked first whether it
//! has terminals (protocol version 2, `tty`), so an older agent is refused with a clear
//! `unsupported` instead of running the shell without one.

use bulkhead_agent::proto::ExecRequest;
use bulkhead_core::DomainError;

use super::gate::UnixExec;
use super::{NodeRef, Tenant};

impl Tenant {
    /// Starts `req` (which has a `tty`) in the node.
    pub async fn exec_tty(
        &self,
        node: &NodeRef,
        req: ExecRequest,
    ) -> Result<UnixExec, DomainError> {
        let info = match self.ping_agent(node).await {
            Ok(i) => i,
            Err(e) => return Err(self.open_error(node, e).await),
        };
        let conn = self.agent_conn(node).await?.with_peer(Some(info));
        match conn.exec(req).await {
            Ok(s) => Ok(s),
            Err(e) => Err(self.open_error(node, e).await),
        }
    }
}
