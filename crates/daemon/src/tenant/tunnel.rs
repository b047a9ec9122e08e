//! A TCP connection made by a node's agent from inside the node (the `forward` WebSocket;
//! agent capability `tcp`): the agent reaches what the node's own processes reach, its
//! loopback included. Nothing accepting there is 502 `port_closed`, named with the node.

use bulkhead_agent::client::{AgentInfo, TcpTunnel};
use bulkhead_core::{Code, DomainError};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::UnixStream;

use super::{NodeRef, Tenant};

/// A TCP connection inside a node, over its agent's socket.
pub type UnixTunnel = TcpTunnel<ReadHalf<UnixStream>, WriteHalf<UnixStream>>;

impl Tenant {
    /// Connects to `host:port` from inside the node; `info` is what its agent said of itself
    /// (an agent without `tcp` is refused with `unsupported` before anything is sent).
    pub async fn connect_tcp(
        &self,
        node: &NodeRef,
        info: AgentInfo,
        host: &str,
        port: u16,
    ) -> Result<UnixTunnel, DomainError> {
        let conn = self.agent_conn(node).await?.with_peer(Some(info));
        match conn.connect_tcp(host, port).await {
            Ok(t) => Ok(t),
            Err(e) => {
                let e = self.open_error(node, e).await;
                if e.code != Code::PortClosed {
                    return Err(e);
                }
                Err(DomainError::new(
                    Code::PortClosed,
                    format!(
                        "nothing accepts connections on port {port} of node {:?} ({}): start \
                         the service in the node first",
                        node.name(),
                        e.message
                    ),
                ))
            }
        }
    }
}
