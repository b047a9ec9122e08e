//! The image store. An image is a read-only root filesystem tree under
//! `<state>/images/<name>/rootfs` with an `image.json` beside it. Images come from recipes
//! (`minimal` from the host's busybox-static, [`minimal`]; `debian` with debootstrap from the
//! mirror the host's apt uses, [`debian`]) or are imported from a directory, a tarball, an OCI
//! image layout or an OCI/docker archive ([`oci`], with skopeo and umoci). Nothing else is
//! downloaded.
//!
//! Invariants: an image is built in a staging directory (`images/.<name>.tmp-<pid>-<id>`,
//! mode 0700 while it is filled, so device nodes a build or an archive makes are never
//! reachable by host users), cleaned of everything but directories, regular files and
//! symlinks, checked ([`check`]), and only then renamed into place under the store's
//! exclusive lock; a failed build's staging is wiped (`bulkhead_storage::wipe`), and a later
//! build wipes the staging of a build whose process is gone.
//!
//! Nodes do not use the store's tree directly: each tenant gets a copy whose owners are shifted
//! into the tenant's host uid range ([`shifted_copy`]), so that uid 0 in the node owns the
//! node's files while being an unprivileged uid on the host.

pub mod check;
pub mod debian;
pub mod minimal;
pub mod oci;
mod scratch;
mod users;

pub use minimal::{build_minimal, ensure_minimal, BUSYBOX};

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Read;
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

fn err(msg: impl Into<String>) -> JailError {
    JailError::Image(msg.into())
}

fn ioe(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> JailError {
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

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn new_id() -> String {
    let mut b = [0u8; 8];
    // SAFETY: b is a valid 8-byte buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Where an image comes from, as `install` records it.
pub(crate) struct Origin {
    pub source: String,
    pub recipe: Option<String>,
}

/// Builds the tree in a staging directory with `fill`, cleans and checks it, then swaps it
/// into place, so a failed build never leaves a half-made image under the name. Only the swap
/// holds the store's exclusive lock: a long build (debootstrap) never keeps daemons from
/// copying other images. Returns the image and the check's warnings.
pub(crate) fn install(
    state: &Path,
    name: &str,
    origin: Origin,
    fill: impl FnOnce(&Path) -> Result<(), JailError>,
) -> Result<(ImageMeta, Vec<String>), JailError> {
    validate_name(name)?;
    let images = state.join("images");
    fs::create_dir_all(&images).map_err(ioe(format!("creating {}", images.display())))?;
    fs::set_permissions(&images, fs::Permissions::from_mode(0o755)).map_err(ioe("chmod images"))?;
    scratch::sweep(&images);
    let tmp = scratch::Staging::new(&images, name)?;
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(&rootfs).map_err(ioe("creating build directory"))?;
    let meta = ImageMeta {
        name: name.into(),
        id: new_id(),
        source: origin.source,
        created_at: now(),
        recipe: origin.recipe,
    };
    fill(&rootfs)?;
    scratch::sanitize(&rootfs)?;
    let warnings = check::rootfs(&rootfs)?;
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755)).map_err(ioe("chmod rootfs"))?;
    fs::write(
        tmp.path().join("image.json"),
        serde_json::to_vec_pretty(&meta).unwrap_or_default(),
    )
    .map_err(ioe("writing image.json"))?;
    let lock = StoreLock::take(state, true)?;
    let dst = image_dir(state, name);
    let mut old = None;
    if dst.exists() {
        let o = images.join(format!(".{name}.old-{}", new_id()));
        fs::rename(&dst, &o).map_err(ioe("replacing image"))?;
        old = Some(o);
    }
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).map_err(ioe("chmod"))?;
    if let Err(e) = fs::rename(tmp.path(), &dst) {
        // Put the previous image back rather than leave none.
        if let Some(o) = &old {
            let _ = fs::rename(o, &dst);
        }
        return Err(err(format!("installing image: {e}")));
    }
    tmp.keep();
    // The replaced tree goes after the lock: removing a large one never holds up tenant copies.
    drop(lock);
    if let Some(o) = old {
        let _ = fs::remove_dir_all(o);
    }
    Ok((meta, warnings))
}

/// Imports a root filesystem from a directory or a tar archive (plain or gzip), or an OCI
/// image layout, OCI archive or docker archive ([`oci`]); `oci_ref` picks one image of a
/// layout or archive that holds several. Returns the image and the check's warnings.
pub fn import(
    state: &Path,
    name: &str,
    src: &Path,
    oci_ref: Option<&str>,
) -> Result<(ImageMeta, Vec<String>), JailError> {
    let md = fs::metadata(src).map_err(|e| err(format!("cannot read {}: {e}", src.display())))?;
    let kind = oci::Kind::detect(src, &md)?;
    if oci_ref.is_some() && kind == oci::Kind::Rootfs {
        return Err(err(format!(
            "--ref picks an image of an OCI layout or archive, and {} is a plain root filesystem",
            src.display()
        )));
    }
    let origin = Origin {
        source: match kind {
            oci::Kind::Rootfs => src.display().to_string(),
            k => format!("{} {}", k.transport(), src.display()),
        },
        recipe: None,
    };
    if kind != oci::Kind::Rootfs {
        return install(state, name, origin, |root| {
            oci::unpack(kind, src, oci_ref, root)
        });
    }
    install(state, name, origin, |root| {
        if md.is_dir() {
            copy_tree(src, root, &|uid, gid| (uid, gid))
        } else {
            let mut f = fs::File::open(src).map_err(ioe(src.display()))?;
            let mut magic = [0u8; 2];
            let n = f.read(&mut magic).map_err(ioe(src.display()))?;
            let f = fs::File::open(src).map_err(ioe(src.display()))?;
            let reader: Box<dyn Read> = if n == 2 && magic == [0x1f, 0x8b] {
                Box::new(flate2::read::GzDecoder::new(f))
            } else {
                Box::new(f)
            };
            let mut a = tar::Archive::new(reader);
            a.set_preserve_permissions(true);
            a.set_preserve_ownerships(true);
            a.unpack(root).map_err(|e| {
                // tar's error says which entry; its source says why.
                let mut why = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    why = format!("{why}: {c}");
                    cause = c.source();
                }
                err(format!(
                    "unpacking {}: {why} (give a directory, a .tar or a .tar.gz)",
                    src.display()
                ))
            })
        }
    })
}

