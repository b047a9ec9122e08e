//! Small file-system operations of protocol version 3: `stat`, `read_dir`, `mkdir`, `remove`,
//! and `rename` (capability `rename`, #15).
//! Paths were validated by the daemon (absolute, no `.`/`..`) and resolve inside the node's
//! own root, like those of a copy: the agent can do nothing here that root in the node could
//! not do itself. `stat` and `read_dir` never follow a symlink at the last component (they
//! report the link); `remove` never follows one anywhere below the path it removes. A
//! recursive `mkdir` with an owner gives the parents it makes that owner too (E2B's uploads).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::error_event::io_event;
use crate::proto::{self, Event, FsInfo, Kind};

/// At most this many entries of one directory are listed; a bigger one is refused (list a
/// subdirectory, or use exec).
pub const MAX_ENTRIES: usize = 100_000;
/// Entries per `Entries` event (keeps each frame well under [`proto::MAX_FRAME`]).
const ENTRIES_PER_EVENT: usize = 500;

fn send(conn: &mut UnixStream, e: &Event) -> Result<(), Event> {
    proto::write_json(conn, Kind::Event, e).map_err(|e| Event::error("io_error", e.to_string()))
}

/// What one path is, from its own metadata (a symlink is reported, not followed).
pub(crate) fn info_of(name: String, m: &fs::Metadata) -> FsInfo {
    let t = m.file_type();
    let kind = if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "directory"
    } else if t.is_file() {
        "file"
    } else {
        "other"
    };
    FsInfo {
        name,
        kind: kind.into(),
        size: m.len(),
        mtime_s: m.mtime(),
        mtime_ns: m.mtime_nsec().clamp(0, 999_999_999) as u32,
        mode: m.mode() & 0o7777,
        uid: Some(m.uid()),
        gid: Some(m.gid()),
        link: None,
    }
}

/// `info` with its symlink's target when it is one (`path` is the link's own path).
fn with_link(mut info: FsInfo, path: &Path) -> FsInfo {
    if info.kind == "symlink" {
        info.link = fs::read_link(path)
            .ok()
            .map(|t| t.to_string_lossy().into_owned());
    }
    info
}

fn last_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/".into())
}

pub(crate) fn stat(conn: &mut UnixStream, path: &str) -> Result<(), Event> {
    let m = fs::symlink_metadata(path).map_err(|e| io_event("cannot stat", path, &e))?;
    send(
        conn,
        &Event::Stat {
            info: with_link(info_of(last_name(path), &m), Path::new(path)),
        },
    )
}

pub(crate) fn read_dir(conn: &mut UnixStream, path: &str) -> Result<(), Event> {
    let rd = fs::read_dir(path).map_err(|e| io_event("cannot list", path, &e))?;
    let mut all = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| io_event("cannot list", path, &e))?;
        if all.len() == MAX_ENTRIES {
            return Err(Event::error(
                "invalid_argument",
                format!(
                    "{path} has more than {MAX_ENTRIES} entries: list a subdirectory, or run ls through exec"
                ),
            ));
        }
        // An entry removed meanwhile is simply not listed.
        let Ok(m) = entry.metadata() else { continue };
        all.push(with_link(
            info_of(entry.file_name().to_string_lossy().into_owned(), &m),
            &entry.path(),
        ));
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    for part in all.chunks(ENTRIES_PER_EVENT) {
        send(
            conn,
            &Event::Entries {
                entries: part.to_vec(),
            },
        )?;
    }
    send(conn, &Event::Done { bytes: 0 })
}

pub(crate) fn mkdir(
    conn: &mut UnixStream,
    path: &str,
    recursive: bool,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(), Event> {
    let mode = mode.unwrap_or(0o755) & 0o7777;
    let existed = recursive && fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    // The parents a recursive mkdir is about to make: they become the owner's too.
    let mut made_parents = Vec::new();
    if recursive && !existed && (uid.is_some() || gid.is_some()) {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| fs::symlink_metadata(d).is_err()) {
            made_parents.push(d.to_path_buf());
            p = d.parent();
        }
    }
    fs::DirBuilder::new()
        .recursive(recursive)
        .mode(mode)
        .create(path)
        .map_err(|e| io_event("cannot create", path, &e))?;
    if !existed {
        // The umask applies to mkdir's mode; the caller asked for exactly this one.
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| io_event("cannot change the mode of", path, &e))?;
        if uid.is_some() || gid.is_some() {
            std::os::unix::fs::lchown(path, uid, gid)
                .map_err(|e| io_event("cannot change the owner of", path, &e))?;
            for d in &made_parents {
                std::os::unix::fs::lchown(d, uid, gid).map_err(|e| {
                    io_event("cannot change the owner of", &d.to_string_lossy(), &e)
                })?;
            }
        }
    }
    send(conn, &Event::Done { bytes: 0 })
}

pub(crate) fn rename(conn: &mut UnixStream, from: &str, to: &str) -> Result<(), Event> {
    if from.trim_end_matches('/').is_empty() || to.trim_end_matches('/').is_empty() {
        return Err(Event::error(
            "invalid_argument",
            "refusing to move the node's root directory /",
        ));
    }
    fs::rename(from, to).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => Event::error(
            "already_exists",
            format!("cannot move {from} to {to}: {to} is a directory that is not empty"),
        ),
        Some(libc::EINVAL) => Event::error(
            "invalid_argument",
            format!("cannot move {from} into itself ({to})"),
        ),
        _ => io_event("cannot move", from, &e),
    })?;
    send(conn, &Event::Done { bytes: 0 })
}

