//! The one place where domain errors become HTTP: each [`Code`] gets its status here and
//! nowhere else, and [`ApiError`] writes `{"error": ..., "code": ...}` (plus `Retry-After`).
//! Code below the HTTP layer returns [`DomainError`] and never names a status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bulkhead_api::ErrorBody;
use bulkhead_core::{Code, DomainError};

/// The HTTP status of each domain code.
pub fn status(code: Code) -> StatusCode {
    match code {
        Code::InvalidRequest
        | Code::OutOfRange
        | Code::IsADirectory
        | Code::NotADirectory
        | Code::NotARegularFile
        | Code::CommandNotFound
        | Code::ExecFailed
        | Code::InvalidArchive
        | Code::Unsupported => StatusCode::BAD_REQUEST,
        Code::Unauthorized => StatusCode::UNAUTHORIZED,
        Code::Forbidden | Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound | Code::PathNotFound => StatusCode::NOT_FOUND,
        Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Code::Timeout | Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        Code::NodeNotReady
        | Code::NodeDeleting
        | Code::NodeNotRunning
        | Code::NodeRunning
        | Code::PowerOpInProgress
        | Code::AlreadyExists
        | Code::AddressInUse
        | Code::RangeFull
        | Code::PortInUse
        | Code::TooManyForwards => StatusCode::CONFLICT,
        Code::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        // The node's own pids limit: its workload (or too many execs) holds every pid.
        Code::PidsLimit | Code::TooManyExecs => StatusCode::TOO_MANY_REQUESTS,
        Code::ExecRunning => StatusCode::CONFLICT,
        Code::ExecGone => StatusCode::GONE,
        Code::PolicyDenied | Code::QuotaExceeded => StatusCode::FORBIDDEN,
        Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        Code::Conflict => StatusCode::CONFLICT,
        Code::Internal | Code::NodeFailed | Code::AgentError => StatusCode::INTERNAL_SERVER_ERROR,
        Code::AgentUnreachable | Code::AgentLost | Code::PortClosed => StatusCode::BAD_GATEWAY,
        Code::Busy
        | Code::TooManyConnections
        | Code::AgentBusy
        | Code::NodeBusy
        | Code::AgentUnhealthy => StatusCode::SERVICE_UNAVAILABLE,
        Code::AgentTimeout => StatusCode::GATEWAY_TIMEOUT,
        Code::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
    }
}

/// The code and message of an error answer, left in the response's extensions for the audit
/// layer (#14, part A; `http/audit_layer.rs`).
#[derive(Debug, Clone)]
pub struct Reason {
    pub code: &'static str,
    pub message: String,
}

/// A domain error on its way out as an HTTP answer.
#[derive(Debug, Clone)]
pub struct ApiError(pub DomainError);

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        status(self.0.code)
    }

    /// A connection that sent part of a request head and then too little for too long
    /// (`config.api.header_timeout`). Written by the connection server, not by a handler.
    pub fn header_timeout() -> Self {
        ApiError(DomainError::new(
            Code::RequestTimeout,
            "the request head did not arrive in time (config.api.header_timeout); connection closed",
        ))
    }

    /// The API listener serves `config.api.max_connections` connections already; `Retry-After: 1`.
    /// `key`: the config key of the cap that was reached.
    pub fn too_many_connections(key: &str) -> Self {
        ApiError(DomainError::new(
            Code::TooManyConnections,
            format!("the daemon serves as many connections as it allows ({key}): close idle connections or retry later"),
        ).retry_after(1))
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.0.message.clone(),
            code: self.0.code.as_str().to_string(),
        }
    }

    /// The whole response, for writing straight to a connection before or after hyper serves
    /// it; `Connection: close`.
    pub fn raw_response(&self) -> Vec<u8> {
        let body = serde_json::to_string(&self.body()).unwrap_or_default();
        let st = self.status();
        let retry = match self.0.retry_after {
            Some(s) => format!("retry-after: {s}\r\n"),
            None => String::new(),
        };
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{retry}connection: close\r\n\r\n{body}",
            st.as_u16(),
            st.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.0.message, self.0.code)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status(), axum::Json(self.body())).into_response();
        // #14, A: the audit line's reason
        r.extensions_mut().insert(Reason {
            code: self.0.code.as_str(),
            message: self.0.message.clone(),
        });
        if let Some(s) = self.0.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code is in the OpenAPI spec's list, and every listed code exists: the spec is
    /// what clients read to handle errors.
    #[test]
    fn every_code_is_in_the_openapi_spec() {
        let spec = include_str!("../../../docs/api/openapi.yaml");
        let line = spec
            .lines()
            .find(|l| l.contains("code: { type: string, description: \"stable:"))
            .expect("the ErrorBody code list in openapi.yaml");
        let listed: Vec<&str> = line
            .split("stable:")
            .nth(1)
            .unwrap()
            .trim_end_matches(['"', '}', ' '])
            .split(',')
            .map(str::trim)
            .collect();
        for c in Code::ALL {
            assert!(
                listed.contains(&c.as_str()),
                "{c} missing from openapi.yaml"
            );
        }
        for l in &listed {
            assert!(
                Code::ALL.iter().any(|c| c.as_str() == *l),
                "openapi.yaml lists {l}, which no Code has"
            );
        }
    }

    #[test]
    fn statuses_of_contract_codes() {
        assert_eq!(status(Code::NodeNotReady), StatusCode::CONFLICT);
        assert_eq!(status(Code::NoSpace), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(status(Code::PidsLimit), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(status(Code::AgentUnreachable), StatusCode::BAD_GATEWAY);
        assert_eq!(
            status(Code::AgentUnhealthy),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status(Code::Forbidden), StatusCode::FORBIDDEN);
        let e = ApiError(DomainError::new(Code::Busy, "x").retry_after(1)).into_response();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.headers()[axum::http::header::RETRY_AFTER], "1");
        let raw = String::from_utf8(ApiError::too_many_connections("k").raw_response()).unwrap();
        assert!(
            raw.starts_with("HTTP/1.1 503 ") && raw.contains("\r\nretry-after: 1\r\n"),
            "{raw}"
        );
        let raw = String::from_utf8(ApiError::header_timeout().raw_response()).unwrap();
        assert!(!raw.contains("retry-after"), "{raw}");
    }
}
