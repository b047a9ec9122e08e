//! `GET /nodes/stats` and `GET /node/{node}/stats`: Slicer's `SlicerNodeStat` (the node, a
//! `snapshot` of what it uses, an `error` when the figures could not be read) and
//! `SlicerSnapshot`, with the SDKs' field names (camelCase inside the snapshot, as Slicer's
//! Go SDK decodes them). Fields after `diskSpaceUsedPercent` are bulkhead's additions; both
//! SDKs ignore them.

use serde::{Deserialize, Serialize};

/// One node's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStat {
    pub hostname: String,
    pub ip: String,
    pub created_at: String,
    /// `null` when the figures could not be read (then `error` says why).
    pub snapshot: Option<Snapshot>,
    /// Empty when the snapshot is there.
    #[serde(default)]
    pub error: String,
}

/// What a node uses now, as the host sees it (its cgroup, its processes, its interface).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub hostname: String,
    pub arch: String,
    /// RFC 3339.
    pub timestamp: String,
    /// Since the node was created, as a Go duration (`1h2m3s`).
    pub uptime: String,
    pub total_cpus: u32,
    /// The node's memory limit.
    pub total_memory: u64,
    /// Its cgroup's usage without reclaimable page cache.
    pub memory_used: u64,
    pub memory_available: u64,
    pub memory_used_percent: f64,
    /// CPUs busy on average over the last 1, 5 and 15 minutes, from the cgroup's CPU time.
    pub load_avg1: f64,
    pub load_avg5: f64,
    pub load_avg15: f64,
    /// Bytes read from and written to storage.
    pub disk_read_total: f64,
    pub disk_write_total: f64,
    /// Bytes the node received and sent on its interface.
    pub network_read_total: f64,
    pub network_write_total: f64,
    #[serde(rename = "diskIOInflight")]
    pub disk_io_inflight: i64,
    /// Sockets the node's processes hold.
    pub open_connections: i64,
    /// Descriptors the node's processes hold.
    pub open_files: i64,
    pub entropy: i64,
    pub disk_space_total: u64,
    pub disk_space_used: u64,
    pub disk_space_free: u64,
    pub disk_space_used_percent: f64,
    /// bulkhead: CPU time the node used since it started, in seconds.
    pub cpu_usage_seconds: f64,
    /// bulkhead: processes and threads in the node now.
    pub pids: u64,
    /// bulkhead: times the kernel's OOM killer fired in the node.
    pub oom_kills: u64,
}
