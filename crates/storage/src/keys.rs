//! The host keyring: one master key per host, one data key per tenant wrapped under it, and
//! the keys derived from a tenant's data key (fscrypt keys of volumes and persistent layers,
//! the sealing key of secrets and of commit/snapshot streams).
//!
//! Layout under `keys_dir` (0700, root):
//! - `master.key`: 32 random bytes, 0600, root-owned; refused otherwise.
//! - `master.key.new`: only while a rotation runs or after one crashed (see `rotate.rs`).
//! - `tenants/<tenant>.key`: JSON `{version, tenant, master_key_id, nonce, ciphertext}`: the
//!   tenant's 32-byte data key sealed with AES-256-GCM under the master key, AAD = the tenant
//!   name, so a file renamed to another tenant does not open.
//!
//! Invariants: every key file is written atomically (tmp + fsync + rename + fsync of the
//! directory); key bytes live only in [`Secret`]s, which zero themselves on drop; a tenant file
//! names the master key it is wrapped under (`master_key_id`), so it opens at every point of a
//! rotation (both master keys are loaded while `master.key.new` exists).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;
use serde::{Deserialize, Serialize};

use crate::fsutil::{create_dir, hex, unhex, write_atomic};
use crate::secret::Secret;

/// The version byte in front of everything `seal` makes, and of tenant key files.
pub(crate) const SEAL_VERSION: u8 = 1;
const TAG_LEN: usize = 16;
pub(crate) const MASTER_FILE: &str = "master.key";
pub(crate) const MASTER_NEW_FILE: &str = "master.key.new";
pub(crate) const TENANTS_DIR: &str = "tenants";
pub(crate) const LOCK_FILE: &str = ".lock";

/// What can go wrong with keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {what}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is readable or writable by group or others (mode {mode:o}); run `chmod {want:o} {path}`")]
    Permissions { path: PathBuf, mode: u32, want: u32 },
    #[error("{path} is owned by uid {uid}, not root; run `chown root:root {path}`")]
    Owner { path: PathBuf, uid: u32 },
    #[error("{path} is {len} bytes, a master key is 32; restore it from a backup")]
    MasterSize { path: PathBuf, len: u64 },
    #[error("{path} is missing but tenant keys exist under it; restore the master key from a backup (a new one would make every tenant key unreadable)")]
    MasterMissing { path: PathBuf },
    #[error("invalid tenant name {0:?} for a key file: use letters, digits, '.', '_' or '-', not starting with '.'")]
    TenantName(String),
    #[error("{path} is not a valid tenant key file: {why}")]
    TenantFile { path: PathBuf, why: String },
    #[error("{path} is wrapped under master key {id}, which is not in this keyring; restore that master key")]
    UnknownMaster { path: PathBuf, id: String },
    #[error("the sealed data does not open with this key (wrong key, wrong context or edited)")]
    Open,
    #[error("the sealed data is too short or has an unknown version")]
    Format,
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KeyError {
    let path = path.to_path_buf();
    move |source| KeyError::Io { what, path, source }
}

/// A master key and its id (hex of the first 8 bytes of HKDF(master, "bulkhead key id")).
pub(crate) struct Master {
    pub(crate) id: String,
    pub(crate) key: Secret<32>,
}

impl Master {
    pub(crate) fn new(key: Secret<32>) -> Master {
        let mut idb = Secret::<8>::zeroed();
        hkdf_fill(key.expose(), b"bulkhead key id", &mut idb[..]);
        Master {
            id: hex(idb.expose()),
            key,
        }
    }
}

/// The on-disk form of a wrapped tenant key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantFile {
    pub(crate) version: u8,
    pub(crate) tenant: String,
    pub(crate) master_key_id: String,
    pub(crate) nonce: String,
    pub(crate) ciphertext: String,
}

/// The host keyring (see the module header for the layout).
pub struct Keyring {
    dir: PathBuf,
    /// `master.key` first, then `master.key.new` if a rotation is pending.
    masters: Mutex<Vec<Master>>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("dir", &self.dir).finish()
    }
}

impl Keyring {
    /// Opens (creating on first use) the keyring in `keys_dir`.
    pub fn open(keys_dir: &Path) -> Result<Keyring, KeyError> {
        prepare_dirs(keys_dir)?;
        let _lock = lock(keys_dir)?;
        let master = keys_dir.join(MASTER_FILE);
        let pending = keys_dir.join(MASTER_NEW_FILE);
        if !master.exists() {
            if pending.exists() {
                // Cannot happen with our ordering, but never lose a key: adopt the new one.
                fs::rename(&pending, &master).map_err(io_err("adopting", &pending))?;
            } else if has_tenant_files(keys_dir)? {
                return Err(KeyError::MasterMissing { path: master });
            } else {
                write_atomic(&master, Secret::<32>::random().expose(), 0o600)
                    .map_err(io_err("writing", &master))?;
            }
        }
        let masters = load_masters(keys_dir)?;
        Ok(Keyring {
            dir: keys_dir.to_path_buf(),
            masters: Mutex::new(masters),
        })
    }

