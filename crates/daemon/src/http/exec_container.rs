//! #16 B1: `container=<cid>` of `POST /vm/{node}/exec`: the root of a container of the node
//! (B2's per-node container registry), which the command runs chrooted in.

use bulkhead_core::DomainError;

use super::body::TenantApp;

/// The root directory (inside the node) of container `cid` of `node`; 404 `not_found` naming
/// the container when the node has no such container.
pub fn container_root(app: &TenantApp, node: &str, cid: &str) -> Result<String, DomainError> {
    // #16 B1 → B2: the one call into B2's container registry.
    app.tenant.container_root(node, cid)
}
