//! Overwrite-then-unlink: `wipe_file` zeroes every allocated extent of a regular file (found
//! with SEEK_DATA/SEEK_HOLE, so a sparse 10 GB image with 1 MB of data costs 1 MB of writes),
//! fdatasyncs, then unlinks it; `wipe_tree` does so for every regular file under a directory
//! and removes the tree.
//!
//! Invariants: symlinks are never followed (every open is `openat` with `O_NOFOLLOW` relative
//! to an already-opened parent, and unlinks are `unlinkat` on that parent), so a tenant's
//! symlink cannot redirect the wipe to a host file; nor are mount points crossed (a directory
//! or file on another mount than its parent's, bind mounts included, is refused), so a wipe
//! never reaches into a file system mounted under the tree. Overwriting reaches the old blocks on
//! ext4/xfs (in-place writes); on copy-on-write filesystems (btrfs) or SSD remapping it does
//! not, which is why volumes are also encrypted: wiping is defence in depth, the key is the
//! real eraser.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// What can go wrong while wiping.
#[derive(Debug, thiserror::Error)]
pub enum WipeError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0} is not a regular file (symlinks are not followed); remove it yourself")]
    NotRegular(PathBuf),
    #[error("{0} is a mount point (a wipe never crosses into another mount); unmount it first")]
    Mounted(PathBuf),
}

impl WipeError {
    /// The thing to wipe is not there (the top of the tree or the file itself).
    pub fn is_not_found(&self) -> bool {
        matches!(self, WipeError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

const ZEROS: usize = 1 << 20;

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn openat(dir: &OwnedFd, name: &CStr, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated and `dir` is an open descriptor; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str())?;
    // SAFETY: `c` is NUL-terminated; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn unlinkat(dir: &OwnedFd, name: &CStr, flags: i32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` is open; the result is checked.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Which mount `fd` lies on: its device and, where the kernel says (5.8+), its mount id, which
/// tells bind mounts of the same file system apart.
fn mount_of(fd: &impl AsRawFd) -> io::Result<(u32, u32, u64)> {
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is a NUL-terminated empty string with AT_EMPTY_PATH (the descriptor
    // itself), `st` is a valid statx to fill; the result is checked.
    let r = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
            libc::STATX_MNT_ID,
            &mut st,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let id = if st.stx_mask & libc::STATX_MNT_ID != 0 {
        st.stx_mnt_id
    } else {
        0
    };
    Ok((st.stx_dev_major, st.stx_dev_minor, id))
}

/// Refuses `inner` (opened under `outer`) when it lies on another mount.
fn same_mount(outer: &impl AsRawFd, inner: &impl AsRawFd, shown: &Path) -> Result<(), WipeError> {
    let io_err = |source| WipeError::Io {
        what: "inspecting",
        path: shown.to_path_buf(),
        source,
    };
    if mount_of(outer).map_err(io_err)? != mount_of(inner).map_err(io_err)? {
        return Err(WipeError::Mounted(shown.to_path_buf()));
    }
    Ok(())
}

fn lseek(fd: &File, off: i64, whence: i32) -> io::Result<Option<i64>> {
    // SAFETY: lseek on an open descriptor; no memory is passed.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) {
            Ok(None)
        } else {
            Err(e)
        };
    }
    Ok(Some(r))
}

/// Zeroes every allocated extent of the open regular file `f` and fdatasyncs it. Returns the
/// bytes overwritten.
pub fn zero_extents(f: &File) -> io::Result<u64> {
    let zeros = vec![0u8; ZEROS];
    let mut pos = 0i64;
    let mut written = 0u64;
    while let Some(start) = lseek(f, pos, libc::SEEK_DATA)? {
        let end = lseek(f, start, libc::SEEK_HOLE)?.unwrap_or(f.metadata()?.len() as i64);
        let mut off = start;
        while off < end {
            let n = ((end - off) as usize).min(ZEROS);
            f.write_all_at(&zeros[..n], off as u64)?;
            off += n as i64;
            written += n as u64;
        }
        pos = end;
    }
    f.sync_data()?;
    Ok(written)
}

fn wipe_at(dir: &OwnedFd, name: &CStr, shown: &Path) -> Result<u64, WipeError> {
    let io_err = |what| {
        let path = shown.to_path_buf();
        move |source| WipeError::Io { what, path, source }
    };
    let fd = openat(dir, name, libc::O_WRONLY | libc::O_NONBLOCK).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            WipeError::NotRegular(shown.to_path_buf())
        } else {
            io_err("opening")(e)
        }
    })?;
    let f = File::from(fd);
    if !f.metadata().map_err(io_err("inspecting"))?.is_file() {
        return Err(WipeError::NotRegular(shown.to_path_buf()));
    }
    same_mount(dir, &f, shown)?;
    let n = zero_extents(&f).map_err(io_err("overwriting"))?;
    unlinkat(dir, name, 0).map_err(io_err("unlinking"))?;
    Ok(n)
}

