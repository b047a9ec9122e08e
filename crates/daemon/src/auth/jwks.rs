//! The OIDC issuer's public keys (a JWKS document) and how they stay current, off the request
//! path (ADR 0021).
//!
//! A [`KeySet`] holds only keys bulkhead verifies with: RSA (RS256, 2048 bits or more) and
//! P-256 EC (ES256) signing keys; anything else in the document (encryption keys, other
//! curves, HMAC secrets) is skipped with a log line. [`Jwks`] holds the current set behind a
//! short read lock; requests take an `Arc` of it and never wait for I/O. One background task
//! per source keeps it fresh:
//! - `jwks_file`: read at start (a start error if unreadable or without a usable key), then
//!   re-read whenever its mtime, size or inode changes (checked every [`FILE_POLL`]);
//! - `jwks_url`: fetched with a [`FETCH_TIMEOUT`] (`jwks_fetch.rs`), refreshed every
//!   [`REFRESH`], and early when a token names an unknown `kid`, at most once per
//!   [`MIN_REFETCH`] so junk kids cannot make the daemon hammer the IdP.
//!
//! A refresh that fails (unreachable IdP, bad document) keeps the last good set and logs.
//! The tasks hold only a weak reference: they end when the authenticator is dropped.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::DecodingKey;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

use bulkhead_core::config::JwksSource;

/// How often a `jwks_file`'s metadata is checked for a change.
pub const FILE_POLL: Duration = Duration::from_secs(2);
/// How often a `jwks_url` is fetched again when all is well.
pub const REFRESH: Duration = Duration::from_secs(300);
/// The least time between two fetches, whatever asks for them.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
/// A fetch (connect, TLS, request, body) gives up after this long.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// A JWKS document larger than this is refused.
pub const MAX_DOCUMENT: usize = 1 << 20;
const MAX_KEYS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("oidc key set {source_name}: {message}")]
    Invalid {
        source_name: String,
        message: String,
    },
    #[error("oidc key set {source_name}: {message}")]
    Fetch {
        source_name: String,
        message: String,
    },
}

/// What a key verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rs256,
    Es256,
}

