//! `/volumes` and `/volumes/{id}/snapshots` (#13). These routes name no node or host group, so
//! the authorization layer gives the tenants the caller may do the action in ([`Visible`]);
//! the handler picks among them (DESIGN-13 "Tenancy on routes"):
//! - a new volume goes to the caller's only tenant, else to `?tenant=` (400 naming the
//!   caller's tenants when several could be meant);
//! - an id is looked up only in those tenants (narrowed by `?tenant=` if given): another
//!   tenant's id answers exactly like an unknown one (404).

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::Json;
use bulkhead_api::volumes::{CreateVolumeRequest, Volume, VolumeSnapshot};
use bulkhead_core::DomainError;

use super::body::{json_body, TenantApp, Visible};
use super::query::Query;
use crate::error::ApiError;
use crate::tenant::volumes::no_volume;

/// The tenants `?tenant=` narrows `visible` to (all of them without it).
fn narrow(visible: Vec<TenantApp>, q: &Query) -> Result<Vec<TenantApp>, DomainError> {
    let Some(t) = q.one("tenant")? else {
        return Ok(visible);
    };
    let names: Vec<String> = visible.iter().map(|a| a.tenant.name.clone()).collect();
    let one: Vec<TenantApp> = visible.into_iter().filter(|a| a.tenant.name == t).collect();
    if one.is_empty() {
        return Err(DomainError::not_found(format!(
            "tenant {t:?} is none of yours for this action: you may act in {}",
            names.join(", ")
        )));
    }
    Ok(one)
}

/// The one tenant a new object goes to.
fn target(visible: Vec<TenantApp>, q: &Query) -> Result<TenantApp, DomainError> {
    let mut ts = narrow(visible, q)?;
    if ts.len() == 1 {
        return Ok(ts.remove(0));
    }
    let names: Vec<String> = ts.iter().map(|a| a.tenant.name.clone()).collect();
    Err(DomainError::invalid(format!(
        "you may act in several tenants ({}): say which with ?tenant=NAME",
        names.join(", ")
    )))
}

/// The tenant holding volume `id`, among those the caller may act in.
fn holder(visible: Vec<TenantApp>, q: &Query, id: &str) -> Result<TenantApp, DomainError> {
    narrow(visible, q)?
        .into_iter()
        .find(|a| a.tenant.has_volume(id))
        .ok_or_else(|| no_volume(id))
}

pub async fn create(
    Visible(visible): Visible,
    audit: crate::audit::slot::AuditSlot, // #14, A
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<Volume>), ApiError> {
    let q = Query::parse(q.as_deref(), &["tenant"])?;
    let app = target(visible, &q)?;
    audit.tenant_name(&app.tenant.name); // #14, A: the tenant it picked
    let req: CreateVolumeRequest = json_body(&app, body).await?;
    let v = app.tenant.create_volume(req).await?;
    audit.object(format!("volume/{}", v.id)); // #14, A
    Ok((StatusCode::CREATED, Json(v)))
}

pub async fn list(
    Visible(visible): Visible,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<Volume>>, ApiError> {
    let q = Query::parse(q.as_deref(), &["tenant"])?;
    Ok(Json(
        narrow(visible, &q)?
            .iter()
            .flat_map(|a| a.tenant.list_volumes())
            .collect(),
    ))
}

pub async fn show(
    Visible(visible): Visible,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Volume>, ApiError> {
    let q = Query::parse(q.as_deref(), &["tenant"])?;
    Ok(Json(holder(visible, &q, &id)?.tenant.show_volume(&id)?))
}

pub async fn delete(
    Visible(visible): Visible,
    audit: crate::audit::slot::AuditSlot, // #14, A
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<StatusCode, ApiError> {
    let q = Query::parse(q.as_deref(), &["tenant"])?;
    let app = holder(visible, &q, &id)?;
    audit.tenant_name(&app.tenant.name); // #14, A: the volume's tenant
    app.tenant.delete_volume(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn snapshot(
    Visible(visible): Visible,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<(StatusCode, Json<VolumeSnapshot>), ApiError> {
    let q = Query::parse(q.as_deref(), &["tenant"])?;
    let s = holder(visible, &q, &id)?
        .tenant
        .create_snapshot(&id)
        .await?;
    Ok((StatusCode::CREATED, Json(s)))
}

pub async fn snapshots(
    Visible(visible): Visible,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<VolumeSnapshot>>, ApiError> {
    let q = Query::parse(q.as_deref(), &["tenant"])?;
    Ok(Json(holder(visible, &q, &id)?.tenant.list_snapshots(&id)?))
}

pub async fn delete_snapshot(
    Visible(visible): Visible,
    Path((id, sid)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<StatusCode, ApiError> {
    let q = Query::parse(q.as_deref(), &["tenant"])?;
    holder(visible, &q, &id)?
        .tenant
        .delete_snapshot(&id, &sid)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
