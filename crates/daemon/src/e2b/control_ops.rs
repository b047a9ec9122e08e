//! E2B's per-sandbox control routes (#15, A): info, kill, timeout, refresh, pause, resume and
//! connect, logs and metrics. The authorization layer has resolved `{node}`'s tenant
//! ([`Scoped`]); each handler does one node operation through the tenant.
//!
//! Timeouts (E2B's semantics): `/timeout` sets the end to now + timeout (it may shorten);
//! `/refreshes` only ever extends it; a pause clears the node's expiry (a paused sandbox
//! waits for a resume, as E2B's do); resume and connect set it anew from their `timeout`.

use axum::extract::{Extension, Path, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_api::e2b::{
    ConnectRequest, RefreshRequest, SandboxLog, SandboxLogEntry, SandboxLogs, SandboxLogsV2,
    SandboxMetric, TimeoutRequest,
};
use bulkhead_core::{Code, DomainError, NodeState};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::sandbox::{self, now_ms, seconds, Domain};
use crate::app::App;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::http::body::{json_body, Scoped};
use crate::http::query::Query;
use crate::tenant::NodeRef;

/// E2B's "not found" for a sandbox: 404 `sandbox … not found`.
fn node(app: &App, id: &str) -> Result<NodeRef, DomainError> {
    let n = app.tenant.node(id)?;
    if n.row().status == NodeState::Deleting {
        return Err(DomainError::not_found(format!("sandbox {id:?} not found")));
    }
    Ok(n)
}

/// Sets the sandbox's timeout to `ttl` from now (a paused one only remembers it).
async fn set_ttl(app: &App, n: &NodeRef, ttl: Duration) -> Result<(), DomainError> {
    let end = now_ms() + ttl.as_millis() as u64;
    if sandbox::state(n.row().status) == "running" {
        let on = sandbox::on_timeout(app, n);
        app.tenant.set_expiry(n, Some(ttl), on).await?;
    }
    app.tenant.set_sandbox_end(n, end).await
}

/// Sets the sandbox's timeout to `ttl` from now unless it already ends later (refreshes and
/// connect never shorten a timeout).
async fn extend_ttl(app: &App, n: &NodeRef, ttl: Duration) -> Result<(), DomainError> {
    let later = app
        .tenant
        .expiry(n)
        .is_some_and(|(at, _)| at >= SystemTime::now() + ttl);
    if later {
        return Ok(());
    }
    set_ttl(app, n, ttl).await
}

pub async fn show(
    Scoped(app): Scoped,
    Extension(who): Extension<Principal>,
    Extension(Domain(domain)): Extension<Domain>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = node(&app, &id)?;
    Ok(Json(sandbox::detail(&app, &n, &who, &domain)).into_response())
}

pub async fn kill(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<StatusCode, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = node(&app, &id)?;
    app.tenant.delete(&n).await?;
    app.tenant.prune_sandbox_records().await;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn set_timeout(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let b: TimeoutRequest = json_body(&app, body).await?;
    let ttl = seconds("timeout", b.timeout)?;
    let n = node(&app, &id)?;
    set_ttl(&app, &n, ttl).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn refresh(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let b: RefreshRequest = json_body(&app, body).await?;
    let ttl = seconds("duration", b.duration.unwrap_or(15))?;
    let n = node(&app, &id)?;
    extend_ttl(&app, &n, ttl).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn pause(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<StatusCode, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    // `{memory, requireHealthyGuest}`: accepted; a paused node keeps its memory.
    let _: serde_json::Value = json_body(&app, body).await?;
    let n = node(&app, &id)?;
    if n.row().status == NodeState::Paused {
        return Err(
            DomainError::new(Code::Conflict, format!("sandbox {id:?} is already paused")).into(),
        );
    }
    app.tenant.set_paused(&n, true).await?;
    let n = node(&app, &id)?;
    app.tenant
        .set_expiry(&n, None, sandbox::on_timeout(&app, &n))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Resumes a paused sandbox (`resume`: 409 when it runs) or connects to one in any state
/// (`connect`: 200 when it ran, 201 when it was resumed); both set its timeout anew.
async fn wake(
    app: &App,
    who: &Principal,
    domain: &str,
    id: &str,
    b: ConnectRequest,
    default_timeout: i64,
    must_be_paused: bool,
) -> Result<Response, DomainError> {
    let ttl = seconds("timeout", b.timeout.unwrap_or(default_timeout))?;
    let n = node(app, id)?;
    let paused = n.row().status == NodeState::Paused;
    if must_be_paused && !paused {
        return Err(DomainError::new(
            Code::Conflict,
            format!("sandbox {id:?} is already running"),
        ));
    }
    if paused {
        app.tenant.set_paused(&n, false).await?;
    }
    let n = node(app, id)?;
    // A resumed sandbox gets the timeout; a running one's only grows (the SDKs' contract for
    // connect).
    if paused {
        set_ttl(app, &n, ttl).await?;
    } else {
        extend_ttl(app, &n, ttl).await?;
    }
    let n = node(app, id)?;
    let status = if paused {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(sandbox::created(app, &n, who, domain))).into_response())
}

pub async fn resume(
    Scoped(app): Scoped,
    Extension(who): Extension<Principal>,
    Extension(Domain(domain)): Extension<Domain>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let b: ConnectRequest = json_body(&app, body).await?;
    Ok(wake(&app, &who, &domain, &id, b, 15, true).await?)
}

pub async fn connect(
    Scoped(app): Scoped,
    Extension(who): Extension<Principal>,
    Extension(Domain(domain)): Extension<Domain>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let b: ConnectRequest = json_body(&app, body).await?;
    Ok(wake(&app, &who, &domain, &id, b, 300, false).await?)
}

/// The node's console log, line by line (no times of their own: each gets the log's last
/// change), from `start` (ms since the epoch: lines of a log older than it are left out), at
/// most `limit` (the last ones).
async fn log_lines(app: &App, id: &str, q: &Query) -> Result<Vec<(String, String)>, DomainError> {
    let num = |k: &str| -> Result<Option<u64>, DomainError> {
        q.one(k)?
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| DomainError::invalid(format!("{k}: {v:?} is not a whole number")))
            })
            .transpose()
    };
    let (start, limit) = (num("start")?, num("limit")?);
    let n = node(app, id)?;
    let path = app.tenant.console_log(&n);
    let data = tokio::fs::read(&path).await.unwrap_or_default();
    let modified_ms = tokio::fs::metadata(&path)
        .await
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64);
    if start.is_some_and(|s| s > modified_ms) {
        return Ok(Vec::new());
    }
    let ts = crate::fsutil::rfc3339(modified_ms / 1000);
    let tail = &data[data.len().saturating_sub(1 << 20)..];
    let text = String::from_utf8_lossy(tail);
    let mut lines: Vec<(String, String)> =
        text.lines().map(|l| (ts.clone(), l.to_string())).collect();
    if let Some(l) = limit {
        let skip = lines.len().saturating_sub(l as usize);
        lines.drain(..skip);
    }
    Ok(lines)
}

