//! The daemon's issuer: its config and its key ring behind a lock, and what the rest of the
//! daemon asks of it (mint, verify for the API, the JWKS and discovery documents, rotate).

use bulkhead_core::config::identity::{WorkloadIdentityConfig, API_AUDIENCE};
use serde_json::Value;
use std::path::Path;
use std::sync::Mutex;

use super::keys::{now_secs, KeyError, KeyRing};
use super::mint::{self, Claims, TokenError};

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
