//! One tenant's context: its config, state, network, forwards, standby pool and driver, and
//! the node lifecycle over them (`create.rs`, `remove.rs`, `ops.rs`, `agent.rs`, `fs.rs`; the watches
//! of live nodes in `watch.rs`). Host-wide services (cgroups, the driver registry, the
//! supervisor binary) come from [`HostServices`]; a daemon holds one of those and, today, one
//! tenant.
//!
//! The tenant's driver (`bulkhead_driver::Driver`, opened from the registry for the config's
//! `hypervisor`) does everything that differs between drivers; nothing here asks which one
//! it is. Whether a node runs comes from its supervisor's control channel.
//!
//! Every node lookup goes through [`Tenant::node`], which is scoped to this tenant and is the
//! only maker of a [`NodeRef`]; every node operation takes one. The node's state changes only
//! through `bulkhead_core::NodeState`'s transitions.

mod agent;
mod attach; // volumes attached to nodes (#13, attach)
pub mod attach_counters; // its counters (#13, attach)
pub mod commit; // #13 commit and fork
mod conflict; // the conflict rule (#12, ADR 0025)
pub mod container_registry; // containers in a node (#16, B2): the registry
pub mod containers; // containers in a node (#16, B2)
mod create;
mod describe;
pub mod expiry; // node TTL (#15, B)
mod fs;
mod gate;
mod guest_written; // guest-written volumes stay off the host kernel (#13)
mod identity;
mod lifecycle;
mod lifecycle_events; // #14, part B: lifecycle and volume events
mod loads;
pub mod node_ref;
mod ops;
mod persist; // persistent nodes (#13, ADR 0030)
mod power;
mod quota; // quotas (#12, ADR 0025)
mod remove;
mod restarting; // a node started again (relaunch, restore) outlives a daemon's death (#13)
mod sandbox; // E2B sandbox records (#15, A)
pub mod secrets; // secrets (#13)
mod shell;
mod stats;
pub mod sweeper; // node TTL (#15, B): the sweeper's state
mod tunnel;
pub mod usage; // the usage sampler (#14, part E)
mod userdata;
// ---- volumes (#13, helper B) ----
pub mod volume_attach;
mod volume_disk;
pub mod volume_rules;
pub mod volume_snap;
pub mod volumes;
// ---- end volumes ----
mod watch;

pub use gate::{agent_error, Gates, Turn, UnixCopyIn, UnixCopyOut, UnixExec};
pub use node_ref::NodeRef;
pub use power::Wait;

use bulkhead_api::{names, Node};
use bulkhead_core::{DomainError, HostGroup, TenantConfig};
use bulkhead_driver::{files, Driver};
use bulkhead_store::{NodeRow, Snapshot, Store};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::services::HostServices;

// The bound on queued lifecycle operations is `config.rate_limits.max_queued` now, and node
// setups share the daemon's host-work slots round-robin across tenants (#12, `crate::fair`).

#[derive(Default)]
pub struct Counters {
    pub creates: AtomicU64,
    pub create_failures: AtomicU64,
    pub deletes: AtomicU64,
    pub execs: AtomicU64,
    pub not_found: AtomicU64,
    /// Requests refused by authorization (403, and the 404 of a node the caller has no role
    /// for).
    pub denied: AtomicU64,
    pub rejected_busy: AtomicU64,
    pub standby_hits: AtomicU64,
    pub standby_misses: AtomicU64,
}

