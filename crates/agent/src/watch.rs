//! `watch` (protocol version 3): inotify on the requested paths (and, with `recursive`, every
//! directory below them, including ones made later), each change sent as an `FsEvent` until
//! the client closes the stream.
//!
//! Bounded: at most [`MAX_WATCHES`] watched directories per request (more is refused at the
//! start, or reported as an `overflow` event when a later directory would pass it); the
//! kernel's own queue bounds what waits unread (its overflow is reported too). The agent stops
//! as soon as the client's end is closed or a write to it fails.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::error_event::{io_event, resource_error};
use crate::proto::{self, Event, Kind};

/// Directories (and files) one watch request may hold.
pub const MAX_WATCHES: usize = 4096;

const MASK: u32 = libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DONT_FOLLOW;

struct Watcher {
    fd: OwnedFd,
    dirs: HashMap<i32, PathBuf>,
    recursive: bool,
}

impl Watcher {
    fn add(&mut self, path: &Path) -> io::Result<()> {
        if self.dirs.len() >= MAX_WATCHES {
            return Err(io::Error::other(format!(
                "more than {MAX_WATCHES} directories to watch: watch a smaller tree"
            )));
        }
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: valid inotify fd and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.dirs.insert(wd, path.to_path_buf());
        Ok(())
    }

    /// Watches `path` and, when recursive, every directory below it (never through a symlink).
    fn add_tree(&mut self, path: &Path) -> io::Result<()> {
        self.add(path)?;
        if !self.recursive {
            return Ok(());
        }
        let Ok(rd) = fs::read_dir(path) else {
            return Ok(());
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                self.add_tree(&e.path())?;
            }
        }
        Ok(())
    }
}

/// The agent's own temporary names (an upload's file before its rename, a tar's staging
/// directory, a chunked copy's assembly): what a copy looks like from outside is the name it
/// ends as, so these are not reported (nor watched inside).
fn internal(path: &Path) -> bool {
    path.components().any(|c| {
        let c = c.as_os_str().to_string_lossy();
        c.contains(".bulkhead-upload-")
            || c.starts_with(".bulkhead-staging-")
            || c.contains(".bulkhead-chunked-")
    })
}

fn send(conn: &mut UnixStream, e: &Event) -> bool {
    proto::write_json(conn, Kind::Event, e).is_ok()
}

fn overflow(conn: &mut UnixStream, why: &str) -> bool {
    send(
        conn,
        &Event::FsEvent {
            kind: "overflow".into(),
            path: why.into(),
            is_dir: false,
            size: 0,
        },
    )
}