    /// The keys directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The id of the master key new tenant keys are wrapped under.
    pub fn master_key_id(&self) -> String {
        self.masters.lock().expect("keyring lock")[0].id.clone()
    }

    /// The tenant's key, created (random, wrapped, written atomically) on first use.
    pub fn tenant(&self, tenant: &str) -> Result<TenantKey, KeyError> {
        check_tenant_name(tenant)?;
        let path = tenant_path(&self.dir, tenant);
        if !path.exists() {
            let _lock = lock(&self.dir)?;
            if !path.exists() {
                let masters = load_masters(&self.dir)?;
                let key = Secret::<32>::random();
                let file = wrap(&masters[0], tenant, &key);
                write_tenant_file(&path, &file)?;
                *self.masters.lock().expect("keyring lock") = masters;
                return Ok(TenantKey {
                    tenant: tenant.to_string(),
                    key,
                });
            }
        }
        let file = read_tenant_file(&path, tenant)?;
        let key = {
            let masters = self.masters.lock().expect("keyring lock");
            masters
                .iter()
                .find(|m| m.id == file.master_key_id)
                .map(|m| unwrap(m, &file, &path))
        };
        let key = match key {
            Some(k) => k?,
            None => {
                // Rotated by another process since we loaded the masters: reload once.
                let fresh = load_masters(&self.dir)?;
                let k = fresh
                    .iter()
                    .find(|m| m.id == file.master_key_id)
                    .map(|m| unwrap(m, &file, &path))
                    .ok_or_else(|| KeyError::UnknownMaster {
                        path: path.clone(),
                        id: file.master_key_id.clone(),
                    })??;
                *self.masters.lock().expect("keyring lock") = fresh;
                k
            }
        };
        Ok(TenantKey {
            tenant: tenant.to_string(),
            key,
        })
    }
}

/// A tenant's data key. Everything the tenant's data is encrypted with derives from it.
#[derive(Clone)]
pub struct TenantKey {
    tenant: String,
    key: Secret<32>,
}

impl std::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantKey")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl TenantKey {
    /// The tenant this key belongs to.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// A 64-byte secret for `purpose` (`volume`, `layer`, `seal`) and `id`:
    /// HKDF-SHA256(data key, info = `bulkhead/v1/<purpose>/<id>`).
    pub fn derive(&self, purpose: &str, id: &str) -> Secret<64> {
        let mut out = Secret::<64>::zeroed();
        let info = format!("bulkhead/v1/{purpose}/{id}");
        hkdf_fill(self.key.expose(), info.as_bytes(), &mut out[..]);
        out
    }

    /// The AES-256-GCM key for `seal`/`open` (id `message`) or for streams (id `stream`).
    pub(crate) fn aead_key(&self, id: &str) -> LessSafeKey {
        let k = self.derive("seal", id);
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &k[..32]).expect("32-byte AES key"))
    }

    /// Encrypts and authenticates `plaintext`, bound to `aad` (e.g. `secret/<name>`):
    /// `version (1) ‖ nonce (12, random) ‖ ciphertext ‖ tag (16)`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_with(&self.aead_key("message"), aad, plaintext)
    }

    /// Reverses `seal`; fails on a wrong key, a different `aad` or any edit.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        open_with(&self.aead_key("message"), aad, sealed)
    }
}

fn versioned_aad(aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(aad.len() + 1);
    v.push(SEAL_VERSION);
    v.extend_from_slice(aad);
    v
}

pub(crate) fn seal_with(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the kernel's random source is unavailable");
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(versioned_aad(aad)),
        &mut buf,
    )
    .expect("AES-GCM seal of an in-memory buffer");
    let mut out = Vec::with_capacity(1 + NONCE_LEN + buf.len());
    out.push(SEAL_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    out
}

pub(crate) fn open_with(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
    if sealed.len() < 1 + NONCE_LEN + TAG_LEN || sealed[0] != SEAL_VERSION {
        return Err(KeyError::Format);
    }
    let nonce: [u8; NONCE_LEN] = sealed[1..1 + NONCE_LEN].try_into().expect("nonce length");
    let mut buf = sealed[1 + NONCE_LEN..].to_vec();
    let n = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(versioned_aad(aad)),
            &mut buf,
        )
        .map_err(|_| KeyError::Open)?
        .len();
    buf.truncate(n);
    Ok(buf)
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 (salt "bulkhead") of `secret` with `info`, filling `out` (at most 8160 bytes).
pub(crate) fn hkdf_fill(secret: &[u8], info: &[u8], out: &mut [u8]) {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"bulkhead").extract(secret);
    let info = [info];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .expect("HKDF output length within limits");
}

fn tenant_aad(tenant: &str) -> Vec<u8> {
    format!("bulkhead/v1/tenant-key/{tenant}").into_bytes()
}

pub(crate) fn wrap(master: &Master, tenant: &str, key: &Secret<32>) -> TenantFile {
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, master.key.expose()).expect("key"));
    let sealed = seal_with(&k, &tenant_aad(tenant), key.expose());
    TenantFile {
        version: SEAL_VERSION,
        tenant: tenant.to_string(),
        master_key_id: master.id.clone(),
        nonce: hex(&sealed[1..1 + NONCE_LEN]),
        ciphertext: hex(&sealed[1 + NONCE_LEN..]),
    }
}

