//! `GET /vm/{node}/forward`: one TCP connection to a port of the node, carried as raw bytes
//! in binary WebSocket messages, as Slicer's SDKs open it (`forward/forward.go`,
//! `forward.ts`): one WebSocket per connection, the target in the `X-Inlets-Upstream` header
//! (`host:port`; `X-Inlets-Client-ID` and `X-Inlets-Mode` are informational).
//!
//! The target is always the node itself: the connection is made from the host to the node's
//! own address on its network, as port forwards do (`forward/`), so a loopback target
//! (`127.0.0.1`, `localhost`, `::1`, `0.0.0.0`) means the node's address, and any other
//! host is refused. A service inside the node must therefore listen on its address (or on
//! all addresses), not on its loopback only. `unix:` targets are refused (`unsupported`).
//!
//! The TCP connection is made before the upgrade, so a closed port is an ordinary answer:
//! 502 `port_closed`. Each tunnel takes one connection of the tenant's forward budget
//! (`forward::MAX_TENANT_CONNECTIONS`, shared with port forwards): beyond it, 503.

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bulkhead_core::{Code, DomainError};
use futures_util::{SinkExt, StreamExt};
use std::net::Ipv4Addr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::body::AppState;
use super::query::Query;
use super::ws_shell::{upgrade, Upgrade, MAX_MESSAGE};
use crate::error::ApiError;

/// The header naming the target inside the node.
pub const UPSTREAM: &str = "x-inlets-upstream";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read from the node per WebSocket message.
const CHUNK: usize = 32 << 10;

pub async fn forward(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    ws: Upgrade,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let upstream = headers.get(UPSTREAM).map(|v| v.to_str().unwrap_or("\u{0}"));
    let (named, port) = target(upstream)?;
    let n = app.tenant.running_node(&node)?;
    let ip: Ipv4Addr = n.row().ip.parse().map_err(|_| {
        DomainError::invalid(format!(
            "node {node:?} has no network (its host group has network mode none): forward needs mode isolated or bridge"
        ))
    })?;
    if named.is_some_and(|a| a != ip) {
        return Err(outside(upstream.unwrap_or_default()).into());
    }
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
    let tcp = connect(&node, ip, port).await?;
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| relay(socket, tcp, permit))
        .into_response())
}

/// An `X-Inlets-Upstream` target, which must be the node itself: its port, and the IPv4
/// address it names when that is not a loopback one (the caller checks it is the node's).
pub fn target(upstream: Option<&str>) -> Result<(Option<Ipv4Addr>, u16), DomainError> {
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
    let named = match host {
        "127.0.0.1" | "localhost" | "::1" | "0.0.0.0" | "" => None,
        h => Some(h.parse::<Ipv4Addr>().map_err(|_| outside(t))?),
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((named, p)),
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

async fn connect(node: &str, ip: Ipv4Addr, port: u16) -> Result<TcpStream, DomainError> {
    let closed = |why: String| {
        DomainError::new(
            Code::PortClosed,
            format!(
                "nothing accepts connections on port {port} of node {node:?} ({why}): the \
                 service must listen on the node's address {ip} or on 0.0.0.0, not on its \
                 loopback only"
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

/// Bytes both ways until either side ends; the permit is held as long.
async fn relay(socket: WebSocket, tcp: TcpStream, permit: OwnedSemaphorePermit) {
    let _permit = permit;
    let (mut rd, mut wr) = tcp.into_split();
    let (mut tx, mut rx) = socket.split();
    let inbound = async {
        while let Some(Ok(msg)) = rx.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Text(t) => t.as_bytes().to_vec().into(),
                Message::Close(_) => break,
                _ => continue,
            };
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
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
    use super::target;

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
            (Some("10.0.0.2".parse().unwrap()), 80)
        );
    }
}
