//! The store's ground: image metadata, the store lock, names and paths, and the owner-mapping
//! tree copy every other part of the image store builds on. Imports nothing of its siblings.

use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::JailError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageMeta {
    pub name: String,
    /// Changes whenever the image's content is replaced.
    pub id: String,
    pub source: String,
    pub created_at: u64,
    /// What made it, for recipes (`minimal/2`, `debian/<hash>`): a daemon rebuilds `minimal`
    /// when its recipe changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<String>,
}

pub(crate) fn err(msg: impl Into<String>) -> JailError {
    JailError::Image(msg.into())
}

pub(crate) fn ioe(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> JailError {
    let what = what.to_string();
    move |e| err(format!("{what}: {e}"))
}

/// An flock on `<state>/images/.lock`: exclusive while an image is built or replaced, shared
/// while a tenant copy is made from one, so concurrent daemons never see a half-swapped image.
pub struct StoreLock(#[allow(dead_code)] fs::File);

impl StoreLock {
    pub fn take(state: &Path, exclusive: bool) -> Result<Self, JailError> {
        use std::os::fd::AsRawFd;
        let images = state.join("images");
        fs::create_dir_all(&images).map_err(ioe(format!("creating {}", images.display())))?;
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(images.join(".lock"))
            .map_err(ioe("opening image store lock"))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        // SAFETY: flock on an fd we own; blocks until the lock is ours.
        if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
            return Err(err(format!(
                "locking the image store: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(StoreLock(f))
    }
}

pub fn validate_name(name: &str) -> Result<(), JailError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(err(format!("invalid image name {name:?}: use letters, digits, '-', '_' or '.', not starting with '.'")))
    }
}

pub fn image_dir(state: &Path, name: &str) -> PathBuf {
    state.join("images").join(name)
}

pub fn meta(state: &Path, name: &str) -> Option<ImageMeta> {
    let b = fs::read(image_dir(state, name).join("image.json")).ok()?;
    serde_json::from_slice(&b).ok()
}

pub fn list(state: &Path) -> Vec<ImageMeta> {
    let mut v: Vec<ImageMeta> = fs::read_dir(state.join("images"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| meta(state, &e.file_name().to_string_lossy()))
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn new_id() -> String {
    let mut b = [0u8; 8];
    // SAFETY: b is a valid 8-byte buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Copies a tree, mapping owners with `map`. Device nodes and sockets are skipped: a node gets
/// its devices from the jail, never from an image.
pub(crate) fn copy_tree(
    src: &Path,
    dst: &Path,
    map: &dyn Fn(u32, u32) -> (u32, u32),
) -> Result<(), JailError> {
    let md = fs::symlink_metadata(src).map_err(ioe(src.display()))?;
    let (uid, gid) = map(md.uid(), md.gid());
    let ft = md.file_type();
    if ft.is_dir() {
        if !dst.exists() {
            fs::create_dir(dst).map_err(ioe(dst.display()))?;
        }
        for e in fs::read_dir(src).map_err(ioe(src.display()))? {
            let e = e.map_err(ioe(src.display()))?;
            copy_tree(&e.path(), &dst.join(e.file_name()), map)?;
        }
    } else if ft.is_symlink() {
        let t = fs::read_link(src).map_err(ioe(src.display()))?;
        symlink(t, dst).map_err(ioe(dst.display()))?;
    } else if ft.is_file() {
        fs::copy(src, dst).map_err(ioe(dst.display()))?;
    } else {
        return Ok(());
    }
    std::os::unix::fs::lchown(dst, Some(uid), Some(gid))
        .map_err(ioe(format!("chown {}", dst.display())))?;
    if !ft.is_symlink() {
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(ioe(format!("chmod {}", dst.display())))?;
    }
    Ok(())
}
