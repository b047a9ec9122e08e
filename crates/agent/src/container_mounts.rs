//! Makes and removes a container's mounts (#16) onto descriptors only (see
//! [`crate::containers`] for the invariants). The caller runs where it may mount in the node's
//! mount namespace and sees the node's /proc as its own: a microVM guest's agent, or the jail
//! supervisor's helper that entered the node's pid (by a fork), user and mount namespaces.
//!
//! Targets are `/proc/self/fd/N` of directories walked without following symlinks; mount(2)
//! and `mount_setattr` are used, never `open_tree`/`fsmount`: those make an anonymous mount
//! namespace, which a jail node's user namespace may not have (`max_mnt_namespaces` 0).

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::containers::{
    check, components, ContainerMount, MountError, MountKind, DEFAULT_TMPFS_MODE,
    DEFAULT_TMPFS_SIZE,
};

// <linux/mount.h> and <linux/openat2.h>.
const AT_RECURSIVE: u32 = 0x8000;
const ATTR_RDONLY: u64 = 0x1;
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

/// `/proc/self/fd/N` of a descriptor: a mount target that is exactly what the descriptor
/// holds (the process must see its own /proc: the jail's helper runs in the node's pid
/// namespace for this).
fn fd_path(fd: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

/// mount(2) onto the directory `target` holds.
fn sys_mount(
    src: &CStr,
    target: &OwnedFd,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
    what: &str,
) -> Result<(), MountError> {
    let t = fd_path(target);
    // SAFETY: NUL-terminated strings (or null) that live across the call; checked below.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            t.as_ptr(),
            fstype.map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            data.map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if r < 0 {
        return Err(sys(format!("mounting {what}")));
    }
    Ok(())
}

/// `mount_setattr` over the whole mount tree whose root `mnt` holds.
fn set_attr(
    mnt: BorrowedFd<'_>,
    set: u64,
    propagation: Option<libc::c_ulong>,
) -> Result<(), MountError> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: propagation.unwrap_or(0),
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
    sys_mount(&fd_path(&dir), &dir, None, libc::MS_BIND, None, root)?;
    drop(dir);
    // The bind now sits on the root: everything else goes under it.
    let top = open_dir_nofollow(root)?;
    set_attr(
        top.as_fd(),
        if readonly { ATTR_RDONLY } else { 0 },
        Some(libc::MS_PRIVATE),
    )?;
    for m in mounts {
        let at = mount_point(&top, &m.destination)?;
        let dest = m.destination.as_str();
        let bind = |src: &CStr| sys_mount(src, &at, None, libc::MS_BIND | libc::MS_REC, None, dest);
        match m.kind {
            MountKind::Proc => bind(c"/proc")?,
            MountKind::Dev => bind(c"/dev")?,
            MountKind::Sys => bind(c"/sys")?,
            MountKind::Devpts => bind(c"/dev/pts")?,
            MountKind::Mqueue => bind(c"/dev/mqueue")?,
            MountKind::Tmpfs => {
                let opts = cstr(&format!(
                    "size={},mode={:o}",
                    m.size_bytes.unwrap_or(DEFAULT_TMPFS_SIZE),
                    m.mode.unwrap_or(DEFAULT_TMPFS_MODE)
                ))?;
                sys_mount(
                    c"tmpfs",
                    &at,
                    Some(c"tmpfs"),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    Some(&opts),
                    dest,
                )?
            }
        }
        // The new mount's root: private, and read-only when asked (sys always).
        let now = mount_point(&top, dest)?;
        let ro = m.read_only || m.kind == MountKind::Sys;
        set_attr(
            now.as_fd(),
            if ro { ATTR_RDONLY } else { 0 },
            Some(libc::MS_PRIVATE),
        )?;
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
