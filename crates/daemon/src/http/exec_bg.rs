//! Background execs over HTTP (Slicer's `exec_bg.go` and `vm.bg.*` shapes): the start
//! (`POST /vm/{node}/exec?background=true`, from `exec.rs`), the list, one exec's info, its
//! logs (NDJSON frames with ids from its ring, `gap` frames for what the ring dropped,
//! `follow` and `from_id`), `kill` (a signal, then SIGKILL after `grace_ms`), `wait-exit` (a
//! long poll) and delete. The registry and the sessions are the daemon's (`crate::bg`);
//! handlers parse, look the node up through the tenant (another tenant's node is not found)
//! and the exec up in that node's registry (another node's exec is not found).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_agent::proto::ExecRequest;
use bulkhead_api::{
    signals, BgDeleted, BgExecInfo, BgExecStarted, BgKillRequest, BgKillResponse, BgWaitExit,
    ExecFrame, LogFrame,
};
use bulkhead_core::DomainError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::body::{json_body, Scoped, TenantApp};
use super::exec_query::{ExecQuery, Stdio};
use super::exec_wire::{line, not_started, Encoders};
use super::query::Query;
use crate::bg::ring::{Entry, Gap};
use crate::bg::{BgExec, Launch};
use crate::error::ApiError;
use crate::tenant::NodeRef;

/// The longest grace a kill may ask for: a kill's waiting task holds the exec until then.
const MAX_GRACE: Duration = Duration::from_secs(600);
/// SIGTERM's grace before SIGKILL when the kill does not say (Slicer's default).
const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// `wait-exit` without a timeout waits this long (Slicer's default)...
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
/// ...and never longer than this.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// Starts a background exec: a place in the limits, a session through the node's gate (held
/// only while the command starts), then the daemon's.
pub async fn start(
    app: &TenantApp,
    n: &NodeRef,
    q: &ExecQuery,
    ring_bytes: u64,
) -> Result<Response, DomainError> {
    let launch = Launch {
        command: q.command.0.clone(),
        args: q.command.1.clone(),
        cwd: q.request.cwd.clone(),
        uid: q.request.uid,
        ring_bytes,
        base64: q.stdio == Stdio::Base64,
        // #16 B1: stdin (`POST .../stdin`) and a terminal (`POST .../resize`)
        opts: crate::bg::options::Options {
            stdin: q.request.stdin,
            tty: q.request.tty.is_some(),
            gid: q.request.gid,
            container: q.container.clone(), // #16 B2: killed with its container
            ..Default::default()
        },
    };
    let e = run(app, n, launch, q.request.clone(), true).await?;
    Ok(Json(BgExecStarted {
        exec_id: e.id.clone(),
        pid: e.pid,
        started_at: e.started_at.clone(),
        ring_bytes,
    })
    .into_response())
}

/// Runs `req` as a background exec of `n` (Slicer's and E2B's, #15): a place in the limits,
/// a session through the node's gate (held only while the command starts; a terminal's asks
/// the agent first whether it has terminals), then the registry's. A command that cannot
/// start is an ended exec with a shell's exit code when `not_started_as_exit`, else the error.
pub async fn run(
    app: &TenantApp,
    n: &NodeRef,
    launch: Launch,
    req: ExecRequest,
    not_started_as_exit: bool,
) -> Result<std::sync::Arc<BgExec>, DomainError> {
    let t = &app.tenant;
    let slot = t.bg.reserve(n.name(), launch.ring_bytes)?;
    let turn = t.agent_turn(n).await?;
    let session = match req.tty {
        Some(_) => t.exec_tty(n, req).await,
        None => t.exec(n, req).await,
    };
    let e = match session {
        Ok(s) => slot.launch(launch, s),
        Err(e) => match not_started(&e) {
            Some(code) if not_started_as_exit => {
                slot.launch_failed(launch, code, &format!("bulkhead: {}", e.message))
            }
            _ => return Err(e),
        },
    };
    drop(turn);
    t.counters
        .execs
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    t.usage.exec(n.name()); // #14 usage
    Ok(e)
}

/// `GET /vm/{node}/exec`: the node's background execs, oldest first.
pub async fn list(
    Scoped(app): Scoped,
    Path(node): Path<String>,
) -> Result<Json<Vec<BgExecInfo>>, ApiError> {
    let n = app.tenant.node(&node)?;
    Ok(Json(
        app.tenant
            .bg
            .list(n.name())
            .iter()
            .map(|e| e.info())
            .collect(),
    ))
}

fn exec_of(app: &TenantApp, node: &str, id: &str) -> Result<std::sync::Arc<BgExec>, DomainError> {
    let n = app.tenant.node(node)?;
    app.tenant.bg.get(n.name(), id)
}

/// `GET /vm/{node}/exec/{id}`.
pub async fn info(
    Scoped(app): Scoped,
    Path((node, id)): Path<(String, String)>,
) -> Result<Json<BgExecInfo>, ApiError> {
    Ok(Json(exec_of(&app, &node, &id)?.info()))
}

/// `DELETE /vm/{node}/exec/{id}`: an exited exec and its ring.
pub async fn delete(
    Scoped(app): Scoped,
    Path((node, id)): Path<(String, String)>,
) -> Result<Json<BgDeleted>, ApiError> {
    let n = app.tenant.node(&node)?;
    app.tenant.bg.remove(n.name(), &id)?;
    Ok(Json(BgDeleted {
        exec_id: id,
        reaped: true,
    }))
}

