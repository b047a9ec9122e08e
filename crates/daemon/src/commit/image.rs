//! A commit's tree for one driver's nodes, kept only as ciphertext (#13, ADR 0041): an ext4
//! image `images/commit-<id>-<driver>.img` whose `data` directory is fscrypt-encrypted under
//! `TenantKey::derive("commit", <id>)` (AES-256-XTS contents, AES-256-CTS names), made from
//! the sealed file.
//!
//! Making one: a first pass over the opened stream counts the tar's entries and file blocks
//! (the image's size and inodes come from them: the image is sparse, written once, no journal);
//! the image is formatted as `.commit-<id>-<driver>.img.tmp-<random>`, its `data` directory
//! mounted read-write in a mount namespace of one thread's own (`privmount`: never visible on
//! the host, gone with the thread or the daemon), the stream unpacked into it as hostile input
//! (`unpack.rs`, every check as before), synced and unmounted; the file is synced and renamed
//! into place without replacing (another making of the same image that won is kept).
//!
//! Using one: a jail node's supervisor opens it read-only itself (`NodeSpec::commit_image`,
//! the key in the instruction); a microVM's disk is made from it while the daemon holds it
//! mounted read-only, again in a thread's own namespace ([`with_tree`]).
//!
//! Invariants: no plaintext of a commit is on the host's disk (the sealed file is AEAD
//! ciphertext, the image's tree fscrypt ciphertext; sizes, times, owners and the tree's shape
//! are not hidden); nothing of a commit is ever mounted in the host's mount namespace; an
//! image is wiped only once no loop device backs it.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bulkhead_storage::{privmount, Secret};

use super::{images_dir, io_err, open_sealed, seal, unpack, Bounds, CommitError};

/// Where a thread's private mount of a commit's tree goes (in that thread's namespace only).
const MOUNT_DIR: &str = ".tree";

/// Inodes beyond the archive's entries: the root, `lost+found`, `data`, the mount points.
const SPARE_INODES: u64 = 64;

/// Room beyond the tree: the file system's own metadata (group descriptors, bitmaps).
const HEADROOM: u64 = 64 << 20;

pub fn image_path(tenant_dir: &Path, id: &str, driver: &str) -> PathBuf {
    images_dir(tenant_dir).join(format!("commit-{id}-{driver}.img"))
}

/// The key of commit `id`'s images.
pub fn key_of(key: &seal::Key, id: &str) -> Secret<64> {
    key.derive("commit", id)
}

/// The directory a thread mounts a commit's tree on (made if missing).
fn mount_dir(tenant_dir: &Path) -> Result<PathBuf, CommitError> {
    let d = images_dir(tenant_dir).join(MOUNT_DIR);
    crate::fsutil::ensure_dir(&d, 0o700).map_err(io_err("creating", &d))?;
    Ok(d)
}

/// What a tree of the archive takes: entries and 4 KiB blocks of file data.
#[derive(Debug, Default, PartialEq, Eq)]
struct Measure {
    entries: u64,
    file_blocks: u64,
}

fn measure(r: impl Read, max_entries: u64) -> Result<Measure, CommitError> {
    let mut a = tar::Archive::new(r);
    let mut m = Measure::default();
    for e in a.entries().map_err(unpack::UnpackError::Read)? {
        let e = e.map_err(unpack::UnpackError::Read)?;
        m.entries += 1;
        if m.entries > max_entries {
            return Err(unpack::UnpackError::TooManyEntries(max_entries).into());
        }
        m.file_blocks = m.file_blocks.saturating_add(e.size().div_ceil(4096));
    }
    Ok(m)
}

/// An image's (size in bytes, inodes) for a measured tree: a block for every entry beyond its
/// data (directories, long symlinks, the encrypted names), whose 4 KiB each also keep inodes
/// per group within ext4's bound; the inode table; headroom; whole MiB.
fn layout(m: &Measure) -> (u64, u64) {
    let inodes = m.entries + SPARE_INODES;
    let bytes = (m.file_blocks + inodes)
        .saturating_mul(4096)
        .saturating_add(inodes * 256)
        .saturating_add(HEADROOM);
    (bytes.div_ceil(1 << 20) << 20, inodes)
}

