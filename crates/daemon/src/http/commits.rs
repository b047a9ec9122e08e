//! Commit and fork routes (#13, ADR 0030): `POST /vm/{node}/commit` (the node's tenant),
//! `GET /vm/commits`, `GET|DELETE /vm/commits/{id}`, `POST /vm/commits/{id}/fork`. The last
//! ones name no node or group: the authorization layer gives the tenants the caller may do
//! the action in ([`Visible`]); a commit id is looked up in those only (or in the one
//! `?tenant=` names), so another tenant's commit is the same 404 as an unknown one.

use axum::extract::{Extension, Path, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_api::commits::CommitInfo;
use bulkhead_api::CreateNodeRequest;
use bulkhead_core::DomainError;
use std::sync::Arc;
use std::time::Duration;

use super::body::{json_body, Scoped, Visible};
use super::query::Query;
use crate::app::App;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::tenant::Wait;

/// The tenants a request over commits acts in: all visible ones, or the one `?tenant=`
/// names (a tenant the caller may not act in is unknown: 404).
fn tenants_of(visible: Vec<Arc<App>>, q: &Query) -> Result<Vec<Arc<App>>, DomainError> {
    match q.one("tenant")? {
        None => Ok(visible),
        Some(t) => {
            let v: Vec<_> = visible.into_iter().filter(|a| a.tenant.name == t).collect();
            if v.is_empty() {
                return Err(DomainError::not_found(format!(
                    "tenant {t:?} not found among the tenants you may act in"
                )));
            }
            Ok(v)
        }
    }
}

/// The tenant that has commit `id`, among `tenants`; else 404 naming the id.
async fn holder(tenants: &[Arc<App>], id: &str) -> Result<Arc<App>, DomainError> {
    for a in tenants {
        if a.tenant.has_commit(id).await {
            return Ok(a.clone());
        }
    }
    // Each tenant answers an unknown id with the same 404; ask the first for its words.
    match tenants.first() {
        Some(a) => a.tenant.find_commit(id).await.map(|_| a.clone()),
        None => Err(DomainError::not_found("no tenant to look in")),
    }
}

pub async fn commit_node(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<(StatusCode, Json<CommitInfo>), ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    let c = app.tenant.commit_node(&n).await?;
    Ok((StatusCode::CREATED, Json(c)))
}

pub async fn list(
    Visible(visible): Visible,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<CommitInfo>>, ApiError> {
    let q = Query::parse(q.as_deref(), &["tenant"])?;
    let mut out = Vec::new();
    for a in tenants_of(visible, &q)? {
        out.extend(a.tenant.list_commits().await?);
    }
    Ok(Json(out))
}

pub async fn get(
    Visible(visible): Visible,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<CommitInfo>, ApiError> {
    let q = Query::parse(q.as_deref(), &["tenant"])?;
    let a = holder(&tenants_of(visible, &q)?, &id).await?;
    Ok(Json(a.tenant.commit_info_of(&id).await?))
}

pub async fn delete(
    Visible(visible): Visible,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<StatusCode, ApiError> {
    let q = Query::parse(q.as_deref(), &["tenant"])?;
    let a = holder(&tenants_of(visible, &q)?, &id).await?;
    a.tenant.delete_commit(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /vm/commits/{id}/fork`: a create's body (and `wait`/`timeout`) plus an optional
/// `hostgroup` (default: the commit's node's group), answered exactly like a create.
pub async fn fork(
    Visible(visible): Visible,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let q = Query::parse(q.as_deref(), &["tenant", "wait", "timeout"])?;
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
    let a = holder(&tenants_of(visible, &q)?, &id).await?;
    let c = a.tenant.find_commit(&id).await?;
    let mut body: serde_json::Map<String, serde_json::Value> = json_body(&a, body).await?;
    let group = match body.remove("hostgroup") {
        None | Some(serde_json::Value::Null) => c.hostgroup.clone(),
        Some(serde_json::Value::String(g)) => g,
        Some(_) => {
            return Err(
                DomainError::invalid("invalid JSON body: hostgroup: a string is expected").into(),
            )
        }
    };
    let commit = c.id.to_string();
    match body.get("image") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(s)) if s.eq_ignore_ascii_case(&commit) => {}
        Some(_) => {
            return Err(DomainError::invalid(format!(
                "image: a fork starts from commit {commit}; omit image"
            ))
            .into())
        }
    }
    let mut req: CreateNodeRequest =
        serde_path_to_error::deserialize(serde_json::Value::Object(body)).map_err(|e| {
            DomainError::invalid(format!("invalid JSON body: {}: {}", e.path(), e.inner()))
        })?;
    req.image = Some(commit);
    a.tenant.group(&group)?;
    let req = a.tenant.admission.create(&who.id, &group, req).await?;
    let created = a.tenant.create(&group, req, wait, timeout).await?;
    let status = if created.existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(created.node)).into_response())
}
