//! Node TTL (#15, B; ADR 0037): `POST /vm/{node}/timeout` sets a node's timeout from now
//! (extends or shortens it), or clears it with `null`; `on_expiry` says what happens when it
//! passes (`delete`, the default, or `pause`). It answers the node with its `expires_at`.
//!
//! The route's action is `DeleteNode` (a timeout is a deferred delete); `on_expiry: "pause"`
//! is checked again for `PauseNode` here, so a role that may delete but not pause cannot make
//! the daemon pause a node for it.

use axum::extract::{Path, RawQuery};
use axum::{Extension, Json};
use bulkhead_api::ttl::SetTimeoutRequest;
use bulkhead_api::Node;
use bulkhead_core::ttl::{self, OnExpiry};
use bulkhead_core::DomainError;

use super::body::{json_body, Scoped};
use super::query::Query;
use crate::auth::{Action, Principal};
use crate::error::ApiError;
use crate::tenant::Tenant;

pub async fn set_timeout(
    Scoped(app): Scoped,
    Extension(who): Extension<Principal>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Json<Node>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    let req: SetTimeoutRequest = json_body(&app, body).await?;
    let on = match req.on_expiry.as_deref() {
        None | Some("delete") => OnExpiry::Delete,
        Some("pause") => OnExpiry::Pause,
        Some(o) => {
            return Err(DomainError::invalid(format!(
                "on_expiry {o:?} is not known: use \"delete\" (the default) or \"pause\""
            ))
            .into())
        }
    };
    if on == OnExpiry::Pause {
        crate::auth::authorize(&who, Action::PauseNode, &app.tenant.name)
            .map_err(|d| d.into_error(&who, &app.tenant.name))?;
    }
    let Some(timeout) = req.timeout else {
        return Err(DomainError::invalid(
            "timeout is missing: give whole seconds (e.g. 1800), a duration such as \"30m\", or null for no timeout",
        )
        .into());
    };
    let ttl = timeout
        .map(|t| ttl::parse("timeout", &t))
        .transpose()
        .map_err(DomainError::from)?;
    app.tenant.set_expiry(&n, ttl, on).await?;
    let now = app.tenant.node(&node)?;
    Ok(Json(Tenant::to_api(now.row())))
}
