//! `GET /vm/{node}/shell`: an interactive shell on a pseudo-terminal in the node, over a
//! WebSocket in Slicer's shell framing (`bulkhead_api::shell`).
//!
//! Everything that can fail is checked before the upgrade, so a refusal is an ordinary
//! `{"error","code"}` answer: the query (`uid`, `gid`, `shell`, `cwd`, the keys the SDKs
//! send), the node (404, 409 when paused), a turn at the node's gate (the session holds it
//! while it lasts, like any exec), and the start of the shell through the agent's exec with
//! a `tty` (an agent without terminals: 400 `unsupported`). Then frames flow both ways; the
//! shell's end is a `session close` frame carrying its exit status, and a close with code
//! 1000 whose reason says it (`exit status 3`). A client that leaves or sends `shutdown`
//! ends the session: the agent kills the shell's process group when its connection drops.

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, Path, RawQuery};
use axum::response::{IntoResponse, Response};
use bulkhead_agent::client::ExecEvent;
use bulkhead_agent::proto::{ExecRequest, WinSize};
use bulkhead_api::names;
use bulkhead_api::shell::Frame;
use bulkhead_core::DomainError;
use futures_util::{SinkExt, StreamExt};

use super::body::Scoped;
use super::query::Query;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::tenant::{Turn, UnixExec};

/// Largest WebSocket message taken from a client (typed input, resizes).
pub const MAX_MESSAGE: usize = 1 << 20;
/// The terminal's size until the client's first resize.
const INITIAL: WinSize = WinSize { cols: 80, rows: 24 };

/// The upgrade, or why the request is not one.
pub type Upgrade =
    Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>;

pub async fn shell(
    Scoped(app): Scoped,
    Extension(who): Extension<Principal>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    held: Option<Extension<crate::rate::session::SessionGuard>>, // #12, rate
    ws: Upgrade,
) -> Result<Response, ApiError> {
    let req = shell_request(q.as_deref())?;
    let n = app.tenant.running_node(&node)?;
    let req = (app.tenant.admission) // admission policy (#12)
        .exec(&who.id, &node, crate::admission::ExecMode::Shell, req)
        .await?;
    let ws = upgrade(ws, "shell")?;
    let turn = app.tenant.agent_turn(&n).await?;
    let session = app.tenant.exec_tty(&n, req).await?;
    app.tenant
        .counters
        .execs
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| async move {
            run(socket, session, turn).await;
            drop(held); // the tenant's session (#12, rate) ends with the connection
        })
        .into_response())
}

/// A request that is not a WebSocket upgrade, said plainly.
pub fn upgrade(ws: Upgrade, route: &str) -> Result<WebSocketUpgrade, DomainError> {
    ws.map_err(|e| {
        DomainError::invalid(format!(
            "{route} is a WebSocket: send GET with Connection: Upgrade, Upgrade: websocket \
             and Sec-WebSocket-Version: 13 ({e})"
        ))
    })
}

/// The query as the agent's exec request: the shell (default `/bin/sh`), on a terminal.
pub fn shell_request(raw: Option<&str>) -> Result<ExecRequest, DomainError> {
    let q = Query::parse(raw, &["uid", "gid", "shell", "cwd"])?;
    let cwd = q.one("cwd")?.filter(|c| !c.is_empty());
    if let Some(c) = &cwd {
        names::validate_node_path(c).map_err(|m| DomainError::invalid(format!("cwd: {m}")))?;
    }
    let cmd = match q.one("shell")? {
        None => "/bin/sh".to_string(),
        Some(s) if s.is_empty() => "/bin/sh".to_string(),
        Some(s) if s.contains('\0') => return Err(DomainError::invalid("shell contains NUL")),
        Some(s) => s,
    };
    Ok(ExecRequest {
        cmd,
        args: vec![],
        env: vec!["TERM=xterm-256color".into()],
        cwd,
        uid: q.u32("uid")?.unwrap_or(0),
        gid: q.u32("gid")?.unwrap_or(0),
        stdin: true,
        timeout_ms: None,
        tty: Some(INITIAL),
        ..Default::default()
    })
}

fn binary(f: Frame) -> Message {
    Message::Binary(f.encode().into())
}

/// Relays until the shell ends or the client goes.
async fn run(socket: WebSocket, session: UnixExec, turn: Turn) {
    let _turn = turn;
    let (mut input, mut output) = session.split();
    let (mut tx, mut rx) = socket.split();
    let inbound = async {
        while let Some(Ok(msg)) = rx.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => return,
                _ => continue, // text, ping, pong: the SDKs send binary frames only
            };
            let ok = match Frame::decode(&data) {
                Ok(Frame::Data(d)) => input.write_stdin(&d).await.is_ok(),
                Ok(Frame::WindowSize { cols, rows }) => {
                    let size = WinSize {
                        cols: cols.clamp(1, u16::MAX as u32) as u16,
                        rows: rows.clamp(1, u16::MAX as u32) as u16,
                    };
                    // An agent without resize frames keeps the first size; the shell goes on.
                    let _ = input.resize(size).await;
                    true
                }
                Ok(Frame::Shutdown) => return,
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "malformed shell frame skipped");
                    true
                }
            };
            if !ok {
                return;
            }
        }
    };
    let outbound = async {
        loop {
            match output.next().await {
                Ok(Some(ExecEvent::Stdout(d) | ExecEvent::Stderr(d))) => {
                    if tx.send(binary(Frame::Data(d))).await.is_err() {
                        return None;
                    }
                }
                Ok(Some(ExecEvent::Exit(st))) => {
                    let code = st.code.unwrap_or(128 + st.signal.unwrap_or(0));
                    let _ = tx.send(binary(Frame::SessionClose(Some(code)))).await;
                    let reason = match (st.code, st.signal) {
                        (Some(c), _) => format!("exit status {c}"),
                        (None, Some(s)) => format!("killed by signal {s}"),
                        _ => "ended".into(),
                    };
                    return Some((1000, reason));
                }
                Ok(None) | Err(_) => {
                    return Some((1011, "the node's agent went away during the session".into()))
                }
            }
        }
    };
    let end = tokio::select! {
        _ = inbound => Some((1000, "session ended by the client".to_string())),
        e = outbound => e,
    };
    drop((input, output)); // the agent kills the shell's process group
    if let Some((code, reason)) = end {
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::shell_request;

    #[test]
    fn the_sdks_query_becomes_a_terminal_exec() {
        let r = shell_request(Some("shell=%2Fbin%2Fbash&uid=1000&gid=1000&cwd=%2Ftmp")).unwrap();
        assert_eq!(
            (r.cmd.as_str(), r.uid, r.gid, r.cwd.as_deref()),
            ("/bin/bash", 1000, 1000, Some("/tmp"))
        );
        assert!(r.tty.is_some() && r.stdin);
        let r = shell_request(None).unwrap();
        assert_eq!((r.cmd.as_str(), r.uid), ("/bin/sh", 0));
        assert!(shell_request(Some("cmd=ls"))
            .unwrap_err()
            .message
            .contains("unknown query parameter \"cmd\""));
        assert!(shell_request(Some("uid=x")).is_err());
        assert!(shell_request(Some("cwd=rel"))
            .unwrap_err()
            .message
            .starts_with("cwd: "));
    }
}
