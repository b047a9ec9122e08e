//! What one audit line records ([`Record`]), and what can go wrong opening a trail.

use serde::Serialize;

/// One decision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Record {
    /// The request's id (`x-request-id`), or `daemon` for the daemon's own changes.
    pub request_id: String,
    /// `uid:0`, `token:01J…`, `oidc:alice`, `daemon` for the daemon's own changes,
    /// `anonymous` when authentication failed.
    pub principal: String,
    /// How the principal authenticated (`crate::auth::Via::kind`, or `internal`, `none`).
    pub via: String,
    pub tenant: String,
    /// The action (`create_node`, ..., or `reconcile`, `oom_kill`, ... for the daemon's own).
    pub action: String,
    /// What the action was on (`node/<name>`, `volume/<id>`, `group/<name>`, `-`).
    pub object: String,
    /// `allowed`, `denied` or `failed` (allowed, then the operation failed).
    pub outcome: String,
    /// Why (the error's code and message when refused or failed).
    pub reason: String,
}

/// What can go wrong opening a trail.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit trail: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("audit trail: the signing key: {0}")]
    Key(String),
}
