//! `config.storage` (#13, secrets and keys): where the host's keyring lives. The keyring (the
//! host master key `master.key` and the tenants' wrapped data keys under `tenants/`) is one
//! directory, by default `<state_dir>/keys`; `storage.master_key: /path/to/master.key` moves
//! it (the file's directory becomes the keyring's, e.g. a mount of its own).
//!
//! Invariant: a config without `storage` keeps the default, so every existing config works.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::error::{key_err, ConfigError};

/// The master key's file name inside the keyring directory (`bulkhead_storage::keys`).
pub const MASTER_KEY_FILE: &str = "master.key";

/// `config.storage` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// bulkhead: the host master key file (default `<state_dir>/keys/master.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<PathBuf>,
}

/// `config.storage`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageConfig {
    /// The keyring directory when the config moved it (`storage.master_key`'s directory).
    pub keys_dir: Option<PathBuf>,
}

impl StorageConfig {
    pub fn from_raw(raw: Option<&RawStorage>) -> Result<Self, ConfigError> {
        let Some(p) = raw.and_then(|r| r.master_key.as_ref()) else {
            return Ok(StorageConfig::default());
        };
        let bad = |m: String| key_err("config.storage.master_key", m);
        if !p.is_absolute() {
            return Err(bad(format!(
                "{} is not an absolute path: write e.g. /etc/bulkhead/keys/{MASTER_KEY_FILE}",
                p.display()
            )));
        }
        if p.file_name().and_then(|n| n.to_str()) != Some(MASTER_KEY_FILE) {
            return Err(bad(format!(
                "{} must be named {MASTER_KEY_FILE}: its directory holds the whole keyring (the master key and tenants/), e.g. /etc/bulkhead/keys/{MASTER_KEY_FILE}",
                p.display()
            )));
        }
        let dir = p.parent().filter(|d| *d != Path::new("/")).ok_or_else(|| {
            bad("the keyring needs a directory of its own, not /: e.g. /etc/bulkhead/keys/master.key".into())
        })?;
        Ok(StorageConfig {
            keys_dir: Some(dir.to_path_buf()),
        })
    }

    /// The keyring directory for a daemon whose state is in `state_root`.
    pub fn keys_dir(&self, state_root: &Path) -> PathBuf {
        self.keys_dir
            .clone()
            .unwrap_or_else(|| state_root.join("keys"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: &str) -> Result<StorageConfig, ConfigError> {
        StorageConfig::from_raw(Some(&RawStorage {
            master_key: Some(p.into()),
        }))
    }

    #[test]
    fn default_and_moved_keyring() {
        let d = StorageConfig::from_raw(None).unwrap();
        assert_eq!(
            d.keys_dir(Path::new("/var/lib/bulkhead")),
            Path::new("/var/lib/bulkhead/keys")
        );
        let m = parse("/etc/bulkhead/keys/master.key").unwrap();
        assert_eq!(m.keys_dir(Path::new("/x")), Path::new("/etc/bulkhead/keys"));
        for bad in ["keys/master.key", "/etc/bulkhead/key.bin", "/master.key"] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("config.storage.master_key"), "{bad}: {e}");
        }
    }
}
