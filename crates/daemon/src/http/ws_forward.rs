//! `GET /vm/{node}/forward`: one TCP connection to a port of the node, carried as raw bytes
//! in binary WebSocket messages, as Slicer's SDKs open it (`forward/forward.go`,
//! `forward.ts`): one WebSocket per connection, the target in the `X-Inlets-Upstream` header
//! (`host:port`; `X-Inlets-Client-ID` and `X-Inlets-Mode` are informational).
//!
//! The target is always the node itself: a loopback target (`127.0.0.1`, `localhost`, `::1`,
//! `0.0.0.0`) or the node's own address; any other host is refused (the daemon is no proxy
//! into the tenant's network). `unix:` targets are refused (`unsupported`).
//!
//! Through the agent (capability `tcp`, docs/adr/0019-websockets-for-shell-and-forward.md):
//! the node's agent makes the connection from inside the node, so a loopback target is the
//! node's own loopback and a service listening on `127.0.0.1` only is reached, as with
//! Slicer. The agent reaches only what the node's processes reach. A node whose agent
//! predates `tcp` gets the older path: the host connects to the node's address (a loopback
//! target meaning that address), which reaches only services listening on it.
//!
//! Every check happens before the upgrade, so a refusal is an ordinary `{"error","code"}`
//! answer; the connection itself too, so a closed port is 502 `port_closed`. Each tunnel
//! takes one connection of the tenant's forward budget (`forward::MAX_TENANT_CONNECTIONS`,
//! shared with port forwards: beyond it, 503) and, through the agent, a turn at the node's
//! agent like an exec (its threads count against the node's pids).

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{Extension, Path, RawQuery};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bulkhead_agent::client::{TcpRead, TcpWrite};
use bulkhead_agent::proto::CAP_TCP;
use bulkhead_core::{Code, DomainError};
use futures_util::{SinkExt, StreamExt};
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::OwnedSemaphorePermit;

use super::body::Scoped;
use super::query::Query;
use super::ws_shell::{upgrade, Upgrade, MAX_MESSAGE};
use crate::auth::Principal;
use crate::error::ApiError;
use crate::tenant::Turn;

/// The header naming the target inside the node.
pub const UPSTREAM: &str = "x-inlets-upstream";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read from the node per WebSocket message.
const CHUNK: usize = 32 << 10;

/// Where `X-Inlets-Upstream` points: the node's loopback, or its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// `127.0.0.1`, `localhost`, `0.0.0.0` or an empty host.
    Loopback,
    /// `::1`.
    Loopback6,
    /// An IPv4 address, which must be the node's.
    Addr(Ipv4Addr),
}

pub async fn forward(
    Scoped(app): Scoped,
    Extension(who): Extension<Principal>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    held: Option<Extension<crate::rate::session::SessionGuard>>, // #12, rate
    headers: HeaderMap,
    ws: Upgrade,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let upstream = headers.get(UPSTREAM).map(|v| v.to_str().unwrap_or("\u{0}"));
    let (host, port) = target(upstream)?;
    let n = app.tenant.running_node(&node)?;
    // A node without a network has its loopback down (a jail's stays so in mode none).
    let ip: Ipv4Addr = n.row().ip.parse().map_err(|_| {
        DomainError::invalid(format!(
            "node {node:?} has no network (its host group has network mode none): forward needs mode isolated or bridge"
        ))
    })?;
    if matches!(host, Host::Addr(a) if a != ip) {
        return Err(outside(upstream.unwrap_or_default()).into());
    }
    let upstream = upstream.unwrap_or_default();
    // admission policy (#12)
    (app.tenant.admission)
        .tunnel(&who.id, &node, upstream)
        .await?;
    let ws = upgrade(ws, "forward")?;
    let permit = app.tenant.forwards.tenant_permit().ok_or_else(|| {
        DomainError::new(
            Code::TooManyConnections,
            format!(
                "this tenant relays its maximum of {} forwarded connections: retry later",
                crate::forward::MAX_TENANT_CONNECTIONS
            ),
        )
        .retry_after(1)
    })?;
    let info = app.tenant.agent_info(&n).await?;
    let (down, up, turn) = if info.has(CAP_TCP) {
        let turn = app.tenant.agent_turn(&n).await?;
        let h = match host {
            Host::Loopback => "127.0.0.1".to_string(),
            Host::Loopback6 => "::1".to_string(),
            Host::Addr(a) => a.to_string(),
        };
        let (rd, wr) = app.tenant.connect_tcp(&n, info, &h, port).await?.split();
        (Down::Agent(rd), Up::Agent(wr), Some(turn))
    } else {
        let (rd, wr) = connect(&node, ip, port).await?.into_split();
        (Down::Host(rd), Up::Host(wr), None)
    };
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            relay(socket, down, up, (permit, turn)).await;
            drop(held); // the tenant's session (#12, rate) ends with the connection
        })
        .into_response())
}

