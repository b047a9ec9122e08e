//! Makes and removes a container's mounts (#16) with the new mount API, by descriptor only
//! (see [`crate::containers`] for the invariants). The caller runs where it may mount in the
//! node's mount namespace: a microVM guest's agent, or the jail supervisor's child that
//! entered the node's user and mount namespaces (its root is then the node's root).
//!
//! No path of the node's `/proc/self` is needed (the jail's child is not in the node's pid
//! namespace): targets are descriptors, and unmounting works on the current directory.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::containers::{
    check, components, ContainerMount, MountError, MountKind, DEFAULT_TMPFS_MODE,
    DEFAULT_TMPFS_SIZE,
};

// <linux/mount.h> and <linux/openat2.h>.
const OPEN_TREE_CLONE: u32 = 1;
const AT_RECURSIVE: u32 = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
const FSOPEN_CLOEXEC: u32 = 1;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;
const FSMOUNT_CLOEXEC: u32 = 1;
const ATTR_RDONLY: u64 = 0x1;
const ATTR_NOSUID: u64 = 0x2;
const ATTR_NODEV: u64 = 0x4;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_NO_SYMLINKS: u64 = 0x04;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn sys(what: impl Into<String>) -> MountError {
    MountError::Sys {
        what: what.into(),
        source: io::Error::last_os_error(),
    }
}

fn cstr(s: &str) -> Result<CString, MountError> {
    CString::new(s).map_err(|_| MountError::Invalid(format!("{s:?} holds a NUL byte")))
}

fn owned(r: libc::c_long, what: &str) -> Result<OwnedFd, MountError> {
    if r < 0 {
        return Err(sys(what));
    }
    // SAFETY: the syscall returned a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// Opens `path` (absolute) as an `O_PATH` directory without following any symlink.
fn open_dir_nofollow(path: &str) -> Result<OwnedFd, MountError> {
    let c = cstr(path)?;
    let how = OpenHow {
        flags: (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `c` is NUL-terminated and `how` lives across the call; the result is checked.
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    owned(r, &format!("opening {path} (no symlink may be on the way)"))
}

/// A detached recursive copy of the node's mount tree at `path`, private.
fn clone_tree(path: &str) -> Result<OwnedFd, MountError> {
    let c = cstr(path)?;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | AT_RECURSIVE;
    // SAFETY: `c` is NUL-terminated; the result is checked.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    let fd = owned(r, &format!("copying the node's {path}"))?;
    set_attr(fd.as_fd(), 0, Some(libc::MS_PRIVATE))?;
    Ok(fd)
}

/// A detached copy of the directory behind `dir` (not recursive), private.
fn clone_dir(dir: &OwnedFd) -> Result<OwnedFd, MountError> {
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | libc::AT_EMPTY_PATH as u32;
    // SAFETY: an open descriptor and an empty NUL-terminated path; the result is checked.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), c"".as_ptr(), flags) };
    let fd = owned(r, "binding the container's root")?;
    set_attr(fd.as_fd(), 0, Some(libc::MS_PRIVATE))?;
    Ok(fd)
}

/// `mount_setattr` over the whole detached tree.
fn set_attr(
    mnt: BorrowedFd<'_>,
    set: u64,
    propagation: Option<libc::c_ulong>,
) -> Result<(), MountError> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: propagation.unwrap_or(0) as u64,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH as u32 | AT_RECURSIVE;
    // SAFETY: `attr` lives across the call and its size is passed; the result is checked.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(sys("setting mount attributes"));
    }
    Ok(())
}

/// A new detached tmpfs, `nosuid,nodev`.
fn tmpfs(size: u64, mode: u32) -> Result<OwnedFd, MountError> {
    // SAFETY: a NUL-terminated name; the result is checked.
    let r = unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), FSOPEN_CLOEXEC) };
    let ctx = owned(r, "fsopen tmpfs")?;
    for (k, v) in [("size", size.to_string()), ("mode", format!("{mode:o}"))] {
        let (k, v) = (cstr(k)?, cstr(&v)?);
        // SAFETY: NUL-terminated key and value; the result is checked.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                ctx.as_raw_fd(),
                FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        if r < 0 {
            return Err(sys(format!("tmpfs option {k:?}={v:?}")));
        }
    }
    // SAFETY: a command without key or value; the result is checked.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    };
    if r < 0 {
        return Err(sys("creating a tmpfs"));
    }
    // SAFETY: fsmount on our context; the result is checked.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            ATTR_NOSUID | ATTR_NODEV,
        )
    };
    owned(r, "mounting a tmpfs")
}

fn move_mount(from: &OwnedFd, to: &OwnedFd, what: &str) -> Result<(), MountError> {
    // SAFETY: two open descriptors and empty NUL-terminated paths; the result is checked.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            to.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(sys(format!("mounting at {what}")));
    }
    Ok(())
}

