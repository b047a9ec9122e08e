//! The HTTP surface: Slicer-compatible routes. Handlers parse and validate, then call [`App`];
//! they make no decisions of their own.

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Json, Router};
use bulkhead_api::{CreateNodeRequest, DeleteResponse, HostGroupInfo, Info, Node};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::error::ApiError;
use crate::query::Query;
use crate::vm;

pub type AppState = Arc<App>;

/// JSON request bodies larger than this are refused with 413.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Every route: path, methods, handler. The router is built from this table and a test checks
/// it against `docs/api/openapi.yaml`, so the spec cannot drift from the code.
pub fn table() -> Vec<(
    &'static str,
    &'static [&'static str],
    MethodRouter<AppState>,
)> {
    vec![
        ("/healthz", &["get"], get(healthz)),
        ("/info", &["get"], get(info)),
        ("/hostgroup", &["get"], get(hostgroups)),
        (
            "/hostgroup/{group}/nodes",
            &["get", "post"],
            get(group_nodes).post(create_node),
        ),
        (
            "/hostgroup/{group}/nodes/{node}",
            &["delete"],
            delete(delete_node),
        ),
        ("/nodes", &["get"], get(all_nodes)),
        ("/vm/{node}/exec", &["post"], post(vm::exec)),
        (
            "/vm/{node}/cp",
            &["get", "post"],
            get(vm::copy_out).post(vm::copy_in),
        ),
        ("/vm/{node}/logs", &["get"], get(vm::logs)),
        (
            "/vm/{node}/health",
            &["get", "head"],
            get(vm::health).head(vm::health),
        ),
        ("/vm/{node}/pause", &["post"], post(pause_node)),
        ("/vm/{node}/resume", &["post"], post(resume_node)),
        (
            "/vm/{node}/forwards",
            &["get", "post"],
            get(list_forwards).post(open_forward),
        ),
        (
            "/vm/{node}/forwards/{port}",
            &["delete"],
            delete(close_forward),
        ),
        ("/metrics", &["get"], get(metrics)),
    ]
}

pub fn router(app: AppState) -> Router {
    let mut r = Router::new();
    for (path, _, handler) in table() {
        r = r.route(path, handler);
    }
    r.fallback(no_route)
        .method_not_allowed_fallback(bad_method)
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(app)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {method} {}: see docs/api/openapi.yaml",
        uri.path()
    ))
}

async fn bad_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

async fn info(State(app): State<AppState>) -> Json<Info> {
    Json(Info {
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: option_env!("BULKHEAD_GIT_COMMIT")
            .unwrap_or("unknown")
            .into(),
        tenant: app.tenant.clone(),
        hypervisor: app.cfg.hypervisor.clone(),
        cgroup: app.cgroups.describe().into(),
        accel: app.vm.as_ref().map(|v| v.accel.as_str().to_string()),
    })
}

async fn hostgroups(State(app): State<AppState>) -> Result<Json<Vec<HostGroupInfo>>, ApiError> {
    let nodes = app.list()?;
    Ok(Json(
        app.cfg
            .groups
            .iter()
            .map(|g| HostGroupInfo {
                name: g.name.clone(),
                count: nodes.iter().filter(|n| n.hostgroup == g.name).count() as u64,
                ram_bytes: g.ram_bytes,
                cpus: g.vcpu,
                arch: std::env::consts::ARCH.into(),
                storage_size_bytes: g.storage_bytes,
                network_mode: g.network.mode.as_str().into(),
            })
            .collect(),
    ))
}

fn filter_nodes(app: &App, group: Option<&str>, q: Option<String>) -> Result<Vec<Node>, ApiError> {
    let q = Query::parse(q.as_deref(), &["tag", "tag_prefix"])?;
    let tag = q.one("tag")?;
    let prefix = q.one("tag_prefix")?;
    if tag.is_some() && prefix.is_some() {
        return Err(ApiError::bad_request("give tag or tag_prefix, not both"));
    }
    Ok(app
        .list()?
        .iter()
        .filter(|n| group.is_none_or(|g| n.hostgroup == g))
        .filter(|n| tag.as_ref().is_none_or(|t| n.tags.contains(t)))
        .filter(|n| {
            prefix
                .as_ref()
                .is_none_or(|p| n.tags.iter().any(|t| t.starts_with(p.as_str())))
        })
        .map(App::to_api)
        .collect())
}

async fn all_nodes(
    State(app): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<Node>>, ApiError> {
    Ok(Json(filter_nodes(&app, None, q)?))
}

async fn group_nodes(
    State(app): State<AppState>,
    Path(group): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<Node>>, ApiError> {
    app.group(&group)?;
    Ok(Json(filter_nodes(&app, Some(&group), q)?))
}

/// Parses a JSON body strictly: size-limited while it is read (never buffered past
/// [`MAX_JSON_BODY`]), time-limited (`config.api.header_timeout`, so a body sent a byte at a
/// time cannot hold a connection), unknown fields rejected, errors name the field.
pub async fn json_body<T: serde::de::DeserializeOwned>(
    app: &App,
    body: axum::body::Body,
) -> Result<T, ApiError> {
    use http_body_util::BodyExt;
    let limit = app.cfg.conns.header_timeout;
    let read = http_body_util::Limited::new(body, MAX_JSON_BODY).collect();
    let body = match tokio::time::timeout(limit, read).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {limit:?} (config.api.header_timeout)"
                ),
            ))
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is larger than the limit of {MAX_JSON_BODY} bytes"),
            ))
        }
        Ok(Err(e)) => {
            return Err(ApiError::bad_request(format!(
                "cannot read the request body: {e}"
            )))
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")));
    }
    let mut de = serde_json::Deserializer::from_slice(&body);
    let v = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON body: {path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(v)
}

