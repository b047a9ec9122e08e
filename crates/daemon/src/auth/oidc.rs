//! OIDC: a bearer JWT from the configured issuer becomes a principal with the bindings its
//! roles claim names (ADR 0021).
//!
//! Invariants:
//! - No I/O here: keys come from [`Jwks::get`] (an `Arc` under a short read lock); an unknown
//!   `kid` only wakes the refresher.
//! - Only RS256 and ES256 verify; `none`, every HMAC and anything else are refused by name
//!   before any key is looked at, so a public key can never be used as an HMAC secret.
//! - Exact `iss`, `aud` containing the configured audience, `exp` (required) and `nbf`/`iat`
//!   (when present) against the clock with the configured leeway; `sub` required.
//! - A JWT whose (unverified) `iss` is another issuer is not this authenticator's: `Ok(None)`,
//!   so the daemon's own workload tokens reach their authenticator further down the chain; no
//!   authenticator accepting it, the chain answers 401.
//! - The principal gets exactly the bindings of the roles claim that parse; unknown roles are
//!   skipped with a log line; none at all is a 401 naming the claim.
//! - Messages never contain the token.
//! - A verified token is remembered (by its SHA-256, at most [`CACHE_MAX`]) with its
//!   principal, its `exp` and the key set it verified against, so a client's repeated
//!   requests cost a hash, not a signature check. A hit still checks `exp` against the
//!   clock, and a new key set (rotation, a removed key) invalidates every entry.

use axum::http::HeaderMap;
use base64::Engine;
use bulkhead_core::config::OidcConfig;
use bulkhead_core::{Code, DomainError};
use jsonwebtoken::errors::ErrorKind;
use serde::Deserialize;
use std::sync::Arc;

use super::authn::{bearer, Authenticator, Peer};
use super::jwks::{Jwks, JwksError, KeyKind, Lookup};
use super::{Principal, Roles, Via};

/// A token longer than this is refused without parsing.
const MAX_TOKEN: usize = 16 * 1024;
/// Entries of the roles claim looked at.
const MAX_BINDINGS: usize = 64;
/// Verified tokens remembered; when full, the cache starts over.
pub const CACHE_MAX: usize = 1024;

/// A verified token: who it is, until when, and under which key set.
struct Verified {
    principal: Principal,
    exp: u64,
    keys: Arc<super::jwks::KeySet>,
}

