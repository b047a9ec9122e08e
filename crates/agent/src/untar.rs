//! Tar uploads, all or nothing. The archive is unpacked into a private staging directory on the
//! destination's own filesystem and moved into place only once every entry was accepted: a
//! refused archive (an entry leaving its destination, a device node, a truncated stream, a
//! full layer or node memory) leaves the destination exactly as it was, and the staging
//! directory is removed.
//!
//! The staging directory is made with `mkdirat` (which fails if the name exists) under a random
//! name, mode 0700, and from then on reached only through its descriptor: as `/proc/self/fd/N`
//! while unpacking (renaming it or planting a symlink in its place redirects nothing), and with
//! `*at` calls that never follow symlinks while moving entries into place.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error_event::{io_event, space_code};
use crate::proto::Event;

struct Dir(OwnedFd);

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

impl Dir {
    /// Opens a directory the caller named (symlinks in the path are followed, as for any path
    /// of a copy request: they resolve inside the node).
    fn open(path: &Path) -> io::Result<Dir> {
        let c = cstr(path.as_os_str())?;
        // SAFETY: c is NUL-terminated; the fd is ours.
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: a fresh fd we own.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Opens a subdirectory; a symlink is refused, never followed.
    fn open_at(&self, name: &OsStr) -> io::Result<Dir> {
        let c = cstr(name)?;
        // SAFETY: as above, relative to our own directory fd.
        let fd = cvt(unsafe {
            libc::openat(
                self.0.as_raw_fd(),
                c.as_ptr(),
                libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_RDONLY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: a fresh fd we own.
        Ok(Dir(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The entry's own status (not a symlink's target); `None` if there is no such entry.
    fn stat_at(&self, name: &OsStr) -> io::Result<Option<libc::stat>> {
        let c = cstr(name)?;
        // SAFETY: st is written by the kernel before it is read.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd, NUL-terminated name, valid out pointer.
        let r = unsafe {
            libc::fstatat(
                self.0.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        match cvt(r) {
            Ok(_) => Ok(Some(st)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn stat(&self) -> io::Result<libc::stat> {
        // SAFETY: as in stat_at.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out pointer.
        cvt(unsafe { libc::fstat(self.0.as_raw_fd(), &mut st) })?;
        Ok(st)
    }

    /// A path that reaches this very directory whatever happens to its name.
    fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.0.as_raw_fd()))
    }

    fn names(&self) -> io::Result<Vec<OsString>> {
        fs::read_dir(self.proc_path())?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }

    fn rename_to(&self, from: &OsStr, to: &Dir, to_name: &OsStr, flags: u32) -> io::Result<()> {
        let (a, b) = (cstr(from)?, cstr(to_name)?);
        // SAFETY: valid fds and NUL-terminated names.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                self.0.as_raw_fd(),
                a.as_ptr(),
                to.0.as_raw_fd(),
                b.as_ptr(),
                flags,
            )
        };
        cvt(r as libc::c_int).map(|_| ())
    }

    /// Opens `path` (relative) as an `O_PATH` fd, resolved strictly beneath this directory:
    /// no `..` above it, no absolute symlink, no magic link.
    fn open_beneath(&self, path: &Path) -> io::Result<OwnedFd> {
        let c = cstr(path.as_os_str())?;
        /// `struct open_how` of openat2(2).
        #[repr(C)]
        struct OpenHow {
            flags: u64,
            mode: u64,
            resolve: u64,
        }
        let how = OpenHow {
            flags: (libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        };
        // SAFETY: valid fd, NUL-terminated path, `how` of the size passed.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.0.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        cvt(fd as libc::c_int)?;
        // SAFETY: a fresh fd we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Opens (creating as needed) the directory `rel` beneath this one, one component at a
    /// time and never through a symlink.
    fn make_dirs(&self, rel: &Path) -> io::Result<Dir> {
        let mut d = self.open_at(OsStr::new("."))?;
        for c in rel.components() {
            let Component::Normal(name) = c else { continue };
            let n = cstr(name)?;
            // SAFETY: valid fd and NUL-terminated name.
            let r = unsafe { libc::mkdirat(d.0.as_raw_fd(), n.as_ptr(), 0o755) };
            if let Err(e) = cvt(r) {
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
            d = d.open_at(name)?;
        }
        Ok(d)
    }

    fn chmod(&self, mode: u32) -> io::Result<()> {
        // SAFETY: valid fd.
        cvt(unsafe { libc::fchmod(self.0.as_raw_fd(), mode) }).map(|_| ())
    }

    fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        // SAFETY: valid fd.
        cvt(unsafe { libc::fchown(self.0.as_raw_fd(), uid, gid) }).map(|_| ())
    }
}

/// Creates the staging directory in `base`: a fresh random name, 0700.
fn make_stage(base: &Dir) -> io::Result<(OsString, Dir)> {
    loop {
        let mut b = [0u8; 8];
        // SAFETY: b is a valid 8-byte buffer.
        unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
        let name = OsString::from(format!(".bulkhead-staging-{:016x}", u64::from_ne_bytes(b)));
        let c = cstr(&name)?;
        // SAFETY: valid fd and NUL-terminated name.
        match cvt(unsafe { libc::mkdirat(base.0.as_raw_fd(), c.as_ptr(), 0o700) }) {
            Ok(_) => return Ok((name.clone(), base.open_at(&name)?)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn invalid(message: String) -> Event {
    Event::error(
        "invalid_archive",
        format!("{message}: the archive was refused and nothing of it was written"),
    )
}

/// An error while unpacking one entry: out of space or memory, permissions, or a bad entry.
fn entry_error(path: &Path, e: io::Error) -> Event {
    if let Some(code) = space_code(&e) {
        return Event::error(code, format!("cannot write {}: {e}", path.display()));
    }
    if e.kind() == io::ErrorKind::PermissionDenied {
        return Event::error("permission_denied", format!("{}: {e}", path.display()));
    }
    // tar's errors wrap the system's: say the whole chain.
    let mut msg = e.to_string();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.get_ref().and_then(|i| i.source());
    while let Some(c) = cur {
        msg = format!("{msg}: {c}");
        cur = c.source();
    }
    invalid(format!("entry {}: {msg}", path.display()))
}

/// A hard link entry, made by us rather than by tar (whose link source is a path through the
/// staging directory's name, which a workload owning the parent could swap): the source is
/// resolved strictly beneath the staging directory's fd, the link made in a directory opened
/// without following symlinks.
fn hard_link(stage: &Dir, path: &Path, src: &Path) -> Result<(), Event> {
    let rel = |p: &Path| -> PathBuf {
        p.components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect()
    };
    let (path_rel, src_rel) = (rel(path), rel(src));
    if src.components().any(|c| matches!(c, Component::ParentDir)) || src_rel.as_os_str().is_empty()
    {
        return Err(invalid(format!(
            "hard link {} points at {} (links must name an earlier entry)",
            path.display(),
            src.display()
        )));
    }
    let (Some(parent), Some(name)) = (path_rel.parent(), path_rel.file_name()) else {
        return Err(invalid(format!("hard link {} has no name", path.display())));
    };
    let err = |e: io::Error| entry_error(path, e);
    let from = stage.open_beneath(&src_rel).map_err(|e| {
        invalid(format!(
            "hard link {} to {}: {e}",
            path.display(),
            src.display()
        ))
    })?;
    let dir = stage.make_dirs(parent).map_err(err)?;
    let n = cstr(name).map_err(err)?;
    // SAFETY: valid fd and NUL-terminated name; ENOENT is fine (overwrite).
    unsafe { libc::unlinkat(dir.0.as_raw_fd(), n.as_ptr(), 0) };
    let via = cstr(OsStr::new(&format!("/proc/self/fd/{}", from.as_raw_fd()))).map_err(err)?;
    // SAFETY: NUL-terminated paths, valid dir fd.
    cvt(unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            via.as_ptr(),
            dir.0.as_raw_fd(),
            n.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    })
    .map_err(err)?;
    Ok(())
}

/// Unpacks the whole archive into the staging directory or fails. `owners` (#16, a container's
/// rootfs): entries keep their numeric owners, and an absolute name is refused.
fn unpack_into(r: impl Read, stage: &Dir, owners: bool) -> Result<(), Event> {
    use tar::EntryType as T;
    let dst = stage.proc_path();
    // Go's writer gives directories a size and no data: read them as Go means them.
    let mut a = tar::Archive::new(crate::tarfix::HeaderOnly::new(r));
    a.set_preserve_permissions(true);
    a.set_overwrite(true);
    a.set_preserve_ownerships(owners);
    let mut dirs = Vec::new();
    let entries = a
        .entries()
        .map_err(|e| invalid(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut e = entry.map_err(|e| match space_code(&e) {
            Some(_) => entry_error(Path::new("the archive"), e),
            None => invalid(format!("bad archive: {e}")),
        })?;
        let path = e
            .path()
            .map_err(|err| invalid(format!("entry with a bad name: {err}")))?
            .into_owned();
        if owners && path.has_root() {
            return Err(invalid(format!(
                "entry {} has an absolute name: a rootfs archive names entries relative to its root",
                path.display()
            )));
        }
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(invalid(format!(
                "entry {} leaves the destination (`..`)",
                path.display()
            )));
        }
        match e.header().entry_type() {
            T::Directory => {
                // Applied last, deepest first, so a read-only directory cannot block its own
                // entries (as tar's own unpack does).
                dirs.push(e);
                continue;
            }
            T::Link => {
                let src = e
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|s| s.into_owned())
                    .unwrap_or_default();
                hard_link(stage, &path, &src)?;
                continue;
            }
            T::Regular | T::Continuous | T::GNUSparse | T::Symlink | T::Fifo => {}
            T::XGlobalHeader => continue,
            t => {
                return Err(invalid(format!(
                    "entry {} is a {t:?}: only files, directories, links and fifos are accepted",
                    path.display()
                )))
            }
        }
        e.unpack_in(&dst).map_err(|err| entry_error(&path, err))?;
    }
    dirs.sort_by(|a, b| b.path_bytes().cmp(&a.path_bytes()));
    for mut d in dirs {
        let path = d.path().map(|p| p.into_owned()).unwrap_or_default();
        d.unpack_in(&dst).map_err(|err| entry_error(&path, err))?;
    }
    Ok(())
}

/// Gives everything below `dir` (not `dir` itself) to `uid`/`gid`, walking by directory fds:
/// never through a symlink, never by a path a workload could swap.
fn chown_below(dir: &Dir, uid: u32, gid: u32) -> io::Result<()> {
    for name in dir.names()? {
        let c = cstr(&name)?;
        // SAFETY: valid fd and NUL-terminated name; AT_SYMLINK_NOFOLLOW changes a link itself.
        cvt(unsafe {
            libc::fchownat(
                dir.0.as_raw_fd(),
                c.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        })?;
        if dir.stat_at(&name)?.as_ref().is_some_and(is_dir) {
            chown_below(&dir.open_at(&name)?, uid, gid)?;
        }
    }
    Ok(())
}

/// The setuid and setgid bits, cleared under a copy-in's `no_setid`.
pub(crate) const SETID: u32 = 0o6000;

/// Clears the setuid and setgid bits of every entry below `dir` (symlinks have none).
fn strip_setid_below(dir: &Dir) -> io::Result<()> {
    for name in dir.names()? {
        let Some(st) = dir.stat_at(&name)? else {
            continue;
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFLNK || st.st_mode & SETID == 0 {
            if is_dir(&st) {
                strip_setid_below(&dir.open_at(&name)?)?;
            }
            continue;
        }
        let c = cstr(&name)?;
        // SAFETY: valid fd and NUL-terminated name; the entry is not a symlink (lstat above,
        // and nothing else writes in the private staging directory).
        cvt(unsafe {
            libc::fchmodat(
                dir.0.as_raw_fd(),
                c.as_ptr(),
                st.st_mode & 0o7777 & !SETID,
                0,
            )
        })?;
        if is_dir(&st) {
            strip_setid_below(&dir.open_at(&name)?)?;
        }
    }
    Ok(())
}

/// Checks that merging `from` into `to` meets no directory where the archive has something
/// else, or the other way round (a symlink in the destination is never followed).
fn check_merge(from: &Dir, to: &Dir, rel: &Path, target: &Path) -> Result<(), Event> {
    let io = |e: io::Error| io_event("cannot read", &target.join(rel).display().to_string(), &e);
    // Entries move by rename, which cannot cross filesystems: a mount point inside the
    // destination (a tmpfs on /tmp, say) is refused before anything moves.
    if from.stat().map_err(io)?.st_dev != to.stat().map_err(io)?.st_dev {
        return Err(Event::error(
            "invalid_argument",
            format!(
                "{} is a mount point inside the destination; a tar upload cannot merge across filesystems: upload into {} itself: nothing was written",
                target.join(rel).display(),
                target.join(rel).display()
            ),
        ));
    }
    for name in from.names().map_err(io)? {
        let (Some(s), Some(t)) = (
            from.stat_at(&name).map_err(io)?,
            to.stat_at(&name).map_err(io)?,
        ) else {
            continue;
        };
        let at = target.join(rel).join(&name);
        match (is_dir(&s), is_dir(&t)) {
            (true, true) => check_merge(
                &from.open_at(&name).map_err(io)?,
                &to.open_at(&name).map_err(io)?,
                &rel.join(&name),
                target,
            )?,
            (true, false) => {
                return Err(Event::error(
                    "not_a_directory",
                    format!(
                        "{} exists and is not a directory (symlinks are not followed), but the archive has a directory there: nothing was written",
                        at.display()
                    ),
                ))
            }
            (false, true) => {
                return Err(Event::error(
                    "is_a_directory",
                    format!(
                        "{} is a directory, but the archive has a file there: nothing was written",
                        at.display()
                    ),
                ))
            }
            (false, false) => {}
        }
    }
    Ok(())
}

/// Moves everything of `from` into `to`: new names and files by rename, directories that exist
/// on both sides merged (taking the archive's mode, and owner when one was asked for).
fn merge(from: &Dir, to: &Dir, chown: bool) -> io::Result<()> {
    for name in from.names()? {
        let Some(s) = from.stat_at(&name)? else {
            continue;
        };
        let existing = to.stat_at(&name)?;
        if is_dir(&s) && existing.as_ref().is_some_and(is_dir) {
            let (f, t) = (from.open_at(&name)?, to.open_at(&name)?);
            merge(&f, &t, chown)?;
            t.chmod(s.st_mode & 0o7777)?;
            if chown {
                t.chown(s.st_uid, s.st_gid)?;
            }
        } else {
            from.rename_to(&name, to, &name, 0)?;
        }
    }
    Ok(())
}

/// Unpacks a tar upload into `target` (created if missing, merged into if it is a directory).
pub(crate) fn copy_in_tar(
    r: &mut impl Read,
    target: &Path,
    uid: Option<u32>,
    gid: Option<u32>,
    (no_setid, owners): (bool, bool),
) -> Result<(), Event> {
    let shown = target.display().to_string();
    let io = |what: &str, e: io::Error| io_event(what, &shown, &e);
    // Stage inside the destination when it exists (its own filesystem, even when it is a
    // mount point), else beside it, where it will be renamed to.
    let (base, fresh) = match fs::metadata(target) {
        Ok(m) if m.is_dir() => (Dir::open(target).map_err(|e| io("cannot open", e))?, None),
        Ok(_) => {
            return Err(Event::error(
                "not_a_directory",
                format!("{shown} exists and is not a directory: a tar upload needs a directory"),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = target.parent().unwrap_or(Path::new("/"));
            fs::create_dir_all(parent).map_err(|e| io("cannot create", e))?;
            let name = target.file_name().unwrap_or_default().to_os_string();
            (
                Dir::open(parent).map_err(|e| io("cannot open", e))?,
                Some(name),
            )
        }
        Err(e) => return Err(io("cannot read", e)),
    };
    let (stage_name, stage) = make_stage(&base).map_err(|e| io("cannot write", e))?;
    let st = stage.stat().map_err(|e| io("cannot write", e))?;
    let res = (|| {
        unpack_into(r, &stage, owners)?;
        if no_setid {
            strip_setid_below(&stage).map_err(|e| io("cannot change the mode in", e))?;
        }
        let chown = uid.is_some() || gid.is_some();
        // The staging root stays root's and 0700 until it is renamed into place: the uid the
        // archive is given cannot reach into it while the agent works there.
        if chown {
            chown_below(&stage, uid.unwrap_or(0), gid.unwrap_or(0))
                .map_err(|e| io("cannot change the owner in", e))?;
        }
        match &fresh {
            Some(name) => {
                // tar never applies an archive's `.` entry; a new destination gets 0755.
                stage.chmod(0o755).map_err(|e| io("cannot write", e))?;
                if chown {
                    stage
                        .chown(uid.unwrap_or(0), gid.unwrap_or(0))
                        .map_err(|e| io("cannot change the owner of", e))?;
                }
                base.rename_to(&stage_name, &base, name, libc::RENAME_NOREPLACE)
                    .map_err(|e| io("cannot create", e))
            }
            None => {
                check_merge(&stage, &base, Path::new(""), target)?;
                merge(&stage, &base, chown).map_err(|e| io("cannot write", e))?;
                if chown {
                    base.chown(uid.unwrap_or(0), gid.unwrap_or(0))
                        .map_err(|e| io("cannot change the owner of", e))?;
                }
                Ok(())
            }
        }
    })();
    // Whatever is left of the staging directory goes (all of it on failure, the emptied shell
    // after a merge), but only if the name still holds the directory we made.
    if let Ok(Some(now)) = base.stat_at(&stage_name) {
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) {
            let _ = fs::remove_dir_all(base.proc_path().join(&stage_name));
        }
    }
    res
}
