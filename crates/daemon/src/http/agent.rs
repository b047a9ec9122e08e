//! Routes that reach into a node through its agent, besides exec (`exec.rs`): copy in and
//! out, logs, health. Each parses its query, takes a turn at the node's agent and runs the
//! operation through the tenant's typed agent client.

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_agent::client::CopyInRequest;
use bulkhead_api::{names, CopyInResult, Health, NodeLogs};
use futures_util::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use bulkhead_core::{Code, DomainError};

use super::body::AppState;
use super::query::Query;
use crate::error::ApiError;
use crate::tenant::{NodeRef, Tenant};

fn cp_query(q: Option<String>, allowed: &[&str]) -> Result<(Query, String, bool), DomainError> {
    let q = Query::parse(q.as_deref(), allowed)?;
    let path = q.one("path")?.ok_or_else(|| {
        DomainError::invalid("query parameter path is required, e.g. ?path=/work/file.txt")
    })?;
    names::validate_node_path(&path).map_err(DomainError::invalid)?;
    let tar = match q.one("mode")?.as_deref() {
        None | Some("binary") => false,
        Some("tar") => true,
        Some(m) => {
            return Err(DomainError::invalid(format!(
                "mode {m:?} is not supported: use binary (one file) or tar (a tree)"
            )))
        }
    };
    Ok((q, path, tar))
}

pub async fn copy_out(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Ok(copy_out_node(State(app), Path(node), RawQuery(q)).await?)
}

async fn copy_out_node(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, DomainError> {
    let (_, path, tar) = cp_query(q, &["path", "mode"])?;
    let n = app.tenant.running_node(&node)?;
    let turn = app.tenant.agent_turn(&n).await?;
    let mut download = app.tenant.copy_out(&n, &path, tar).await?;
    let mode = download.mode;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let _turn = turn;
        loop {
            match download.next_chunk().await {
                Ok(None) => return,
                Ok(Some(d)) => {
                    if tx.send(Ok(Bytes::from(d))).await.is_err() {
                        return;
                    }
                }
                // Anything else mid-stream is a failure: end the body with an error so the
                // client sees a broken transfer rather than a short file.
                Err(_) => {
                    let _ = tx
                        .send(Err(std::io::Error::other("copy failed inside the node")))
                        .await;
                    return;
                }
            }
        }
    });
    let mut resp = Body::from_stream(ReceiverStream::new(rx)).into_response();
    let ct = if tar {
        "application/x-tar"
    } else {
        "application/octet-stream"
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    if let Ok(v) = HeaderValue::from_str(&format!("{mode:04o}")) {
        resp.headers_mut().insert("x-slicer-file-mode", v);
    }
    Ok(resp)
}

pub async fn copy_in(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Json<CopyInResult>, ApiError> {
    Ok(copy_in_node(State(app), Path(node), RawQuery(q), body).await?)
}

async fn copy_in_node(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Json<CopyInResult>, DomainError> {
    let (q, path, tar) = cp_query(q, &["path", "mode", "uid", "gid", "permissions"])?;
    let mode = q
        .one("permissions")?
        .map(|p| {
            u32::from_str_radix(&p, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    DomainError::invalid(format!("permissions {p:?} must be octal, e.g. 0644"))
                })
        })
        .transpose()?;
    let (uid, gid) = (q.u32("uid")?, q.u32("gid")?);
    let n = app.tenant.running_node(&node)?;
    let _turn = app.tenant.agent_turn(&n).await?;
    let req = CopyInRequest {
        path: path.clone(),
        tar,
        uid,
        gid,
        mode,
    };
    let mut upload = app.tenant.copy_in(&n, req).await?;
    let mut data = body.into_data_stream();
    while let Some(chunk) = data.next().await {
        match chunk {
            Ok(c) => {
                if upload.write(&c).await.is_err() {
                    break; // the agent stopped reading: its answer below says why
                }
            }
            Err(e) => {
                // Closed without the final empty frame: the agent discards the partial upload.
                drop(upload);
                return Err(DomainError::invalid(format!(
                    "upload was cut off: {e}; nothing was written"
                )));
            }
        }
    }
    match upload.finish().await {
        Ok(bytes) => Ok(Json(CopyInResult { path, bytes })),
        Err(e) => {
            let mut e = app.tenant.agent_failed(&n, e);
            if e.code == Code::NoSpace {
                e.message = format!("{}; {}", e.message, storage_limit(&app.tenant, &n));
            }
            Err(e)
        }
    }
}

/// Names what bounds a node's writes, for a 507.
fn storage_limit(tenant: &Tenant, n: &NodeRef) -> String {
    let row = n.row();
    let Ok(g) = tenant.group(&row.hostgroup) else {
        return "the node is full".into();
    };
    tenant.driver.storage_limit(g, row.ram_bytes)
}

/// The node's console: what its init and agent printed (the last MiB at most), as JSON with
/// Slicer's fields. `lines=N` keeps the last N lines; 0 or none, all of it.
pub async fn logs(
    State(app): State<AppState>,
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
pub async fn health(
    State(app): State<AppState>,
    Path(node): Path<String>,
) -> Result<Response, ApiError> {
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
