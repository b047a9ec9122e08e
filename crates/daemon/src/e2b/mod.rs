//! E2B's API beside Slicer's (#15): one listener (`config.api.e2b.bind`) that serves E2B's
//! control plane (`/sandboxes`, `/v2/sandboxes`) and, for every node, E2B's in-sandbox API
//! ("envd": Connect-RPC `process.Process` and `filesystem.Filesystem`, `/files`, `/health`,
//! `/envs`) through the node's agent. A sandbox is a node: the sandbox id is the node's name.
//!
//! Requests go through the same pipeline as the daemon's own API (`crate::auth::layer`):
//! E2B's `X-API-KEY` is one of the tenant's API tokens, so E2B callers get the same tenant
//! scoping, roles, quotas, rate limits and audit. In-sandbox requests (named by the
//! `E2b-Sandbox-Id` header or a `<port>-<sandboxID>.<domain>` host) are rewritten to
//! `/envd/{node}/<path>` and authenticated by the sandbox's own access token.

// #15 A (listener, control plane, sandbox records, envd routing and access tokens)
pub mod access;
pub mod bind;
pub mod control;
pub mod control_ops;
#[cfg(test)]
mod control_tests;
pub mod listener;
pub mod sandbox;

use std::collections::BTreeMap;

use crate::app::App;

/// The default environment of a sandbox's processes: the `envVars` it was created with
/// (empty for a node that is no E2B sandbox, or unknown).
pub fn sandbox_env(app: &App, node: &str) -> BTreeMap<String, String> {
    match app.tenant.node(node) {
        Ok(n) => app.tenant.sandbox_env(&n),
        Err(_) => BTreeMap::new(),
    }
}

/// The access token of `node` (what `X-Access-Token` must carry); `None` when the tenant has
/// no such node.
pub fn node_access_token(app: &App, node: &str) -> Option<String> {
    let n = app.tenant.node(node).ok()?;
    Some(access::access_token(app, &n))
}
// #15 A end

pub mod envd; // #15 C and D: the in-sandbox API's handlers
