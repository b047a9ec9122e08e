//! The host files behind volumes and snapshots (#13): `<tenant dir>/volumes/<id>.img`, an
//! ext4 image with an fscrypt-encrypted `data` directory, and `<tenant dir>/snapshots/<id>.sealed`,
//! a volume image sealed with the tenant's key (chunked AEAD). Blocking: callers run these in
//! `spawn_blocking`.
//!
//! Invariants:
//! - a file appears under its final name only complete: it is made under `<name>.tmp`, synced,
//!   renamed, and the directory synced; a crash leaves at most a `.tmp` file, which
//!   reconciliation wipes;
//! - nothing is unlinked without being overwritten first (`bulkhead_storage::wipe`), so a new
//!   volume (a fresh sparse file) never shows bytes of an old one;
//! - the directories are root's, 0700: nodes never see host paths of images.

use bulkhead_storage::{Secret, TenantKey};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::fsutil::ensure_dir;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("formatting the volume image: {0}")]
    Format(#[from] bulkhead_storage::ext4img::ImageError),
    #[error("wiping {0}")]
    Wipe(#[from] bulkhead_storage::wipe::WipeError),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> DiskError + 'a {
    move |source| DiskError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

pub(super) fn volumes_dir(tenant_dir: &Path) -> PathBuf {
    tenant_dir.join("volumes")
}

pub(super) fn snapshots_dir(tenant_dir: &Path) -> PathBuf {
    tenant_dir.join("snapshots")
}

pub(super) fn image(tenant_dir: &Path, id: &str) -> PathBuf {
    volumes_dir(tenant_dir).join(format!("{id}.img"))
}

pub(super) fn sealed(tenant_dir: &Path, id: &str) -> PathBuf {
    snapshots_dir(tenant_dir).join(format!("{id}.sealed"))
}

fn tmp(final_: &Path) -> PathBuf {
    let mut s = final_.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The associated data a snapshot is sealed with: it opens only as this tenant's snapshot
/// of this id (a file moved between tenants or renamed does not open).
pub(super) fn snapshot_aad(tenant: &str, snapshot: &str) -> Vec<u8> {
    format!("bulkhead/v1/snapshot/{tenant}/{snapshot}").into_bytes()
}

/// Removes `path` after overwriting what it holds; nothing there is fine.
pub(super) fn wipe(path: &Path) -> Result<(), DiskError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("reading", path)(e)),
        Ok(_) => {
            bulkhead_storage::wipe::wipe_file(path)?;
            Ok(())
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), DiskError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

/// Syncs `tmp`, renames it to `final_`, syncs the directory.
fn publish(tmp: &Path, final_: &Path) -> Result<(), DiskError> {
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", tmp))?;
    std::fs::rename(tmp, final_).map_err(io("renaming", tmp))?;
    sync_dir(final_.parent().unwrap_or(Path::new("/")))
}

/// Makes a new, empty volume image for `id`: `size` bytes, `inodes` inodes, its `data`
/// directory owned by `owner` (the node's root) and encrypted with `key`.
pub(super) fn make_volume(
    tenant_dir: &Path,
    id: &str,
    size: u64,
    inodes: u64,
    owner: u32,
    key: &Secret<64>,
) -> Result<PathBuf, DiskError> {
    let dir = volumes_dir(tenant_dir);
    ensure_dir(&dir, 0o700).map_err(io("creating", &dir))?;
    let final_ = image(tenant_dir, id);
    let t = tmp(&final_);
    wipe(&t)?;
    let r = bulkhead_storage::ext4img::format_encrypted(&t, size, inodes, owner, owner, key)
        .map_err(DiskError::from)
        .and_then(|()| publish(&t, &final_));
    if r.is_err() {
        let _ = wipe(&t);
    }
    r.map(|()| final_)
}

/// A writer that leaves holes where whole blocks are zero, so a restored image stays as
/// sparse as the volume it came from (and takes no more of the host's disk).
struct Sparse {
    f: File,
    len: u64,
}

impl Write for Sparse {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.iter().all(|b| *b == 0) {
            self.f.seek(SeekFrom::Current(buf.len() as i64))?;
        } else {
            self.f.write_all(buf)?;
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.f.set_len(self.len)?;
        self.f.flush()
    }
}

fn create_new(path: &Path) -> Result<File, DiskError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating", path))
}

/// Makes volume `id`'s image from a sealed snapshot (opened with `key`, bound to `aad`).
pub(super) fn restore_volume(
    tenant_dir: &Path,
    id: &str,
    from: &Path,
    key: &TenantKey,
    aad: &[u8],
) -> Result<(PathBuf, u64), DiskError> {
    let dir = volumes_dir(tenant_dir);
    ensure_dir(&dir, 0o700).map_err(io("creating", &dir))?;
    let final_ = image(tenant_dir, id);
    let t = tmp(&final_);
    wipe(&t)?;
    let r = (|| {
        let src = File::open(from).map_err(io("opening", from))?;
        let out = create_new(&t)?;
        // 64 KiB writes: the stream's chunk size, and the granularity of holes.
        let mut w = BufWriter::with_capacity(64 << 10, Sparse { f: out, len: 0 });
        let n = key
            .open_stream(aad, BufReader::with_capacity(1 << 20, src), &mut w)
            .map_err(io("opening the sealed snapshot", from))?;
        w.flush().map_err(io("writing", &t))?;
        drop(w);
        publish(&t, &final_)?;
        Ok(n)
    })();
    if r.is_err() {
        let _ = wipe(&t);
    }
    r.map(|n| (final_, n))
}

/// The tenant's `snapshots/` directory (0700), made if missing.
pub(super) fn ensure_snapshots_dir(tenant_dir: &Path) -> Result<(), DiskError> {
    let dir = snapshots_dir(tenant_dir);
    ensure_dir(&dir, 0o700).map_err(io("creating", &dir))
}

/// Seals volume image `image` into snapshot `sid`'s file; the plaintext bytes sealed.
pub(super) fn seal_snapshot(
    tenant_dir: &Path,
    sid: &str,
    image: &Path,
    key: &TenantKey,
    aad: &[u8],
) -> Result<u64, DiskError> {
    ensure_snapshots_dir(tenant_dir)?;
    let final_ = sealed(tenant_dir, sid);
    let t = tmp(&final_);
    wipe(&t)?;
    let r = (|| {
        let src = File::open(image).map_err(io("opening", image))?;
        let out = create_new(&t)?;
        let mut w = BufWriter::with_capacity(1 << 20, out);
        let n = key
            .seal_stream(aad, BufReader::with_capacity(1 << 20, src), &mut w)
            .map_err(io("sealing", image))?;
        w.flush().map_err(io("writing", &t))?;
        drop(w);
        publish(&t, &final_)?;
        Ok(n)
    })();
    if r.is_err() {
        let _ = wipe(&t);
    }
    r
}

/// Wipes every file in `dir` whose name `keep` does not accept (half-made `.tmp` files, files
/// no record explains). Returns the names wiped.
pub(super) fn sweep(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut gone = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return gone;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if keep(&name) {
            continue;
        }
        match wipe(&e.path()) {
            Ok(()) => gone.push(name),
            Err(err) => {
                tracing::error!(file = %e.path().display(), error = %err, "cannot wipe a leftover volume file")
            }
        }
    }
    gone
}

