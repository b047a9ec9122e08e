//! The domain's errors: what went wrong, as a stable [`Code`] and a message for a person.
//!
//! Every layer below the HTTP surface (tenant, network, forwards, agent operations, store)
//! reports failures as a [`DomainError`]. The codes are a wire contract: they are the `code`
//! field of every error answer (docs/api/openapi.yaml lists them) and never change meaning.
//! Which HTTP status a code becomes is decided in exactly one place, the daemon's
//! `error.rs`; nothing here knows about HTTP.

/// The stable error codes. Adding one is an API change: list it in the OpenAPI spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// The request is malformed: an unknown key, a bad value, a missing field.
    InvalidRequest,
    /// A resource request outside what the host group (and so the host) allows.
    OutOfRange,
    /// No such object for this tenant (identical for other tenants' objects).
    NotFound,
    /// No such path inside the node.
    PathNotFound,
    NodeNotReady,
    NodeDeleting,
    NodeNotRunning,
    AlreadyExists,
    IsADirectory,
    NotADirectory,
    NotARegularFile,
    CommandNotFound,
    ExecFailed,
    /// A wait (for the agent, for a create) ran out.
    Timeout,
    /// The client sent too little for too long.
    RequestTimeout,
    /// The tenant's lifecycle queue is full.
    Busy,
    TooManyConnections,
    BodyTooLarge,
    /// The caller did not prove who it is.
    Unauthorized,
    /// The caller is known but its roles do not allow the action in this tenant.
    Forbidden,
    MethodNotAllowed,
    /// The node's agent cannot be reached (a request that had to go through it).
    AgentUnreachable,
    /// A health probe found the agent not answering: the same wire code as
    /// `AgentUnreachable`, but the node (not a gateway) is what is unavailable.
    AgentUnhealthy,
    AgentLost,
    AgentError,
    AgentBusy,
    AgentTimeout,
    NoSpace,
    PermissionDenied,
    AddressInUse,
    RangeFull,
    PortInUse,
    TooManyForwards,
    /// Nothing listens on the node's port a `forward` WebSocket asked for.
    PortClosed,
    NodeBusy,
    /// The node runs, and the operation needs one that does not (relaunch).
    NodeRunning,
    /// Another power operation (shutdown, relaunch, suspend, restore) on the node is under way.
    PowerOpInProgress,
    PidsLimit,
    InvalidArchive,
    NodeFailed,
    /// The node's driver cannot do this (e.g. snapshots before storage lands).
    Unsupported,
    Internal,
    /// A node or tenant holds as many background execs (or as much of their rings) as it may.
    TooManyExecs,
    /// A background exec still runs, so it cannot be deleted.
    ExecRunning,
    /// A background exec was deleted.
    ExecGone,
    /// The tenant's admission policy (or its policy webhook) refused the request (#12).
    PolicyDenied,
    /// The request would take the tenant past one of its quotas (#12).
    QuotaExceeded,
    /// The tenant's token bucket for this kind of request is empty (#12).
    RateLimited,
    /// A create named an existing node with a different spec (#12's conflict rule).
    Conflict,
}