/// Commit `id`'s image for `driver`'s nodes, made from the sealed file if it is not there
/// yet. A sealed file that does not open completely (edited, truncated, another tenant's) or
/// a refused tree leaves no image.
pub fn ensure_image(
    key: &seal::Key,
    tenant: &str,
    tenant_dir: &Path,
    id: &str,
    driver: &str,
    owner: &(dyn Fn(u32, u32) -> (u32, u32) + Sync),
    bounds: Bounds,
) -> Result<PathBuf, CommitError> {
    let dst = image_path(tenant_dir, id, driver);
    if dst.is_file() {
        return Ok(dst);
    }
    let images = images_dir(tenant_dir);
    crate::fsutil::ensure_dir(&images, 0o711).map_err(io_err("creating", &images))?;
    let at = mount_dir(tenant_dir)?;
    let t0 = Instant::now();
    let m = {
        let (mut r, opener) = open_sealed(key, tenant, tenant_dir, id)?;
        let m = measure(&mut r, bounds.max_entries);
        super::finish_opened(r, opener, m)?
    };
    let (size, inodes) = layout(&m);
    let tmp = images.join(format!(
        ".commit-{id}-{driver}.img.tmp-{}",
        super::random_suffix()
    ));
    let ckey = key_of(key, id);
    let mut ms = [t0.elapsed().as_millis() as u64, 0, 0];
    let made = (|| {
        let (uid, gid) = owner(0, 0);
        let t = Instant::now();
        bulkhead_storage::ext4img::format_write_once(&tmp, size, inodes, uid, gid, &ckey)
            .map_err(|e| image_err("making", &tmp, e))?;
        ms[1] = t.elapsed().as_millis() as u64;
        let t = Instant::now();
        privmount::with_data_at(&tmp, &ckey, false, &at, |root| {
            let (mut r, opener) = open_sealed(key, tenant, tenant_dir, id)?;
            let u = unpack::unpack_root(&mut r, root, owner, bounds);
            super::finish_opened(r, opener, u)
        })
        .map_err(|e| image_err("filling", &tmp, e))??;
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err("syncing", &tmp))?;
        ms[2] = t.elapsed().as_millis() as u64;
        install(&tmp, &dst)
    })();
    tracing::debug!(
        commit = id,
        driver,
        size,
        inodes,
        measure_ms = ms[0],
        format_ms = ms[1],
        fill_ms = ms[2],
        ok = made.is_ok(),
        "commit image made"
    );
    if made.is_err() {
        wipe_image(&tmp);
    }
    made.map(|()| dst)
}

fn image_err(
    what: &'static str,
    p: &Path,
    e: bulkhead_storage::ext4img::ImageError,
) -> CommitError {
    CommitError::Io {
        what,
        path: p.display().to_string(),
        source: io::Error::other(e.to_string()),
    }
}

/// Renames `tmp` to `dst` unless `dst` exists (then `tmp` is wiped: another making of the same
/// image won, and nodes may use it already), and syncs the directory.
fn install(tmp: &Path, dst: &Path) -> Result<(), CommitError> {
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok();
    let (Some(from), Some(to)) = (c(tmp), c(dst)) else {
        return Err(io_err("installing", dst)(
            io::ErrorKind::InvalidInput.into(),
        ));
    };
    // SAFETY: two NUL-terminated paths; the result is checked.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::AlreadyExists {
            return Err(io_err("installing", dst)(e));
        }
        wipe_image(tmp);
    }
    let dir = dst.parent().unwrap_or(Path::new("/"));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

/// Runs `f` with commit `id`'s tree in `image` mounted read-only at a path only this call (and
/// the processes `f` starts) sees: a driver that makes a node's disk from the tree.
pub fn with_tree<T: Send>(
    key: &seal::Key,
    tenant_dir: &Path,
    id: &str,
    image: &Path,
    f: impl FnOnce(&Path) -> T + Send,
) -> Result<T, CommitError> {
    let at = mount_dir(tenant_dir)?;
    privmount::with_data_at(image, &key_of(key, id), true, &at, f)
        .map_err(|e| image_err("mounting", image, e))
}

/// Wipes an image (every allocated extent overwritten, synced, unlinked) once no loop device
/// backs it any more (a node that just went releases it as its mount namespace goes); errors
/// are logged (a leftover is swept at the next start).
pub fn wipe_image(p: &Path) {
    let until = Instant::now() + Duration::from_secs(10);
    while matches!(bulkhead_storage::loopdev::find_backing(p), Ok(Some(_))) {
        if Instant::now() > until {
            tracing::warn!(image = %p.display(), "a loop device still backs the commit's image; wiping it anyway");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    super::wipe_file(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_fits_the_tree_and_stays_sparse_sized() {
        let small = layout(&Measure {
            entries: 10,
            file_blocks: 3,
        });
        assert_eq!(small, (65 << 20, 74));
        // Many empty files: a block and an inode each, within ext4's inodes per group.
        let (bytes, inodes) = layout(&Measure {
            entries: 1_000_000,
            file_blocks: 0,
        });
        assert_eq!(inodes, 1_000_064);
        assert!(bytes / inodes >= 4096, "{bytes}");
        let mut b = tar::Builder::new(Vec::new());
        for (name, len) in [("a", 1usize), ("b", 4097), ("c", 0)] {
            let mut h = tar::Header::new_gnu();
            h.set_size(len as u64);
            h.set_cksum();
            b.append_data(&mut h, name, &vec![0u8; len][..]).unwrap();
        }
        let tar = b.into_inner().unwrap();
        assert_eq!(
            measure(&tar[..], 10).unwrap(),
            Measure {
                entries: 3,
                file_blocks: 3
            }
        );
        assert!(matches!(
            measure(&tar[..], 2),
            Err(CommitError::Unpack(unpack::UnpackError::TooManyEntries(2)))
        ));
    }
}
