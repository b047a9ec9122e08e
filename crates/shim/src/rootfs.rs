//! The bundle's rootfs (#16): mounted from Create's mounts at `<bundle>/rootfs`, streamed to the
//! daemon as a tar body, unmounted.
//!
//! Invariants of [`tar_body`]: symlinks are never followed (neither while walking nor when
//! reading: files are opened `O_NOFOLLOW` and described from their own fd); numeric owners and
//! modes are kept; no xattrs, no user/group names; hard links within the stream stay links;
//! device nodes, FIFOs and sockets are skipped with a log line; names are relative (no `/`, no
//! `..`). Host files are appended after the rootfs at their destination resolved *inside* the
//! rootfs (a symlink such as `/var/run -> /run` is followed within the root, as runc's mounts
//! do), with missing parents created (0755 root). The tar is written by a blocking thread into a
//! bounded channel, so a slow daemon slows the walk instead of filling memory.

use std::collections::{HashMap, HashSet};
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use containerd_shim_protos::types::mount::Mount;
use futures_util::Stream;

use crate::spec::HostFile;

/// Chunks of at most this size travel the channel; at most [`CHANNEL_DEPTH`] wait in it.
const CHUNK: usize = 256 * 1024;
const CHANNEL_DEPTH: usize = 8;
/// Symlinks followed while resolving one destination inside the rootfs.
const MAX_HOPS: usize = 40;
/// The tar thread's stack.
const WALK_STACK: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("rootfs target {}: {source}", path.display())]
    Target { path: PathBuf, source: io::Error },
    #[error("rootfs mount {index} (type {typ:?}, source {source_path:?}): {msg}")]
    Mount {
        index: usize,
        typ: String,
        source_path: String,
        msg: String,
    },
}

/// Mounts containerd's rootfs `mounts` (overlay, bind, ...) in order at `target` (created if
/// missing). No mounts means the rootfs is already there (`ctr run --rootfs`). Each mount runs on
/// a thread of its own: containerd's helper may `unshare(CLONE_FS)` and chdir (long overlay
/// lowerdirs), which must not touch the caller's threads.
pub fn mount_rootfs(mounts: &[Mount], target: &Path) -> Result<(), RootfsError> {
    std::fs::create_dir_all(target).map_err(|source| RootfsError::Target {
        path: target.into(),
        source,
    })?;
    for (index, m) in mounts.iter().enumerate() {
        let err = |msg: String| RootfsError::Mount {
            index,
            typ: m.type_.clone(),
            source_path: m.source.clone(),
            msg,
        };
        let sub = Path::new(&m.target);
        if sub.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(err(format!(
                "target {:?} must be a relative path",
                m.target
            )));
        }
        let at = target.join(sub);
        let (typ, source, options) = (m.type_.clone(), m.source.clone(), m.options.clone());
        let res = std::thread::spawn(move || {
            containerd_shim::mount::mount_rootfs(
                Some(typ.as_str()).filter(|t| !t.is_empty()),
                Some(source.as_str()).filter(|s| !s.is_empty()),
                &options,
                &at,
            )
            .map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| err("the mount thread panicked".into()))?;
        res.map_err(err)?;
    }
    Ok(())
}

/// Unmounts everything at and under `target` (errors are logged: Delete carries on).
pub fn unmount_rootfs(target: &Path) {
    let Some(t) = target.to_str() else {
        log::warn!("unmount {}: not UTF-8", target.display());
        return;
    };
    if let Err(e) = containerd_shim::mount::umount_recursive(Some(t), libc::MNT_DETACH) {
        log::warn!("unmount {t}: {e}");
    }
}

/// The rootfs at `rootfs` then `host_files`, as a tar stream (see the module's invariants). An
/// error ends the stream with that error.
pub fn tar_body(
    rootfs: &Path,
    host_files: Vec<HostFile>,
) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(CHANNEL_DEPTH);
    let rootfs = rootfs.to_path_buf();
    let err_tx = tx.clone();
    // Deep trees recurse once per level (PATH_MAX bounds the depth): give the walk room.
    let spawned = std::thread::Builder::new()
        .name("rootfs-tar".into())
        .stack_size(WALK_STACK)
        .spawn(move || {
            let sink = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let res = write_tar(&rootfs, &host_files, sink);
            if let Err(e) = res {
                if e.kind() != io::ErrorKind::BrokenPipe {
                    log::warn!("rootfs tar of {}: {e}", rootfs.display());
                }
                let _ = tx.blocking_send(Err(e));
            }
        });
    if let Err(e) = spawned {
        let _ = err_tx.try_send(Err(io::Error::other(format!("rootfs tar: no thread: {e}"))));
    }
    drop(err_tx);
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
}