/// Copies a tree, mapping owners with `map`. Device nodes and sockets are skipped: a node gets
/// its devices from the jail, never from an image.
fn copy_tree(
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

/// The owner map of a tenant's image trees: every id shifted by `base`; ids at or above
/// `count` become the range's nobody.
pub fn shift(base: u32, count: u32) -> impl Fn(u32, u32) -> (u32, u32) {
    move |uid: u32, gid: u32| {
        let f = |x: u32| {
            if x < count {
                base + x
            } else {
                base + 65534.min(count - 1)
            }
        };
        (f(uid), f(gid))
    }
}

/// Returns the tenant's copy of an image, making it if needed: `<tenant_dir>/images/<id>`, with
/// every owner shifted by `base` (ids at or above `count` become the range's nobody).
pub fn shifted_copy(
    state: &Path,
    name: &str,
    tenant_dir: &Path,
    base: u32,
    count: u32,
) -> Result<PathBuf, JailError> {
    let _lock = StoreLock::take(state, false)?;
    let m = meta(state, name).ok_or_else(|| {
        err(format!("image {name:?} not found: build it with `bulkhead image build minimal|debian` or import one with `bulkhead image import --name {name} DIR|TARBALL|OCI-LAYOUT|OCI-ARCHIVE`"))
    })?;
    let dir = tenant_dir.join("images");
    let dst = dir.join(format!("{}-{}", m.name, m.id));
    if dst.exists() {
        return Ok(dst);
    }
    fs::create_dir_all(&dir).map_err(ioe(dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).map_err(ioe("chmod"))?;
    let tmp = dir.join(format!(".{}.tmp-{}", m.id, new_id()));
    let res = copy_tree(
        &image_dir(state, name).join("rootfs"),
        &tmp,
        &shift(base, count),
    )
    .and_then(|_| fs::rename(&tmp, &dst).map_err(ioe("installing tenant image")));
    if res.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    res.map(|_| dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        assert!(validate_name("minimal").is_ok());
        assert!(validate_name("debian-12.1").is_ok());
        for bad in ["", ".x", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn import_and_shift_a_directory() {
        let state = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("etc")).unwrap();
        fs::write(src.path().join("etc/hello"), "hi").unwrap();
        symlink("hello", src.path().join("etc/link")).unwrap();
        let (m, warnings) = import(state.path(), "t", src.path(), None).unwrap();
        assert_eq!(m.name, "t");
        assert_eq!(
            warnings.len(),
            3,
            "no /bin/sh, /bin/bash, user: {warnings:?}"
        );
        assert_eq!(list(state.path()).len(), 1);
        let tenant = state.path().join("tenant");
        let out = shifted_copy(state.path(), "t", &tenant, 200_000, 65536).unwrap();
        let md = fs::metadata(out.join("etc/hello")).unwrap();
        let me = fs::metadata(src.path().join("etc/hello")).unwrap();
        if me.uid() == 0 {
            assert_eq!(md.uid(), 200_000);
        }
        assert_eq!(
            fs::read_link(out.join("etc/link")).unwrap(),
            Path::new("hello")
        );
        assert!(shifted_copy(state.path(), "missing", &tenant, 1, 1).is_err());
    }

    #[test]
    fn failed_import_leaves_nothing() {
        let state = tempfile::tempdir().unwrap();
        let bogus = state.path().join("not-a-tar");
        fs::write(
            &bogus,
            "definitely not tar data, but long enough to be read as a header....",
        )
        .unwrap();
        assert!(import(state.path(), "bad", &bogus, None).is_err());
        // A tarball of the directory that holds a root file system, not of its contents.
        let nested = state.path().join("nested.tar");
        let mut b = tar::Builder::new(fs::File::create(&nested).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append_data(&mut h, "rootfs/etc/passwd", &b"x\n"[..])
            .unwrap();
        b.finish().unwrap();
        drop(b);
        let e = import(state.path(), "nested", &nested, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("not a root file system") && e.contains("\"rootfs\""),
            "{e}"
        );
        let e = import(state.path(), "nested", &nested, Some("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--ref"), "{e}");
        assert!(list(state.path()).is_empty());
        let leftovers: Vec<_> = fs::read_dir(state.path().join("images"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n != ".lock")
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }
}
