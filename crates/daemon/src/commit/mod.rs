//! Commits on the host (#13 commit and fork, ADR 0030, ADR 0041): where a tenant's commits
//! live, the sealed file of one (written from the node's tar stream), the encrypted image of
//! the tree a driver starts nodes from (made from the sealed file, `image.rs`, as hostile input,
//! `unpack.rs`), and the start-time sweep. Blocking file work only: the tenant's
//! `tenant/commit.rs` runs it off the async workers.
//!
//! Layout in the tenant's directory:
//! - `commits/<id>.tmp`: a commit being written (never read; wiped at start);
//! - `commits/<id>.sealed`: a complete commit, AEAD-sealed under the tenant's key
//!   (`TenantKey::seal_stream`, AAD `bulkhead/commit/<tenant>/<id>`), fsynced and renamed from `.tmp`;
//! - `images/commit-<id>-<driver>.img`: the tree for one driver's nodes (a cache, made at the
//!   commit for its node's driver and on first use for another), owners mapped with
//!   [`bulkhead_driver::Driver::image_owner`], in an ext4 image whose `data` directory is
//!   fscrypt-encrypted under `TenantKey::derive("commit", <id>)`;
//!   `images/.commit-….img.tmp-*` while being made; `images/.tree`, the directory a thread
//!   mounts a tree on in its own mount namespace;
//! - `images/commit-<id>-<driver>/`: a plaintext tree an earlier version made (wiped at start
//!   unless a node made from the commit exists, then at the commit's delete).
//!
//! Invariants: the store has a row only for a commit whose `.sealed` file was complete and
//! renamed (the row is the commit's visibility); at start every `.tmp`, every `.sealed` and
//! image without a row, and every staging image is wiped ([`sweep`]); no plaintext of a
//! commit is kept on the host's disk.

pub mod image;
pub mod seal;
pub mod sweep;
pub mod unpack;

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use unpack::{Bounds, UnpackError, Unpacked};

/// The most entries a commit's tree may have.
pub const MAX_ENTRIES: u64 = 1_000_000;

/// Errors of the host side of commits.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The stream passed `limit` (`read` bytes when it was stopped).
    #[error("the node's root filesystem is larger than {limit} bytes, the most a commit of it holds (its host group's storage_size and its image)")]
    TooLarge { limit: u64, read: u64 },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("the sealed commit does not open: {0}")]
    Open(#[source] io::Error),
    #[error("the stream from the node failed: {0}")]
    Stream(#[source] io::Error),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CommitError + 'a {
    move |source| CommitError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

pub fn commits_dir(tenant_dir: &Path) -> PathBuf {
    tenant_dir.join("commits")
}

pub fn sealed_path(tenant_dir: &Path, id: &str) -> PathBuf {
    commits_dir(tenant_dir).join(format!("{id}.sealed"))
}

fn images_dir(tenant_dir: &Path) -> PathBuf {
    tenant_dir.join("images")
}

/// The AEAD's associated data of a commit: the tenant and the id, so a sealed file renamed
/// to another id or copied into another tenant does not open.
pub fn aad(tenant: &str, id: &str) -> Vec<u8> {
    format!("bulkhead/commit/{tenant}/{id}").into_bytes()
}

/// Wipes a file (overwrites its data, then unlinks); errors are logged, not returned (a
/// leftover is swept again at the next start).
pub fn wipe_file(p: &Path) {
    if let Err(e) = seal::wipe_file(p) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %p.display(), error = %e, "wiping a commit file failed");
        }
    }
}

/// Wipes a tree (every regular file overwritten, no symlink followed, then removed).
pub fn wipe_tree(p: &Path) {
    if let Err(e) = seal::wipe_tree(p) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %p.display(), error = %e, "wiping a commit tree failed");
        }
    }
}

fn fsync_dir(d: &Path) -> io::Result<()> {
    fs::File::open(d)?.sync_all()
}

/// A blocking reader over chunks an async task sends; an `Err` chunk fails the read, and so
/// does going past `limit` bytes.
pub struct ChanReader {
    rx: tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    pub total: u64,
    limit: u64,
}

impl ChanReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<io::Result<Vec<u8>>>, limit: u64) -> Self {
        ChanReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            total: 0,
            limit,
        }
    }
}