/// Overwrites every allocated byte of the regular file `path` with zeros, syncs, unlinks it.
/// Refuses symlinks and non-regular files. Returns the bytes overwritten.
pub fn wipe_file(path: &Path) -> Result<u64, WipeError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| WipeError::NotRegular(path.to_path_buf()))?;
    let dir = open_dir(parent).map_err(|source| WipeError::Io {
        what: "opening",
        path: parent.to_path_buf(),
        source,
    })?;
    let c = cstr(name).map_err(|source| WipeError::Io {
        what: "naming",
        path: path.to_path_buf(),
        source,
    })?;
    wipe_at(&dir, &c, path)
}

/// Wipes every regular file under `dir` (not following symlinks; symlinks, fifos and device
/// nodes are just unlinked) and removes the tree, `dir` included. Returns bytes overwritten.
pub fn wipe_tree(dir: &Path) -> Result<u64, WipeError> {
    let fd = open_dir(dir).map_err(|source| WipeError::Io {
        what: "opening",
        path: dir.to_path_buf(),
        source,
    })?;
    let n = wipe_dir_fd(&fd, dir)?;
    drop(fd);
    std::fs::remove_dir(dir).map_err(|source| WipeError::Io {
        what: "removing",
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(n)
}

fn wipe_dir_fd(dir: &OwnedFd, shown: &Path) -> Result<u64, WipeError> {
    let io_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| WipeError::Io { what, path, source }
    };
    // The entries of the directory this descriptor holds (the magic link is the open
    // directory itself, not a path lookup an attacker could redirect).
    let listing = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut total = 0;
    for e in std::fs::read_dir(&listing).map_err(io_err("listing", shown))? {
        let e = e.map_err(io_err("listing", shown))?;
        let name = e.file_name();
        let path = shown.join(&name);
        let c = cstr(&name).map_err(io_err("naming", &path))?;
        let ft = e.file_type().map_err(io_err("inspecting", &path))?;
        if ft.is_dir() {
            let sub = openat(dir, &c, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(io_err("opening", &path))?;
            same_mount(dir, &sub, &path)?;
            total += wipe_dir_fd(&sub, &path)?;
            drop(sub);
            unlinkat(dir, &c, libc::AT_REMOVEDIR).map_err(io_err("removing", &path))?;
        } else if ft.is_file() {
            total += wipe_at(dir, &c, &path)?;
        } else {
            unlinkat(dir, &c, 0).map_err(io_err("unlinking", &path))?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};

    const MARK: &[u8] = b"BULKHEAD-WIPE-MARKER";

    fn held(path: &Path, content: &[u8]) -> File {
        std::fs::write(path, content).unwrap();
        File::open(path).unwrap()
    }

    fn all_zero(mut f: &File, len: usize) {
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).unwrap();
        assert_eq!(buf.len(), len);
        assert!(
            buf.iter().all(|b| *b == 0),
            "held descriptor still sees data"
        );
    }

    #[test]
    fn wipe_file_zeroes_the_blocks_a_held_descriptor_sees_and_unlinks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let content: Vec<u8> = MARK.iter().cycle().take(3 * ZEROS + 7).copied().collect();
        let f = held(&p, &content);
        assert_eq!(wipe_file(&p).unwrap(), content.len() as u64);
        assert!(!p.exists());
        all_zero(&f, content.len());
    }

    #[test]
    fn sparse_files_cost_only_their_data() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sparse");
        let mut f = File::create(&p).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(32 << 20)).unwrap();
        f.write_all(MARK).unwrap();
        f.sync_all().unwrap();
        let held = File::open(&p).unwrap();
        let n = wipe_file(&p).unwrap();
        assert!(n >= MARK.len() as u64 && n <= 1 << 20, "wrote {n}");
        let mut buf = vec![1u8; MARK.len()];
        held.read_exact_at(&mut buf, 32 << 20).unwrap();
        assert!(buf.iter().all(|b| *b == 0));
    }

    #[test]
    fn wipe_tree_wipes_files_removes_dirs_and_never_follows_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("host-file");
        std::fs::write(&outside, MARK).unwrap();
        let t = d.path().join("tree");
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        let f1 = held(&t.join("top"), MARK);
        let f2 = held(&t.join("a/b/deep"), MARK);
        std::os::unix::fs::symlink(&outside, t.join("a/link")).unwrap();
        std::os::unix::fs::symlink(d.path(), t.join("dirlink")).unwrap();
        wipe_tree(&t).unwrap();
        assert!(!t.exists());
        all_zero(&f1, MARK.len());
        all_zero(&f2, MARK.len());
        assert_eq!(std::fs::read(&outside).unwrap(), MARK, "followed a symlink");
    }

    /// A tree with a bind mount under it is refused at the mount, and nothing under the
    /// mount is touched (run as root, in a mount namespace of the test's own thread).
    #[test]
    fn wipe_tree_never_crosses_a_mount_point() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("host-file"), MARK).unwrap();
        std::fs::write(outside.join("bound-file"), MARK).unwrap();
        let t = d.path().join("tree");
        std::fs::create_dir_all(t.join("m")).unwrap();
        std::fs::write(t.join("f"), MARK).unwrap();
        let (outside2, t2) = (outside.clone(), t.clone());
        let r = std::thread::spawn(move || {
            let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
            // SAFETY: plain syscalls on NUL-terminated paths; results checked. The thread's
            // mount namespace is its own (unshare) and private, so nothing leaks to the host.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0);
                let root = c(Path::new("/"));
                let private = libc::MS_REC | libc::MS_PRIVATE;
                let none = std::ptr::null();
                assert_eq!(
                    libc::mount(none, root.as_ptr(), none, private, none.cast()),
                    0
                );
                let (src, dst) = (c(&outside2), c(&t2.join("m")));
                let bind = libc::MS_BIND;
                assert_eq!(
                    libc::mount(src.as_ptr(), dst.as_ptr(), none, bind, none.cast()),
                    0
                );
                let dir_result = wipe_tree(&t2).map_err(|e| e.to_string());
                // A bind-mounted file on the same file system is refused too.
                std::fs::write(t2.join("g"), b"").unwrap();
                let (src, dst) = (c(&outside2.join("bound-file")), c(&t2.join("g")));
                assert_eq!(
                    libc::mount(src.as_ptr(), dst.as_ptr(), none, bind, none.cast()),
                    0
                );
                let file_result = wipe_file(&t2.join("g")).map_err(|e| e.to_string());
                (dir_result, file_result)
            }
        })
        .join()
        .unwrap();
        assert!(
            r.0.as_ref().is_err_and(|e| e.contains("mount point")),
            "{r:?}"
        );
        assert!(
            r.1.as_ref().is_err_and(|e| e.contains("mount point")),
            "{r:?}"
        );
        assert_eq!(std::fs::read(outside.join("host-file")).unwrap(), MARK);
        assert_eq!(std::fs::read(outside.join("bound-file")).unwrap(), MARK);
    }

    #[test]
    fn wipe_file_refuses_symlinks_and_dirs() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("t");
        std::fs::write(&target, MARK).unwrap();
        let l = d.path().join("l");
        std::os::unix::fs::symlink(&target, &l).unwrap();
        assert!(matches!(wipe_file(&l), Err(WipeError::NotRegular(_))));
        assert!(wipe_file(d.path()).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), MARK);
    }
}
