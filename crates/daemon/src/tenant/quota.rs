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
//!   their host group's `storage_size` today (0 if the group is gone);
//! - `storage` also counts the tenant's volumes and volume snapshots (their sizes) and its
//!   commits (their recorded sizes, from the row's insert to its delete). Every check that
//!   adds storage runs in a store writer job (a node create's `insert_with`, a volume job, a
//!   commit's `insert_commit_checked`), and the store changes those sums only on that thread,
//!   so parallel requests of any kind never take more than the quota between them;
//! - a commit's size is known only once its stream ended, so it is checked there, atomically
//!   with its row's insert (the reason for checking at the end rather than reserving the
//!   node's upper bound at start: that bound, storage_size plus the image, is usually far
//!   larger than what the node holds, and reserving it would refuse commits that fit). While
//!   it streams, it is stopped once it passes what the quota had left at its start
//!   ([`commit_cap`]): a commit that cannot fit stops early, and the disk that commits under
//!   way use beyond the quota is bounded by that headroom each; they are never recorded.
//!
//! Relaunch, restore and resume start nodes that already count: they never come here.

use bulkhead_api::quota::{QuotaFigure, TenantQuota};
use bulkhead_core::config::quotas::{Exceeded, Kind, Quotas, Usage};
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

/// The most bytes a commit may stream beside `used` bytes of storage, given `bound`, the most
/// its node can hold: the quota's headroom when that is smaller (then `true`: going past it is
/// a quota refusal, not a node too large to commit).
pub fn commit_cap(q: &Quotas, used: u64, bound: u64) -> (u64, bool) {
    match q.limit(Kind::Storage) {
        Some(limit) if limit.saturating_sub(used) < bound => (limit.saturating_sub(used), true),
        _ => (bound, false),
    }
}

/// The refusal of a commit stopped after `read` bytes, past the `storage` quota's headroom
/// beside `used`: the usual figures, the ask being what it had streamed when stopped.
pub fn commit_cut(q: &Quotas, key: &str, used: u64, read: u64) -> DomainError {
    let e = Exceeded {
        kind: Kind::Storage,
        used,
        asked: read,
        limit: q.limit(Kind::Storage).unwrap_or(0),
    };
    DomainError::new(
        Code::QuotaExceeded,
        format!(
            "{} (the commit was stopped once it passed what the quota left: the node's root filesystem holds at least the bytes asked; delete commits, volumes or snapshots the tenant no longer needs)",
            e.message(key)
        ),
    )
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
        // #13: volumes, snapshots and commits count against the storage quota too.
        used.storage_bytes = used.storage_bytes.saturating_add(self.stored_bytes());
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

    /// What the tenant stores outside its nodes (#13): its volumes and snapshots, and its
    /// commits, by their recorded sizes. Exact as of the job when read from a writer job.
    fn stored_bytes(&self) -> u64 {
        self.store
            .volumes()
            .storage_bytes()
            .saturating_add(self.store.commit_bytes())
    }

    /// Whether `ask` more bytes of storage fit the tenant's quota beside its nodes' use
    /// (`used`), its volumes and snapshots (`volumes` bytes) and its commits: 403
    /// `quota_exceeded` with the figures. Called from a volume job (the commits' sum read
    /// there is exact).
    pub(super) fn check_storage_quota(
        &self,
        used: Usage,
        volumes: u64,
        ask: u64,
    ) -> Result<(), DomainError> {
        let stored = volumes.saturating_add(self.store.commit_bytes());
        self.storage_fits(used, stored, ask)
    }

    /// Whether `ask` more bytes of storage fit beside the nodes' use (`used`) and `stored`
    /// bytes outside them.
    pub(super) fn storage_fits(
        &self,
        mut used: Usage,
        stored: u64,
        ask: u64,
    ) -> Result<(), DomainError> {
        used.storage_bytes = used.storage_bytes.saturating_add(stored);
        let ask = Usage {
            storage_bytes: ask,
            ..Usage::default()
        };
        self.cfg
            .quotas
            .check(&used, &ask)
            .map_err(|e| DomainError::new(Code::QuotaExceeded, e.message(&self.quota_key())))
    }

    /// The tenant's storage in use now (nodes, volumes, snapshots, commits).
    pub(super) fn storage_used(&self) -> u64 {
        usage(&self.cfg, self.list().rows())
            .storage_bytes
            .saturating_add(self.stored_bytes())
    }

    /// The tenant's use against its quotas (`GET /quota`).
    pub fn quota_report(&self) -> TenantQuota {
        let mut u = usage(&self.cfg, self.list().rows());
        u.storage_bytes = u.storage_bytes.saturating_add(self.stored_bytes()); // #13
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

    fn quotas(yaml: &str) -> Quotas {
        TenantConfig::parse(&format!(
            "config:\n  host_groups: [{{name: web}}]\n  quotas: {yaml}\n"
        ))
        .unwrap()
        .quotas
    }

    #[test]
    fn a_commit_streams_at_most_what_the_storage_quota_leaves() {
        let q = quotas("{storage: 100M}");
        let mib = |m: u64| m << 20;
        // Room beyond what the node can hold: the node's bound, not a quota matter.
        assert_eq!(commit_cap(&q, mib(20), mib(50)), (mib(50), false));
        assert_eq!(commit_cap(&q, mib(50), mib(50)), (mib(50), false));
        // Less room than that: the quota's headroom, and passing it is the quota's refusal.
        assert_eq!(commit_cap(&q, mib(60), mib(50)), (mib(40), true));
        assert_eq!(commit_cap(&q, mib(100), mib(50)), (0, true));
        assert_eq!(commit_cap(&q, mib(120), mib(50)), (0, true), "already over");
        // No storage quota (another quota set, or none): the node's bound.
        assert_eq!(
            commit_cap(&quotas("{vcpu: 4}"), u64::MAX - 1, mib(50)),
            (mib(50), false)
        );
        assert_eq!(commit_cap(&Quotas::default(), 0, mib(50)), (mib(50), false));
    }

    #[test]
    fn a_commit_stopped_at_the_quota_is_refused_with_its_figures() {
        let q = quotas("{storage: 100M}");
        let e = commit_cut(&q, "config.quotas", 99 << 20, 2 << 20);
        assert_eq!(e.code, Code::QuotaExceeded);
        assert!(
            e.message.starts_with(
                "quota exceeded: storage: 99M in use + 2M asked > 100M allowed (config.quotas.storage)"
            ),
            "{}",
            e.message
        );
        assert!(e.message.contains("stopped"), "{}", e.message);
    }

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
