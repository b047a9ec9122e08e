//! Workload identity routes (ADR 0020): the issuer's discovery document and public keys, for
//! verifiers and without credentials (`Action::ReadPublicKeys`), and the key rotation
//! (`Action::RotateIdentity`, global-admin). All three answer 404 when
//! `config.workload_identity` is absent.

use axum::extract::State;
use axum::Json;
use bulkhead_core::DomainError;
use serde_json::{json, Value};
use std::sync::Arc;

use super::body::AppState;
use crate::error::ApiError;
use crate::identity::Identity;

fn identity(app: &AppState) -> Result<Arc<Identity>, ApiError> {
    app.host.identity.clone().ok_or_else(|| {
        DomainError::not_found(
            "workload identity is off: add config.workload_identity (audiences, ttl) to turn it on",
        )
        .into()
    })
}

/// `GET /.well-known/openid-configuration`
pub async fn discovery(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(identity(&app)?.discovery()))
}

/// `GET /.well-known/jwks.json`
pub async fn jwks(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(identity(&app)?.jwks()))
}

/// `POST /identity/rotate`: a new signing key; answers its `kid`.
pub async fn rotate(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let id = identity(&app)?;
    let kid = tokio::task::spawn_blocking(move || id.rotate())
        .await
        .map_err(|e| DomainError::internal(format!("rotating the identity key: {e}")))?
        .map_err(|e| DomainError::internal(e.to_string()))?;
    Ok(Json(json!({ "kid": kid })))
}