/// Sends full chunks down the channel; a dropped receiver is `BrokenPipe`.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the tar body was dropped"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The whole archive into `w` (also used by tests with a plain `Vec`).
pub(crate) fn write_tar<W: Write>(rootfs: &Path, host_files: &[HostFile], w: W) -> io::Result<()> {
    let mut t = Tar {
        b: tar::Builder::new(w),
        links: HashMap::new(),
        dirs: HashSet::new(),
    };
    t.b.follow_symlinks(false);
    t.walk(rootfs, Path::new(""))?;
    for f in host_files {
        let dest = resolve_in_root(rootfs, &f.dest)?;
        if dest.as_os_str().is_empty() {
            return Err(io::Error::other(format!(
                "host file {} would replace the container's root",
                f.host.display()
            )));
        }
        let mut parent = PathBuf::new();
        for c in dest.parent().into_iter().flat_map(Path::components) {
            parent.push(c);
            if !t.dirs.contains(&parent) && !rootfs.join(&parent).is_dir() {
                t.dir_entry(&parent, 0o755, 0, 0, 0)?;
            }
        }
        let meta = std::fs::symlink_metadata(&f.host).map_err(|e| {
            io::Error::new(e.kind(), format!("host file {}: {e}", f.host.display()))
        })?;
        if meta.file_type().is_symlink() {
            return Err(io::Error::other(format!(
                "host file {} is a symlink: not followed",
                f.host.display()
            )));
        }
        t.entry(&f.host, &dest, &meta)?;
    }
    let mut w = t.b.into_inner()?;
    w.flush()
}

struct Tar<W: Write> {
    b: tar::Builder<W>,
    /// (dev, ino) of multiply linked files already written → their name in the archive.
    links: HashMap<(u64, u64), PathBuf>,
    /// Directories written (so host files' parents are not written twice).
    dirs: HashSet<PathBuf>,
}

impl<W: Write> Tar<W> {
    /// Everything under `dir` (host path), named under `name` in the archive.
    fn walk(&mut self, dir: &Path, name: &Path) -> io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path)?;
            self.entry(&path, &name.join(e.file_name()), &meta)?;
        }
        Ok(())
    }

    /// One entry (and, for a directory, its tree). `meta` is `lstat`'s.
    fn entry(&mut self, path: &Path, name: &Path, meta: &Metadata) -> io::Result<()> {
        let ft = meta.file_type();
        if ft.is_dir() {
            self.dir_entry(name, meta.mode(), meta.uid(), meta.gid(), meta.mtime())?;
            return self.walk(path, name);
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(path)?;
            let mut h = header(meta, tar::EntryType::Symlink);
            return self.b.append_link(&mut h, name, target);
        }
        if ft.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                    let mut h = header(meta, tar::EntryType::Link);
                    let first = first.clone();
                    return self.b.append_link(&mut h, name, first);
                }
                self.links
                    .insert((meta.dev(), meta.ino()), name.to_path_buf());
            }
            // Described from the opened fd: what was lstat'ed may have been swapped since.
            let file = File::options()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(path)?;
            let fmeta = file.metadata()?;
            if !fmeta.is_file() {
                return Err(io::Error::other(format!(
                    "{} changed while being read",
                    path.display()
                )));
            }
            let mut h = header(&fmeta, tar::EntryType::Regular);
            let size = fmeta.len();
            let body = ExactReader {
                inner: file.take(size),
                left: size,
                path,
            };
            return self.b.append_data(&mut h, name, body);
        }
        let what = if ft.is_block_device() || ft.is_char_device() {
            "device node"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        log::info!("rootfs tar: {what} {} skipped", path.display());
        Ok(())
    }

    fn dir_entry(
        &mut self,
        name: &Path,
        mode: u32,
        uid: u32,
        gid: u32,
        mtime: i64,
    ) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode & 0o7777);
        h.set_uid(uid.into());
        h.set_gid(gid.into());
        h.set_mtime(u64::try_from(mtime).unwrap_or(0));
        h.set_size(0);
        self.dirs.insert(name.to_path_buf());
        self.b.append_data(&mut h, name, io::empty())
    }
}

fn header(meta: &Metadata, typ: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(typ);
    h.set_mode(meta.mode() & 0o7777);
    h.set_uid(meta.uid().into());
    h.set_gid(meta.gid().into());
    h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    h.set_size(if typ == tar::EntryType::Regular {
        meta.len()
    } else {
        0
    });
    h
}

/// A file body that must be exactly its header's size (a file that shrank is an error, not a
/// corrupt archive).
struct ExactReader<'a, R> {
    inner: R,
    left: u64,
    path: &'a Path,
}

impl<R: Read> Read for ExactReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} shrank while being read", self.path.display()),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// `dest` (absolute, inside the container) resolved within `root` the way runc resolves a mount
/// destination: symlinks are followed but never leave the root (absolute targets restart at the
/// root, `..` stops there). Returns the relative name inside the root.
pub(crate) fn resolve_in_root(root: &Path, dest: &str) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    let mut todo: Vec<PathBuf> = Path::new(dest)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(PathBuf::from(s)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        if c == Path::new("..") {
            out.pop();
            continue;
        }
        let next = out.join(&c);
        match std::fs::symlink_metadata(root.join(&next)) {
            Ok(m) if m.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_HOPS {
                    return Err(io::Error::other(format!(
                        "{dest}: too many symlinks inside the container's root"
                    )));
                }
                let target = std::fs::read_link(root.join(&next))?;
                if target.is_absolute() {
                    out = PathBuf::new();
                }
                for tc in target.components().rev() {
                    match tc {
                        Component::Normal(s) => todo.push(PathBuf::from(s)),
                        Component::ParentDir => todo.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            _ => out = next,
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "rootfs_tests.rs"]
mod tests;
