//! Copying files and trees in and out of the node. Paths were validated by the daemon (absolute,
//! no `.`/`..`); they resolve inside the node's own root, so a symlink cannot lead out of the
//! node. Writes go to a temporary file that is renamed into place, so a failed or cut-off upload
//! never leaves a half-written file under the requested name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::error_event::io_event;
use crate::proto::{self, Event, Kind, MAX_FRAME};

/// Buffers writes into `Data` frames.
struct FrameWriter<'a> {
    conn: &'a mut UnixStream,
    buf: Vec<u8>,
    total: u64,
}

impl Write for FrameWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(MAX_FRAME - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_FRAME {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            proto::write_frame(self.conn, Kind::Data, &self.buf)?;
            self.total += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Reads `Data` frames until the empty one that ends the upload, into one buffer reused for
/// every frame.
struct FrameReader<'a> {
    conn: &'a mut UnixStream,
    pending: Vec<u8>,
    pos: usize,
    ended: bool,
    total: u64,
}

impl Read for FrameReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.pending.len() {
            if self.ended {
                return Ok(0);
            }
            self.pos = 0;
            let kind = proto::read_frame_into(self.conn, &mut self.pending);
            if !matches!(kind, Ok(Some(Kind::Data))) {
                self.pending.clear();
            }
            match kind? {
                Some(Kind::Data) if self.pending.is_empty() => self.ended = true,
                Some(Kind::Data) => self.total += self.pending.len() as u64,
                Some(k) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("unexpected {k:?} frame during upload"),
                    ))
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upload ended before its last frame",
                    ))
                }
            }
        }
        let n = out.len().min(self.pending.len() - self.pos);
        out[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

pub(crate) fn copy_out(
    conn: &mut UnixStream,
    path: &str,
    tar: bool,
    exclude: &[String],
) -> Result<(), Event> {
    let meta = fs::symlink_metadata(path).map_err(|e| io_event("cannot read", path, &e))?;
    if !tar {
        if meta.is_dir() {
            return Err(Event::error(
                "is_a_directory",
                format!("{path} is a directory: must specify a file not a directory, or copy it with mode=tar"),
            ));
        }
        if !meta.is_file() {
            return Err(Event::error(
                "not_a_regular_file",
                format!("{path} is not a regular file"),
            ));
        }
        let mut f = File::open(path).map_err(|e| io_event("cannot open", path, &e))?;
        send(
            conn,
            &Event::File {
                mode: meta.mode() & 0o7777,
                size: meta.len(),
            },
        )?;
        let mut w = FrameWriter {
            conn,
            buf: Vec::with_capacity(MAX_FRAME),
            total: 0,
        };
        io::copy(&mut f, &mut w)
            .and_then(|_| w.flush())
            .map_err(|e| io_event("cannot read", path, &e))?;
    } else {
        send(
            conn,
            &Event::File {
                mode: meta.mode() & 0o7777,
                size: 0,
            },
        )?;
        let mut w = FrameWriter {
            conn,
            buf: Vec::with_capacity(MAX_FRAME),
            total: 0,
        };
        {
            let mut b = tar::Builder::new(&mut w);
            b.follow_symlinks(false);
            let r = if meta.is_dir() {
                append_tree(&mut b, Path::new(path), &crate::glob::normalize(exclude))
            } else {
                let name = Path::new(path)
                    .file_name()
                    .map(PathBuf::from)
                    .unwrap_or_else(|| "file".into());
                b.append_path_with_name(path, name)
            };
            r.and_then(|_| b.finish())
                .map_err(|e| io_event("cannot archive", path, &e))?;
        }
        w.flush().map_err(|e| io_event("cannot send", path, &e))?;
    }
    proto::write_frame(conn, Kind::Data, &[]).map_err(|e| io_event("cannot send", path, &e))
}

/// Appends everything below `root` (not `root` itself) with names relative to it, parents
/// before their entries, names in byte order, symlinks as links; entries matched by
/// `exclude` (normalised) are left out with all they contain. Slicer's SDKs refuse an archive
/// with a `.` or `./`-prefixed entry, so there is none.
fn append_tree<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    exclude: &[String],
) -> io::Result<()> {
    let mut stack: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        if !rel.is_empty() {
            b.append_path_with_name(&dir, &rel)?;
            if !fs::symlink_metadata(&dir)?.is_dir() {
                continue;
            }
        }
        let mut names: Vec<_> = fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for name in names.into_iter().rev() {
            let child = if rel.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{rel}/{}", name.to_string_lossy())
            };
            if !crate::glob::excluded(&child, exclude) {
                stack.push((dir.join(&name), child));
            }
        }
    }
    Ok(())
}

