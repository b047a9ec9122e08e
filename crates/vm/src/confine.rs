//! Starts QEMU confined. The child is cloned into new user, pid, mount, net, uts and ipc
//! namespaces (uid 0 there is the tenant's unprivileged `uid_base` on the host), builds a
//! minimal root of its own — read-only `/usr`, the loader cache, four device nodes (five with
//! KVM), the node's kernel and initramfs read-only, the node's `vm/` directory — pivots into
//! it, drops to `QEMU_UID` with no capabilities and no_new_privs, and execs QEMU, which then
//! installs its own seccomp sandbox. The guest sees only its disk image; QEMU sees nothing of
//! the host beyond the list above.
//!
//! The clone, id maps and pipes are the jail's own (`bulkhead_sandbox::ns`). Like the jail's
//! init, the child waits for a `go` byte, so that the supervisor can write its id maps and
//! place it in its cgroups first.

use crate::{Accel, VmError, VmSpec, QEMU_UID};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

fn c(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

fn os(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn mnt(
    src: &str,
    dst: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), String> {
    let (s, d) = (c(src), c(dst));
    let t = fstype.map(c);
    let o = data.map(c);
    // SAFETY: valid NUL-terminated strings (or null) for the call's duration.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            t.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            o.as_ref().map_or(std::ptr::null(), |o| o.as_ptr().cast()),
        )
    };
    if r < 0 {
        return Err(os(&format!("mount {src} on {dst}")));
    }
    Ok(())
}

/// Bind-mounts a host file or directory read-only (or read-write) into the new root.
fn bind(src: &Path, dst: &str, rw: bool) -> Result<(), String> {
    if src.is_dir() {
        std::fs::create_dir_all(dst).map_err(|e| format!("mkdir {dst}: {e}"))?;
    } else {
        File::create(dst).map_err(|e| format!("creating {dst}: {e}"))?;
    }
    let s = src.to_string_lossy();
    mnt(&s, dst, None, libc::MS_BIND | libc::MS_REC, None)?;
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID;
    if !rw {
        flags |= libc::MS_RDONLY;
    }
    if !dst.contains("/dev/") {
        flags |= libc::MS_NODEV;
    }
    mnt("none", dst, None, flags, None)
}