pub struct Oidc {
    issuer: String,
    audience: String,
    roles_claim: String,
    leeway: u64,
    roles: Arc<Roles>,
    keys: Arc<Jwks>,
    cache: std::sync::Mutex<std::collections::HashMap<[u8; 32], Verified>>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

fn refuse(msg: impl std::fmt::Display) -> DomainError {
    DomainError::new(Code::Unauthorized, format!("oidc token refused: {msg}"))
}

/// Whether a bearer credential has a JWT's shape: three dot-separated base64url parts (the
/// last may be empty, as in `alg: none`).
pub fn looks_like_jwt(t: &str) -> bool {
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && t.bytes()
            .all(|b| b == b'.' || b == b'-' || b == b'_' || b.is_ascii_alphanumeric())
}

fn b64_json<T: serde::de::DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Oidc {
    /// Loads the issuer's keys and starts their refresher (`jwks.rs`).
    pub async fn start(cfg: &OidcConfig, roles: Arc<Roles>) -> Result<Oidc, JwksError> {
        let keys = Jwks::start(&cfg.jwks).await?;
        Ok(Oidc::with_keys(cfg, roles, keys))
    }

    pub fn with_keys(cfg: &OidcConfig, roles: Arc<Roles>, keys: Arc<Jwks>) -> Oidc {
        Oidc {
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            roles_claim: cfg.roles_claim.clone(),
            leeway: cfg.leeway.as_secs(),
            roles,
            keys,
            cache: Default::default(),
        }
    }

    /// Verifies `token` at time `now` (seconds since the epoch).
    pub fn verify(&self, token: &str, now: u64) -> Result<Option<Principal>, DomainError> {
        if !looks_like_jwt(token) {
            return Ok(None);
        }
        if token.len() > MAX_TOKEN {
            return Err(refuse(format!("longer than {MAX_TOKEN} bytes")));
        }
        let mut digest = [0u8; 32];
        digest.copy_from_slice(
            ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref(),
        );
        let keys = self.keys.get();
        if let Some(p) = self.cached(&digest, &keys, now)? {
            return Ok(Some(p));
        }
        let mut parts = token.split('.');
        let (h, p) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let (Some(header), Some(claims)) =
            (b64_json::<RawHeader>(h), b64_json::<serde_json::Value>(p))
        else {
            return Err(refuse(
                "its header or claims are not base64url JSON: send the IdP's token unchanged",
            ));
        };
        // Whose token is it? Another issuer's (the daemon's own workload tokens, say) is not ours.
        if claims.get("iss").and_then(|v| v.as_str()) != Some(self.issuer.as_str()) {
            tracing::debug!(
                "oidc: a JWT from another issuer; leaving it to the next authenticator"
            );
            return Ok(None);
        }
        let kind = match header.alg.as_deref() {
            Some("RS256") => KeyKind::Rs256,
            Some("ES256") => KeyKind::Es256,
            Some(other) => {
                let shown: String = other.chars().take(16).collect();
                return Err(refuse(format!(
                    "algorithm {shown:?} is not accepted: bulkhead verifies RS256 and ES256 only (never none or HMAC)"
                )));
            }
            None => return Err(refuse("its header has no alg")),
        };
        if header.crit.is_some() {
            return Err(refuse(
                "its header has crit extensions, which bulkhead does not understand",
            ));
        }
        let kid = header.kid.as_deref();
        let shown_kid: String = kid.unwrap_or("").chars().take(64).collect();
        let key = match keys.find(kid, kind) {
            Ok(k) => k,
            Err(Lookup::UnknownKid) => {
                self.keys.unknown_kid();
                return Err(refuse(format!(
                    "no key with kid {shown_kid:?} in {} (a new key is looked for within seconds; retry shortly)",
                    self.keys.source_name
                )));
            }
            Err(Lookup::WrongKind) => {
                return Err(refuse(format!(
                    "key {shown_kid:?} is not a {:?} key",
                    kind.alg()
                )))
            }
            Err(Lookup::NoSingleKey(n)) => {
                return Err(refuse(format!(
                    "no kid in its header, and {n} {:?} keys in {}: the IdP must name the key",
                    kind.alg(),
                    self.keys.source_name
                )))
            }
        };
        let mut v = jsonwebtoken::Validation::new(kind.alg());
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        if let Err(e) = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &v) {
            return Err(refuse(match e.kind() {
                ErrorKind::InvalidSignature => {
                    format!("its signature does not verify with key {shown_kid:?}")
                }
                ErrorKind::ExpiredSignature => {
                    "it has expired (exp): get a new one from the IdP".into()
                }
                ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".into(),
                ErrorKind::InvalidIssuer => format!("its issuer is not {:?}", self.issuer),
                ErrorKind::InvalidAudience => {
                    format!("its audience (aud) does not include {:?}", self.audience)
                }
                ErrorKind::MissingRequiredClaim(c) => format!("it has no {c} claim"),
                ErrorKind::InvalidAlgorithm => {
                    format!("key {shown_kid:?} cannot verify {:?}", kind.alg())
                }
                _ => "it cannot be verified (malformed signature or claims)".into(),
            }));
        }
        // Verified: the claims peeked at above are the signed ones. Times are whole seconds
        // (RFC 7519 NumericDate); one that is not cannot be checked, so it is refused.
        for c in ["exp", "nbf", "iat"] {
            if claims.get(c).is_some_and(|v| v.as_u64().is_none()) {
                return Err(refuse(format!(
                    "its {c} claim is not a whole number of seconds since 1970"
                )));
            }
        }
        if let Some(iat) = claims.get("iat").and_then(|v| v.as_u64()) {
            if iat > now.saturating_add(self.leeway) {
                return Err(refuse("it was issued in the future (iat)"));
            }
        }
        let subject = match claims.get("sub").and_then(|v| v.as_str()) {
            Some(s) if !s.is_empty() && s.len() <= 255 => s.to_string(),
            _ => {
                return Err(refuse(
                    "its sub claim is not a string of 1 to 255 characters",
                ))
            }
        };
        let bindings = self.bindings(&claims, &subject)?;
        let principal = Principal {
            expires_at: claims.get("exp").and_then(|v| v.as_u64()),
            id: format!("oidc:{subject}"),
            via: Via::Oidc {
                issuer: self.issuer.clone(),
                subject,
            },
            bindings,
        };
        if let Some(exp) = claims.get("exp").and_then(|v| v.as_u64()) {
            let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if c.len() >= CACHE_MAX {
                c.clear();
            }
            c.insert(
                digest,
                Verified {
                    principal: principal.clone(),
                    exp,
                    keys,
                },
            );
        }
        Ok(Some(principal))
    }