impl Code {
    /// Every code, for checks that walk them (the HTTP mapping, the OpenAPI list).
    pub const ALL: &'static [Code] = &[
        Code::InvalidRequest,
        Code::OutOfRange,
        Code::NotFound,
        Code::PathNotFound,
        Code::NodeNotReady,
        Code::NodeDeleting,
        Code::NodeNotRunning,
        Code::AlreadyExists,
        Code::IsADirectory,
        Code::NotADirectory,
        Code::NotARegularFile,
        Code::CommandNotFound,
        Code::ExecFailed,
        Code::Timeout,
        Code::RequestTimeout,
        Code::Busy,
        Code::TooManyConnections,
        Code::BodyTooLarge,
        Code::Unauthorized,
        Code::Forbidden,
        Code::MethodNotAllowed,
        Code::AgentUnreachable,
        Code::AgentUnhealthy,
        Code::AgentLost,
        Code::AgentError,
        Code::AgentBusy,
        Code::AgentTimeout,
        Code::NoSpace,
        Code::PermissionDenied,
        Code::AddressInUse,
        Code::RangeFull,
        Code::PortInUse,
        Code::TooManyForwards,
        Code::PortClosed,
        Code::NodeBusy,
        Code::NodeRunning,
        Code::PowerOpInProgress,
        Code::PidsLimit,
        Code::InvalidArchive,
        Code::NodeFailed,
        Code::Unsupported,
        Code::Internal,
        Code::TooManyExecs,
        Code::ExecRunning,
        Code::ExecGone,
        Code::PolicyDenied,
        Code::QuotaExceeded,
        Code::RateLimited,
        Code::Conflict,
    ];

    /// The code's wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::OutOfRange => "out_of_range",
            Code::NotFound => "not_found",
            Code::PathNotFound => "path_not_found",
            Code::NodeNotReady => "node_not_ready",
            Code::NodeDeleting => "node_deleting",
            Code::NodeNotRunning => "node_not_running",
            Code::AlreadyExists => "already_exists",
            Code::IsADirectory => "is_a_directory",
            Code::NotADirectory => "not_a_directory",
            Code::NotARegularFile => "not_a_regular_file",
            Code::CommandNotFound => "command_not_found",
            Code::ExecFailed => "exec_failed",
            Code::Timeout => "timeout",
            Code::RequestTimeout => "request_timeout",
            Code::Busy => "busy",
            Code::TooManyConnections => "too_many_connections",
            Code::BodyTooLarge => "body_too_large",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::AgentUnreachable | Code::AgentUnhealthy => "agent_unreachable",
            Code::AgentLost => "agent_lost",
            Code::AgentError => "agent_error",
            Code::AgentBusy => "agent_busy",
            Code::AgentTimeout => "agent_timeout",
            Code::NoSpace => "no_space",
            Code::PermissionDenied => "permission_denied",
            Code::AddressInUse => "address_in_use",
            Code::RangeFull => "range_full",
            Code::PortInUse => "port_in_use",
            Code::TooManyForwards => "too_many_forwards",
            Code::PortClosed => "port_closed",
            Code::NodeBusy => "node_busy",
            Code::NodeRunning => "node_running",
            Code::PowerOpInProgress => "power_operation_in_progress",
            Code::PidsLimit => "pids_limit",
            Code::InvalidArchive => "invalid_archive",
            Code::NodeFailed => "node_failed",
            Code::Unsupported => "unsupported",
            Code::Internal => "internal",
            Code::TooManyExecs => "too_many_background_execs",
            Code::ExecRunning => "exec_running",
            Code::ExecGone => "exec_gone",
            Code::PolicyDenied => "policy_denied",
            Code::QuotaExceeded => "quota_exceeded",
            Code::RateLimited => "rate_limited",
            Code::Conflict => "conflict",
        }
    }

    /// The code an agent reported (`bulkhead_agent::proto` error codes) as a domain code.
    /// Unknown agent codes are `AgentError`: the agent is ours, so an unknown code is a bug.
    pub fn from_agent(code: &str) -> Code {
        match code {
            "not_found" => Code::PathNotFound,
            "is_a_directory" => Code::IsADirectory,
            "not_a_directory" => Code::NotADirectory,
            "not_a_regular_file" => Code::NotARegularFile,
            "permission_denied" => Code::PermissionDenied,
            "already_exists" => Code::AlreadyExists,
            "no_space" | "no_memory" => Code::NoSpace,
            "invalid_archive" => Code::InvalidArchive,
            "command_not_found" => Code::CommandNotFound,
            "invalid_argument" => Code::InvalidRequest,
            "exec_failed" => Code::ExecFailed,
            // The node's own pids limit: its workload (or too many execs) holds every pid.
            "pids_limit" => Code::PidsLimit,
            "agent_busy" => Code::AgentBusy,
            // Nothing accepts on a port the agent connected to from inside the node.
            "port_closed" => Code::PortClosed,
            _ => Code::AgentError,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure of a domain operation: its stable code, a message that says what was wrong and
/// what to do, and, for refusals a later retry can get past, how long to wait.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    pub code: Code,
    pub message: String,
    /// Seconds after which a retry may succeed (becomes `Retry-After`).
    pub retry_after: Option<u32>,
}

impl DomainError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        DomainError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }
    /// Marks the refusal as one a retry after `seconds` can get past.
    pub fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, message)
    }
    pub fn out_of_range(message: impl Into<String>) -> Self {
        Self::new(Code::OutOfRange, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }
    /// The node does not exist for this tenant. Deliberately identical for nodes of other
    /// tenants and nodes that never existed.
    pub fn no_node(name: &str) -> Self {
        Self::not_found(format!("node {name:?} not found"))
    }
    /// An error the node's agent reported, with its code mapped ([`Code::from_agent`]).
    pub fn from_agent(code: &str, message: impl Into<String>) -> Self {
        let code = Code::from_agent(code);
        let e = Self::new(code, message);
        match code {
            Code::PidsLimit | Code::AgentBusy => e.retry_after(1),
            _ => e,
        }
    }
    /// A driver that cannot do `what`.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(Code::Unsupported, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_listed() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            // The one deliberate alias: a health probe's view of an unreachable agent.
            if *c == Code::AgentUnhealthy {
                continue;
            }
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert!(c
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
        }
        assert_eq!(seen.len(), Code::ALL.len() - 1);
    }

    #[test]
    fn agent_codes_map_and_retry() {
        assert_eq!(Code::from_agent("not_found"), Code::PathNotFound);
        assert_eq!(Code::from_agent("no_memory"), Code::NoSpace);
        assert_eq!(Code::from_agent("something new"), Code::AgentError);
        assert_eq!(
            DomainError::from_agent("pids_limit", "x").retry_after,
            Some(1)
        );
        assert_eq!(DomainError::from_agent("no_space", "x").retry_after, None);
    }
}