fn send(conn: &mut UnixStream, e: &Event) -> Result<(), Event> {
    proto::write_json(conn, Kind::Event, e).map_err(|e| Event::error("io_error", e.to_string()))
}

pub(crate) fn copy_in(
    conn: &mut UnixStream,
    path: &str,
    tar: bool,
    (uid, gid): (Option<u32>, Option<u32>),
    mode: Option<u32>,
    (no_setid, owners, tmpfs_only): (bool, bool, bool),
) -> Result<(), Event> {
    let mode = mode.map(|m| {
        if no_setid {
            m & !crate::untar::SETID
        } else {
            m
        }
    });
    let target = Path::new(path);
    let mut reader = FrameReader {
        conn,
        pending: Vec::with_capacity(MAX_FRAME),
        pos: 0,
        ended: false,
        total: 0,
    };
    let result = if tmpfs_only && tar {
        Err(Event::error(
            "invalid_argument",
            format!("{path}: tmpfs_only is for one file, not a tar archive"),
        ))
    } else if tmpfs_only {
        // #13, secrets: into memory or nowhere (`tmpfs_file.rs`).
        crate::tmpfs_file::write(&mut reader, target, mode.unwrap_or(0o644), uid, gid)
    } else if tar {
        crate::untar::copy_in_tar(&mut reader, target, uid, gid, (no_setid, owners))
    } else {
        copy_in_file(&mut reader, target, uid, gid, mode)
            .map_err(|e| io_event("cannot write", path, &e))
    };
    // Drain the rest of the upload so the client sees our answer rather than a broken pipe.
    let mut sink = [0u8; 8192];
    while !reader.ended && matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
    let total = reader.total;
    result?;
    send(conn, &Event::Done { bytes: total })
}

fn copy_in_file(
    r: &mut FrameReader<'_>,
    target: &Path,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
) -> io::Result<()> {
    if !target.is_dir() {
        fs::create_dir_all(target.parent().unwrap_or(Path::new("/")))?;
    }
    write_file_atomically(
        r,
        target,
        mode.unwrap_or(0o644) & 0o7777,
        uid,
        gid,
        "upload",
    )
}

/// Writes `r` to `target` through a temporary name in its directory (`.NAME.bulkhead-TAG-N`,
/// created new, never through a symlink, 0600 until done), sets its mode and owner, then
/// renames it into place: a reader never sees half a file, and a failure leaves nothing.
/// The watcher (`watch.rs`) leaves these temporary names out of its events.
pub(crate) fn write_file_atomically(
    r: &mut impl Read,
    target: &Path,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
    tag: &str,
) -> io::Result<()> {
    if target.is_dir() {
        return Err(io::Error::from_raw_os_error(libc::EISDIR));
    }
    let dir = target.parent().unwrap_or(Path::new("/"));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.bulkhead-{tag}-{}",
        std::process::id() ^ rand_u32()
    ));
    let res = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        io::copy(r, &mut f)?;
        f.flush()?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::fchown(&f, Some(uid.unwrap_or(0)), Some(gid.unwrap_or(0)))?;
        fs::rename(&tmp, target)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: b is a valid 4-byte buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    u32::from_ne_bytes(b)
}
