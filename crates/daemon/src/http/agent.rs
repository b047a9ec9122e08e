//! Routes that reach into a node through its agent, besides exec (`exec.rs`) and copies
//! (`cp.rs`): logs, health. Each parses its query, takes a turn at the node's agent and runs the
//! operation through the tenant's typed agent client.

use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_api::Health;

use bulkhead_core::{Code, DomainError};

use super::body::AppState;
use super::query::Query;
use crate::error::ApiError;

/// The node's console: what its init and agent printed. The last MiB at most.
pub async fn logs(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    let data = tokio::fs::read(app.tenant.console_log(&n))
        .await
        .unwrap_or_default();
    let tail = data[data.len().saturating_sub(1 << 20)..].to_vec();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], tail).into_response())
}

pub async fn health(
    State(app): State<AppState>,
    Path(node): Path<String>,
) -> Result<Response, ApiError> {
    let n = app.tenant.running_node(&node)?;
    let uptime = app
        .tenant
        .ping_agent(&n)
        .await
        .map_err(|e| DomainError::new(Code::AgentUnhealthy, e.to_string()))?
        .uptime_ms;
    Ok(Json(Health {
        hostname: node,
        agent: "ok".into(),
        uptime_ms: uptime,
    })
    .into_response())
}
