//! The E2B listener's router (#15, A; ADR 0036): the control plane (`control`) and every
//! sandbox's in-sandbox API (`envd::table()`, under `/envd/{node}/`) behind the daemon's own
//! pipeline (`crate::auth::layer`: authenticate, authorize, admit; the audit layer outermost).
//!
//! Around it, one layer of its own ([`e2b_edge`]), before routing:
//! - an in-sandbox request (header `E2b-Sandbox-Id`, or host `<port>-<sandboxID>.<domain>`)
//!   is rewritten to `/envd/<sandboxID><path>`, its sandbox id put in `E2b-Sandbox-Id` for
//!   the access-token authenticator (`access.rs`); only the in-sandbox API's port (49983) is
//!   served;
//! - error answers of the pipeline and handlers (`{"error", "code"}`) become E2B's: `{"code":
//!   <status>, "message"}`, or Connect's `{"code": "<connect code>", "message"}` on
//!   in-sandbox Connect-RPC routes; the status and `Retry-After` stay.
//!
//! Invariant: a sandbox's principal (`Via::Sandbox`) reaches only `/envd/{node}/…` routes of
//! its own node; anything else answers like a missing node (404), [`confine`].

use axum::body::Body;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bulkhead_core::DomainError;
use std::sync::Arc;

use super::access::SANDBOX_ID;
use crate::app::Daemon;
use crate::auth::authn::Chain;
use crate::auth::layer::{Actions, Pipeline};
use crate::auth::{Principal, Via};
use crate::error::{ApiError, Reason};
use crate::http::Route;

/// The port of E2B's in-sandbox API ("envd"), which the SDKs name.
pub const ENVD_PORT: u16 = 49983;
/// Where in-sandbox requests are routed: `/envd/{node}/<original path>`.
pub const ENVD_PREFIX: &str = "/envd/";

/// Every route of the E2B listener.
pub fn table() -> Vec<Route> {
    let mut t = super::control::table();
    t.extend(super::envd::table());
    t
}

pub fn actions() -> Actions {
    table()
        .iter()
        .map(|r| (r.path, r.methods.to_vec()))
        .collect()
}

/// What the edge layer needs: the domain host names are matched against.
#[derive(Clone)]
pub struct Edge {
    pub domain: Arc<str>,
}

/// The E2B listener's router behind `chain` (`listen.rs` builds it: API keys, access tokens).
pub fn router(daemon: Arc<Daemon>, chain: Chain, domain: &str) -> Router {
    let pipeline = Arc::new(Pipeline {
        chain,
        tenants: daemon.clone(),
        actions: actions(),
    });
    let audit = Arc::new(crate::http::audit_layer::AuditState {
        daemon: daemon.clone(),
        actions: actions(),
    });
    let mut routes = Router::new();
    for r in table() {
        routes = routes.route(r.path, r.handler);
    }
    // Route layers run last-added first: confine, then the pipeline's authorize and admit.
    let inner = crate::http::with_pipeline(routes, pipeline)
        .route_layer(axum::middleware::from_fn(confine))
        .layer(axum::middleware::from_fn_with_state(
            audit,
            crate::http::audit_layer::audit,
        ))
        .with_state(daemon);
    // The edge runs before the inner router routes, so its rewrite decides the route.
    Router::new()
        .fallback_service(inner)
        .layer(axum::middleware::from_fn_with_state(
            Edge {
                domain: Arc::from(domain),
            },
            e2b_edge,
        ))
}

/// A sandbox's principal only on its own node's in-sandbox routes.
async fn confine(params: RawPathParams, req: Request, next: Next) -> Response {
    if let Some(Principal {
        via: Via::Sandbox { node, .. },
        ..
    }) = req.extensions().get::<Principal>()
    {
        let named = params.iter().find(|(k, _)| *k == "node").map(|(_, v)| v);
        let path_ok = req.uri().path().starts_with(ENVD_PREFIX);
        if named != Some(node.as_str()) || !path_ok {
            let shown = named.unwrap_or(node.as_str()).to_string();
            return ApiError(DomainError::no_node(&shown)).into_response();
        }
    }
    next.run(req).await
}

/// The sandbox and port a host name `<port>-<sandboxID>.<domain>` names.
pub fn sandbox_of_host<'a>(host: &'a str, domain: &str) -> Option<(u16, &'a str)> {
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let first = host
        .strip_suffix(domain)?
        .strip_suffix('.')
        .filter(|l| !l.contains('.'))?;
    let (port, id) = first.split_once('-')?;
    Some((port.parse().ok()?, id))
}

/// Whether an in-sandbox path is a Connect-RPC call (`/<package>.<Service>/<Method>`).
fn is_connect(path: &str) -> bool {
    path.trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(svc, m)| svc.contains('.') && !m.is_empty() && !m.contains('/'))
}

fn e2b_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "code": status.as_u16(), "message": message });
    (status, axum::Json(body)).into_response()
}

/// Connect's code for an HTTP status (the Connect protocol's table, read backwards).
pub fn connect_code(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_argument",
        401 => "unauthenticated",
        403 => "permission_denied",
        404 => "not_found",
        408 | 504 => "deadline_exceeded",
        409 => "failed_precondition",
        413 | 429 => "resource_exhausted",
        499 => "canceled",
        501 => "unimplemented",
        502 | 503 => "unavailable",
        500 => "internal",
        _ => "unknown",
    }
}