pub(crate) fn unwrap(
    master: &Master,
    file: &TenantFile,
    path: &Path,
) -> Result<Secret<32>, KeyError> {
    let bad = |why: &str| KeyError::TenantFile {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    let nonce = unhex(&file.nonce).ok_or_else(|| bad("nonce is not hex"))?;
    let ct = unhex(&file.ciphertext).ok_or_else(|| bad("ciphertext is not hex"))?;
    let mut sealed = vec![file.version];
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ct);
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, master.key.expose()).expect("key"));
    let mut plain = open_with(&k, &tenant_aad(&file.tenant), &sealed)
        .map_err(|_| bad("it does not open under its master key (edited or misnamed)"))?;
    let key = Secret::<32>::from_slice(&plain).ok_or_else(|| bad("wrong key length"));
    crate::secret::wipe_bytes(&mut plain);
    key
}

pub(crate) fn tenant_path(dir: &Path, tenant: &str) -> PathBuf {
    dir.join(TENANTS_DIR).join(format!("{tenant}.key"))
}

pub(crate) fn check_tenant_name(tenant: &str) -> Result<(), KeyError> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 128
        && !tenant.starts_with('.')
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::TenantName(tenant.to_string()))
    }
}

pub(crate) fn read_tenant_file(path: &Path, tenant: &str) -> Result<TenantFile, KeyError> {
    let bytes = fs::read(path).map_err(io_err("reading", path))?;
    let file: TenantFile = serde_json::from_slice(&bytes).map_err(|e| KeyError::TenantFile {
        path: path.to_path_buf(),
        why: e.to_string(),
    })?;
    if file.version != SEAL_VERSION || file.tenant != tenant {
        return Err(KeyError::TenantFile {
            path: path.to_path_buf(),
            why: format!("version {} for tenant {:?}", file.version, file.tenant),
        });
    }
    Ok(file)
}

pub(crate) fn write_tenant_file(path: &Path, file: &TenantFile) -> Result<(), KeyError> {
    let json = serde_json::to_vec_pretty(file).expect("tenant file serializes");
    write_atomic(path, &json, 0o600).map_err(io_err("writing", path))
}

fn prepare_dirs(dir: &Path) -> Result<(), KeyError> {
    create_dir(dir, 0o700).map_err(io_err("creating", dir))?;
    check_private(dir, 0o700)?;
    let t = dir.join(TENANTS_DIR);
    create_dir(&t, 0o700).map_err(io_err("creating", &t))?;
    check_private(&t, 0o700)
}

/// Refuses a key file or directory that is not root-owned or that group/others can access.
pub(crate) fn check_private(path: &Path, want: u32) -> Result<(), KeyError> {
    let md = fs::symlink_metadata(path).map_err(io_err("inspecting", path))?;
    if md.uid() != 0 {
        return Err(KeyError::Owner {
            path: path.to_path_buf(),
            uid: md.uid(),
        });
    }
    if md.mode() & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode: md.mode() & 0o7777,
            want,
        });
    }
    Ok(())
}

pub(crate) fn load_master(path: &Path) -> Result<Master, KeyError> {
    check_private(path, 0o600)?;
    let bytes = fs::read(path).map_err(io_err("reading", path))?;
    let key = Secret::<32>::from_slice(&bytes).ok_or(KeyError::MasterSize {
        path: path.to_path_buf(),
        len: bytes.len() as u64,
    });
    let mut bytes = bytes;
    crate::secret::wipe_bytes(&mut bytes);
    Ok(Master::new(key?))
}

/// `master.key`, then `master.key.new` when a rotation is pending.
pub(crate) fn load_masters(dir: &Path) -> Result<Vec<Master>, KeyError> {
    let mut v = vec![load_master(&dir.join(MASTER_FILE))?];
    let pending = dir.join(MASTER_NEW_FILE);
    if pending.exists() {
        v.push(load_master(&pending)?);
    }
    Ok(v)
}

/// Tenant names with a key file (`tenants/<name>.key`), sorted.
pub(crate) fn tenant_names(dir: &Path) -> Result<Vec<String>, KeyError> {
    let t = dir.join(TENANTS_DIR);
    let mut names = Vec::new();
    for e in fs::read_dir(&t).map_err(io_err("listing", &t))? {
        let e = e.map_err(io_err("listing", &t))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_suffix(".key") {
            if check_tenant_name(n).is_ok() {
                names.push(n.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// An exclusive `flock` on `<keys_dir>/.lock` (serialises tenant key creation and rotation),
/// released on drop.
pub(crate) fn lock(dir: &Path) -> Result<std::fs::File, KeyError> {
    let p = dir.join(LOCK_FILE);
    crate::fsutil::lock_file(&p).map_err(io_err("locking", &p))
}

fn has_tenant_files(dir: &Path) -> Result<bool, KeyError> {
    Ok(!tenant_names(dir)?.is_empty())
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
