//! Per-tenant quotas on the create path and in `GET /quota` (issue #12, ADR 0025).
//!
//! Invariants:
//! - the tenant's use is counted from the store's rows, never from a counter that could drift:
//!   every node counts, whatever its state, until its record is removed (a stopped or
//!   suspended node keeps its claim; a deleted one frees it as its delete answers);
//! - a create is checked in the store's writer job that inserts it ([`Tenant::admit`]), so
//!   the count it sees includes every create committed before it, and two creates can never
//!   both take the last of a quota;
//! - a node's storage is the size recorded with it; nodes made before that was recorded count
//!   their host group's `storage_size` today (0 if the group is gone).
//!
//! Relaunch, restore and resume start nodes that already count: they never come here.

use bulkhead_api::quota::{QuotaFigure, TenantQuota};
use bulkhead_core::config::quotas::{Kind, Usage};
use bulkhead_core::{Code, DomainError, TenantConfig};
use bulkhead_store::{NodeRow, Snapshot};
use std::sync::Arc;

use super::conflict::{self, Admit, CreateSpec};
use super::Tenant;

/// What a tenant's nodes (`rows`, committed) use.
pub fn usage(cfg: &TenantConfig, rows: &[Arc<NodeRow>]) -> Usage {
    let mut u = Usage::default();
    for r in rows {
        let storage = r
            .storage_bytes
            .or_else(|| cfg.group(&r.hostgroup).map(|g| g.storage_bytes))
            .unwrap_or(0);
        u.add(&Usage::node(r.cpus, r.ram_bytes, storage));
    }
    u
}

impl Tenant {
    /// Where this tenant's quotas are written, for messages.
    pub(super) fn quota_key(&self) -> String {
        if self.cfg.shared_daemon {
            format!("config.tenants[name={}].quotas", self.name)
        } else {
            "config.quotas".into()
        }
    }

    /// Whether a node of `asked`'s size fits the tenant's quotas beside `rows`: 403
    /// `quota_exceeded` naming the quota, its use, what was asked and the limit.
    pub fn check_quota(
        &self,
        rows: &[Arc<NodeRow>],
        asked: &CreateSpec,
    ) -> Result<(), DomainError> {
        let q = &self.cfg.quotas;
        if !q.any() {
            return Ok(());
        }
        let ask = Usage::node(asked.cpus, asked.ram_bytes, asked.storage_bytes);
        let mut used = usage(&self.cfg, rows);
        // volumes (#13): volumes and snapshots count against the storage quota too.
        used.storage_bytes =
            (used.storage_bytes).saturating_add(self.store.volumes().storage_bytes());
        q.check(&used, &ask)
            .map_err(|e| DomainError::new(Code::QuotaExceeded, e.message(&self.quota_key())))
    }

    /// The admission of a create, run in the store's writer job that would insert it (so
    /// atomic with every other create): the conflict rule first (an identical retry is
    /// answered even at a full quota, the node counting already), then the quotas.
    pub(super) fn admit(
        &self,
        snap: &Snapshot,
        name: &str,
        named: bool,
        asked: &CreateSpec,
    ) -> Result<(), Admit> {
        conflict::check(snap, name, named, asked)?;
        self.check_quota(snap.rows(), asked)?;
        Ok(())
    }

    /// The tenant's use against its quotas (`GET /quota`).
    pub fn quota_report(&self) -> TenantQuota {
        let mut u = usage(&self.cfg, self.list().rows());
        u.storage_bytes = u
            .storage_bytes
            .saturating_add(self.store.volumes().storage_bytes()); // volumes (#13)
        let q = &self.cfg.quotas;
        let fig = |k: Kind, used: u64| QuotaFigure {
            used,
            limit: q.limit(k),
        };
        TenantQuota {
            tenant: self.name.clone(),
            nodes: fig(Kind::Nodes, u.nodes),
            vcpu: fig(Kind::Vcpu, u.vcpu),
            ram_bytes: fig(Kind::Ram, u.ram_bytes),
            storage_bytes: fig(Kind::Storage, u.storage_bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_core::NodeState;

    #[tokio::test]
    async fn every_node_counts_with_its_recorded_storage_or_its_groups() {
        let cfg = TenantConfig::parse(
            "config:\n  host_groups: [{name: web, vcpu: 4, storage_size: 5G}, {name: db, storage_size: 7G}]\n",
        )
        .unwrap();
        let d = tempfile::tempdir().unwrap();
        let s = bulkhead_store::Store::open(&d.path().join("s.db"), "t").unwrap();
        let new = |name: &str, group: &str, status, cpus, storage| bulkhead_store::NewNode {
            name: name.into(),
            hostgroup: group.into(),
            status,
            ip: String::new(),
            cpus,
            ram_bytes: 1 << 30,
            tags: vec![],
            persistent: false,
            created_at: "2026-01-01T00:00:00Z".into(),
            network: None,
            userdata: None,
            storage_bytes: storage,
            spec: None,
        };
        assert_eq!(usage(&cfg, s.snapshot().rows()), Usage::default());
        s.insert(new("web-1", "web", NodeState::Running, 2, Some(3 << 30)))
            .await
            .unwrap();
        s.insert(new("web-2", "web", NodeState::Stopped, 4, None))
            .await
            .unwrap();
        s.insert(new("db-1", "db", NodeState::Creating, 1, None))
            .await
            .unwrap();
        s.insert(new("gone-1", "gone", NodeState::Suspended, 1, None))
            .await
            .unwrap();
        let u = usage(&cfg, s.snapshot().rows());
        assert_eq!(
            u,
            Usage {
                nodes: 4,
                vcpu: 8,
                ram_bytes: 4 << 30,
                // recorded 3G; web's 5G; db's 7G; a group no longer configured: 0
                storage_bytes: 15 << 30,
            }
        );
        s.delete("web-2").await.unwrap();
        assert_eq!(
            usage(&cfg, s.snapshot().rows()).vcpu,
            4,
            "a delete frees at once"
        );
    }
}