/// In the child: the minimal root, then credentials. Returns only on error.
fn child(
    spec: &VmSpec,
    root: &Path,
    console: i32,
    probe: bool,
    tap_fd: Option<i32>,
    volumes: &[crate::qemu::VolumeDrive],
) -> String {
    let r = (|| -> Result<(), String> {
        // Keeps the supplementary groups: /dev/kvm opens through the host's kvm group.
        bulkhead_sandbox::ns::become_ns_root(false)?;
        mnt("none", "/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
        let r = root.to_string_lossy().to_string();
        mnt(
            "tmpfs",
            &r,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("size=1m,mode=0755"),
        )?;
        for d in ["usr", "dev", "proc", "vm", "boot", "etc", "oldroot"] {
            std::fs::create_dir_all(format!("{r}/{d}")).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        bind(Path::new("/usr"), &format!("{r}/usr"), false)?;
        // Merged /usr (Debian 12): /bin, /lib, ... are links into /usr.
        for d in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(d);
            match std::fs::read_link(&host) {
                Ok(t) => {
                    let _ = std::os::unix::fs::symlink(t, format!("{r}/{d}"));
                }
                Err(_) if host.is_dir() => bind(&host, &format!("{r}/{d}"), false)?,
                Err(_) => {}
            }
        }
        if Path::new("/etc/ld.so.cache").exists() {
            bind(
                Path::new("/etc/ld.so.cache"),
                &format!("{r}/etc/ld.so.cache"),
                false,
            )?;
        }
        let mut devs = vec!["null", "zero", "random", "urandom"];
        if spec.accel == Accel::Kvm {
            devs.push("kvm");
        }
        // No /dev/net/tun: the NIC comes as a tun fd already attached to the node's tap.
        for d in devs {
            bind(&Path::new("/dev").join(d), &format!("{r}/dev/{d}"), true)?;
        }
        bind(&spec.kernel, &format!("{r}/boot/vmlinux"), false)?;
        bind(&spec.initramfs, &format!("{r}/boot/initramfs"), false)?;
        if !probe {
            bind(&spec.vm_dir, &format!("{r}/vm"), true)?;
        }
        mnt(
            "proc",
            &format!("{r}/proc"),
            Some("proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )?;
        let (nr, old) = (c(&r), c(&format!("{r}/oldroot")));
        // SAFETY: pivot_root with valid paths; then detach the old root.
        unsafe {
            if libc::syscall(libc::SYS_pivot_root, nr.as_ptr(), old.as_ptr()) < 0 {
                return Err(os("pivot_root"));
            }
            if libc::chdir(c"/".as_ptr()) < 0
                || libc::umount2(c"/oldroot".as_ptr(), libc::MNT_DETACH) < 0
            {
                return Err(os("detaching the old root"));
            }
        }
        let _ = std::fs::remove_dir("/oldroot");
        mnt(
            "none",
            "/",
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
            None,
        )?;
        // Nothing QEMU execs can gain a capability back; dropping to QEMU's uid below clears
        // every capability it holds, and no_new_privs keeps it so.
        bulkhead_sandbox::caps::drop_bounding_except(0)?;
        // SAFETY: credential and prctl syscalls with integer arguments; tun_set_iff, dup2 on
        // fds we hold.
        unsafe {
            if libc::setresgid(QEMU_UID, QEMU_UID, QEMU_UID) < 0
                || libc::setresuid(QEMU_UID, QEMU_UID, QEMU_UID) < 0
            {
                return Err(os("dropping to QEMU's uid"));
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(os("no_new_privs"));
            }
            // Attach the inherited tun fd to the tap the supervisor made for QEMU's uid: the
            // tap's owner check lets an unprivileged process do this, and /dev/net/tun itself
            // never has to be reachable from QEMU's root.
            if let Some(fd) = tap_fd {
                if bulkhead_net::host::tun_set_iff(fd, bulkhead_net::host::GUEST_TAP).is_err() {
                    return Err(os("attaching to the node's tap"));
                }
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(console, 1);
            libc::dup2(console, 2);
            // A persistent root disk's key pipe (#13), read by QEMU at its start.
            if let Some(fd) = spec.root_key_fd {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(os("handing the disk's key to QEMU"));
                }
            }
            // The volumes' images (#13, attach): opened by the supervisor, inherited by QEMU.
            for fd in volumes.iter().flat_map(|v| &v.fds) {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(os("handing a volume to QEMU"));
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = r {
        return e;
    }
    let args: Vec<CString> = std::iter::once(c(&spec.qemu.to_string_lossy()))
        .chain(
            crate::qemu::args(spec, probe, tap_fd, volumes)
                .iter()
                .map(|a| c(a)),
        )
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: argv and envp are NUL-terminated arrays of valid strings.
    unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) };
    os(&format!("exec {}", spec.qemu.display()))
}

/// Sends one byte, with `fd` attached (SCM_RIGHTS) when given.
fn send_go(sock: &UnixStream, fd: Option<i32>) -> std::io::Result<()> {
    let mut byte = [b'g'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is plain data; every pointer in it refers to a live local buffer, and the
    // control message is written within `cbuf` through the CMSG macros.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            msg.msg_control = cbuf.as_mut_ptr().cast();
            msg.msg_controllen = space as _;
            let cm = libc::CMSG_FIRSTHDR(&msg);
            (*cm).cmsg_level = libc::SOL_SOCKET;
            (*cm).cmsg_type = libc::SCM_RIGHTS;
            (*cm).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<i32>(), fd);
        }
        if libc::sendmsg(sock.as_raw_fd(), &msg, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives the `go` byte and the fd attached to it, if any (in the child).
fn recv_go(sock: &UnixStream) -> Option<Option<i32>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: as in send_go; the kernel writes at most `space` bytes of control data.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
        let mut cbuf = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        if libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) != 1 {
            return None;
        }
        let cm = libc::CMSG_FIRSTHDR(&msg);
        if cm.is_null() || (*cm).cmsg_type != libc::SCM_RIGHTS {
            return Some(None);
        }
        Some(Some(std::ptr::read_unaligned(
            libc::CMSG_DATA(cm).cast::<i32>(),
        )))
    }
}

/// A QEMU child waiting for its `go`.
pub struct Pending {
    pub pid: i32,
    go: UnixStream,
    err: File,
}

impl Pending {
    /// Lets the child set up and exec QEMU; returns once QEMU runs (or why it could not).
    /// `tun`: for a networked node, `/dev/net/tun` opened inside the node's network
    /// namespace (a tun fd belongs to the namespace it was opened in); the child attaches it
    /// to the node's tap and QEMU inherits it.
    pub fn go(mut self, tun: Option<&File>) -> Result<i32, VmError> {
        send_go(&self.go, tun.map(|t| t.as_raw_fd()))
            .map_err(|e| VmError::Launch(format!("starting the child: {e}")))?;
        drop(self.go);
        let mut msg = String::new();
        let _ = self.err.read_to_string(&mut msg);
        if !msg.is_empty() {
            bulkhead_sandbox::ns::kill_and_reap(self.pid);
            return Err(VmError::Launch(msg));
        }
        Ok(self.pid)
    }
}

/// Clones QEMU's child into its namespaces and writes its id maps. The caller places it in
/// its cgroups and then calls [`Pending::go`].
///
/// `volumes`: the node's volume images, open in this process (QEMU inherits them).
///
/// # Safety
/// The calling process must be single-threaded: the child runs Rust code before its exec.
pub unsafe fn spawn(
    spec: &VmSpec,
    root: &Path,
    console: &File,
    ids: (u32, u32),
    probe: bool,
    volumes: &[crate::qemu::VolumeDrive],
) -> Result<Pending, VmError> {
    let (uid_base, uid_count) = ids;
    let (go_w, go_r) =
        UnixStream::pair().map_err(|e| VmError::Launch(format!("socketpair: {e}")))?;
    let (err_r, mut err_w) =
        bulkhead_sandbox::ns::cloexec_pipe().map_err(|e| VmError::Launch(e.to_string()))?;
    let console_fd = console.as_raw_fd();
    let child_fn = move || -> isize {
        let Some(tap_fd) = recv_go(&go_r) else {
            return 1;
        };
        if let Err(e) = bulkhead_sandbox::restore_in_child() {
            let _ = err_w.write_all(e.as_bytes());
            return 1;
        }
        let msg = child(spec, root, console_fd, probe, tap_fd, volumes);
        let _ = err_w.write_all(msg.as_bytes());
        1
    };
    // QEMU's user namespace is owned by the tenant's host uid, not root, so the kernel's
    // per-user counts of what QEMU does are the tenant's (bulkhead_sandbox::as_owner).
    // SAFETY: the caller is single-threaded (this function's safety contract); the child has its own
    // copy of memory and either execs QEMU or exits.
    let pid = unsafe { bulkhead_sandbox::ns::clone_confined(uid_base, 256 * 1024, child_fn) }
        .map_err(|e| VmError::Launch(e.to_string()))?;
    if let Err(e) = bulkhead_sandbox::ns::write_id_maps(pid, uid_base, uid_count) {
        bulkhead_sandbox::ns::kill_and_reap(pid);
        return Err(VmError::Launch(e.to_string()));
    }
    Ok(Pending {
        pid,
        go: go_w,
        err: err_r,
    })
}
