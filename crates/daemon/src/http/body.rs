//! What every handler shares: the state it reaches ([`AppState`], the daemon), the tenant
//! the authorization layer resolved for it ([`Scoped`] for a route with a node or host
//! group, [`Visible`] for a route over the daemon), and strict JSON bodies.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use bulkhead_core::{Code, DomainError};
use std::sync::Arc;

use crate::app::{App, Daemon};
use crate::error::ApiError;

pub type AppState = Arc<Daemon>;

/// One tenant, as helpers of handlers pass it around.
pub type TenantApp = Arc<App>;

/// The tenant of the request's node or host group, which the caller may act in (put in the
/// request by the authorization layer; a handler never picks a tenant itself).
#[derive(Clone)]
pub struct Scoped(pub Arc<App>);

/// For a route over the whole daemon (`GET /nodes`, `/hostgroup`, `/metrics`, ...): the
/// tenants whose part the caller may see, in config order.
#[derive(Clone)]
pub struct Visible(pub Vec<Arc<App>>);

fn missing(what: &str) -> ApiError {
    // A route table entry whose handler and object disagree: a bug of ours, not the caller's.
    ApiError(DomainError::internal(format!(
        "this route has no {what}: the route table and its handler disagree"
    )))
}

impl<S: Send + Sync> FromRequestParts<S> for Scoped {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Scoped>()
            .cloned()
            .ok_or_else(|| missing("tenant"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Visible {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Visible>()
            .cloned()
            .ok_or_else(|| missing("tenant list"))
    }
}

/// JSON request bodies larger than this are refused with 413.
pub const MAX_JSON_BODY: usize = 64 * 1024;

/// Parses a JSON body strictly: size-limited while it is read (never buffered past
/// [`MAX_JSON_BODY`]), time-limited (`config.api.header_timeout`, so a body sent a byte at a
/// time cannot hold a connection), unknown fields rejected, errors name the field.
pub async fn json_body<T: serde::de::DeserializeOwned>(
    app: &App,
    body: axum::body::Body,
) -> Result<T, DomainError> {
    use http_body_util::BodyExt;
    let limit = app.tenant.cfg.conns.header_timeout;
    let read = http_body_util::Limited::new(body, MAX_JSON_BODY).collect();
    let body = match tokio::time::timeout(limit, read).await {
        Err(_) => {
            return Err(DomainError::new(
                Code::RequestTimeout,
                format!(
                    "the request body did not arrive within {limit:?} (config.api.header_timeout)"
                ),
            ))
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(DomainError::new(
                Code::BodyTooLarge,
                format!("request body is larger than the limit of {MAX_JSON_BODY} bytes"),
            ))
        }
        Ok(Err(e)) => {
            return Err(DomainError::invalid(format!(
                "cannot read the request body: {e}"
            )))
        }
        Ok(Ok(b)) => b.to_bytes(),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return serde_json::from_slice(b"{}")
            .map_err(|e| DomainError::invalid(format!("invalid JSON body: {e}")));
    }
    let mut de = serde_json::Deserializer::from_slice(&body);
    let v = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." || path.is_empty() {
            DomainError::invalid(format!("invalid JSON body: {inner}"))
        } else {
            DomainError::invalid(format!("invalid JSON body: {path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| DomainError::invalid(format!("invalid JSON body: {e}")))?;
    Ok(v)
}
