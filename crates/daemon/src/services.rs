//! Host-wide services: what every tenant a daemon serves shares — the cgroup hierarchy, the
//! compiled seccomp filters, the supervisor binary, the microVM runtime, and the API
//! listener's counters. Nothing tenant-specific lives here (see `tenant/`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bulkhead_jail::Cgroups;

pub struct HostServices {
    pub cgroups: Cgroups,
    /// The node seccomp filters, compiled at start, as [`bulkhead_jail::seccomp::encode`]d BPF.
    pub seccomp: Vec<Vec<u64>>,
    /// `bulkhead-supervisor`, started once per node (or ahead of time as a standby).
    pub supervisor_bin: PathBuf,
    /// The microVM driver, when `hypervisor: qemu`.
    pub vm: Option<Arc<crate::vmdriver::VmRuntime>>,
    /// What the API listener has done (open, rejected, timed-out connections).
    pub conn_stats: Arc<crate::serve::ConnStats>,
    pub started: Instant,
}
