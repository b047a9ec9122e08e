//! The daemon's workload identity signing keys (ADR 0020): ES256 (P-256) key pairs made with
//! ring, each kept as PKCS#8 in `<dir>/identity/<kid>.pk8` (0600, directory 0700) and listed
//! in `<dir>/identity/keys.json` with when it was made and retired.
//!
//! Invariants: exactly one key is current (not retired) and signs every new token; `kid` is the
//! key's RFC 7638 JWK thumbprint, so it is stable and says which key it names; a retired key
//! stays published until `retired_at + ttl + LEEWAY` (every token it signed has expired, and
//! verifiers' clock leeway too) and is deleted from disk at the next start or rotation after
//! that. Files are written to a temporary name and renamed, so a crash never leaves half a key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How long past its tokens' expiry a retired key stays published: verifiers' clock leeway.
pub const LEEWAY_SECS: u64 = 60;
const INDEX: &str = "keys.json";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("identity key {kid} in {}: {why}; move the identity directory away to start with a new key (nodes get new tokens)", dir.display())]
    Bad {
        kid: String,
        dir: PathBuf,
        why: String,
    },
    #[error("generating an identity key failed")]
    Generate,
}

/// One signing key.
pub struct Key {
    pub kid: String,
    /// The uncompressed public point (0x04 | x | y).
    pub public: Vec<u8>,
    pub pkcs8: Vec<u8>,
    /// Seconds since the epoch.
    pub created: u64,
    pub retired_at: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexEntry {
    kid: String,
    created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired_at: Option<u64>,
}

/// The keys of one issuer, oldest first; the last one is current.
pub struct KeyRing {
    dir: PathBuf,
    keys: Vec<Key>,
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> KeyError + 'a {
    move |source| KeyError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// RFC 7638 thumbprint of a P-256 public point: base64url(SHA-256 of the canonical JWK).
pub fn thumbprint(public: &[u8]) -> String {
    let (x, y) = xy(public);
    let canon = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canon.as_bytes(),
    ))
}

/// The base64url x and y of an uncompressed P-256 point.
pub fn xy(public: &[u8]) -> (String, String) {
    let p = public.get(1..).unwrap_or_default();
    let (x, y) = p.split_at(p.len() / 2);
    (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y))
}

fn parse(pkcs8: &[u8]) -> Option<Vec<u8>> {
    let kp = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &SystemRandom::new(),
    )
    .ok()?;
    Some(kp.public_key().as_ref().to_vec())
}

