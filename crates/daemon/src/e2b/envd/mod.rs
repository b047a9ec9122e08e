//! E2B's in-sandbox API ("envd"), served by the daemon for every node through its agent:
//! nothing new listens inside a node. Every route here is under `/envd/{node}/` (the E2B
//! listener rewrites in-sandbox requests to it, `super`), so the authorization layer resolves
//! the node's tenant and handlers take [`crate::http::body::Scoped`] like any node route.

use crate::http::Route;

// #15 C: process.Process (Connect-RPC)
// #15 C end

// #15 D: filesystem.Filesystem (Connect-RPC), /files, /health, /envs, /metrics, /init
// #15 D end

/// Every in-sandbox route, for the E2B listener's route table.
pub fn table() -> Vec<Route> {
    #[allow(unused_mut)]
    let mut t: Vec<Route> = Vec::new();
    // #15 C
    // #15 C end
    // #15 D
    // #15 D end
    t
}
