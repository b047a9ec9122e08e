//! Starts QEMU confined. The child is cloned into new user, pid, mount, net, uts and ipc
//! namespaces (uid 0 there is the tenant's unprivileged `uid_base` on the host), builds a
//! minimal root of its own — read-only `/usr`, the loader cache, four device nodes (five with
//! KVM), the node's kernel and initramfs read-only, the node's `vm/` directory — pivots into
//! it, drops to `QEMU_UID` with no capabilities and no_new_privs, and execs QEMU, which then
//! installs its own seccomp sandbox. The guest sees only its disk image; QEMU sees nothing of
//! the host beyond the list above.
//!
//! Like the jail's, the child waits for a `go` byte, so that the supervisor can write its id
//! maps and place it in its cgroups first.

use crate::{Accel, VmError, VmSpec, QEMU_UID};
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

fn pipe() -> Result<(File, File), VmError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(VmError::Launch(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: pipe2 returned two fresh fds that we now own.
    Ok(unsafe {
        (
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    })
}

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
fn child(spec: &VmSpec, root: &Path, console: i32, probe: bool) -> String {
    let r = (|| -> Result<(), String> {
        // SAFETY: credential syscalls with integer arguments.
        unsafe {
            if libc::setresgid(0, 0, 0) < 0 || libc::setresuid(0, 0, 0) < 0 {
                return Err(os("becoming root of the new user namespace"));
            }
        }
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
        // SAFETY: dropping to QEMU's uid clears every capability; no_new_privs keeps it so.
        unsafe {
            if libc::setresgid(QEMU_UID, QEMU_UID, QEMU_UID) < 0
                || libc::setresuid(QEMU_UID, QEMU_UID, QEMU_UID) < 0
            {
                return Err(os("dropping to QEMU's uid"));
            }
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                return Err(os("no_new_privs"));
            }
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            libc::dup2(null, 0);
            libc::dup2(console, 1);
            libc::dup2(console, 2);
        }
        Ok(())
    })();
    if let Err(e) = r {
        return e;
    }
    let args: Vec<CString> = std::iter::once(c(&spec.qemu.to_string_lossy()))
        .chain(crate::qemu::args(spec, probe).iter().map(|a| c(a)))
        .collect();
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: argv and envp are NUL-terminated arrays of valid strings.
    unsafe { libc::execve(argv[0], argv.as_ptr(), envp.as_ptr()) };
    os(&format!("exec {}", spec.qemu.display()))
}

/// A QEMU child waiting for its `go`.
pub struct Pending {
    pub pid: i32,
    go: File,
    err: File,
}

impl Pending {
    /// Lets the child set up and exec QEMU; returns once QEMU runs (or why it could not).
    pub fn go(mut self) -> Result<i32, VmError> {
        self.go
            .write_all(b"g")
            .map_err(|e| VmError::Launch(format!("starting the child: {e}")))?;
        drop(self.go);
        let mut msg = String::new();
        let _ = self.err.read_to_string(&mut msg);
        if !msg.is_empty() {
            // SAFETY: our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            }
            return Err(VmError::Launch(msg));
        }
        Ok(self.pid)
    }
}

/// Clones QEMU's child into its namespaces and writes its id maps. The caller places it in
/// its cgroups and then calls [`Pending::go`]. Must be called from a single-threaded process.
pub fn spawn(
    spec: &VmSpec,
    root: &Path,
    console: &File,
    uid_base: u32,
    uid_count: u32,
    probe: bool,
) -> Result<Pending, VmError> {
    let (mut go_r, go_w) = pipe()?;
    let (err_r, mut err_w) = pipe()?;
    let console_fd = console.as_raw_fd();
    let mut stack = vec![0u8; 256 * 1024];
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC;
    let child_fn = move || -> isize {
        let mut b = [0u8; 1];
        if go_r.read_exact(&mut b).is_err() {
            return 1;
        }
        let msg = child(spec, root, console_fd, probe);
        let _ = err_w.write_all(msg.as_bytes());
        1
    };
    // SAFETY: the caller is single-threaded; the child has its own copy of memory and either
    // execs QEMU or exits.
    let pid = unsafe {
        nix::sched::clone(
            Box::new(child_fn),
            &mut stack,
            nix::sched::CloneFlags::from_bits_truncate(flags),
            Some(libc::SIGCHLD),
        )
    }
    .map_err(|e| VmError::Launch(format!("clone: {e}")))?
    .as_raw();
    let map = format!("0 {uid_base} {uid_count}\n");
    let maps = std::fs::write(format!("/proc/{pid}/uid_map"), &map)
        .and_then(|_| std::fs::write(format!("/proc/{pid}/gid_map"), &map));
    if let Err(e) = maps {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        return Err(VmError::Launch(format!("writing id maps: {e}")));
    }
    Ok(Pending {
        pid,
        go: go_w,
        err: err_r,
    })
}
