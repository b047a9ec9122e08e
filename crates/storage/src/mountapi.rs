//! The new mount API (fsopen, fsconfig, fsmount, open_tree, move_mount, mount_setattr) through
//! `libc::syscall`, returning `OwnedFd`s.
//!
//! Invariant: a mount made here is detached: it is reachable only through its descriptor and
//! never appears in any mount namespace until someone `move_mount`s it (a node's init, under
//! its rootfs). Closing the last descriptor of a detached mount dissolves it.

use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// What can go wrong with a mount call.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{call}: {source}{}", if log.is_empty() { String::new() } else { format!(" (kernel says: {log})") })]
    Sys {
        call: String,
        log: String,
        #[source]
        source: io::Error,
    },
}

// Flags from <linux/mount.h>.
const FSOPEN_CLOEXEC: u32 = 1;
const FSCONFIG_SET_FLAG: u32 = 0;
const FSCONFIG_SET_STRING: u32 = 1;
const FSCONFIG_CMD_CREATE: u32 = 6;
const FSMOUNT_CLOEXEC: u32 = 1;
/// `open_tree`: make a detached copy instead of opening the mount.
pub const OPEN_TREE_CLONE: u32 = 1;
const AT_RECURSIVE: u32 = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;
/// Mount attributes (`MOUNT_ATTR_*`).
pub const ATTR_RDONLY: u64 = 0x1;
pub const ATTR_NOSUID: u64 = 0x2;
pub const ATTR_NODEV: u64 = 0x4;
pub const ATTR_NOEXEC: u64 = 0x8;
pub const ATTR_IDMAP: u64 = 0x0010_0000;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn cstring(s: &str) -> CString {
    CString::new(s).expect("mount API strings have no NUL")
}

fn fd_result(call: &str, r: libc::c_long, log_fd: Option<&OwnedFd>) -> Result<OwnedFd, MountError> {
    if r < 0 {
        return Err(sys(call, log_fd));
    }
    // SAFETY: the syscall returned a new descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

fn sys(call: &str, log_fd: Option<&OwnedFd>) -> MountError {
    let source = io::Error::last_os_error();
    MountError::Sys {
        call: call.to_string(),
        log: log_fd.map(read_log).unwrap_or_default(),
        source,
    }
}

/// Drains the messages the kernel left on an fs context descriptor.
fn read_log(fd: &OwnedFd) -> String {
    let mut out = Vec::new();
    let Ok(dup) = fd.try_clone() else {
        return String::new();
    };
    let mut f = std::fs::File::from(dup);
    let mut buf = [0u8; 1024];
    // Each read returns one message; ENODATA ends the list.
    for _ in 0..16 {
        match f.read(&mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    out.join("; ")
}

/// A filesystem context being configured (`fsopen`).
pub struct FsContext(OwnedFd);

impl FsContext {
    /// `fsopen(fstype)`.
    pub fn open(fstype: &str) -> Result<FsContext, MountError> {
        let c = cstring(fstype);
        // SAFETY: fsopen takes a NUL-terminated name and flags; the result is checked.
        let r = unsafe { libc::syscall(libc::SYS_fsopen, c.as_ptr(), FSOPEN_CLOEXEC) };
        fd_result(&format!("fsopen {fstype}"), r, None).map(FsContext)
    }

    fn config(
        &self,
        cmd: u32,
        key: Option<&CStr>,
        value: Option<&CStr>,
        what: &str,
    ) -> Result<(), MountError> {
        let k = key.map_or(std::ptr::null(), |k| k.as_ptr());
        let v = value.map_or(std::ptr::null(), |v| v.as_ptr());
        // SAFETY: key/value are NUL-terminated or null as fsconfig allows for `cmd`.
        let r = unsafe { libc::syscall(libc::SYS_fsconfig, self.0.as_raw_fd(), cmd, k, v, 0) };
        if r < 0 {
            return Err(sys(what, Some(&self.0)));
        }
        Ok(())
    }

    /// `fsconfig(SET_STRING, key, value)`.
    pub fn set_string(&self, key: &str, value: &str) -> Result<(), MountError> {
        let (k, v) = (cstring(key), cstring(value));
        self.config(
            FSCONFIG_SET_STRING,
            Some(&k),
            Some(&v),
            &format!("fsconfig {key}={value}"),
        )
    }

    /// `fsconfig(SET_FLAG, key)`.
    pub fn set_flag(&self, key: &str) -> Result<(), MountError> {
        let k = cstring(key);
        self.config(
            FSCONFIG_SET_FLAG,
            Some(&k),
            None,
            &format!("fsconfig {key}"),
        )
    }

    /// `fsconfig(CMD_CREATE)` then `fsmount(attrs)`: a detached mount of the new (or shared)
    /// superblock.
    pub fn mount(self, attrs: u64) -> Result<OwnedFd, MountError> {
        self.config(FSCONFIG_CMD_CREATE, None, None, "fsconfig create")?;
        // SAFETY: fsmount on our context descriptor; the result is checked.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.0.as_raw_fd(),
                FSMOUNT_CLOEXEC,
                attrs,
            )
        };
        fd_result("fsmount", r, Some(&self.0))
    }
}

/// `open_tree(dir, path, OPEN_TREE_CLONE | AT_RECURSIVE)`: a detached copy of the mount tree at
/// `path` (relative to `dir`; "" means `dir` itself).
pub fn clone_tree(dir: BorrowedFd<'_>, path: &str) -> Result<OwnedFd, MountError> {
    let c = cstring(path);
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as u32 | AT_RECURSIVE;
    if path.is_empty() {
        flags |= libc::AT_EMPTY_PATH as u32;
    }
    // SAFETY: `dir` is open and `c` NUL-terminated; the result is checked.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), c.as_ptr(), flags) };
    fd_result(&format!("open_tree {path}"), r, None)
}

/// `move_mount(from, "", to_dir, to_path)`: attaches the detached mount `from` at `to_path`
/// relative to `to_dir` ("" means onto `to_dir` itself).
pub fn move_mount(
    from: BorrowedFd<'_>,
    to_dir: BorrowedFd<'_>,
    to_path: &str,
) -> Result<(), MountError> {
    let empty = cstring("");
    let to = cstring(to_path);
    let mut flags = MOVE_MOUNT_F_EMPTY_PATH;
    if to_path.is_empty() {
        flags |= MOVE_MOUNT_T_EMPTY_PATH;
    }
    // SAFETY: both descriptors are open and both paths NUL-terminated; the result is checked.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            empty.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
            flags,
        )
    };
    if r < 0 {
        return Err(sys(&format!("move_mount to {to_path}"), None));
    }
    Ok(())
}

