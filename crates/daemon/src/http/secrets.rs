//! `/secrets` (#13): Slicer's secrets API, per tenant. The routes name no node or host group,
//! so the authorization layer hands over the tenants where the caller may do the action
//! ([`Visible`]); the secret's tenant is the caller's only one, else `?tenant=` picks among
//! them (400 naming them when it is missing, as `POST /tokens` does). A name is looked up in
//! that tenant only: a foreign or unknown secret is the same 404.
//!
//! Status codes as Slicer's SDKs expect: create 201 (409 when the name is taken), list,
//! update and delete 200. Bodies with a secret's content are parsed by `json_body` (strict,
//! size-bounded) and never echoed: errors name the field, never its value.

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::Json;
use bulkhead_api::secrets::{CreateSecretRequest, Secret, UpdateSecretRequest};
use bulkhead_core::DomainError;

use super::body::{json_body, TenantApp, Visible};
use super::query::Query;
use crate::error::ApiError;

/// The tenant a `/secrets` request acts in (see the module header). A `?tenant=` the caller
/// may not do this in is the same 404 whether it exists or not, and whatever role the caller
/// holds there (as `http/volumes.rs` `narrow` does): the answer never tells tenant names.
fn pick(visible: &[TenantApp], q: Option<&str>) -> Result<TenantApp, ApiError> {
    let q = Query::parse(q, &["tenant"])?;
    let names = || {
        visible
            .iter()
            .map(|a| a.tenant.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match q.one("tenant")? {
        Some(t) => visible
            .iter()
            .find(|a| a.tenant.name == t)
            .cloned()
            .ok_or_else(|| {
                DomainError::not_found(format!(
                    "tenant {t:?} is none of yours for this action: you may act in {}",
                    names()
                ))
                .into()
            }),
        None if visible.len() == 1 => Ok(visible[0].clone()),
        None => Err(DomainError::invalid(format!(
            "you may act in several tenants here ({}): say which with ?tenant=NAME",
            names()
        ))
        .into()),
    }
}

pub async fn list(
    Visible(visible): Visible,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<Secret>>, ApiError> {
    let app = pick(&visible, q.as_deref())?;
    Ok(Json(app.tenant.list_secrets().await?))
}

pub async fn create(
    Visible(visible): Visible,
    audit: crate::audit::slot::AuditSlot, // #14, A
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let app = pick(&visible, q.as_deref())?;
    audit.tenant_name(&app.tenant.name); // #14, A: the tenant it picked
    let req: CreateSecretRequest = json_body(&app, body).await?;
    let name = req.name.clone();
    audit.object(format!("secret/{name}")); // #14, A: its name, never its content
    app.tenant.create_secret(req).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "name": name, "message": "secret created" })),
    ))
}

pub async fn update(
    Visible(visible): Visible,
    audit: crate::audit::slot::AuditSlot, // #14, A
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Json<Secret>, ApiError> {
    let app = pick(&visible, q.as_deref())?;
    audit.tenant_name(&app.tenant.name); // #14, A: the tenant it picked
    let req: UpdateSecretRequest = json_body(&app, body).await?;
    Ok(Json(app.tenant.update_secret(&name, req).await?))
}

pub async fn delete(
    Visible(visible): Visible,
    audit: crate::audit::slot::AuditSlot, // #14, A
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let app = pick(&visible, q.as_deref())?;
    audit.tenant_name(&app.tenant.name); // #14, A: the tenant it picked
    app.tenant.delete_secret(&name).await?;
    Ok(Json(
        serde_json::json!({ "name": name, "message": "secret deleted" }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unknown or foreign `?tenant=` is a 404 naming no tenant beyond the caller's own.
    #[test]
    fn unknown_tenant_is_404() {
        for q in ["tenant=nosuchtenant", "tenant=default"] {
            let e = pick(&[], Some(q)).err().expect("refused");
            assert_eq!(e.status(), StatusCode::NOT_FOUND, "{q}");
        }
    }
}
