//! `/tokens` (ADR 0022): API tokens. The authorization layer has checked that the caller may
//! do the action in some tenant ([`Visible`]); the token's own tenant (from the body, or the
//! stored token) is checked by `auth/token_admin.rs`, which holds every rule. Handlers parse
//! and call it.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use bulkhead_api::tokens::{CreateTokenRequest, CreatedToken, TokenInfo};
use bulkhead_core::DomainError;

use super::body::{json_body, AppState, Visible};
use super::query::Query;
use crate::auth::Principal;
use crate::error::ApiError;

fn blocking_failed(e: tokio::task::JoinError) -> ApiError {
    DomainError::internal(format!("the auth database's job failed: {e}")).into()
}

pub async fn create(
    State(daemon): State<AppState>,
    Visible(visible): Visible,
    Extension(p): Extension<Principal>,
    audit: crate::audit::slot::AuditSlot, // #14, A: names the token's tenant
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    Query::parse(q.as_deref(), &[])?;
    // Any tenant's app serves for reading the body (its header timeout); never empty.
    let req: CreateTokenRequest = json_body(&visible[0], body).await?;
    let svc = daemon.tokens.clone();
    let names = daemon.names();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let new = svc.plan(&p, &names, &req)?;
    if let Some(t) = &req.tenant {
        audit.tenant_name(t); // #14, A
    }
    let created = tokio::task::spawn_blocking(move || svc.create(new))
        .await
        .map_err(blocking_failed)??;
    audit.object(format!("token/{}", created.id)); // #14, A
    Ok((StatusCode::CREATED, Json(created)))
}

pub async fn list(
    State(daemon): State<AppState>,
    Extension(p): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    Ok(Json(daemon.tokens.list(&p)))
}

pub async fn revoke(
    State(daemon): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<StatusCode, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let svc = daemon.tokens.clone();
    let id = svc.check_revoke(&p, &id)?;
    tokio::task::spawn_blocking(move || svc.revoke(&p, id))
        .await
        .map_err(blocking_failed)??;
    Ok(StatusCode::NO_CONTENT)
}
