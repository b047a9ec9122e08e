//! A sandbox's access token and the authenticators of the E2B listener (#15, A; ADR 0036).
//!
//! - [`SandboxAccess`]: an in-sandbox request (the listener has put the sandbox id in
//!   `E2b-Sandbox-Id`, from the header or the host name) must carry `X-Access-Token` equal to
//!   the sandbox's token: `hex(HMAC-SHA256(derive("e2b", "envd-access"), node row id))` with
//!   the tenant's data key. Never stored: recomputed per request; a new node of the same name
//!   has another row id, so another token. Valid: the principal `sandbox:<node>` (a
//!   developer of its tenant, [`Via::Sandbox`]); the listener keeps it to that one node.
//! - [`ApiKey`]: `X-API-KEY` is one of the daemon's API tokens (`e2b_<hex>` as `bulkhead token
//!   create --e2b` prints it, or `bh_…`), checked like a bearer API token.
//!
//! Refusals: a sandbox id no tenant holds answers 502 (what E2B's proxy answers and what the
//! SDKs read as "not running"); a node that exists with a missing or wrong token 401.

use axum::http::HeaderMap;
use bulkhead_core::iam::DEVELOPER;
use bulkhead_core::{Code, DomainError};
use std::sync::Arc;

use crate::app::{App, Daemon};
use crate::auth::authn::{Authenticator, Peer};
use crate::auth::{Principal, Via};
use crate::tenant::node_ref::NodeRef;

/// The header that names the sandbox of an in-sandbox request.
pub const SANDBOX_ID: &str = "e2b-sandbox-id";
/// The header that carries a sandbox's access token.
pub const ACCESS_TOKEN: &str = "x-access-token";
/// The header that carries an E2B API key.
pub const API_KEY: &str = "x-api-key";

/// The access token of `node` in its tenant: lowercase hex of 32 bytes.
pub fn access_token(app: &App, node: &NodeRef) -> String {
    let k = app.tenant.key().derive("e2b", "envd-access");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &k[..]);
    let tag = ring::hmac::sign(&key, node.row().id.to_string().as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// In-sandbox requests, by the sandbox's access token.
pub struct SandboxAccess {
    pub daemon: Arc<Daemon>,
}

impl Authenticator for SandboxAccess {
    fn authenticate(&self, _: &Peer, h: &HeaderMap) -> Result<Option<Principal>, DomainError> {
        let Some(id) = header(h, SANDBOX_ID) else {
            return Ok(None);
        };
        let found = self
            .daemon
            .tenants
            .iter()
            .find_map(|a| a.tenant.node(id).ok().map(|n| (a, n)))
            // A node being deleted (killed, or its timeout passed) is no sandbox any more:
            // the SDKs read 502 as "not running".
            .filter(|(_, n)| n.row().status != bulkhead_core::NodeState::Deleting);
        let Some((app, node)) = found else {
            return Err(DomainError::new(
                Code::AgentUnreachable,
                format!("sandbox {id:?} not found: it was killed or its timeout passed"),
            ));
        };
        let refused = |what: &str| {
            DomainError::new(
                Code::Unauthorized,
                format!("{what} X-Access-Token for sandbox {id:?}: send the envdAccessToken that creating or connecting to it answered"),
            )
        };
        let Some(given) = header(h, ACCESS_TOKEN) else {
            return Err(refused("missing"));
        };
        if !constant_time_eq(given.as_bytes(), access_token(app, &node).as_bytes()) {
            return Err(refused("wrong"));
        }
        let tenant = app.tenant.name.clone();
        let binding = self
            .daemon
            .roles
            .binding(DEVELOPER, Some(&tenant))
            .map_err(|e| DomainError::internal(format!("the developer role: {e}")))?;
        Ok(Some(Principal {
            id: format!("sandbox:{id}"),
            via: Via::Sandbox {
                tenant,
                node: id.to_string(),
            },
            bindings: vec![binding],
            expires_at: None,
        }))
    }
}

/// `X-API-KEY`: an API token of the daemon's store.
pub struct ApiKey {
    pub tokens: crate::auth::tokens::ApiTokens,
}

impl Authenticator for ApiKey {
    fn authenticate(&self, peer: &Peer, h: &HeaderMap) -> Result<Option<Principal>, DomainError> {
        let Some(key) = header(h, API_KEY) else {
            return Ok(None);
        };
        // The same check as a bearer API token (unknown, expired, revoked: 401 saying which).
        let mut as_bearer = HeaderMap::new();
        let v = format!("Bearer {key}").parse().map_err(|_| {
            DomainError::new(
                Code::Unauthorized,
                "X-API-KEY is not a valid header value: send the key `bulkhead token create --e2b` printed",
            )
        })?;
        as_bearer.insert(axum::http::header::AUTHORIZATION, v);
        match self.tokens.authenticate(peer, &as_bearer)? {
            Some(p) => Ok(Some(p)),
            None => Err(DomainError::new(
                Code::Unauthorized,
                "X-API-KEY is not an API key of this daemon: make one with `bulkhead token create --tenant T --role developer --e2b`",
            )),
        }
    }
}