/// Writes `data` to `path` through a new temporary file (0600), then renames it into place.
fn write_private(path: &Path, data: &[u8]) -> Result<(), KeyError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("renaming into", path))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl KeyRing {
    /// Loads the keys under `<dir>/identity/`, drops those whose publication window ended
    /// (`ttl` seconds being the tokens' lifetime), and makes a current key if there is none.
    pub fn open(dir: &Path, ttl: u64, now: u64) -> Result<Self, KeyError> {
        let dir = dir.join("identity");
        crate::fsutil::ensure_dir(&dir, 0o700).map_err(io("creating", &dir))?;
        let index: Vec<IndexEntry> = match std::fs::read(dir.join(INDEX)) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| KeyError::Bad {
                kid: INDEX.into(),
                dir: dir.clone(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(io("reading", &dir.join(INDEX))(e)),
        };
        let mut keys = vec![];
        for e in index {
            let p = dir.join(format!("{}.pk8", e.kid));
            let pkcs8 = std::fs::read(&p).map_err(io("reading", &p))?;
            let bad = |why: &str| KeyError::Bad {
                kid: e.kid.clone(),
                dir: dir.clone(),
                why: why.into(),
            };
            let public = parse(&pkcs8).ok_or_else(|| bad("not a P-256 PKCS#8 key"))?;
            if thumbprint(&public) != e.kid {
                return Err(bad("its kid is not its thumbprint"));
            }
            keys.push(Key {
                kid: e.kid,
                public,
                pkcs8,
                created: e.created,
                retired_at: e.retired_at,
            });
        }
        let mut ring = KeyRing { dir, keys };
        let fresh = ring.keys.last().is_none_or(|k| k.retired_at.is_some());
        if fresh {
            ring.add(now)?;
        }
        ring.prune(ttl, now)?;
        Ok(ring)
    }

    fn save(&self) -> Result<(), KeyError> {
        let index: Vec<IndexEntry> = self
            .keys
            .iter()
            .map(|k| IndexEntry {
                kid: k.kid.clone(),
                created: k.created,
                retired_at: k.retired_at,
            })
            .collect();
        let text = serde_json::to_vec_pretty(&index).unwrap_or_default();
        write_private(&self.dir.join(INDEX), &text)
    }

    /// Makes a new current key (the caller retires the old one first).
    fn add(&mut self, now: u64) -> Result<(), KeyError> {
        let doc =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| KeyError::Generate)?;
        let pkcs8 = doc.as_ref().to_vec();
        let public = parse(&pkcs8).ok_or(KeyError::Generate)?;
        let kid = thumbprint(&public);
        write_private(&self.dir.join(format!("{kid}.pk8")), &pkcs8)?;
        self.keys.push(Key {
            kid,
            public,
            pkcs8,
            created: now,
            retired_at: None,
        });
        self.save()
    }

    /// Retires the current key and makes a new one; returns the new kid.
    pub fn rotate(&mut self, ttl: u64, now: u64) -> Result<String, KeyError> {
        if let Some(k) = self.keys.last_mut() {
            k.retired_at.get_or_insert(now);
        }
        self.add(now)?;
        self.prune(ttl, now)?;
        Ok(self.current().kid.clone())
    }

    /// Deletes the retired keys no token they signed can still be valid for.
    fn prune(&mut self, ttl: u64, now: u64) -> Result<(), KeyError> {
        let before = self.keys.len();
        let mut gone = vec![];
        self.keys.retain(|k| {
            let keep = k.retired_at.is_none_or(|r| r + ttl + LEEWAY_SECS > now);
            if !keep {
                gone.push(k.kid.clone());
            }
            keep
        });
        if self.keys.len() != before {
            self.save()?;
            for kid in gone {
                let _ = std::fs::remove_file(self.dir.join(format!("{kid}.pk8")));
            }
        }
        Ok(())
    }

    /// The key that signs new tokens.
    pub fn current(&self) -> &Key {
        // `open` and `rotate` always leave a current key last.
        self.keys
            .last()
            .expect("a key ring always has a current key")
    }

    /// The keys verifiers may still meet: the current one and retired ones whose tokens may
    /// still be valid.
    pub fn published(&self, ttl: u64, now: u64) -> impl Iterator<Item = &Key> {
        self.keys
            .iter()
            .filter(move |k| k.retired_at.is_none_or(|r| r + ttl + LEEWAY_SECS > now))
    }

    pub fn get(&self, kid: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.kid == kid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_persist_rotate_and_expire() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(tmp.path(), 600, 1000).unwrap();
        let first = ring.current().kid.clone();
        assert_eq!(first.len(), 43, "a base64url SHA-256");
        let f = tmp.path().join(format!("identity/{first}.pk8"));
        assert_eq!(
            std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let d = tmp.path().join("identity");
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        drop(ring);
        // The same key after a restart.
        let mut ring = KeyRing::open(tmp.path(), 600, 1100).unwrap();
        assert_eq!(ring.current().kid, first);
        let second = ring.rotate(600, 1200).unwrap();
        assert_ne!(second, first);
        let kids: Vec<_> = ring.published(600, 1200).map(|k| k.kid.clone()).collect();
        assert_eq!(kids, [first.clone(), second.clone()]);
        // Published until retired_at + ttl + leeway, then gone from disk at the next start.
        let end = 1200 + 600 + LEEWAY_SECS;
        assert_eq!(ring.published(600, end - 1).count(), 2);
        assert_eq!(ring.published(600, end).count(), 1);
        drop(ring);
        let ring = KeyRing::open(tmp.path(), 600, end).unwrap();
        assert_eq!(ring.current().kid, second);
        assert!(ring.get(&first).is_none());
        assert!(!f.exists());
    }

    #[test]
    fn a_tampered_key_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(tmp.path(), 600, 1000).unwrap();
        let kid = ring.current().kid.clone();
        drop(ring);
        let other = KeyRing::open(&tmp.path().join("other"), 600, 1000).unwrap();
        std::fs::copy(
            tmp.path()
                .join(format!("other/identity/{}.pk8", other.current().kid)),
            tmp.path().join(format!("identity/{kid}.pk8")),
        )
        .unwrap();
        let e = KeyRing::open(tmp.path(), 600, 1000)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("thumbprint"), "{e}");
    }
}