impl KeyKind {
    pub fn alg(self) -> jsonwebtoken::Algorithm {
        match self {
            KeyKind::Rs256 => jsonwebtoken::Algorithm::RS256,
            KeyKind::Es256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

pub struct Key {
    pub kid: Option<String>,
    pub kind: KeyKind,
    pub key: DecodingKey,
}

/// Why no key fits a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The token's `kid` is not in the set.
    UnknownKid,
    /// The key with that `kid` is not for this algorithm.
    WrongKind,
    /// No `kid`, and not exactly one key for the algorithm.
    NoSingleKey(usize),
}

/// The usable keys of one JWKS document.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document, keeping the keys bulkhead verifies with. Refused: not JSON,
    /// no `keys` array, too large, or no usable key at all.
    pub fn parse(doc: &[u8], source_name: &str) -> Result<KeySet, JwksError> {
        let bad = |message: String| JwksError::Invalid {
            source_name: source_name.to_string(),
            message,
        };
        if doc.len() > MAX_DOCUMENT {
            return Err(bad(format!(
                "is larger than {MAX_DOCUMENT} bytes: is this a JWKS document?"
            )));
        }
        let v: serde_json::Value = serde_json::from_slice(doc).map_err(|e| {
            bad(format!(
                "is not JSON ({e}): give a JWKS document {{\"keys\": [...]}}"
            ))
        })?;
        let Some(list) = v.get("keys").and_then(|k| k.as_array()) else {
            return Err(bad(
                "has no \"keys\" array: give a JWKS document {\"keys\": [...]}".into(),
            ));
        };
        let mut keys: Vec<Key> = Vec::new();
        for (i, raw) in list.iter().take(MAX_KEYS).enumerate() {
            match usable(raw) {
                Ok(k) if k.kid.is_some() && keys.iter().any(|x| x.kid == k.kid) => {
                    tracing::warn!(source = source_name, index = i, kid = ?k.kid, "oidc: skipping a key whose kid repeats an earlier one");
                }
                Ok(k) => keys.push(k),
                Err(why) => {
                    tracing::info!(
                        source = source_name,
                        index = i,
                        why,
                        "oidc: skipping a key bulkhead does not verify with"
                    );
                }
            }
        }
        if keys.is_empty() {
            return Err(bad(
                "has no usable key: bulkhead verifies with RSA (RS256, 2048 bits or more) and P-256 (ES256) signing keys"
                    .into(),
            ));
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token signed with `kind`: by `kid`, or without one the only key of that
    /// kind.
    pub fn find(&self, kid: Option<&str>, kind: KeyKind) -> Result<&Key, Lookup> {
        match kid {
            Some(kid) => {
                let k = self
                    .keys
                    .iter()
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or(Lookup::UnknownKid)?;
                if k.kind == kind {
                    Ok(k)
                } else {
                    Err(Lookup::WrongKind)
                }
            }
            None => {
                let mut of_kind = self.keys.iter().filter(|k| k.kind == kind);
                match (of_kind.next(), of_kind.next()) {
                    (Some(k), None) => Ok(k),
                    (None, _) => Err(Lookup::NoSingleKey(0)),
                    (Some(_), Some(_)) => Err(Lookup::NoSingleKey(
                        self.keys.iter().filter(|k| k.kind == kind).count(),
                    )),
                }
            }
        }
    }
}

/// One JWK as a verification key, or why not.
fn usable(raw: &serde_json::Value) -> Result<Key, String> {
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
        return Err("not a signing key (use)".into());
    }
    let alg = jwk.common.key_algorithm;
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            if !matches!(alg, None | Some(KeyAlgorithm::RS256)) {
                return Err(format!("RSA key for {alg:?}, not RS256"));
            }
            use base64::Engine;
            let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.n.trim_end_matches('='))
                .map_err(|_| "RSA modulus is not base64url".to_string())?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 {
                return Err(format!("RSA key of about {bits} bits: 2048 or more needed"));
            }
            KeyKind::Rs256
        }
        AlgorithmParameters::EllipticCurve(p) => {
            if p.curve != EllipticCurve::P256 || !matches!(alg, None | Some(KeyAlgorithm::ES256)) {
                return Err(format!(
                    "EC key on {:?} for {alg:?}, not P-256/ES256",
                    p.curve
                ));
            }
            KeyKind::Es256
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("a shared secret (oct): HMAC is never accepted".into())
        }
        AlgorithmParameters::OctetKeyPair(_) => {
            return Err("an OKP key: EdDSA is not accepted".into())
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("unusable key material: {e}"))?;
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        kind,
        key,
    })
}

/// The current key set of one source, and the wake-up for an early refresh.
pub struct Jwks {
    current: RwLock<Arc<KeySet>>,
    /// Shared with the refresher, which holds the set itself only weakly.
    wake: Arc<Notify>,
    /// `jwks_file` or `jwks_url` and its value, for messages.
    pub source_name: String,
}

impl Jwks {
    /// A fixed key set with no refresher (tests, and the seed of [`Jwks::start`]).
    pub fn fixed(set: KeySet, source_name: &str) -> Arc<Jwks> {
        Arc::new(Jwks {
            current: RwLock::new(Arc::new(set)),
            wake: Arc::new(Notify::new()),
            source_name: source_name.into(),
        })
    }