/// The error a [`ChanReader`] fails with beyond its limit (`.0`), having read `.1` bytes.
#[derive(Debug, thiserror::Error)]
#[error("the stream passed its limit of {0} bytes")]
pub struct OverLimit(pub u64, pub u64);

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(c)) => {
                    self.total += c.len() as u64;
                    if self.total > self.limit {
                        return Err(io::Error::other(OverLimit(self.limit, self.total)));
                    }
                    self.cur = c;
                    self.pos = 0;
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Writes the tar stream `r` sealed into `commits/<id>.tmp`, fsyncs it, renames it to
/// `<id>.sealed` and fsyncs the directory. Returns the plaintext's size. On any error the
/// `.tmp` is wiped.
pub fn write_sealed(
    key: &seal::Key,
    tenant: &str,
    tenant_dir: &Path,
    id: &str,
    mut r: ChanReader,
) -> Result<u64, CommitError> {
    let dir = commits_dir(tenant_dir);
    crate::fsutil::ensure_dir(&dir, 0o700).map_err(io_err("creating", &dir))?;
    let tmp = dir.join(format!("{id}.tmp"));
    let res = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        let limit = r.limit;
        let n = {
            let mut w = io::BufWriter::with_capacity(1 << 20, &mut f);
            let n =
                seal::seal_stream(key, &aad(tenant, id), &mut r, &mut w).map_err(|e| {
                    match e.get_ref().and_then(|i| i.downcast_ref::<OverLimit>()) {
                        Some(o) => CommitError::TooLarge { limit, read: o.1 },
                        None => CommitError::Stream(e),
                    }
                })?;
            w.flush().map_err(io_err("writing", &tmp))?;
            n
        };
        f.sync_all().map_err(io_err("syncing", &tmp))?;
        let dst = sealed_path(tenant_dir, id);
        fs::rename(&tmp, &dst).map_err(io_err("renaming", &tmp))?;
        fsync_dir(&dir).map_err(io_err("syncing", &dir))?;
        Ok(n)
    })();
    if res.is_err() {
        wipe_file(&tmp);
    }
    res
}

/// The thread that opens a sealed commit into a [`ChanReader`].
type Opener = std::thread::JoinHandle<io::Result<u64>>;

/// The plaintext of commit `id` as a reader: a thread opens the sealed file into a bounded
/// channel the reader reads; a chunk that does not open fails the read. Give both to
/// [`finish_opened`] when done.
fn open_sealed(
    key: &seal::Key,
    tenant: &str,
    tenant_dir: &Path,
    id: &str,
) -> Result<(ChanReader, Opener), CommitError> {
    let sealed = sealed_path(tenant_dir, id);
    let f = fs::File::open(&sealed).map_err(io_err("opening", &sealed))?;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let aad = aad(tenant, id);
    let key2 = key.clone();
    let opener = std::thread::spawn(move || {
        let mut w = ChanWriter { tx: tx.clone() };
        let r = seal::open_stream(&key2, &aad, io::BufReader::new(f), &mut w);
        if let Err(e) = &r {
            let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        r
    });
    Ok((ChanReader::new(rx, u64::MAX), opener))
}

/// Ends a read of [`open_sealed`]: drains what the reader's consumer left, so the opener
/// reaches (and checks) the last chunk; `res` (what the consumer made of it) counts only if
/// the whole file opened.
fn finish_opened<T, E: Into<CommitError>>(
    mut r: ChanReader,
    opener: Opener,
    res: Result<T, E>,
) -> Result<T, CommitError> {
    let drained = io::copy(&mut r, &mut io::sink());
    drop(r);
    let opened = opener
        .join()
        .map_err(|_| CommitError::Open(io::Error::other("the opener panicked")))?;
    match (res, opened, drained) {
        (Ok(v), Ok(_), Ok(_)) => Ok(v),
        (Ok(_), Err(e), _) | (Ok(_), Ok(_), Err(e)) | (Err(_), Err(e), _) => {
            Err(CommitError::Open(e))
        }
        (Err(e), Ok(_), _) => Err(e.into()),
    }
}

/// A blocking writer into the channel a [`ChanReader`] reads.
struct ChanWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Vec<u8>>>,
}

impl Write for ChanWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(b.to_vec()))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the unpacker stopped"))?;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the kernel's random source is unavailable");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests;
