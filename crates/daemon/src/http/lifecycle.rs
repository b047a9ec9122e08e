//! Lifecycle routes beyond create and delete, in Slicer's shapes (its Go and TypeScript SDKs
//! are the contract): `GET /vm/{node}` (describe), `GET|PATCH /vm/{node}/tags`, and the power
//! operations `shutdown`, `relaunch`, `suspend`, `restore` (ADR 0018). Power operations
//! answer text, as Slicer's spec has it, except relaunch, which answers the node as a create
//! does. Handlers parse strictly, then call the tenant.

use axum::extract::{Path, RawQuery};
use axum::response::Response;
use axum::Json;
use bulkhead_api::{CreatedNode, NodeDescription, NodeTags, TagUpdate};
use bulkhead_core::DomainError;
use serde::Deserialize;
use std::time::Duration;

use super::body::{json_body, Scoped};
use super::nodes::text;
use super::query::Query;
use crate::error::ApiError;
use crate::tenant::Wait;

/// What a wait that asks for one waits at most, as a create (Slicer's default).
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

pub async fn describe(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<NodeDescription>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    Ok(Json(app.tenant.describe(&n)?))
}

pub async fn get_tags(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<NodeTags>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    Ok(Json(NodeTags {
        hostname: node,
        tags: n.row().tags.clone(),
    }))
}

/// `{"add": [...], "remove": [...]}` or `{"replace": [...]}` (Slicer's `SlicerVMTagUpdate`).
pub async fn patch_tags(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Json<NodeTags>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    let update: TagUpdate = json_body(&app, body).await?;
    Ok(Json(app.tenant.update_tags(&n, update).await?))
}

/// Body of a shutdown (Slicer's TypeScript SDK sends one; its Go SDK uses the query).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShutdownBody {
    #[serde(default)]
    action: Option<String>,
}

/// `action=shutdown|reboot` (query or body; Slicer's default is reboot). Both stop the node,
/// as on Slicer's Firecracker hosts, where a guest reboot ends the VM: relaunch starts it.
pub async fn shutdown(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let q = Query::parse(q.as_deref(), &["action"])?;
    let b: ShutdownBody = json_body(&app, body).await?;
    let from_query = q.one("action")?.filter(|a| !a.is_empty());
    let from_body = b.action.filter(|a| !a.is_empty());
    let action = match (from_query, from_body) {
        (Some(a), Some(b)) if a != b => {
            return Err(DomainError::invalid(format!(
                "action is {a:?} in the query and {b:?} in the body: give it once"
            ))
            .into())
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => "reboot".into(),
    };
    if action != "shutdown" && action != "reboot" {
        return Err(DomainError::invalid(format!(
            "action {action:?} is not supported: use shutdown or reboot (both stop the node; relaunch starts it again)"
        ))
        .into());
    }
    let n = app.tenant.node(&node)?;
    app.tenant.shutdown(&n).await?;
    Ok(text(format!("{node} Stopped\n")))
}

/// `wait` and `timeout` of relaunch and restore, as a create reads them.
fn wait_query(q: &Query, userdata: bool) -> Result<(Wait, Duration), DomainError> {
    let wait = match q.one("wait")?.as_deref() {
        None | Some("") | Some("none") => Wait::None,
        Some("agent") => Wait::Agent,
        Some("userdata") if userdata => Wait::Userdata,
        Some(w) => {
            return Err(DomainError::invalid(format!(
                "wait={w:?} is not supported: use wait=agent{}",
                if userdata { " or wait=userdata" } else { "" }
            )))
        }
    };
    Ok((wait, q.duration("timeout")?.unwrap_or(DEFAULT_WAIT)))
}

/// Starts a Stopped (or Suspended) node again; answers the node as a create does.
pub async fn relaunch(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<CreatedNode>, ApiError> {
    let q = Query::parse(q.as_deref(), &["wait", "timeout"])?;
    let (wait, timeout) = wait_query(&q, true)?;
    let n = app.tenant.node(&node)?;
    Ok(Json(app.tenant.relaunch(&n, wait, timeout).await?))
}

/// Writes a microVM node's memory to disk and stops it; a jail node answers 400
/// `unsupported` saying why.
pub async fn suspend(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    app.tenant.suspend(&n).await?;
    Ok(text(format!("{node} Suspended\n")))
}

/// Brings a Suspended node back (`wait=agent` and `timeout` as Slicer's
/// `RestoreVMWithOptions` sends them).
pub async fn restore(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(q.as_deref(), &["wait", "timeout"])?;
    let (wait, timeout) = wait_query(&q, false)?;
    let n = app.tenant.node(&node)?;
    app.tenant.restore(&n, wait, timeout).await?;
    Ok(text(format!("{node} Running\n")))
}
