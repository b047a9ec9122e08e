//! The records of a node: [`NodeRow`] as stored, [`NewNode`] as a create gives it, and the
//! list order's key (host group, creation time, name) that the index and cursors share.

use bulkhead_core::NodeState;

use crate::id::NodeId;

/// A node as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    /// Assigned at insert, never reused (the name may be, with `hostname`).
    pub id: NodeId,
    pub tenant: String,
    pub name: String,
    pub hostgroup: String,
    pub status: NodeState,
    pub ip: String,
    pub cpus: u32,
    pub ram_bytes: u64,
    pub tags: Vec<String>,
    pub persistent: bool,
    pub created_at: String,
    /// The node's cgroup id, once chosen (the supervisor's `spec.json` names the same one).
    pub cgroup: Option<String>,
    /// The daemon's record of the node's network (JSON, the daemon's format); `None` for a
    /// node without one.
    pub network: Option<String>,
    /// The node's port forwards (a JSON array, the daemon's format).
    pub forwards: String,
    /// The script run once inside the node at its first start, if any.
    pub userdata: Option<String>,
    /// The userdata's exit code once it ended (128 + signal when a signal ended it).
    pub userdata_exit: Option<i32>,
    /// The node's storage size in bytes (its host group's `storage_size` when it was made;
    /// quotas count it). `None` for nodes made before schema version 4.
    pub storage_bytes: Option<u64>,
    /// The create request that made the node, normalized (defaults applied), as the daemon's
    /// JSON: what the conflict rule compares a repeated create with. `None` for nodes made
    /// before schema version 4.
    pub spec: Option<String>,
    /// #15 node TTL (B): when the node's timeout passes and what then; `None` without one.
    pub expiry: Option<bulkhead_core::Expiry>,
}

/// What a create records; the store adds the id and the tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNode {
    pub name: String,
    pub hostgroup: String,
    pub status: NodeState,
    pub ip: String,
    pub cpus: u32,
    pub ram_bytes: u64,
    pub tags: Vec<String>,
    pub persistent: bool,
    pub created_at: String,
    pub network: Option<String>,
    pub userdata: Option<String>,
    pub storage_bytes: Option<u64>,
    pub spec: Option<String>,
}

/// The list order's key of a row.
pub(crate) fn key(r: &NodeRow) -> (&str, &str, &str) {
    (&r.hostgroup, &r.created_at, &r.name)
}
