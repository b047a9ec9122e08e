//! Writing a file only onto a tmpfs (#13, secrets: "on tmpfs at `/run/secrets/<name>`"): a
//! copy-in with `tmpfs_only` (the daemon's secret delivery) lands in memory or nowhere.
//!
//! Invariants:
//! - the target's directory is reached from `/` one component at a time, each opened with
//!   `O_DIRECTORY | O_NOFOLLOW`: a symlink anywhere on the way is refused, so the directory
//!   checked is the directory written into;
//! - that directory's file system, asked through the open descriptor (`fstatfs`), must be a
//!   tmpfs: a `/run/secrets` the node's own root unmounted (or replaced) is refused with
//!   [`crate::proto::NOT_TMPFS`], nothing written. Holding the descriptor keeps the checked
//!   directory: a later unmount cannot move the write elsewhere;
//! - the file is created relative to that descriptor under a temporary name (`O_CREAT |
//!   O_EXCL | O_NOFOLLOW`, 0600), given its mode and owner, then renamed into place relative to
//!   the same descriptor: a reader never sees half a file, and a failure leaves nothing.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use crate::error_event::io_event;
use crate::proto::{Event, NOT_TMPFS};

/// `TMPFS_MAGIC` of `<linux/magic.h>`.
const TMPFS_MAGIC: i64 = 0x0102_1994;

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Opens `dir` (absolute) without following any symlink on the way.
fn open_dir_nofollow(dir: &Path) -> io::Result<OwnedFd> {
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let root = CString::new("/").unwrap_or_default();
    // SAFETY: `root` is a valid C string; the result is checked before use.
    let fd = unsafe { libc::open(root.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let mut cur = unsafe { OwnedFd::from_raw_fd(fd) };
    for c in dir.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(name) => {
                let name = cstr(name)?;
                // SAFETY: `cur` is an open directory, `name` a valid C string.
                let fd = unsafe { libc::openat(cur.as_raw_fd(), name.as_ptr(), flags) };
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: as above.
                cur = unsafe { OwnedFd::from_raw_fd(fd) };
            }
            // The daemon sends normalised absolute paths; anything else is not ours to guess.
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
    Ok(cur)
}

/// The file system type of what `fd` is open on.
fn fs_type(fd: &OwnedFd) -> io::Result<i64> {
    // SAFETY: statfs is plain data, zero is a valid value for it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open; `st` is a valid out-pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between libcs
    Ok(st.f_type as i64)
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: b is a valid 4-byte buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    u32::from_ne_bytes(b)
}

/// Writes `r` to `target` (absolute) only if its directory is a tmpfs; see the module's
/// invariants. `mode` is applied as given.
pub(crate) fn write(
    r: &mut impl Read,
    target: &Path,
    mode: u32,
    uid: Option<u32>,
    gid: Option<u32>,
) -> Result<(), Event> {
    let shown = target.display().to_string();
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return Err(Event::error(
            "invalid_argument",
            format!("{shown}: a file on a tmpfs needs a directory and a name"),
        ));
    };
    let dir_shown = dir.display().to_string();
    let d = open_dir_nofollow(dir).map_err(|e| io_event("cannot open", &dir_shown, &e))?;
    let t = fs_type(&d).map_err(|e| io_event("cannot read the file system of", &dir_shown, &e))?;
    if t != TMPFS_MAGIC {
        return Err(Event::error(
            NOT_TMPFS,
            format!(
                "{dir_shown} is not a tmpfs (file system type {t:#x}): {shown} is written only to memory, so nothing was written; relaunch the node to mount its tmpfs again"
            ),
        ));
    }
    let tmp = cstr(OsStr::new(&format!(
        ".{}.bulkhead-tmpfs-{}",
        name.to_string_lossy(),
        std::process::id() ^ rand_u32()
    )))
    .map_err(|e| io_event("cannot write", &shown, &e))?;
    let name = cstr(name).map_err(|e| io_event("cannot write", &shown, &e))?;
    let res = (|| {
        let flags =
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        // SAFETY: `d` is an open directory, `tmp` a valid C string.
        let fd = unsafe { libc::openat(d.as_raw_fd(), tmp.as_ptr(), flags, 0o600 as libc::c_uint) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is owned by nobody else.
        let mut f = unsafe { File::from_raw_fd(fd) };
        io::copy(r, &mut f)?;
        f.flush()?;
        // SAFETY: `f` is open.
        if unsafe { libc::fchmod(f.as_raw_fd(), mode & 0o7777) } != 0 {
            return Err(io::Error::last_os_error());
        }
        std::os::unix::fs::fchown(&f, Some(uid.unwrap_or(0)), Some(gid.unwrap_or(0)))?;
        // SAFETY: both names are valid C strings, relative to the open directory `d`.
        if unsafe { libc::renameat(d.as_raw_fd(), tmp.as_ptr(), d.as_raw_fd(), name.as_ptr()) } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    })();
    if res.is_err() {
        // SAFETY: as above; a name that is not there is no matter.
        unsafe { libc::unlinkat(d.as_raw_fd(), tmp.as_ptr(), 0) };
    }
    res.map_err(|e| io_event("cannot write", &shown, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn code(e: &Event) -> &str {
        match e {
            Event::Error { code, .. } => code,
            _ => "",
        }
    }

    /// A directory on a tmpfs: /dev/shm is one on every Linux we run on.
    fn tmpfs_dir() -> Option<tempfile::TempDir> {
        let d = tempfile::tempdir_in("/dev/shm").ok()?;
        let fd = open_dir_nofollow(d.path()).ok()?;
        (fs_type(&fd).ok()? == TMPFS_MAGIC).then_some(d)
    }

    /// A directory that is not on a tmpfs (in the temporary directory, or /var/tmp).
    fn disk_dir() -> Option<tempfile::TempDir> {
        [std::env::temp_dir(), "/var/tmp".into()]
            .into_iter()
            .filter_map(|base| tempfile::tempdir_in(base).ok())
            .find(|d| {
                open_dir_nofollow(d.path())
                    .and_then(|fd| fs_type(&fd))
                    .is_ok_and(|t| t != TMPFS_MAGIC)
            })
    }

    #[test]
    fn a_tmpfs_directory_gets_the_file_with_its_mode() {
        let Some(d) = tmpfs_dir() else {
            eprintln!("skipped: /dev/shm is not a tmpfs here");
            return;
        };
        let target = d.path().join("db-password");
        write(&mut &b"hunter2"[..], &target, 0o440, None, None).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"hunter2");
        let md = std::fs::metadata(&target).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o440);
        // Written again: replaced whole, and no temporary name is left.
        write(&mut &b"new"[..], &target, 0o400, None, None).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_directory_not_on_a_tmpfs_is_refused_and_gets_nothing() {
        let Some(d) = disk_dir() else {
            eprintln!("skipped: no directory off tmpfs to test with");
            return;
        };
        let target = d.path().join("db-password");
        let e = write(&mut &b"hunter2"[..], &target, 0o400, None, None).unwrap_err();
        assert_eq!(code(&e), NOT_TMPFS, "{e:?}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_symlink_on_the_way_is_refused_even_to_a_tmpfs() {
        let (Some(shm), Some(d)) = (tmpfs_dir(), disk_dir()) else {
            eprintln!("skipped: needs a tmpfs and a directory off it");
            return;
        };
        // `secrets` is a link to a tmpfs directory: not followed.
        let link = d.path().join("secrets");
        std::os::unix::fs::symlink(shm.path(), &link).unwrap();
        let e = write(&mut &b"x"[..], &link.join("s"), 0o400, None, None).unwrap_err();
        // ELOOP or ENOTDIR, as the kernel says it.
        assert!(
            ["invalid_argument", "not_a_directory"].contains(&code(&e)),
            "{e:?}"
        );
        assert_eq!(std::fs::read_dir(shm.path()).unwrap().count(), 0);
    }
}
