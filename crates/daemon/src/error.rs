//! The one place where errors become HTTP statuses and stable `code` strings.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bulkhead_api::ErrorBody;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
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
            "no_space" => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
            "command_not_found" => (StatusCode::BAD_REQUEST, "command_not_found"),
            "invalid_argument" => (StatusCode::BAD_REQUEST, "invalid_request"),
            "exec_failed" => (StatusCode::BAD_REQUEST, "exec_failed"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "agent_error"),
        };
        ApiError::new(status, code, message)
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
        (self.status, axum::Json(body)).into_response()
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
