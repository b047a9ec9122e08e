//! The seam to the storage crate (`bulkhead-storage`, #13) for commits: the tenant's key
//! seals and opens their streams (chunked AES-256-GCM, `TenantKey::seal_stream`/
//! `open_stream`), and `wipe` overwrites what is deleted.

use std::io::{self, Read, Write};
use std::path::Path;

/// A tenant's data key.
pub type Key = bulkhead_storage::TenantKey;

pub fn seal_stream(key: &Key, aad: &[u8], r: impl Read, w: impl Write) -> io::Result<u64> {
    key.seal_stream(aad, r, w)
}

pub fn open_stream(key: &Key, aad: &[u8], r: impl Read, w: impl Write) -> io::Result<u64> {
    key.open_stream(aad, r, w)
}

/// The io error under a wipe's (`NotFound` when there was nothing to wipe).
fn io_of(e: bulkhead_storage::wipe::WipeError) -> io::Error {
    match e {
        bulkhead_storage::wipe::WipeError::Io { source, .. } => source,
        e => io::Error::other(e.to_string()),
    }
}

pub fn wipe_file(p: &Path) -> io::Result<()> {
    bulkhead_storage::wipe::wipe_file(p)
        .map(|_| ())
        .map_err(io_of)
}

pub fn wipe_tree(p: &Path) -> io::Result<()> {
    bulkhead_storage::wipe::wipe_tree(p)
        .map(|_| ())
        .map_err(io_of)
}

/// A tenant key in a fresh keyring, for tests (the keyring wants root-owned files).
#[cfg(test)]
pub fn test_key(dir: &Path, tenant: &str) -> Option<Key> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the keyring needs root");
        return None;
    }
    let kr = bulkhead_storage::Keyring::open(&dir.join("keys")).unwrap();
    Some(kr.tenant(tenant).unwrap())
}