/// One tenant's context.
pub struct Tenant {
    pub host: Arc<HostServices>,
    pub cfg: TenantConfig,
    /// The tenant's name.
    pub name: String,
    /// `<state>/tenants/<tenant>`.
    pub dir: PathBuf,
    /// The agent binary nodes run (installed in the tenant's state).
    pub agent_bin: PathBuf,
    pub uid_base: u32,
    /// The tenant's driver (`hypervisor:`), opened at start.
    pub driver: Arc<dyn Driver>,
    /// Every driver the tenant's groups use, by name (the tenant's own among them).
    drivers: Vec<Arc<dyn Driver>>,
    /// The tenant's state: reads from memory, writes on the store's own thread.
    store: Store,
    // ---- rate limits, fair queues (#12, rate) ----
    /// The tenant's place at the daemon's host-work scheduler (`crate::fair`).
    lane: crate::fair::Lane,
    /// Token buckets and requests in flight (`crate::rate`; applied by `http/admit.rs`).
    pub limits: crate::rate::TenantLimits,
    // ---- end rate limits ----
    pub counters: Counters,
    /// What attaching volumes counted (#13, attach).
    pub attach: attach_counters::AttachCounters,
    /// Persistent nodes a start found stopped with the daemon, to relaunch (#13).
    kept: std::sync::Mutex<Vec<String>>,
    /// The tenant's networking; `None` when every host group has network mode none.
    pub net: Option<Arc<crate::network::TenantNetwork>>,
    pub forwards: crate::forward::Forwards,
    /// Per-node turns at the agent (exec, copy).
    pub gates: Gates,
    /// Background execs, by node (`bg/`, ADR 0016).
    pub bg: crate::bg::BgExecs,
    /// Per-node CPU load averages for stats (`stats.rs`).
    pub loads: loads::Loads,
    pub pool: crate::pool::Pool,
    /// One `wait` per live node on its supervisor's control channel.
    watches: watch::Watch,
    /// Nodes a shutdown, relaunch, suspend or restore is under way for.
    power: power::PowerOps,
    /// Workload identity delivery (`identity.rs`); unset when the feature is off.
    identity: std::sync::OnceLock<crate::identity::Delivery>,
    /// Admission policy and its webhook (#12, policy; `crate::admission`).
    pub admission: crate::admission::Admission,
    // ---- keys (#13): the tenant's data key, unwrapped from the host keyring at start ----
    key: bulkhead_storage::TenantKey,
    // ---- end keys ----
    /// Refused volume attaches by reason (#13, volumes; `volume_attach.rs`).
    pub volume_counters: volume_rules::AttachCounters,
    /// The tenant's event stream (#14, `crate::events`).
    pub events: crate::events::Events,
    /// The tenant's audit trail (#14, `crate::audit`).
    pub audit: crate::audit::Audit,
    /// Usage accounting (#14, part E; `usage.rs`, `crate::usage`).
    pub usage: crate::usage::UsageState,
    /// Node TTL (#15, B): the expiry sweeper (`expiry.rs`).
    pub sweeper: sweeper::Sweeper,
    /// Containers in nodes (#16, B2; `containers.rs`).
    pub containers: container_registry::Containers,
}

/// What a tenant context is made of; the rest starts empty.
pub struct TenantParts {
    pub cfg: TenantConfig,
    pub dir: PathBuf,
    pub agent_bin: PathBuf,
    pub uid_base: u32,
    pub driver: Arc<dyn Driver>,
    /// The drivers host groups name besides the tenant's (`host_groups[].hypervisor`).
    pub other_drivers: Vec<Arc<dyn Driver>>,
    pub store: Store,
    pub net: Option<Arc<crate::network::TenantNetwork>>,
    /// The tenant's data key (#13, keys).
    pub key: bulkhead_storage::TenantKey,
    /// The tenant's audit trail, opened (#14, A).
    pub audit: crate::audit::Audit,
}

impl Tenant {
    pub fn new(host: Arc<HostServices>, p: TenantParts) -> Self {
        let name = p.cfg.tenant.clone();
        let pool = crate::pool::Pool::new(
            host.supervisor_bin.clone(),
            name.clone(),
            p.dir.join("standby"),
        );
        let forwards = crate::forward::Forwards::new(
            p.cfg.conns.forward_max_connections,
            p.cfg.conns.forward_proxy_timeout,
        );
        // #12, rate: the tenant's lane at the host-work scheduler and its request limits
        let lane = host.fair.lane(&name, p.cfg.rate_limits.max_queued);
        let limits = crate::rate::TenantLimits::new(&name, &p.cfg.rate_limits);
        Tenant {
            host,
            name,
            dir: p.dir,
            agent_bin: p.agent_bin,
            uid_base: p.uid_base,
            drivers: std::iter::once(p.driver.clone())
                .chain(p.other_drivers)
                .collect(),
            driver: p.driver,
            store: p.store,
            lane,
            limits,
            counters: Counters::default(),
            attach: Default::default(), // #13, attach
            kept: Default::default(),   // #13, persistent nodes
            net: p.net,
            forwards,
            gates: Gates::default(),
            bg: crate::bg::BgExecs::default(),
            loads: Default::default(),
            pool,
            watches: watch::Watch::default(),
            power: power::PowerOps::default(),
            identity: Default::default(),
            admission: crate::admission::Admission::new(&p.cfg), // admission policy (#12)
            key: p.key,                                          // keys (#13)
            volume_counters: Default::default(),                 // volumes (#13)
            events: crate::events::Events::new(&p.cfg.tenant),   // #14
            usage: Default::default(),                           // #14, part E
            audit: p.audit,                                      // #14, A
            sweeper: Default::default(),                         // #15, B: node TTL
            containers: Default::default(),                      // #16, B2
            cfg: p.cfg,
        }
    }

    /// A lifecycle change the daemon made by itself (reconciliation, OOM kill, expiry): one
    /// audit line (principal `daemon`) and one event of `kind` (#14).
    pub fn by_daemon(&self, action: &str, kind: &str, node: &str, reason: &str) {
        self.audit.record(crate::audit::Record {
            request_id: "daemon".into(),
            principal: "daemon".into(),
            via: "internal".into(),
            tenant: self.name.clone(),
            action: action.into(),
            object: format!("node/{node}"),
            outcome: "allowed".into(),
            reason: reason.into(),
        });
        self.events
            .emit(kind, Some(node), serde_json::json!({ "reason": reason }));
    }