/// Whether `f` reads as zeros from `at` for `len` bytes (tests).
#[cfg(test)]
fn zeros(f: &mut File, at: u64, len: usize) -> bool {
    use std::io::Read;
    let mut b = vec![1u8; len];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b.iter().all(|x| *x == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::Read;

    #[test]
    fn a_sparse_restore_keeps_holes_and_content() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let mut w = BufWriter::with_capacity(
            64 << 10,
            Sparse {
                f: create_new(&p).unwrap(),
                len: 0,
            },
        );
        w.write_all(&vec![0u8; 1 << 20]).unwrap();
        w.write_all(b"marker").unwrap();
        w.write_all(&vec![0u8; 1 << 20]).unwrap();
        w.flush().unwrap();
        drop(w);
        let mut f = File::open(&p).unwrap();
        assert_eq!(f.metadata().unwrap().len(), (2 << 20) + 6);
        assert!(zeros(&mut f, 0, 1 << 20));
        let mut m = [0u8; 6];
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.read_exact(&mut m).unwrap();
        assert_eq!(&m, b"marker");
        assert!(zeros(&mut f, (1 << 20) + 6, 1 << 20));
        // Holes: far fewer blocks than the length.
        use std::os::unix::fs::MetadataExt;
        assert!(f.metadata().unwrap().blocks() * 512 < 1 << 20);
    }

    #[test]
    fn sweep_wipes_what_keep_refuses() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.img"), b"x").unwrap();
        std::fs::write(d.path().join("a.img.tmp"), b"x").unwrap();
        let gone = sweep(d.path(), |n| n == "a.img");
        assert_eq!(gone, vec!["a.img.tmp".to_string()]);
        assert!(d.path().join("a.img").exists());
    }
}
