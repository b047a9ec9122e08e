//! envd's small REST routes and its error body: `GET /health` (204), `GET /envs` (the
//! sandbox's default environment), `GET /metrics` (the node's figures in envd's shape),
//! `POST /init` (accepted; see [`init`]). Errors of every envd REST route are
//! `{"code": <HTTP status>, "message": "…"}` ([`EnvdError`]), which the SDKs map to their
//! exceptions by status (400 invalid argument, 401, 404 not found, 429, 502, 507).

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_core::DomainError;
use serde::Serialize;

use crate::http::body::Scoped;
use crate::http::query::Query;

/// A `DomainError` answered in envd's REST shape.
#[derive(Debug)]
pub struct EnvdError(pub DomainError);

impl From<DomainError> for EnvdError {
    fn from(e: DomainError) -> Self {
        EnvdError(e)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    code: u16,
    message: &'a str,
}

impl IntoResponse for EnvdError {
    fn into_response(self) -> Response {
        let status = crate::error::status(self.0.code);
        let mut r = (
            status,
            Json(Body {
                code: status.as_u16(),
                message: &self.0.message,
            }),
        )
            .into_response();
        // the audit line's reason, as `ApiError` leaves it
        r.extensions_mut().insert(crate::error::Reason {
            code: self.0.code.as_str(),
            message: self.0.message.clone(),
        });
        if let Some(s) = self.0.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        r
    }
}

/// `GET /health`: 204 while the node runs and its agent answers (what envd's own answer
/// means: the SDKs probe it after a failed request to tell a gone sandbox from a slow one).
pub async fn health(
    Scoped(app): Scoped,
    Path(node): Path<String>,
) -> Result<StatusCode, EnvdError> {
    let n = app.tenant.running_node(&node)?;
    app.tenant
        .ping_agent(&n)
        .await
        .map_err(|e| app.tenant.agent_failed(&n, e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /envs`: the environment every process of the sandbox starts with (its create
/// request's `envVars`).
pub async fn envs(
    Scoped(app): Scoped,
    Path(node): Path<String>,
) -> Result<Json<BTreeMap<String, String>>, EnvdError> {
    let _n = app.tenant.node(&node)?;
    Ok(Json(crate::e2b::sandbox_env(&app, &node)))
}

/// envd's `/metrics` answer (its field names).
#[derive(Debug, Serialize)]
struct Metrics {
    ts: i64,
    cpu_count: u32,
    cpu_used_pct: f64,
    mem_total: u64,
    mem_used: u64,
    mem_total_mib: u64,
    mem_used_mib: u64,
    disk_total: u64,
    disk_used: u64,
}

/// `GET /metrics`: the node's figures (those of `GET /vm/{node}/stats`) in envd's shape.
/// CPU use is the last minute's load over the node's CPUs.
pub async fn metrics(
    Scoped(app): Scoped,
    Path(node): Path<String>,
) -> Result<Json<serde_json::Value>, EnvdError> {
    let n = app.tenant.running_node(&node)?;
    let row = n.row();
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let stat = app.tenant.node_stat(&n).await;
    let s = stat.snapshot.unwrap_or_default();
    let cpus = row.cpus.max(1);
    let m = Metrics {
        ts,
        cpu_count: cpus,
        cpu_used_pct: (s.load_avg1 / f64::from(cpus) * 100.0).clamp(0.0, 100.0),
        mem_total: row.ram_bytes,
        mem_used: s.memory_used,
        mem_total_mib: row.ram_bytes >> 20,
        mem_used_mib: s.memory_used >> 20,
        disk_total: s.disk_space_total,
        disk_used: s.disk_space_used,
    };
    Ok(Json(serde_json::to_value(m).unwrap_or_default()))
}

/// `POST /init`: what E2B's orchestrator sends envd when a sandbox starts or resumes (env
/// vars, access token, clock). Here the daemon holds all of that itself (the sandbox record,
/// A; the node's clock is the host's), so the body is read and nothing changes: 204.
pub async fn init(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    _body: axum::body::Body,
) -> Result<StatusCode, EnvdError> {
    Query::parse(q.as_deref(), &[])?;
    let _n = app.tenant.node(&node)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    /// Every route of this part (#15 D) is in `docs/api/e2b-openapi.yaml` with its method.
    #[test]
    fn d_routes_are_in_the_e2b_spec() {
        let spec: serde_json::Value =
            serde_yaml::from_str(include_str!("../../../../../docs/api/e2b-openapi.yaml"))
                .expect("parses");
        let mine = [
            "/files",
            "/health",
            "/envs",
            "/metrics",
            "/init",
            "/filesystem.",
        ];
        let mut n = 0;
        for r in super::super::table() {
            let path = r.path.trim_start_matches("/envd/{node}");
            if !mine.iter().any(|m| path.starts_with(m)) {
                continue;
            }
            for (m, _) in r.methods {
                n += 1;
                assert!(
                    spec["paths"][path].get(*m).is_some(),
                    "{m} {path} is not in docs/api/e2b-openapi.yaml"
                );
            }
        }
        assert_eq!(n, 15);
    }
}