fn entry((timestamp, message): (String, String)) -> SandboxLogEntry {
    SandboxLogEntry {
        timestamp,
        message,
        level: "info".into(),
        fields: [("source".to_string(), "console".to_string())].into(),
    }
}

pub async fn logs(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<SandboxLogs>, ApiError> {
    let q = Query::parse(q.as_deref(), &["start", "limit"])?;
    let lines = log_lines(&app, &id, &q).await?;
    Ok(Json(SandboxLogs {
        logs: lines
            .iter()
            .map(|(t, l)| SandboxLog {
                timestamp: t.clone(),
                line: l.clone(),
            })
            .collect(),
        log_entries: lines.into_iter().map(entry).collect(),
    }))
}

pub async fn logs_v2(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<SandboxLogsV2>, ApiError> {
    let q = Query::parse(
        q.as_deref(),
        &["start", "limit", "direction", "level", "search", "source"],
    )?;
    let lines = log_lines(&app, &id, &q).await?;
    Ok(Json(SandboxLogsV2 {
        logs: lines.into_iter().map(entry).collect(),
    }))
}

/// One point: the node's figures now (bulkhead keeps no history of them; `/usage` has
/// the accounting). A paused node has its last figures; one without figures, none.
pub async fn metrics(
    Scoped(app): Scoped,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<SandboxMetric>>, ApiError> {
    Query::parse(q.as_deref(), &["start", "end"])?;
    let n = node(&app, &id)?;
    let stat = app.tenant.node_stat(&n).await;
    let Some(s) = stat.snapshot else {
        return Ok(Json(Vec::new()));
    };
    let now = now_ms() / 1000;
    let cpus = s.total_cpus.max(1);
    Ok(Json(vec![SandboxMetric {
        timestamp: crate::fsutil::rfc3339(now),
        timestamp_unix: now,
        cpu_count: s.total_cpus,
        cpu_used_pct: (s.load_avg1 / cpus as f64 * 100.0).clamp(0.0, 100.0),
        mem_used: s.memory_used,
        mem_total: s.total_memory,
        mem_cache: 0,
        disk_used: s.disk_space_used,
        disk_total: s.disk_space_total,
    }]))
}
