//! `/secrets` (#13): Slicer's secrets API, per tenant. The routes name no node or host group,
//! so the authorization layer hands over the tenants where the caller may do the action
//! ([`Visible`]); the secret's tenant is the caller's only one, else `?tenant=` picks among
//! them (400 naming them when it is missing, as `POST /tokens` does). A name is looked up in
//! that tenant only: a foreign or unknown secret is the same 404.
//!
//! Status codes as Slicer's SDKs expect: create 201 (409 when the name is taken), list,
//! update and delete 200. Bodies with a secret's content are parsed by `json_body` (strict,
//! size-bounded) and never echoed: errors name the field, never its value.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bulkhead_api::secrets::{CreateSecretRequest, Secret, UpdateSecretRequest};
use bulkhead_core::DomainError;

use super::body::{json_body, AppState, TenantApp, Visible};
use super::query::Query;
use crate::auth::{Action, Denial, Principal};
use crate::error::ApiError;

/// The tenant a `/secrets` request acts in (see the module header).
fn pick(
    daemon: &AppState,
    visible: &[TenantApp],
    p: &Principal,
    action: Action,
    q: Option<&str>,
) -> Result<TenantApp, ApiError> {
    let q = Query::parse(q, &["tenant"])?;
    let names = || {
        visible
            .iter()
            .map(|a| a.tenant.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match q.one("tenant")? {
        Some(t) => {
            if let Some(a) = visible.iter().find(|a| a.tenant.name == t) {
                return Ok(a.clone());
            }
            // A tenant the caller may see but not do this in: say why; else it does not exist
            // for the caller, like an unknown one.
            let exists = daemon.tenants.iter().any(|a| a.tenant.name == t);
            match crate::auth::authorize(p, action, &t) {
                Err(Denial::Forbidden(e)) if exists => Err(e.into()),
                _ => Err(DomainError::not_found(format!(
                    "tenant {t:?} not found: you may use {} here",
                    names()
                ))
                .into()),
            }
        }
        None if visible.len() == 1 => Ok(visible[0].clone()),
        None => Err(DomainError::invalid(format!(
            "you may act in several tenants here ({}): say which with ?tenant=NAME",
            names()
        ))
        .into()),
    }
}

pub async fn list(
    State(daemon): State<AppState>,
    Visible(visible): Visible,
    Extension(p): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<Secret>>, ApiError> {
    let app = pick(&daemon, &visible, &p, Action::ListSecrets, q.as_deref())?;
    Ok(Json(app.tenant.list_secrets().await?))
}

pub async fn create(
    State(daemon): State<AppState>,
    Visible(visible): Visible,
    Extension(p): Extension<Principal>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let app = pick(&daemon, &visible, &p, Action::WriteSecret, q.as_deref())?;
    let req: CreateSecretRequest = json_body(&app, body).await?;
    let name = req.name.clone();
    app.tenant.create_secret(req).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "name": name, "message": "secret created" })),
    ))
}

pub async fn update(
    State(daemon): State<AppState>,
    Visible(visible): Visible,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Json<Secret>, ApiError> {
    let app = pick(&daemon, &visible, &p, Action::WriteSecret, q.as_deref())?;
    let req: UpdateSecretRequest = json_body(&app, body).await?;
    Ok(Json(app.tenant.update_secret(&name, req).await?))
}

pub async fn delete(
    State(daemon): State<AppState>,
    Visible(visible): Visible,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<serde_json::Value>, ApiError> {
    let app = pick(&daemon, &visible, &p, Action::DeleteSecret, q.as_deref())?;
    app.tenant.delete_secret(&name).await?;
    Ok(Json(
        serde_json::json!({ "name": name, "message": "secret deleted" }),
    ))
}