/// `POST /vm/{node}/exec/{id}/kill`, body `{"signal": "TERM", "grace_ms": 5000}` (both
/// optional, the body too; `"escalate": false` sends the signal alone, without the SIGKILL
/// after the grace).
pub async fn kill(
    Scoped(app): Scoped,
    Path((node, id)): Path<(String, String)>,
    body: Body,
) -> Result<Json<BgKillResponse>, ApiError> {
    let e = exec_of(&app, &node, &id)?;
    let req: BgKillRequest = json_body(&app, body).await?;
    let sig = match req.signal.as_deref() {
        None | Some("") => libc::SIGTERM,
        Some(s) => signals::parse(s).ok_or_else(|| {
            DomainError::invalid(format!(
                "signal {s:?} is not a signal: name one such as TERM, SIGKILL or 9"
            ))
        })?,
    };
    let grace = match req.grace_ms {
        None => DEFAULT_GRACE,
        Some(ms) if ms <= MAX_GRACE.as_millis() as u64 => Duration::from_millis(ms),
        Some(ms) => {
            return Err(DomainError::invalid(format!(
                "grace_ms {ms} is more than the most a kill waits ({} ms): send a smaller one",
                MAX_GRACE.as_millis()
            ))
            .into())
        }
    };
    let grace = (req.escalate != Some(false)).then_some(grace);
    let (running, signal_sent) = e.signal_then(sig, grace).await?;
    Ok(Json(BgKillResponse {
        exec_id: e.id.clone(),
        pid: e.pid,
        running,
        signal_sent,
    }))
}

/// `GET /vm/{node}/exec/{id}/wait-exit?timeout=30`: waits for the command to end, at most
/// the timeout (seconds, or a Go duration such as `1m30s`).
pub async fn wait_exit(
    Scoped(app): Scoped,
    Path((node, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Json<BgWaitExit>, ApiError> {
    let q = Query::parse(q.as_deref(), &["timeout"])?;
    let timeout = match q.one("timeout")?.as_deref() {
        None | Some("") | Some("0") => DEFAULT_WAIT,
        Some(v) => match v.parse::<u64>() {
            Ok(s) => Duration::from_secs(s),
            Err(_) => q.duration("timeout")?.unwrap_or(DEFAULT_WAIT),
        },
    }
    .min(MAX_WAIT);
    let e = exec_of(&app, &node, &id)?;
    let end = e.wait(timeout).await;
    Ok(Json(BgWaitExit {
        exec_id: e.id.clone(),
        running: end.is_none(),
        timed_out: end.is_none(),
        exit_code: end.as_ref().map(|x| x.exit_code),
        signal: end.as_ref().and_then(|x| x.signal.clone()),
        ended_at: end.map(|x| x.ended_at),
    }))
}

/// `GET /vm/{node}/exec/{id}/logs?follow=true&from_id=N`: the ring's frames from `from_id`
/// (a `gap` first when some were dropped); with `follow`, then new frames as they come until
/// the exit frame.
pub async fn logs(
    Scoped(app): Scoped,
    Path((node, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(q.as_deref(), &["follow", "from_id"])?;
    let follow = q.bool("follow")?;
    let from = match q.one("from_id")? {
        None => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            DomainError::invalid(format!(
                "query parameter \"from_id\" must be a non-negative integer, not {v:?}"
            ))
        })?,
    };
    let e = exec_of(&app, &node, &id)?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(stream_logs(e, from, follow, tx));
    let mut resp = Body::from_stream(ReceiverStream::new(rx)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

async fn stream_logs(
    e: std::sync::Arc<BgExec>,
    mut cursor: u64,
    follow: bool,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let stdio = if e.launch.base64 {
        Stdio::Base64
    } else {
        Stdio::Text
    };
    let mut enc = Encoders::new(stdio);
    let mut changed = e.subscribe();
    loop {
        changed.borrow_and_update();
        let s = e.read(cursor);
        if let Some(g) = s.gap {
            let f = gap_frame(g, e.launch.ring_bytes);
            if tx.send(line(&f)).await.is_err() {
                return;
            }
        }
        for (id, entry) in s.frames {
            let frame = match entry {
                Entry::Started { pid, at } => ExecFrame::Started {
                    pid,
                    started_at: at,
                },
                Entry::Output { stderr, data } => enc.frame(stderr, &data),
                Entry::Exit(end) => ExecFrame::Exit {
                    exit_code: end.exit_code,
                    signal: end.signal,
                    timed_out: end.timed_out,
                    ended_at: end.ended_at,
                },
                Entry::Error { code, message } => ExecFrame::Error {
                    error: message,
                    code,
                },
            };
            if tx.send(line(&LogFrame { id, frame })).await.is_err() {
                return;
            }
        }
        cursor = cursor.max(s.next_id);
        if !follow || s.ended {
            return;
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = tx.closed() => return,
        }
    }
}

fn gap_frame(g: Gap, ring: u64) -> LogFrame {
    LogFrame {
        id: g.from,
        frame: ExecFrame::Gap {
            dropped_frames: g.frames,
            dropped_bytes: g.bytes,
            message: format!(
                "{} frames from id {} on were dropped from the exec's ring (ring_bytes {ring}); \
                 {} bytes dropped so far: read the logs sooner or start the exec with a larger \
                 ring_bytes",
                g.frames, g.from, g.bytes
            ),
        },
    }
}
