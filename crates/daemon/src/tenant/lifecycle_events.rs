//! The tenant's lifecycle events (#14, part B): what the node lifecycle (`create.rs`,
//! `remove.rs`) reports to the event stream, in one place so the lifecycle code carries one
//! call line per change. Changes the daemon makes by itself (reconciliation, a stop with the
//! daemon) go through [`Tenant::by_daemon`] (an audit line too).

use bulkhead_core::{DomainError, NodeState};
use bulkhead_store::NodeRow;

use super::volume_rules::Refusal;
use super::Tenant;
use crate::events::kind;

impl Tenant {
    /// Attaches the tenant's store to its events (kept events back, cursors go on, the webhook
    /// started). At start, before reconciliation.
    pub async fn open_events(&self) {
        if let Err(e) = self
            .events
            .open(self.store.clone(), &self.cfg.events, &self.dir)
            .await
        {
            tracing::error!(tenant = %self.name, error = %e, "cannot read the kept events; the stream starts empty and is not kept");
        }
    }

    /// A node was created and started.
    pub(super) fn ev_created(&self, row: &NodeRow) {
        self.events.emit(
            kind::NODE_CREATED,
            Some(&row.name),
            serde_json::json!({ "hostgroup": row.hostgroup, "ip": row.ip }),
        );
    }

    /// A node was deleted on request.
    pub(super) fn ev_deleted(&self, name: &str) {
        self.events
            .emit(kind::NODE_DELETED, Some(name), serde_json::json!({}));
    }

    /// A node's state changed from `before` to `after` by its init's exit (noticed by its
    /// watch, an agent call, a shutdown or reconciliation): `node.stopped` once.
    pub(super) fn ev_stopped(
        &self,
        name: &str,
        before: Option<NodeState>,
        after: Option<NodeState>,
    ) {
        if let (Some(b), Some(NodeState::Stopped)) = (before, after) {
            if b != NodeState::Stopped {
                self.events.emit(
                    kind::NODE_STOPPED,
                    Some(name),
                    serde_json::json!({ "previous": b.as_str() }),
                );
            }
        }
    }

    /// Reconciliation found a node lost (its supervisor gone) or half-made and removed it.
    pub(super) fn ev_lost(&self, row: &NodeRow, alive: bool) {
        let reason = if alive {
            format!(
                "found {} with its supervisor unusable at start; removed",
                row.status.as_str()
            )
        } else {
            format!(
                "found {} with its supervisor gone at start; removed",
                row.status.as_str()
            )
        };
        self.by_daemon("reconcile", kind::NODE_LOST, &row.name, &reason);
    }

    /// A node deleted because the daemon stopped (`graceful_shutdown: false`).
    pub(super) fn ev_deleted_at_stop(&self, name: &str) {
        self.by_daemon(
            "delete_at_stop",
            kind::NODE_DELETED,
            name,
            "the daemon stopped (graceful_shutdown: false)",
        );
    }

    /// A volume attach was refused (counted by reason, #13) — the event says which.
    pub(super) fn attach_refused(&self, r: Refusal, node: Option<&str>, e: &DomainError) {
        self.volume_counters.add(r);
        self.events.emit(
            kind::VOLUME_ATTACH_REFUSED,
            node,
            serde_json::json!({ "reason": r.as_str(), "message": e.message }),
        );
    }

    /// A supervisor refused its node's spec as not the daemon's (`spec_mismatch`, #13).
    pub(super) fn ev_spec_refused(&self, node: &str, message: &str) {
        self.events.emit(
            kind::VOLUME_ATTACH_REFUSED,
            Some(node),
            serde_json::json!({ "reason": "spec_mismatch", "message": message }),
        );
    }

    /// Mounting a node's volumes failed (#13 counts it).
    pub(super) fn ev_mount_failed(&self, node: &str, e: &DomainError) {
        self.events.emit(
            kind::VOLUME_MOUNT_FAILED,
            Some(node),
            serde_json::json!({ "message": e.message }),
        );
    }
}