/// An `X-Inlets-Upstream` target, which must be the node itself, and its port (the caller
/// checks that an address is the node's).
pub fn target(upstream: Option<&str>) -> Result<(Host, u16), DomainError> {
    let t = upstream.ok_or_else(|| {
        DomainError::invalid(
            "header X-Inlets-Upstream is required: the node's port as 127.0.0.1:PORT",
        )
    })?;
    if t.starts_with("unix:") {
        return Err(DomainError::new(
            Code::Unsupported,
            format!("X-Inlets-Upstream {t:?}: forwarding to a UNIX socket inside a node is not supported; forward a TCP port"),
        ));
    }
    let (host, port) = t.rsplit_once(':').ok_or_else(|| {
        DomainError::invalid(format!(
            "X-Inlets-Upstream {t:?} is not HOST:PORT, e.g. 127.0.0.1:8080"
        ))
    })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    // Anything but the node would make the daemon a proxy into the tenant's network.
    let host = match host {
        "127.0.0.1" | "localhost" | "0.0.0.0" | "" => Host::Loopback,
        "::1" => Host::Loopback6,
        h => Host::Addr(h.parse::<Ipv4Addr>().map_err(|_| outside(t))?),
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((host, p)),
        _ => Err(DomainError::invalid(format!(
            "X-Inlets-Upstream {t:?}: the port must be between 1 and 65535"
        ))),
    }
}

fn outside(t: &str) -> DomainError {
    DomainError::invalid(format!(
        "X-Inlets-Upstream {t:?}: forward reaches only the node itself; use 127.0.0.1:PORT"
    ))
}

/// The older path (an agent without `tcp`): the host connects to the node's address.
async fn connect(node: &str, ip: Ipv4Addr, port: u16) -> Result<TcpStream, DomainError> {
    let closed = |why: String| {
        DomainError::new(
            Code::PortClosed,
            format!(
                "nothing accepts connections on port {port} of node {node:?} ({why}): the \
                 node's agent predates forwarding from inside the node, so the service must \
                 listen on the node's address {ip} or on 0.0.0.0 (or recreate the node)"
            ),
        )
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((ip, port))).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(closed(e.to_string())),
        Err(_) => Err(closed(format!(
            "no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// The node's side of the connection, read.
enum Down {
    Host(OwnedReadHalf),
    Agent(TcpRead<ReadHalf<UnixStream>>),
}

impl Down {
    /// The next bytes; `None` at the end (or a broken connection).
    async fn next(&mut self, buf: &mut [u8]) -> Option<Vec<u8>> {
        match self {
            Down::Host(rd) => match rd.read(buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(buf[..n].to_vec()),
            },
            Down::Agent(rd) => rd.next().await.ok().flatten(),
        }
    }
}

/// The node's side of the connection, written.
enum Up {
    Host(OwnedWriteHalf),
    Agent(TcpWrite<WriteHalf<UnixStream>>),
}

impl Up {
    async fn write(&mut self, data: &[u8]) -> bool {
        match self {
            Up::Host(wr) => wr.write_all(data).await.is_ok(),
            Up::Agent(wr) => wr.write(data).await.is_ok(),
        }
    }

    /// Half-closes: the service reads the end of its input.
    async fn close(&mut self) {
        match self {
            Up::Host(wr) => drop(wr.shutdown().await),
            Up::Agent(wr) => drop(wr.close().await),
        }
    }
}

/// Bytes both ways until either side ends; the permit (and the turn) are held as long.
async fn relay(
    socket: WebSocket,
    mut down: Down,
    mut up: Up,
    held: (OwnedSemaphorePermit, Option<Turn>),
) {
    let _held = held;
    let (mut tx, mut rx) = socket.split();
    let inbound = async {
        while let Some(Ok(msg)) = rx.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Text(t) => t.as_bytes().to_vec().into(),
                Message::Close(_) => break,
                _ => continue,
            };
            if !up.write(&data).await {
                break;
            }
        }
        up.close().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; CHUNK];
        while let Some(d) = down.next(&mut buf).await {
            if tx.send(Message::Binary(d.into())).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = inbound => {}
        _ = outbound => {}
    }
    let _ = tx
        .send(Message::Close(Some(CloseFrame {
            code: 1000,
            reason: "connection closed".into(),
        })))
        .await;
}

#[cfg(test)]
mod tests {
    use super::{target, Host};

    fn target_port(t: Option<&str>) -> Result<u16, bulkhead_core::DomainError> {
        target(t).map(|(_, p)| p)
    }

    #[test]
    fn the_target_is_the_node_itself() {
        assert_eq!(target_port(Some("127.0.0.1:8080")).unwrap(), 8080);
        assert_eq!(target_port(Some("localhost:22")).unwrap(), 22);
        assert_eq!(target_port(Some("[::1]:80")).unwrap(), 80);
        assert!(target_port(None)
            .unwrap_err()
            .message
            .contains("X-Inlets-Upstream is required"));
        let e = target_port(Some("unix:/var/run/docker.sock")).unwrap_err();
        assert_eq!(e.code, bulkhead_core::Code::Unsupported);
        assert!(target_port(Some("example.com:80"))
            .unwrap_err()
            .message
            .contains("only the node itself"));
        assert!(target_port(Some("127.0.0.1:0")).is_err());
        assert!(target_port(Some("127.0.0.1:99999")).is_err());
        assert!(target_port(Some("8080")).is_err());
        assert_eq!(
            target(Some("10.0.0.2:80")).unwrap(),
            (Host::Addr("10.0.0.2".parse().unwrap()), 80)
        );
        assert_eq!(target(Some("[::1]:80")).unwrap().0, Host::Loopback6);
        assert_eq!(target(Some("0.0.0.0:80")).unwrap().0, Host::Loopback);
    }
}
