//! Wire types of `GET /usage` (#14, part E; docs/detection.md "Usage", ADR 0035): what the
//! tenants' nodes used between `from` and `to`, per tenant or per node. Figures are sums over
//! the sampler's time buckets whose start lies in `[from, to)`.

use serde::{Deserialize, Serialize};

/// What one tenant, or one node, used.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageFigures {
    /// Seconds the node ran (Running or Paused), summed over nodes.
    pub node_seconds: f64,
    /// CPU time of the node's processes (its cgroup's), in seconds.
    pub cpu_seconds: f64,
    /// Memory in use (the cgroup's current charge) times seconds, sampled.
    pub memory_byte_seconds: f64,
    /// The highest memory charge seen: a node's own peak; for a tenant the highest per-bucket
    /// sum of its nodes' peaks (an upper bound of what it held at once).
    pub memory_peak_bytes: u64,
    /// Bytes the node received (from its network, as the host side of its link sends them).
    pub network_rx_bytes: u64,
    /// Bytes the node sent.
    pub network_tx_bytes: u64,
    /// Storage allocated to the node (its layer's size and attached volumes' sizes) times
    /// seconds.
    pub storage_byte_seconds: f64,
    /// Exec requests that started a command in the node (foreground and background).
    pub execs: u64,
}

/// One row of a usage report: a tenant's figures (`group_by=tenant`) or one node's
/// (`group_by=node`; a deleted node keeps its row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    pub tenant: String,
    /// The node's name (`group_by=node` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The node's id, unique even where a name was used again (`group_by=node` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The node no longer exists: its figures are final (`group_by=node` only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(flatten)]
    pub figures: UsageFigures,
}

/// `GET /usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The window asked for, RFC 3339 (`from` inclusive, `to` exclusive); absent: open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// `tenant` or `node`.
    pub group_by: String,
    /// The width of the time buckets figures are kept in: the window's resolution.
    pub bucket_seconds: u64,
    pub usage: Vec<UsageRow>,
}