/// Sets the watches, answers `Done`, then streams events until the client goes.
pub(crate) fn watch(conn: &mut UnixStream, paths: &[String], recursive: bool) -> Result<(), Event> {
    // SAFETY: plain syscall; the fd is ours.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(resource_error(
            "cannot start a file-system watch",
            &io::Error::last_os_error(),
        ));
    }
    let mut w = Watcher {
        // SAFETY: a fresh fd we own.
        fd: unsafe { OwnedFd::from_raw_fd(fd) },
        dirs: HashMap::new(),
        recursive,
    };
    for p in paths {
        fs::symlink_metadata(p).map_err(|e| io_event("cannot watch", p, &e))?;
        w.add_tree(Path::new(p)).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOSPC) | None => Event::error(
                "invalid_argument",
                format!("cannot watch {p}: {e} (the node's limit of inotify watches, or ours of {MAX_WATCHES})"),
            ),
            _ => io_event("cannot watch", p, &e),
        })?;
    }
    if !send(conn, &Event::Done { bytes: 0 }) {
        return Ok(());
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = [
            libc::pollfd {
                fd: w.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: conn.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Ok(());
        }
        // The client sends nothing during a watch: anything readable is its end closing.
        if fds[1].revents != 0 {
            return Ok(());
        }
        if fds[0].revents == 0 {
            continue;
        }
        // SAFETY: reads into our buffer of the length given.
        let n = unsafe { libc::read(w.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        let mut off = 0usize;
        let head = std::mem::size_of::<libc::inotify_event>();
        while off + head <= n as usize {
            // SAFETY: the kernel wrote a whole inotify_event header at `off`; read_unaligned
            // copes with the byte buffer's alignment.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let name_bytes = &buf[off + head..(off + head + ev.len as usize).min(n as usize)];
            off += head + ev.len as usize;
            let name = name_bytes.split(|b| *b == 0).next().unwrap_or(&[]);
            if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                if !overflow(
                    conn,
                    "the kernel's event queue overflowed: some events were lost",
                ) {
                    return Ok(());
                }
                continue;
            }
            let Some(dir) = w.dirs.get(&ev.wd).cloned() else {
                continue;
            };
            if ev.mask & libc::IN_IGNORED != 0 {
                w.dirs.remove(&ev.wd);
                continue;
            }
            let path = if name.is_empty() {
                dir.clone()
            } else {
                dir.join(std::ffi::OsStr::from_bytes(name))
            };
            if internal(&path) {
                continue;
            }
            let is_dir = ev.mask & libc::IN_ISDIR != 0;
            // As Go's fsnotify (and so Slicer's agent) reports them: a name moved in is
            // created, a name moved away is renamed.
            let kind = if ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                "create"
            } else if ev.mask & libc::IN_MODIFY != 0 {
                "write"
            } else if ev.mask & (libc::IN_DELETE | libc::IN_DELETE_SELF) != 0 {
                "remove"
            } else if ev.mask & libc::IN_MOVED_FROM != 0 {
                "rename"
            } else if ev.mask & libc::IN_ATTRIB != 0 {
                "chmod"
            } else {
                continue;
            };
            // IN_DELETE_SELF of a watched child directory repeats its parent's IN_DELETE.
            if ev.mask & libc::IN_DELETE_SELF != 0 && name.is_empty() && w.dirs.len() > 1 {
                continue;
            }
            if is_dir && w.recursive && ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                if let Err(e) = w.add_tree(&path) {
                    let why = format!("not watching {}: {e}", path.display());
                    if !overflow(conn, &why) {
                        return Ok(());
                    }
                }
            }
            let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
            let e = Event::FsEvent {
                kind: kind.into(),
                path: path.to_string_lossy().into_owned(),
                is_dir,
                size: if is_dir { 0 } else { size },
            };
            if !send(conn, &e) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::read_frame;
    use std::time::Duration;

    fn next(c: &mut UnixStream) -> Event {
        let (_, p) = read_frame(c).unwrap().unwrap();
        serde_json::from_slice(&p).unwrap()
    }

    #[test]
    fn reports_changes_and_stops_when_the_client_goes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_str().unwrap().to_string();
        fs::create_dir(d.path().join("sub")).unwrap();
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let paths = vec![root.clone()];
        let t = std::thread::spawn(move || watch(&mut a, &paths, true));
        assert!(matches!(next(&mut b), Event::Done { .. }));
        fs::write(d.path().join("sub/f"), b"hi").unwrap();
        let mut seen = Vec::new();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while seen.len() < 2 {
            if let Event::FsEvent { kind, path, .. } = next(&mut b) {
                seen.push((kind, path));
            }
        }
        assert_eq!(seen[0], ("create".into(), format!("{root}/sub/f")));
        assert_eq!(seen[1].0, "write");
        // The agent's own temporary names are not reported; the name a file is renamed to is
        // created, the one it left renamed.
        fs::write(d.path().join("sub/.x.bulkhead-upload-1"), b"t").unwrap();
        fs::rename(
            d.path().join("sub/.x.bulkhead-upload-1"),
            d.path().join("sub/x"),
        )
        .unwrap();
        fs::rename(d.path().join("sub/x"), d.path().join("sub/y")).unwrap();
        let mut moves = Vec::new();
        while moves.len() < 3 {
            if let Event::FsEvent { kind, path, .. } = next(&mut b) {
                moves.push((kind, path));
            }
        }
        assert_eq!(
            moves,
            [
                ("create".to_string(), format!("{root}/sub/x")),
                ("rename".to_string(), format!("{root}/sub/x")),
                ("create".to_string(), format!("{root}/sub/y")),
            ]
        );
        // A new directory is watched too.
        fs::create_dir(d.path().join("new")).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        fs::remove_file(d.path().join("sub/f")).unwrap();
        let mut kinds = Vec::new();
        while !kinds.iter().any(|(k, _)| k == "remove") {
            if let Event::FsEvent { kind, path, .. } = next(&mut b) {
                kinds.push((kind, path));
            }
        }
        assert!(kinds.contains(&("create".into(), format!("{root}/new"))));
        drop(b);
        // The watcher notices the closed stream and ends.
        assert!(t.join().unwrap().is_ok());
    }

    #[test]
    fn a_missing_path_is_not_found() {
        let (mut a, _b) = UnixStream::pair().unwrap();
        let e = watch(&mut a, &["/no/such/dir".into()], false).unwrap_err();
        assert!(matches!(e, Event::Error { code, .. } if code == "not_found"));
    }
}
