//! #16 B1: input to a running background exec over Slicer's exec routes, for the containerd
//! shim (containerd's stdin FIFO, `CloseIO`, `ResizePty`): `POST /vm/{node}/exec/{exec_id}/stdin`
//! streams the request body into the command's stdin as it arrives (`?close=true` ends the
//! stdin after the body), and `POST /vm/{node}/exec/{exec_id}/resize` sets its terminal's size.
//!
//! Both drive the exec through `bg/control.rs` (E2B's SendInput and Update use it too), so
//! input goes through the exec's one agent session, in order. Refusals are 409 `conflict`:
//! an exec started without stdin (or without a terminal, for a resize), one whose stdin was
//! closed, one that has ended.

use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_agent::proto::WinSize;
use bulkhead_core::{Code, DomainError};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::body::{json_body, Scoped, TenantApp};
use super::query::Query;
use crate::bg::BgExec;
use crate::error::ApiError;

/// What `POST .../stdin` answers once the body is written.
#[derive(Debug, Serialize)]
pub struct StdinWritten {
    pub exec_id: String,
    /// Bytes of the body passed to the command's stdin.
    pub bytes_written: u64,
    /// Whether the stdin is closed now (`close=true`).
    pub stdin_closed: bool,
}

/// The body of `POST .../resize`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resize {
    pub cols: u32,
    pub rows: u32,
}

fn conflict(msg: String) -> DomainError {
    DomainError::new(Code::Conflict, msg)
}

fn exec_of(app: &TenantApp, node: &str, id: &str) -> Result<std::sync::Arc<BgExec>, DomainError> {
    let n = app.tenant.node(node)?;
    app.tenant.bg.get(n.name(), id)
}

/// Refuses input to an exec that has ended.
fn running(e: &BgExec) -> Result<(), DomainError> {
    match e.end() {
        Some(end) => Err(conflict(format!(
            "background exec {} has ended (exit code {}): it takes no more input",
            e.id, end.exit_code
        ))),
        None => Ok(()),
    }
}

/// `POST /vm/{node}/exec/{exec_id}/stdin[?close=true]`: the body, as it arrives, into the
/// command's stdin.
pub async fn stdin(
    Scoped(app): Scoped,
    Path((node, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Json<StdinWritten>, ApiError> {
    let q = Query::parse(q.as_deref(), &["close"])?;
    let close = q.bool("close")?;
    let e = exec_of(&app, &node, &id)?;
    if !e.takes_stdin() {
        return Err(conflict(format!(
            "background exec {id} was started without stdin: start it with stdin=true (or tty=true)"
        ))
        .into());
    }
    running(&e)?;
    if e.stdin_is_closed() {
        return Err(conflict(format!(
            "the stdin of background exec {id} is closed (close=true was sent)"
        ))
        .into());
    }
    let mut data = body.into_data_stream();
    let mut written = 0u64;
    while let Some(chunk) = data.next().await {
        let chunk = chunk
            .map_err(|err| DomainError::invalid(format!("cannot read the request body: {err}")))?;
        if let Err(err) = e.write_stdin(&chunk).await {
            running(&e)?;
            return Err(match err.code {
                // Closed meanwhile (another request's close=true), or it ended.
                Code::InvalidRequest | Code::ExecGone => conflict(err.message),
                _ => err,
            }
            .into());
        }
        written += chunk.len() as u64;
    }
    if close {
        e.close_stdin().await?;
    }
    Ok(Json(StdinWritten {
        exec_id: e.id.clone(),
        bytes_written: written,
        stdin_closed: e.stdin_is_closed(),
    }))
}

/// `POST /vm/{node}/exec/{exec_id}/resize` `{"cols":N,"rows":N}`: the terminal's new size
/// (the command gets `SIGWINCH`); 204.
pub async fn resize(
    Scoped(app): Scoped,
    Path((node, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let e = exec_of(&app, &node, &id)?;
    let r: Resize = json_body(&app, body).await?;
    let dim = |v: u32, key: &str| {
        u16::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
            DomainError::invalid(format!("{key} must be 1 to {}, not {v}", u16::MAX))
        })
    };
    let size = WinSize {
        cols: dim(r.cols, "cols")?,
        rows: dim(r.rows, "rows")?,
    };
    if !e.tty() {
        return Err(conflict(format!(
            "background exec {id} has no terminal to resize: start it with tty=true"
        ))
        .into());
    }
    running(&e)?;
    if let Err(err) = e.resize(size).await {
        running(&e)?;
        return Err(err.into());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
