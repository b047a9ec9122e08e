//! Routes that reach into a node through its agent, besides exec (`exec.rs`) and copies
//! (`cp.rs`): logs, health. Each parses its query, takes a turn at the node's agent and runs the
//! operation through the tenant's typed agent client.

use axum::extract::{Path, RawQuery};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_api::{Health, NodeLogs};

use bulkhead_core::{Code, DomainError};

use super::body::Scoped;
use super::query::Query;
use crate::error::ApiError;

/// The node's console: what its init and agent printed (the last MiB at most), as JSON with
/// Slicer's fields. `lines=N` keeps the last N lines; 0 or none, all of it.
pub async fn logs(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<NodeLogs>, ApiError> {
    let q = Query::parse(q.as_deref(), &["lines"])?;
    let want = match q.one("lines")?.as_deref() {
        None | Some("") => 0,
        Some(v) => v.parse::<u64>().map_err(|_| {
            DomainError::invalid(format!(
                "query parameter \"lines\" must be a whole number of lines (0 for all), not {v:?}"
            ))
        })?,
    };
    let n = app.tenant.node(&node)?;
    let data = tokio::fs::read(app.tenant.console_log(&n))
        .await
        .unwrap_or_default();
    let tail = &data[data.len().saturating_sub(1 << 20)..];
    let content = last_lines(&String::from_utf8_lossy(tail), want);
    Ok(Json(NodeLogs {
        hostname: node,
        lines: content.lines().count() as u64,
        content,
    }))
}

/// The last `n` lines of `text` (all of it for 0), each with its newline.
fn last_lines(text: &str, n: u64) -> String {
    if n == 0 {
        return text.to_string();
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    let start = body
        .rmatch_indices('\n')
        .nth(n as usize - 1)
        .map(|(i, _)| i + 1)
        .unwrap_or(0);
    text[start..].to_string()
}

/// The node's agent's health with Slicer's fields (`HEAD` answers the status alone).
pub async fn health(Scoped(app): Scoped, Path(node): Path<String>) -> Result<Response, ApiError> {
    let n = app.tenant.running_node(&node)?;
    let info = app
        .tenant
        .ping_agent(&n)
        .await
        .map_err(|e| DomainError::new(Code::AgentUnhealthy, e.to_string()))?;
    let row = n.row();
    let ns = |ms: u64| ms.saturating_mul(1_000_000);
    Ok(Json(Health {
        hostname: node,
        agent: "ok".into(),
        uptime_ms: info.uptime_ms,
        agent_uptime: ns(info.uptime_ms),
        agent_version: info.agent_version.unwrap_or_default(),
        system_uptime: ns(info.system_uptime_ms.unwrap_or(info.uptime_ms)),
        userdata_ran: row.userdata.is_none() || row.userdata_exit.is_some(),
        userdata_exit_code: row.userdata_exit,
        ip: (!row.ip.is_empty()).then(|| row.ip.clone()),
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::last_lines;

    #[test]
    fn last_lines_keeps_the_tail() {
        assert_eq!(last_lines("a\nb\nc\n", 0), "a\nb\nc\n");
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(last_lines("a\nb\nc", 1), "c");
        assert_eq!(last_lines("a\nb\n", 9), "a\nb\n");
        assert_eq!(last_lines("", 3), "");
    }
}