    /// The current set: a clone of an `Arc` under a read lock held for no longer than that.
    pub fn get(&self) -> Arc<KeySet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set(&self, s: KeySet) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }

    /// A token named a kid the set lacks: ask the refresher for an early look (rate-limited
    /// there; never waits).
    pub fn unknown_kid(&self) {
        self.wake.notify_one();
    }

    /// Loads the source once and starts its refresher. A `jwks_file` that cannot be read or
    /// has no usable key is a start error; a `jwks_url` that cannot be fetched now is logged
    /// and retried in the background (tokens are refused until a fetch succeeds), so that an
    /// IdP outage does not keep the daemon down.
    pub async fn start(src: &JwksSource) -> Result<Arc<Jwks>, JwksError> {
        match src {
            JwksSource::File(p) => {
                let name = format!("jwks_file {}", p.display());
                let (set, stamp) = read_file(p, &name).await?;
                tracing::info!(source = %name, keys = set.len(), "oidc: keys loaded");
                let j = Jwks::fixed(set, &name);
                tokio::spawn(watch_file(Arc::downgrade(&j), p.clone(), stamp));
                Ok(j)
            }
            JwksSource::Url(u) => {
                let name = format!("jwks_url {u}");
                let fetcher = super::jwks_fetch::Fetcher::new(u, FETCH_TIMEOUT, MAX_DOCUMENT)
                    .map_err(|m| JwksError::Fetch {
                        source_name: name.clone(),
                        message: m,
                    })?;
                let first = fetch_set(&fetcher, &name).await;
                let ok = first.is_ok();
                let j = Jwks::fixed(KeySet::default(), &name);
                match first {
                    Ok(s) => {
                        tracing::info!(source = %name, keys = s.len(), "oidc: keys fetched");
                        j.set(s)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "oidc: no keys yet; OIDC tokens are refused until a fetch succeeds (retrying)")
                    }
                }
                tokio::spawn(refresh_url(Arc::downgrade(&j), j.wake.clone(), fetcher, ok));
                Ok(j)
            }
        }
    }
}

type Stamp = (SystemTime, u64, u64);

async fn stamp(p: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = tokio::fs::metadata(p).await?;
    Ok((m.modified()?, m.len(), m.ino()))
}

async fn read_file(p: &Path, name: &str) -> Result<(KeySet, Stamp), JwksError> {
    let bad = |message: String| JwksError::Invalid {
        source_name: name.to_string(),
        message,
    };
    let st = stamp(p)
        .await
        .map_err(|e| bad(format!("cannot be read: {e}")))?;
    let doc = tokio::fs::read(p)
        .await
        .map_err(|e| bad(format!("cannot be read: {e}")))?;
    Ok((KeySet::parse(&doc, name)?, st))
}

async fn watch_file(j: Weak<Jwks>, p: PathBuf, mut last: Stamp) {
    loop {
        tokio::time::sleep(FILE_POLL).await;
        let Some(j) = j.upgrade() else { return };
        match stamp(&p).await {
            Ok(s) if s == last => {}
            Ok(_) => match read_file(&p, &j.source_name).await {
                Ok((set, s)) => {
                    tracing::info!(source = %j.source_name, keys = set.len(), "oidc: key file changed, keys reloaded");
                    j.set(set);
                    last = s;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "oidc: key file changed but is not usable; keeping the last good keys");
                    // Look again at the next change only (or when it becomes readable).
                    if let Ok(s) = stamp(&p).await {
                        last = s;
                    }
                }
            },
            Err(e) => {
                tracing::warn!(source = %j.source_name, error = %e, "oidc: key file unreadable; keeping the last good keys")
            }
        }
    }
}

async fn fetch_set(f: &super::jwks_fetch::Fetcher, name: &str) -> Result<KeySet, JwksError> {
    let doc = f.get().await.map_err(|message| JwksError::Fetch {
        source_name: name.to_string(),
        message,
    })?;
    KeySet::parse(&doc, name)
}

async fn refresh_url(
    j: Weak<Jwks>,
    wake: Arc<Notify>,
    f: super::jwks_fetch::Fetcher,
    mut ok: bool,
) {
    let mut last = Instant::now();
    let mut backoff = Duration::from_secs(2);
    loop {
        let wait = if ok { REFRESH } else { backoff };
        let woken = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = wake.notified() => true,
        };
        if woken {
            // However many unknown kids arrived, at most one fetch per MIN_REFETCH.
            tokio::time::sleep(MIN_REFETCH.saturating_sub(last.elapsed())).await;
        }
        // The authenticator is gone: so is the need for its keys.
        let Some(jj) = j.upgrade() else { return };
        last = Instant::now();
        match fetch_set(&f, &jj.source_name).await {
            Ok(s) => {
                tracing::info!(source = %jj.source_name, keys = s.len(), "oidc: keys refreshed");
                jj.set(s);
                ok = true;
                backoff = Duration::from_secs(2);
            }
            Err(e) => {
                let have = jj.get().len();
                tracing::warn!(error = %e, keys_in_use = have, "oidc: refresh failed; keeping the last good keys");
                ok = false;
                backoff = (backoff * 2).min(REFRESH);
            }
        }
    }
}
