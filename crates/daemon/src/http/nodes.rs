//! Node routes in Slicer's shape: host groups, listing, create and delete, pause and
//! resume, port forwards. Handlers parse strictly, then call the tenant context.

use axum::extract::{Extension, Path, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_api::{CreateNodeRequest, DeleteResponse, HostGroupInfo};
use bulkhead_core::DomainError;
use std::time::Duration;

use super::body::{json_body, Scoped, TenantApp, Visible};
use super::query::Query;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::tenant::Wait;

/// The host groups of every tenant the caller may list, in config order.
pub async fn hostgroups(Visible(tenants): Visible) -> Result<Json<Vec<HostGroupInfo>>, ApiError> {
    let mut out = Vec::new();
    for app in &tenants {
        let nodes = app.tenant.list();
        out.extend(app.tenant.cfg.groups.iter().map(|g| HostGroupInfo {
            name: g.name.clone(),
            count: nodes.group(&g.name).len() as u64,
            ram_bytes: g.ram_bytes,
            cpus: g.vcpu,
            arch: std::env::consts::ARCH.into(),
            storage_size_bytes: g.storage_bytes,
            network_mode: g.network.mode.as_str().into(),
        }));
    }
    Ok(Json(out))
}

/// The nodes of every tenant the caller may list (the union), in config order.
pub async fn all_nodes(
    Visible(tenants): Visible,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    match tenants.as_slice() {
        [one] => super::list::list(&one.tenant, None, q).await,
        many => super::list::list_many(many, q).await,
    }
}

pub async fn group_nodes(
    Scoped(app): Scoped,
    Path(group): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    app.tenant.group(&group)?;
    super::list::list(&app.tenant, Some(group), q).await
}

pub async fn create_node(
    Scoped(app): Scoped,
    Extension(who): Extension<Principal>,
    audit: crate::audit::slot::AuditSlot, // #14, A: names the node it made
    Path(group): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let q = Query::parse(q.as_deref(), &["wait", "timeout"])?;
    let wait = match q.one("wait")?.as_deref() {
        None | Some("") => Wait::None,
        Some("agent") => Wait::Agent,
        Some("userdata") => Wait::Userdata,
        Some(w) => {
            return Err(DomainError::invalid(format!(
                "wait={w:?} is not supported: use wait=agent or wait=userdata"
            ))
            .into())
        }
    };
    let timeout = q.duration("timeout")?.unwrap_or(Duration::from_secs(300));
    let req: CreateNodeRequest = json_body(&app, body).await?;
    let req = app.tenant.admission.create(&who.id, &group, req).await?; // policy (#12)
    let created = app.tenant.create(&group, req, wait, timeout).await?;
    audit.object(format!("node/{}", created.node.hostname)); // #14, A
                                                             // #12, the conflict rule: an earlier create with the same hostname and spec made it.
    let status = if created.existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(created.node)).into_response())
}

pub async fn delete_node(
    Scoped(app): Scoped,
    Path((group, node)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Json<DeleteResponse>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    app.tenant.group(&group)?;
    let n = app.tenant.node_in(&group, &node)?;
    app.tenant.delete(&n).await?;
    Ok(Json(DeleteResponse {
        message: format!("node {node} deleted"),
        // A string, as Slicer's SDKs decode it: the node's disk (a microVM's) or writable
        // layer (a jail's) is always removed with it.
        disk_removed: "true".into(),
        error: String::new(),
    }))
}

pub async fn pause_node(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    set_paused(&app, &node, q, true).await
}

pub async fn resume_node(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    set_paused(&app, &node, q, false).await
}

/// Answers text, as Slicer's spec has it: the node's name and its state now.
async fn set_paused(
    app: &TenantApp,
    node: &str,
    q: Option<String>,
    pause: bool,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(node)?;
    let st = app.tenant.set_paused(&n, pause).await?;
    Ok(text(format!("{node} {}\n", st.as_str())))
}

/// A `text/plain` answer (Slicer's lifecycle routes answer text).
pub fn text(body: String) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

pub async fn open_forward(
    Scoped(app): Scoped,
    Extension(who): Extension<Principal>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    let req: bulkhead_api::ForwardRequest = json_body(&app, body).await?;
    let req = app.tenant.admission.forward(&who.id, &node, req).await?; // policy (#12)
    let f = app.tenant.open_forward(&n, &req).await?;
    Ok((StatusCode::CREATED, Json(f)).into_response())
}

pub async fn list_forwards(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<bulkhead_api::Forward>>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    Ok(Json(app.tenant.forwards.list(&n)))
}

pub async fn close_forward(
    Scoped(app): Scoped,
    Path((node, port)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<StatusCode, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    let port: u16 = port
        .parse()
        .map_err(|_| DomainError::invalid(format!("{port:?} is not a port number")))?;
    app.tenant.close_forward(&n, port).await?;
    Ok(StatusCode::NO_CONTENT)
}