async fn create_node(
    State(app): State<AppState>,
    Path(group): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let q = Query::parse(q.as_deref(), &["wait", "timeout"])?;
    let wait = match q.one("wait")?.as_deref() {
        None | Some("") => false,
        Some("agent") => true,
        Some(w) => {
            return Err(ApiError::bad_request(format!(
                "wait={w:?} is not supported: use wait=agent"
            )))
        }
    };
    let timeout = q.duration("timeout")?.unwrap_or(Duration::from_secs(300));
    let req: CreateNodeRequest = json_body(&app, body).await?;
    let created = app.create(&group, req, wait, timeout).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn delete_node(
    State(app): State<AppState>,
    Path((group, node)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Json<DeleteResponse>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    app.group(&group)?;
    app.delete(&group, &node).await?;
    Ok(Json(DeleteResponse {
        message: format!("node {node} deleted"),
        disk_removed: true,
        error: String::new(),
    }))
}

async fn pause_node(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let st = app.set_paused(&node, true).await?;
    Ok(Json(
        serde_json::json!({"hostname": node, "status": st.as_str()}),
    ))
}

async fn resume_node(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let st = app.set_paused(&node, false).await?;
    Ok(Json(
        serde_json::json!({"hostname": node, "status": st.as_str()}),
    ))
}

async fn open_forward(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    app.node(&node)?;
    let req: bulkhead_api::ForwardRequest = json_body(&app, body).await?;
    let f = app.open_forward(&node, &req).await?;
    Ok((StatusCode::CREATED, Json(f)).into_response())
}

async fn list_forwards(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<bulkhead_api::Forward>>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    app.node(&node)?;
    Ok(Json(app.forwards.list(&node)))
}

async fn close_forward(
    State(app): State<AppState>,
    Path((node, port)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<StatusCode, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    app.node(&node)?;
    let port: u16 = port
        .parse()
        .map_err(|_| ApiError::bad_request(format!("{port:?} is not a port number")))?;
    app.close_forward(&node, port)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn metrics(State(app): State<AppState>) -> Response {
    let c = &app.counters;
    let t = &app.tenant;
    let nodes = app.list().unwrap_or_default().len() as u64;
    let cs = &app.conn_stats;
    let metrics: [(&str, &str, &str, u64); 14] = [
        (
            "bulkhead_nodes",
            "gauge",
            "Nodes of the tenant in any state.",
            nodes,
        ),
        (
            "bulkhead_node_creates_total",
            "counter",
            "Node creates admitted.",
            c.creates.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_node_create_failures_total",
            "counter",
            "Node creates that failed and were rolled back.",
            c.create_failures.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_node_deletes_total",
            "counter",
            "Nodes deleted.",
            c.deletes.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_execs_total",
            "counter",
            "Exec requests started.",
            c.execs.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_not_found_total",
            "counter",
            "Requests for nodes that do not exist for this tenant.",
            c.not_found.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_rejected_busy_total",
            "counter",
            "Lifecycle requests refused because the queue was full.",
            c.rejected_busy.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_standby_hits_total",
            "counter",
            "Node creates served by a standby supervisor (no cgroup move on the create path).",
            c.standby_hits.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_standby_misses_total",
            "counter",
            "Node creates that found the standby pool empty.",
            c.standby_misses.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_api_connections",
            "gauge",
            "Connections the API listener serves now.",
            cs.open.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_api_connections_rejected_total",
            "counter",
            "Connections refused with 503 because config.api.max_connections were open.",
            cs.rejected.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_api_header_timeouts_total",
            "counter",
            "Connections closed with 408: a request head not completed within config.api.header_timeout.",
            cs.header_timeouts.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_api_idle_closed_total",
            "counter",
            "Connections closed because no request began within config.api.header_timeout.",
            cs.idle_closed.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_uptime_seconds",
            "gauge",
            "Seconds since the daemon started.",
            app.started.elapsed().as_secs(),
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, v) in metrics {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{tenant=\"{t}\"}} {v}\n"
        ));
    }
    if let Some(net) = app.net.clone() {
        let counts = tokio::task::spawn_blocking(move || net.counters())
            .await
            .unwrap_or_default();
        let name = "bulkhead_network_denied_packets_total";
        out.push_str(&format!("# HELP {name} Packets dropped by the tenant's network rules, by rule (see docs/networking.md).\n# TYPE {name} counter\n"));
        for (rule, v) in counts {
            out.push_str(&format!("{name}{{tenant=\"{t}\",rule=\"{rule}\"}} {v}\n"));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

#[cfg(test)]
mod tests {
    /// Fails when a route is added, removed or changed without the OpenAPI spec, or back.
    #[test]
    fn routes_match_openapi_spec() {
        let spec: serde_json::Value =
            serde_yaml_like(include_str!("../../../docs/api/openapi.yaml"));
        let mut in_spec: Vec<(String, String)> = Vec::new();
        for (path, ops) in spec["paths"].as_object().expect("paths") {
            for m in ops.as_object().expect("operations").keys() {
                if ["get", "post", "put", "delete", "head", "patch"].contains(&m.as_str()) {
                    in_spec.push((path.clone(), m.clone()));
                }
            }
        }
        let mut in_code: Vec<(String, String)> = super::table()
            .into_iter()
            .flat_map(|(p, ms, _)| ms.iter().map(move |m| (p.to_string(), m.to_string())))
            .collect();
        in_spec.sort();
        in_code.sort();
        assert_eq!(
            in_code, in_spec,
            "routes in code (left) differ from docs/api/openapi.yaml (right)"
        );
    }

    fn serde_yaml_like(text: &str) -> serde_json::Value {
        serde_yaml::from_str(text).expect("openapi.yaml parses")
    }
}