/// Opens `name` under `dir` as an `O_PATH` directory; a symlink is refused, never followed.
fn open_at(dir: &OwnedFd, name: &CString) -> io::Result<OwnedFd> {
    // SAFETY: an open descriptor and a NUL-terminated name; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The directory at `dest` under `root`, made if missing, reached without following any
/// symlink: a planted `proc -> /etc` is an error, not a way out.
fn mount_point(root: &OwnedFd, dest: &str) -> Result<OwnedFd, MountError> {
    let mut cur = open_at(root, &cstr(".")?).map_err(|source| MountError::Sys {
        what: "opening the container's root".into(),
        source,
    })?;
    for comp in components(dest)? {
        let n = cstr(comp)?;
        let next = match open_at(&cur, &n) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                // SAFETY: an open directory and a NUL-terminated name; checked below.
                if unsafe { libc::mkdirat(cur.as_raw_fd(), n.as_ptr(), 0o755) } < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(MountError::Sys {
                            what: format!("making {comp:?} of mount destination {dest}"),
                            source: e,
                        });
                    }
                }
                open_at(&cur, &n)
            }
            r => r,
        };
        cur = next.map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTDIR) | Some(libc::ELOOP) => MountError::Invalid(format!(
                "mount destination {dest}: {comp:?} in the container's rootfs is a symlink or not a directory; mounts never follow symlinks"
            )),
            _ => MountError::Sys {
                what: format!("mount destination {dest}: {comp:?}"),
                source: e,
            },
        })?;
    }
    Ok(cur)
}

/// Makes a container's mounts: its root bound onto itself (read-only if `readonly`), then each
/// of `mounts` in order under it. On failure whatever was made is detached again.
pub fn make(root: &str, mounts: &[ContainerMount], readonly: bool) -> Result<(), MountError> {
    check(root, mounts)?;
    let r = make_inner(root, mounts, readonly);
    if r.is_err() {
        let _ = unmount(root);
    }
    r
}

fn make_inner(root: &str, mounts: &[ContainerMount], readonly: bool) -> Result<(), MountError> {
    let dir = open_dir_nofollow(root)?;
    let bind = clone_dir(&dir)?;
    if readonly {
        set_attr(bind.as_fd(), ATTR_RDONLY, None)?;
    }
    move_mount(&bind, &dir, root)?;
    drop((bind, dir));
    // The bind now sits on the root: everything else goes under it.
    let top = open_dir_nofollow(root)?;
    for m in mounts {
        let tree = match m.kind {
            MountKind::Proc => clone_tree("/proc")?,
            MountKind::Dev => clone_tree("/dev")?,
            MountKind::Sys => {
                let t = clone_tree("/sys")?;
                set_attr(t.as_fd(), ATTR_RDONLY, None)?;
                t
            }
            MountKind::Devpts => clone_tree("/dev/pts")?,
            MountKind::Mqueue => clone_tree("/dev/mqueue")?,
            MountKind::Tmpfs => tmpfs(
                m.size_bytes.unwrap_or(DEFAULT_TMPFS_SIZE),
                m.mode.unwrap_or(DEFAULT_TMPFS_MODE),
            )?,
        };
        if m.read_only {
            set_attr(tree.as_fd(), ATTR_RDONLY, None)?;
        }
        let at = mount_point(&top, &m.destination)?;
        move_mount(&tree, &at, &m.destination)?;
    }
    Ok(())
}

/// Detaches every mount of a container (its root's binds and all below them, lazily) and
/// checks that none is left under its root. A root that does not exist has nothing mounted.
pub fn unmount(root: &str) -> Result<(), MountError> {
    check(root, &[])?;
    for _ in 0..64 {
        let dir = match open_dir_nofollow(root) {
            Err(MountError::Sys { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
                return Ok(())
            }
            r => r?,
        };
        // umount2 takes a path: "." of the directory the descriptor holds, so no symlink
        // swapped in since can redirect it.
        // SAFETY: fchdir to an open descriptor, then umount2 of "." with constant flags.
        let r = unsafe {
            if libc::fchdir(dir.as_raw_fd()) < 0 {
                return Err(sys(format!("entering {root}")));
            }
            libc::umount2(c".".as_ptr(), libc::MNT_DETACH)
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            // SAFETY: a constant path.
            unsafe { libc::chdir(c"/".as_ptr()) };
            if e.raw_os_error() == Some(libc::EINVAL) {
                break; // not a mount point any more
            }
            return Err(MountError::Sys {
                what: format!("detaching the mounts of {root}"),
                source: e,
            });
        }
    }
    // SAFETY: a constant path.
    unsafe { libc::chdir(c"/".as_ptr()) };
    let left = mounted_under(root);
    if !left.is_empty() {
        return Err(MountError::Invalid(format!(
            "mounts are still under {root}: {}",
            left.join(", ")
        )));
    }
    Ok(())
}

/// Mount points at or below `root` in the node's mount namespace, as its init (pid 1 of the
/// node's /proc, the agent) sees them.
pub fn mounted_under(root: &str) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/1/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p == root || p.starts_with(&format!("{root}/")))
        .collect()
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
