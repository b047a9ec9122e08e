//! E2B's control plane (#15, A): `/sandboxes`, `/v2/sandboxes` and a sandbox's lifecycle,
//! each a route of the E2B listener with the `Action` of the node operation it is.

use crate::http::Route;

/// The control plane's routes.
pub fn table() -> Vec<Route> {
    Vec::new()
}
