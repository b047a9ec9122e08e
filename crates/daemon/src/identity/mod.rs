//! Workload identity (ADR 0020): the daemon is an issuer of short-lived, audience-bound JWTs,
//! one per node, which the node finds at [`TOKEN_PATH`] on a tmpfs of its own.
//!
//! ```text
//! keys.rs       ES256 signing keys on disk (0600), kid = JWK thumbprint, rotation window
//! mint.rs       a node's token, verification, the JWKS and discovery documents
//! refresher.rs  per tenant: push a fresh token to every running node at ttl/2, retry soon
//! ```
//! [`Identity`] is daemon-wide (one issuer, one key ring); the tenant side of delivery
//! (through the node's agent) is `tenant/identity.rs`, the API's authenticator
//! `auth/workload.rs`, the routes `http/identity.rs`. Nothing here knows a tenant's nodes.

pub mod keys;
pub mod mint;
pub mod refresher;

use bulkhead_core::config::identity::{WorkloadIdentityConfig, API_AUDIENCE};
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;

pub use keys::{now_secs, KeyError, KeyRing};
pub use mint::{Claims, TokenError};
pub use refresher::{Refresher, Target};

/// Where a node finds its token (a tmpfs the node's init mounts: jail `setup.rs`, microVM
/// `agent/src/guest.rs`).
pub const TOKEN_DIR: &str = "/run/bulkhead/identity";
pub const TOKEN_PATH: &str = "/run/bulkhead/identity/token";

/// The daemon's issuer: its config and its keys.
pub struct Identity {
    pub cfg: WorkloadIdentityConfig,
    ring: Mutex<KeyRing>,
}

impl Identity {
    /// Opens (or makes) the keys under `<dir>/identity/`.
    pub fn open(cfg: WorkloadIdentityConfig, dir: &Path) -> Result<Self, KeyError> {
        let ring = KeyRing::open(dir, cfg.ttl.as_secs(), now_secs())?;
        Ok(Identity {
            cfg,
            ring: Mutex::new(ring),
        })
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, KeyRing> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn ttl(&self) -> u64 {
        self.cfg.ttl.as_secs()
    }

    /// A fresh token for `node` of `tenant`, signed with the current key.
    pub fn mint(&self, tenant: &str, node: &str) -> Result<(String, Claims), TokenError> {
        let ring = self.ring();
        mint::mint(
            &ring,
            &self.cfg.issuer,
            &self.cfg.audiences,
            self.ttl(),
            now_secs(),
            tenant,
            node,
        )
    }

    /// Whether `token` claims to be ours (its `iss`, unverified).
    pub fn claims_ours(&self, token: &str) -> bool {
        mint::peek_issuer(token).is_some_and(|i| i == self.cfg.issuer)
    }

    /// Verifies a token presented to the bulkhead API (`aud` must hold `bulkhead`).
    pub fn verify_for_api(&self, token: &str) -> Result<Claims, TokenError> {
        let ring = self.ring();
        mint::verify(
            &ring,
            &self.cfg.issuer,
            API_AUDIENCE,
            self.ttl(),
            now_secs(),
            token,
        )
    }

    pub fn jwks(&self) -> Value {
        mint::jwks(&self.ring(), self.ttl(), now_secs())
    }

    pub fn discovery(&self) -> Value {
        mint::discovery(&self.cfg.issuer)
    }

    /// Makes a new current key; the old one stays published until its tokens expired.
    pub fn rotate(&self) -> Result<String, KeyError> {
        let kid = self.ring().rotate(self.ttl(), now_secs())?;
        tracing::info!(kid = %kid, "workload identity key rotated");
        Ok(kid)
    }

    pub fn current_kid(&self) -> String {
        self.ring().current().kid.clone()
    }
}
