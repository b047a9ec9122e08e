//! [`AgentError`]: what can go wrong talking to an agent, from an unreachable socket to a
//! feature the agent's protocol version lacks.

use std::io;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the node's agent: {0}")]
    Connect(#[source] io::Error),
    #[error("agent connection failed: {0}")]
    Io(#[from] io::Error),
    /// The agent closed the connection before the operation ended (it died, or its node did).
    #[error("the node's agent closed the connection")]
    Closed,
    #[error("agent sent a malformed frame: {0}")]
    Protocol(String),
    /// A well-formed answer that does not fit the operation.
    #[error("agent answered {op} with {event}")]
    Unexpected { op: &'static str, event: String },
    /// The agent refused the operation; `code` is the agent's (e.g. `pids_limit`).
    #[error("{message}")]
    Remote { code: String, message: String },
    /// The agent does not speak the feature (`None`: its version is not known yet).
    #[error("{}", unsupported(feature, *version))]
    Unsupported {
        feature: &'static str,
        version: Option<u32>,
    },
    #[error("the node's agent did not answer within {}s", .0.as_secs())]
    Timeout(Duration),
}

fn unsupported(feature: &str, version: Option<u32>) -> String {
    match version {
        Some(v) => format!(
            "the node's agent speaks protocol version {v}, which has no {feature}: the node \
             started with an older agent; recreate the node to use {feature}"
        ),
        None => format!(
            "cannot tell whether the node's agent supports {feature}: ping it first \
             (AgentClient does)"
        ),
    }
}

impl AgentError {
    /// The connection broke or was closed: the agent (or its node) may be gone.
    pub fn is_lost(&self) -> bool {
        matches!(self, AgentError::Io(_) | AgentError::Closed)
    }
}
