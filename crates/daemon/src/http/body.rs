//! What every handler shares: the state it reaches ([`AppState`], the daemon) and strict
//! JSON bodies. The tenant a handler acts in comes from `scope.rs`.

use bulkhead_core::{Code, DomainError};
use std::sync::Arc;

pub use super::scope::{Scoped, Visible};
use crate::app::{App, Daemon};

pub type AppState = Arc<Daemon>;

/// One tenant, as helpers of handlers pass it around.
pub type TenantApp = Arc<App>;

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