    /// A token verified before under the current key set: its principal, or the expiry
    /// refusal once its time is up. `None`: not remembered (or under older keys).
    fn cached(
        &self,
        digest: &[u8; 32],
        keys: &Arc<super::jwks::KeySet>,
        now: u64,
    ) -> Result<Option<Principal>, DomainError> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let Some(v) = c.get(digest) else {
            return Ok(None);
        };
        if !Arc::ptr_eq(&v.keys, keys) {
            c.remove(digest);
            return Ok(None);
        }
        if v.exp.saturating_add(self.leeway) < now {
            c.remove(digest);
            return Err(refuse("it has expired (exp): get a new one from the IdP"));
        }
        Ok(Some(v.principal.clone()))
    }

    /// The roles claim: a top-level claim of exactly that name, else a dotted path.
    fn roles_value<'a>(&self, claims: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        if let Some(v) = claims.get(&self.roles_claim) {
            return Some(v);
        }
        self.roles_claim
            .split('.')
            .try_fold(claims, |v, k| v.get(k))
    }

    fn bindings(
        &self,
        claims: &serde_json::Value,
        subject: &str,
    ) -> Result<Vec<super::Binding>, DomainError> {
        let c = &self.roles_claim;
        let Some(v) = self.roles_value(claims) else {
            return Err(refuse(format!(
                "it has no {c:?} claim: the IdP must send the caller's role bindings there, e.g. [\"developer@TENANT\"]"
            )));
        };
        let Some(list) = v.as_array() else {
            return Err(refuse(format!(
                "its {c:?} claim is not an array of strings such as \"developer@TENANT\""
            )));
        };
        let mut out = Vec::new();
        for entry in list.iter().take(MAX_BINDINGS) {
            let Some(s) = entry.as_str() else {
                tracing::warn!(subject, claim = %c, "oidc: skipping a roles claim entry that is not a string");
                continue;
            };
            match self.roles.parse_binding(s) {
                Ok(b) if !out.contains(&b) => out.push(b),
                Ok(_) => {}
                Err(why) => {
                    tracing::warn!(subject, claim = %c, entry = s, why, "oidc: skipping an unusable binding")
                }
            }
        }
        if out.is_empty() {
            return Err(refuse(format!(
                "its {c:?} claim names no known role: give entries such as \"developer@TENANT\" or \"viewer\""
            )));
        }
        Ok(out)
    }
}

impl Authenticator for Oidc {
    fn authenticate(
        &self,
        _: &Peer,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, DomainError> {
        let Some(t) = bearer(headers) else {
            return Ok(None);
        };
        let r = self.verify(t, now());
        match &r {
            Ok(Some(p)) => tracing::debug!(principal = %p.id, "oidc: authenticated"),
            Err(e) => tracing::info!(error = %e.message, "oidc: refused"),
            Ok(None) => {}
        }
        r
    }
}

#[cfg(test)]
#[path = "oidc_tests.rs"]
mod tests;