/// Rewrites in-sandbox requests (module header), then E2B's error bodies.
pub async fn e2b_edge(State(edge): State<Edge>, mut req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    let by_host = host
        .as_deref()
        .and_then(|h| sandbox_of_host(h, &edge.domain))
        .map(|(p, id)| (Some(p), id.to_string()));
    let by_header = req
        .headers()
        .get(SANDBOX_ID)
        .and_then(|v| v.to_str().ok())
        .map(|id| {
            let port = req
                .headers()
                .get("e2b-sandbox-port")
                .and_then(|v| v.to_str().ok())
                .and_then(|p| p.trim().parse::<u16>().ok());
            (port, id.trim().to_string())
        });
    req.extensions_mut()
        .insert(super::sandbox::Domain(edge.domain.clone()));
    let original = req.uri().path().to_string();
    let sandbox = by_header.or(by_host);
    if let Some((port, id)) = &sandbox {
        if bulkhead_api::names::validate_label("sandbox", id).is_err() {
            return e2b_error(
                StatusCode::BAD_REQUEST,
                &format!("{id:?} is not a sandbox id: ids are DNS labels (a-z, 0-9, -)"),
            );
        }
        if let Some(p) = port.filter(|p| *p != ENVD_PORT) {
            return e2b_error(
                StatusCode::NOT_FOUND,
                &format!("port {p} of sandbox {id} is not served here: only the in-sandbox API ({ENVD_PORT}); open a port forward with bulkhead's API for others"),
            );
        }
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let sep = if pq.starts_with('/') { "" } else { "/" };
        let Ok(uri) = format!("{ENVD_PREFIX}{id}{sep}{pq}").parse::<Uri>() else {
            return e2b_error(
                StatusCode::BAD_REQUEST,
                "the request path is not a valid URI",
            );
        };
        *req.uri_mut() = uri;
        if let Ok(v) = HeaderValue::from_str(id) {
            req.headers_mut().insert(SANDBOX_ID, v);
        }
    } else {
        // Only the edge names a sandbox: a header a caller sent is never taken for one.
        req.headers_mut().remove(SANDBOX_ID);
    }
    let connect = sandbox.is_some() && is_connect(&original);
    let resp = next.run(req).await;
    reshape_error(resp, connect).await
}

/// `{"error", "code"}` (bulkhead's) → E2B's or Connect's error body; anything else unchanged.
async fn reshape_error(resp: Response, connect: bool) -> Response {
    if resp.extensions().get::<Reason>().is_none() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 256 * 1024).await else {
        return (parts.status, "error body unreadable").into_response();
    };
    let Ok(b) = serde_json::from_slice::<bulkhead_api::ErrorBody>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let status = parts.status;
    let new = if connect {
        serde_json::json!({ "code": connect_code(status), "message": b.error })
    } else {
        serde_json::json!({ "code": status.as_u16(), "message": b.error })
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut r = Response::from_parts(parts, Body::from(new.to_string()));
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_name_port_and_sandbox() {
        assert_eq!(
            sandbox_of_host("49983-e2b-abc.localhost", "localhost"),
            Some((49983, "e2b-abc"))
        );
        assert_eq!(
            sandbox_of_host("49983-e2b-abc.sb.example.com:443", "sb.example.com"),
            Some((49983, "e2b-abc"))
        );
        assert_eq!(sandbox_of_host("localhost:3000", "localhost"), None);
        assert_eq!(sandbox_of_host("api.localhost", "localhost"), None);
        assert_eq!(sandbox_of_host("x.49983-a.localhost", "localhost"), None);
        assert_eq!(sandbox_of_host("49983-a.evil-localhost", "localhost"), None);
        assert_eq!(sandbox_of_host("port-a.localhost", "localhost"), None);
    }

    fn body(r: Response) -> (StatusCode, Option<String>, serde_json::Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let status = r.status();
        let retry = r
            .headers()
            .get(axum::http::header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let b = rt
            .block_on(axum::body::to_bytes(r.into_body(), 1 << 20))
            .unwrap();
        (status, retry, serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn errors_become_e2b_and_connect_bodies_keeping_status_and_retry_after() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let limited = || {
            ApiError(DomainError::new(bulkhead_core::Code::RateLimited, "slow down").retry_after(3))
                .into_response()
        };
        let (st, retry, v) = body(rt.block_on(reshape_error(limited(), false)));
        assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry.as_deref(), Some("3"));
        assert_eq!(v, serde_json::json!({"code": 429, "message": "slow down"}));
        let (st, retry, v) = body(rt.block_on(reshape_error(limited(), true)));
        assert_eq!(
            (st, retry.as_deref()),
            (StatusCode::TOO_MANY_REQUESTS, Some("3"))
        );
        assert_eq!(
            v,
            serde_json::json!({"code": "resource_exhausted", "message": "slow down"})
        );
        let missing = ApiError(DomainError::no_node("x")).into_response();
        let (st, _, v) = body(rt.block_on(reshape_error(missing, false)));
        assert_eq!(
            (st, &v["code"]),
            (StatusCode::NOT_FOUND, &serde_json::json!(404))
        );
        // A handler's own answer (no bulkhead error) passes unchanged.
        let own = (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"code": "x"})),
        )
            .into_response();
        let (_, _, v) = body(rt.block_on(reshape_error(own, true)));
        assert_eq!(v, serde_json::json!({"code": "x"}));
    }

    #[test]
    fn connect_paths() {
        assert!(is_connect("/process.Process/Start"));
        assert!(is_connect("/filesystem.Filesystem/Stat"));
        assert!(!is_connect("/files"));
        assert!(!is_connect("/health"));
        assert!(!is_connect("/a/b/c"));
    }
}