pub(crate) fn remove(conn: &mut UnixStream, path: &str, recursive: bool) -> Result<(), Event> {
    if path.trim_end_matches('/').is_empty() {
        return Err(Event::error(
            "invalid_argument",
            "refusing to remove the node's root directory /",
        ));
    }
    let m = fs::symlink_metadata(path).map_err(|e| io_event("cannot remove", path, &e))?;
    let r = if !m.is_dir() {
        fs::remove_file(path)
    } else if recursive {
        // Does not follow symlinks below `path`: a link is removed, not its target.
        fs::remove_dir_all(path)
    } else {
        fs::remove_dir(path)
    };
    r.map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => Event::error(
            "invalid_argument",
            format!("{path} is a directory that is not empty: remove it with recursive=true"),
        ),
        Some(libc::EBUSY) => Event::error(
            "invalid_argument",
            format!("{path} is a mount point and cannot be removed"),
        ),
        _ => io_event("cannot remove", path, &e),
    })?;
    send(conn, &Event::Done { bytes: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::read_frame;

    fn run(f: impl FnOnce(&mut UnixStream) -> Result<(), Event>) -> Vec<Event> {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        if let Err(e) = f(&mut a) {
            proto::write_json(&mut a, Kind::Event, &e).unwrap();
        }
        drop(a);
        let mut out = Vec::new();
        while let Some((Kind::Event, p)) = read_frame(&mut b).unwrap() {
            out.push(serde_json::from_slice(&p).unwrap());
        }
        out
    }

    fn code(e: &[Event]) -> &str {
        match e.last() {
            Some(Event::Error { code, .. }) => code,
            _ => "",
        }
    }

    #[test]
    fn stat_list_mkdir_remove() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_str().unwrap().to_string();
        fs::write(d.path().join("f"), b"hello").unwrap();
        std::os::unix::fs::symlink("/nowhere", d.path().join("l")).unwrap();

        let ev = run(|c| stat(c, &format!("{root}/f")));
        let Event::Stat { info } = &ev[0] else {
            panic!("{ev:?}")
        };
        assert_eq!(
            (info.name.as_str(), info.kind.as_str(), info.size),
            ("f", "file", 5)
        );
        let ev = run(|c| stat(c, &format!("{root}/l")));
        assert!(matches!(&ev[0], Event::Stat { info } if info.kind == "symlink"));
        assert_eq!(
            code(&run(|c| stat(c, &format!("{root}/missing")))),
            "not_found"
        );

        let sub = format!("{root}/a/b");
        assert_eq!(
            code(&run(|c| mkdir(c, &sub, false, None, None, None))),
            "not_found"
        );
        assert!(matches!(
            run(|c| mkdir(c, &sub, true, Some(0o700), None, None))[..],
            [Event::Done { .. }]
        ));
        assert_eq!(fs::metadata(&sub).unwrap().mode() & 0o777, 0o700);
        // Again with recursive: fine; without: it exists.
        assert!(matches!(
            run(|c| mkdir(c, &sub, true, None, None, None))[..],
            [Event::Done { .. }]
        ));
        assert_eq!(
            code(&run(|c| mkdir(c, &sub, false, None, None, None))),
            "already_exists"
        );

        let ev = run(|c| read_dir(c, &root));
        let Event::Entries { entries } = &ev[0] else {
            panic!("{ev:?}")
        };
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "f", "l"]);
        assert!(matches!(ev.last(), Some(Event::Done { .. })));
        assert_eq!(
            code(&run(|c| read_dir(c, &format!("{root}/f")))),
            "not_a_directory"
        );

        let a = format!("{root}/a");
        assert_eq!(code(&run(|c| remove(c, &a, false))), "invalid_argument");
        assert!(matches!(
            run(|c| remove(c, &a, true))[..],
            [Event::Done { .. }]
        ));
        assert!(!Path::new(&a).exists());
        // A symlink goes, its target stays.
        fs::write(d.path().join("t"), b"x").unwrap();
        std::os::unix::fs::symlink(d.path().join("t"), d.path().join("l2")).unwrap();
        assert!(matches!(
            run(|c| remove(c, &format!("{root}/l2"), true))[..],
            [Event::Done { .. }]
        ));
        assert!(d.path().join("t").exists());
        assert_eq!(
            code(&run(|c| remove(c, &format!("{root}/gone"), false))),
            "not_found"
        );
        assert_eq!(code(&run(|c| remove(c, "/", true))), "invalid_argument");
    }

    #[test]
    fn rename_and_owned_parents() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_str().unwrap().to_string();
        fs::write(d.path().join("f"), b"x").unwrap();
        let (f, g) = (format!("{root}/f"), format!("{root}/g"));
        assert!(matches!(
            run(|c| rename(c, &f, &g))[..],
            [Event::Done { .. }]
        ));
        assert!(d.path().join("g").exists() && !d.path().join("f").exists());
        assert_eq!(code(&run(|c| rename(c, &f, &g))), "not_found");
        assert_eq!(code(&run(|c| rename(c, "/", &g))), "invalid_argument");
        // A recursive mkdir with an owner owns every directory it makes (ours, unprivileged).
        // SAFETY: geteuid and getegid only read the calling process's ids.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let deep = format!("{root}/a/b/c");
        assert!(matches!(
            run(|c| mkdir(c, &deep, true, None, Some(uid), Some(gid)))[..],
            [Event::Done { .. }]
        ));
        for p in ["a", "a/b", "a/b/c"] {
            assert_eq!(fs::metadata(d.path().join(p)).unwrap().uid(), uid);
        }
        let ev = run(|c| stat(c, &g));
        assert!(matches!(&ev[0], Event::Stat { info } if info.uid == Some(uid)));
        std::os::unix::fs::symlink("g", d.path().join("l")).unwrap();
        let ev = run(|c| stat(c, &format!("{root}/l")));
        assert!(matches!(&ev[0], Event::Stat { info } if info.link.as_deref() == Some("g")));
    }
}
