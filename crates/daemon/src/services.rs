//! Host-wide services: what every tenant a daemon serves shares — the cgroup hierarchy, the
//! driver registry (each tenant opens its own driver from it), the supervisor binary, the
//! API listener's counters and the workload identity issuer. Nothing tenant-specific lives
//! here (see `tenant/`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bulkhead_driver::Registry;
use bulkhead_sandbox::Cgroups;

pub struct HostServices {
    pub cgroups: Cgroups,
    /// The drivers of this build, by config name (`bulkhead::drivers`).
    pub drivers: Arc<Registry>,
    /// `bulkhead-supervisor`, started once per node (or ahead of time as a standby).
    pub supervisor_bin: PathBuf,
    /// What the API listener has done (open, rejected, timed-out connections).
    pub conn_stats: Arc<crate::serve::ConnStats>,
    pub started: Instant,
    /// The workload identity issuer (`identity/`, ADR 0020); `None` when it is off.
    pub identity: Option<Arc<crate::identity::Identity>>,
    /// Dedicated cores and the daemon's protected cgroup (`cores.rs`, #12 noisy neighbours).
    pub cores: crate::cores::Cores,
    /// Host-work slots shared round-robin by the tenants (#12, rate; `fair.rs`).
    pub fair: Arc<crate::fair::Fair>,
    /// The host keyring (#13, keys): the master key and every tenant's wrapped data key
    /// (`<state>/keys`, or `config.storage.master_key`'s directory). Opened at start.
    pub keyring: Arc<bulkhead_storage::Keyring>,
    /// What protects tenant data at rest here (#13): probed once at start, in `GET /info`.
    pub protection: bulkhead_storage::probe::Protection,
    /// The daemon's binaries and config as hashed at start (#14, `events/integrity.rs`).
    pub integrity: Arc<crate::events::integrity::Integrity>,
}