/// `mount_setattr(mnt, "", AT_EMPTY_PATH | AT_RECURSIVE, set, clear)`; `userns` is needed when
/// `set` has [`ATTR_IDMAP`].
pub fn set_attr(
    mnt: BorrowedFd<'_>,
    set: u64,
    clear: u64,
    userns: Option<BorrowedFd<'_>>,
) -> Result<(), MountError> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: userns.map_or(0, |u| u.as_raw_fd() as u64),
    };
    let empty = cstring("");
    let flags = libc::AT_EMPTY_PATH as u32 | AT_RECURSIVE;
    // SAFETY: `attr` lives across the call and its size is passed; the result is checked.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 {
        return Err(sys("mount_setattr", None));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn detached_tmpfs_is_usable_and_invisible_then_attrs_apply() {
        let ctx = FsContext::open("tmpfs").unwrap();
        ctx.set_string("size", "1m").unwrap();
        let mnt = ctx.mount(ATTR_NODEV | ATTR_NOSUID).unwrap();
        let mounts_before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        // Write through the descriptor.
        let name = cstring("hello");
        // SAFETY: openat on an open directory descriptor with a NUL-terminated name.
        let fd = unsafe {
            libc::openat(
                mnt.as_raw_fd(),
                name.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            )
        };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: fd was just returned by openat.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        let clone = clone_tree(mnt.as_fd(), "").unwrap();
        set_attr(clone.as_fd(), ATTR_RDONLY, 0, None).unwrap();
        // SAFETY: as above; a read-only mount refuses creation.
        let fd2 = unsafe {
            libc::openat(
                clone.as_raw_fd(),
                cstring("x").as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            )
        };
        assert_eq!(fd2, -1);
        assert_eq!(io::Error::last_os_error().raw_os_error(), Some(libc::EROFS));
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert_eq!(
            mounts.lines().count(),
            mounts_before.lines().count(),
            "a detached mount showed up"
        );
        assert!(
            std::fs::read_dir(format!("/proc/self/fd/{}", clone.as_raw_fd()))
                .unwrap()
                .any(|e| e.unwrap().file_name() == "hello")
        );
    }

    #[test]
    fn errors_carry_the_kernel_log() {
        let ctx = FsContext::open("tmpfs").unwrap();
        let e = ctx.set_string("nosuchoption", "1").unwrap_err();
        assert!(e.to_string().contains("nosuchoption"), "{e}");
        assert!(FsContext::open("nosuchfs").is_err());
    }

    #[test]
    fn move_mount_attaches_into_a_private_namespace_only() {
        // Done in a child with its own mount namespace so the host never sees it.
        // SAFETY: fork in a test; the child only makes syscalls and exits.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = (|| -> Option<()> {
                // SAFETY: unshare/mount with constant arguments in the child.
                unsafe {
                    if libc::unshare(libc::CLONE_NEWNS) != 0 {
                        return None;
                    }
                    let root = cstring("/");
                    if libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                    {
                        return None;
                    }
                }
                let target =
                    std::env::temp_dir().join(format!("bulkhead-mm-{}", std::process::id()));
                std::fs::create_dir_all(&target).ok()?;
                let ctx = FsContext::open("tmpfs").ok()?;
                let mnt = ctx.mount(0).ok()?;
                std::fs::write(format!("/proc/self/fd/{}/m", mnt.as_raw_fd()), b"x").ok()?;
                let dir = std::fs::File::open(&target).ok()?;
                move_mount(mnt.as_fd(), dir.as_fd(), "").ok()?;
                let seen = std::fs::read(target.join("m")).ok()? == b"x";
                seen.then_some(())
            })();
            // SAFETY: leave the child without running the parent's destructors.
            unsafe { libc::_exit(if ok.is_some() { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        let _ = std::fs::remove_dir(std::env::temp_dir().join(format!("bulkhead-mm-{pid}")));
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child failed: {status}"
        );
    }
}