    /// keys (#13): the tenant's data key; everything of the tenant encrypted at rest (secrets,
    /// volumes, persistent layers, commits, snapshots) derives from it. Never logged.
    pub fn key(&self) -> &bulkhead_storage::TenantKey {
        &self.key
    }

    /// The driver of host group `group` (its own `hypervisor`, else the tenant's).
    pub fn driver_for(&self, group: &str) -> &Arc<dyn Driver> {
        self.cfg
            .group(group)
            .and_then(|g| self.drivers.iter().find(|d| d.name() == g.hypervisor))
            .unwrap_or(&self.driver)
    }

    /// A node's directory on the host, by name. Private: outside this module a node is
    /// reached through a [`NodeRef`].
    fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.join("nodes").join(name)
    }

    /// The host path of the node's agent socket.
    pub fn agent_socket(&self, node: &NodeRef) -> PathBuf {
        self.node_dir(node.name()).join(files::AGENT_SOCKET)
    }

    /// The node's console log (what its init and agent printed).
    pub fn console_log(&self, node: &NodeRef) -> PathBuf {
        self.node_dir(node.name()).join(files::CONSOLE_LOG)
    }

    pub fn to_api(row: &NodeRow) -> Node {
        Node {
            hostname: row.name.clone(),
            hostgroup: row.hostgroup.clone(),
            ip: row.ip.clone(),
            ram_bytes: row.ram_bytes,
            cpus: row.cpus,
            created_at: row.created_at.clone(),
            tags: row.tags.clone(),
            arch: std::env::consts::ARCH.into(),
            status: row.status.into(),
            persistent: row.persistent,
            // #15, B: node TTL
            expires_at: row.expiry.map(|e| crate::fsutil::rfc3339(e.at_secs_ceil())),
        }
    }

    /// The tenant's nodes now, in list order (from memory: never waits for SQLite).
    pub fn list(&self) -> Arc<Snapshot> {
        self.store.snapshot()
    }

    /// Whether this tenant has a node of this name (no counting: the authorization layer asks
    /// every tenant).
    pub fn has_node(&self, name: &str) -> bool {
        self.store.get(name).is_some()
    }

    /// The tenant-scoped lookup every node operation starts from.
    pub fn node(&self, name: &str) -> Result<NodeRef, DomainError> {
        if names::validate_label("node", name).is_err() {
            return Err(DomainError::no_node(name));
        }
        match self.store.get(name) {
            Some(r) => Ok(NodeRef::checked(&self.name, r)),
            None => {
                self.counters.not_found.fetch_add(1, Ordering::Relaxed);
                Err(DomainError::no_node(name))
            }
        }
    }

    /// A node of group `group` (a node of another group answers like a missing one).
    pub fn node_in(&self, group: &str, name: &str) -> Result<NodeRef, DomainError> {
        let n = self.node(name)?;
        if n.group() != group {
            return Err(DomainError::no_node(name));
        }
        Ok(n)
    }

    /// A node that is ready to serve exec and copy requests.
    pub fn running_node(&self, name: &str) -> Result<NodeRef, DomainError> {
        let n = self.node(name)?;
        n.row().status.require_agent(name)?;
        Ok(n)
    }

    pub fn group(&self, name: &str) -> Result<&HostGroup, DomainError> {
        self.cfg.group(name).ok_or_else(|| {
            DomainError::not_found(format!(
                "host group {name:?} not found: `GET /hostgroup` lists this tenant's groups"
            ))
        })
    }

    /// Takes a place in the tenant's bounded lifecycle queue, or answers 503 (#12, rate:
    /// `crate::fair`).
    pub fn enqueue(&self) -> Result<crate::fair::Ticket, DomainError> {
        self.lane.admit().map_err(|e| {
            self.counters.rejected_busy.fetch_add(1, Ordering::Relaxed);
            self.limits.busy.fetch_add(1, Ordering::Relaxed);
            e.into()
        })
    }

    /// One of the daemon's host-work slots, served round-robin across tenants, waited for
    /// until the request's `deadline` at most (#12, rate).
    pub async fn host_work(
        &self,
        deadline: std::time::Instant,
    ) -> Result<crate::fair::Permit, DomainError> {
        self.lane.host_work(deadline).await.map_err(|e| {
            if matches!(e, crate::fair::FairError::TimedOut { .. }) {
                self.counters.rejected_busy.fetch_add(1, Ordering::Relaxed);
                self.limits.busy.fetch_add(1, Ordering::Relaxed);
            }
            DomainError::from(e)
        })
    }
}
