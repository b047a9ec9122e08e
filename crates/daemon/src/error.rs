//! The one place where errors become HTTP statuses and stable `code` strings.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bulkhead_api::ErrorBody;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (refusals that a later retry can get past).
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// Adds a `Retry-After` header to the answer.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    /// A resource request outside what the host group (and so the host) allows.
    pub fn out_of_range(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "out_of_range", message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }
    /// A node that died while it was being created (its supervisor is gone); the message
    /// carries the end of its console, where QEMU or the guest said why.
    pub fn node_failed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "node_failed", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
    /// The node does not exist for this tenant. Deliberately identical for nodes of other
    /// tenants and nodes that never existed.
    pub fn no_node(name: &str) -> Self {
        Self::not_found(format!("node {name:?} not found"))
    }

    /// Maps an error the agent reported.
    pub fn from_agent(code: &str, message: String) -> Self {
        let (status, code) = match code {
            "not_found" => (StatusCode::NOT_FOUND, "path_not_found"),
            "is_a_directory" => (StatusCode::BAD_REQUEST, "is_a_directory"),
            "not_a_directory" => (StatusCode::BAD_REQUEST, "not_a_directory"),
            "not_a_regular_file" => (StatusCode::BAD_REQUEST, "not_a_regular_file"),
            "permission_denied" => (StatusCode::FORBIDDEN, "permission_denied"),
            "already_exists" => (StatusCode::CONFLICT, "already_exists"),
            "no_space" | "no_memory" => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
            "invalid_archive" => (StatusCode::BAD_REQUEST, "invalid_archive"),
            "command_not_found" => (StatusCode::BAD_REQUEST, "command_not_found"),
            "invalid_argument" => (StatusCode::BAD_REQUEST, "invalid_request"),
            "exec_failed" => (StatusCode::BAD_REQUEST, "exec_failed"),
            // The node's own pids limit: its workload (or too many execs) holds every pid.
            "pids_limit" => (StatusCode::TOO_MANY_REQUESTS, "pids_limit"),
            "agent_busy" => (StatusCode::SERVICE_UNAVAILABLE, "agent_busy"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "agent_error"),
        };
        let e = ApiError::new(status, code, message);
        match code {
            "pids_limit" | "agent_busy" => e.retry_after(1),
            _ => e,
        }
    }
    /// A connection that sent part of a request head and then too little for too long
    /// (`config.api.header_timeout`). Written by the connection server, not by a handler.
    pub fn header_timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request head did not arrive in time (config.api.header_timeout); connection closed",
        )
    }

    /// The API listener serves `config.api.max_connections` connections already.
    pub fn too_many_connections() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            "the daemon serves as many connections as it allows (config.api.max_connections): close idle connections or retry later",
        )
    }

    /// The whole response, for writing straight to a connection before or after hyper serves
    /// it; `Connection: close`.
    pub fn raw_response(&self) -> Vec<u8> {
        let body = serde_json::to_string(&ErrorBody {
            error: self.message.clone(),
            code: self.code.to_string(),
        })
        .unwrap_or_default();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_string(),
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        r
    }
}

impl From<bulkhead_store::StoreError> for ApiError {
    fn from(e: bulkhead_store::StoreError) -> Self {
        match e {
            bulkhead_store::StoreError::Exists(n) => ApiError::conflict(
                "already_exists",
                format!("node {n:?} already exists: choose another hostname"),
            ),
            e => ApiError::internal(e.to_string()),
        }
    }
}

impl From<bulkhead_agent::client::AgentError> for ApiError {
    fn from(e: bulkhead_agent::client::AgentError) -> Self {
        use bulkhead_agent::client::AgentError;
        match e {
            AgentError::Remote { code, message } => ApiError::from_agent(&code, message),
            e => ApiError::new(StatusCode::BAD_GATEWAY, "agent_unreachable", e.to_string()),
        }
    }
}
