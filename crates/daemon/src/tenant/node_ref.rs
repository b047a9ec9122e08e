//! A tenant-checked handle to a node. The only constructor is the tenant context's lookup
//! ([`super::Tenant::node`]), which checks the node belongs to that tenant; every operation on
//! a node (its agent socket, console, forwards, pause, delete) takes a [`NodeRef`], so a path
//! that skipped the check does not compile.

use bulkhead_store::NodeRow;
use std::sync::Arc;

/// A node of one tenant, as its record read at lookup time.
#[derive(Debug, Clone)]
pub struct NodeRef {
    tenant: String,
    row: Arc<NodeRow>,
}

impl NodeRef {
    /// Only the tenant context makes these, after its tenant-scoped lookup.
    pub(super) fn checked(tenant: &str, row: Arc<NodeRow>) -> Self {
        debug_assert_eq!(row.tenant, tenant);
        NodeRef {
            tenant: tenant.to_string(),
            row,
        }
    }
    pub fn name(&self) -> &str {
        &self.row.name
    }
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
    pub fn group(&self) -> &str {
        &self.row.hostgroup
    }
    /// The node's record as it was at lookup.
    pub fn row(&self) -> &NodeRow {
        &self.row
    }
}
