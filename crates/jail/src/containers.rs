//! A jail node's container mounts (#16), made by its supervisor: the node's agent cannot mount
//! (it holds no CAP_SYS_ADMIN), and nothing of a container may be mounted in the host's mount
//! namespace. The supervisor forks one child per request that sets `PR_SET_DUMPABLE` 0 (the
//! node's root cannot ptrace or read it once it is inside) and enters the init's pid
//! namespace; its fork (the helper, which sees the node's /proc as its own) enters the init's
//! user namespace (becoming the node's root there, with the namespace's capabilities) and then
//! its mount namespace (whose root is the node's root), and makes or removes the mounts with
//! `bulkhead_agent::container_mounts`, which never follows a symlink the container planted.
//!
//! Invariants: the supervisor stays single-threaded (the child is a fork, reaped here before
//! the answer); the namespaces are opened from `/proc/<init>/ns` by the supervisor before the
//! fork; the child reports one line on a pipe and exits, and is killed if it takes longer
//! than [`TIMEOUT_MS`].

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use bulkhead_agent::containers::ContainerMount;
use bulkhead_driver::DriverError;

/// How long making a container's mounts may take.
const TIMEOUT_MS: i32 = 10_000;

fn open_ns(init: i32, which: &str) -> Result<OwnedFd, DriverError> {
    std::fs::File::open(format!("/proc/{init}/ns/{which}"))
        .map(OwnedFd::from)
        .map_err(DriverError::io(format!(
            "opening the node's {which} namespace"
        )))
}

/// Makes (`Some`) or removes (`None`) a container's mounts in the node of `init`.
pub(crate) fn run(
    init: i32,
    root: &str,
    mounts: Option<(&[ContainerMount], bool)>,
) -> Result<(), DriverError> {
    bulkhead_agent::containers::check(root, mounts.map_or(&[], |m| m.0))
        .map_err(|e| DriverError::Refused(e.to_string()))?;
    let pid_ns = open_ns(init, "pid")?;
    let user = open_ns(init, "user")?;
    let mnt = open_ns(init, "mnt")?;
    let mut fds = [0; 2];
    // SAFETY: a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(DriverError::io("a pipe for the mount helper")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: pipe2 returned two fresh descriptors we own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the supervisor's control loop is single-threaded, so the child may allocate.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(DriverError::io("forking the mount helper")(
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        drop(r);
        // SAFETY: prctl, setns and fork in our single-threaded child; the helper is in the
        // node's pid namespace (so the node's /proc has its /proc/self).
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            if libc::setns(pid_ns.as_raw_fd(), libc::CLONE_NEWPID) < 0 {
                answer(&w, Err(os("entering the node's pid namespace")));
            }
            match libc::fork() {
                0 => answer(&w, child(&user, &mnt, root, mounts)),
                gc if gc < 0 => answer(&w, Err(os("forking into the node's pid namespace"))),
                gc => {
                    drop(w);
                    libc::waitpid(gc, std::ptr::null_mut(), 0);
                    libc::_exit(0)
                }
            }
        }
    }
    drop(w);
    let answer = read_answer(&r, pid);
    let mut status = 0;
    // SAFETY: reaping our own child by pid.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match answer {
        Some(a) if a == "ok" => Ok(()),
        Some(a) if !a.is_empty() => Err(DriverError::Failed(format!("container mounts: {a}"))),
        _ => Err(DriverError::Failed(
            "container mounts: the helper ended without an answer".into(),
        )),
    }
}

fn os(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

/// Writes the helper's one answer line and leaves without destructors (the supervisor's
/// state is not the helper's to tear down).
fn answer(w: &OwnedFd, result: Result<(), String>) -> ! {
    let line = match result {
        Ok(()) => "ok\n".to_string(),
        Err(e) => format!("{}\n", e.replace('\n', " ")),
    };
    // SAFETY: writing our own buffer to our own pipe, then _exit.
    unsafe {
        libc::write(w.as_raw_fd(), line.as_ptr().cast(), line.len());
        libc::_exit(0)
    }
}

/// The child's one line, or `None` after [`TIMEOUT_MS`] (the child is then killed).
fn read_answer(r: &OwnedFd, pid: i32) -> Option<String> {
    let mut out = Vec::new();
    let mut f = std::fs::File::from(r.try_clone().ok()?);
    loop {
        let mut p = libc::pollfd {
            fd: r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut p, 1, TIMEOUT_MS) } <= 0 {
            // SAFETY: our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return None;
        }
        let mut buf = [0u8; 4096];
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if out.len() < 64 * 1024 => out.extend_from_slice(&buf[..n]),
            Ok(_) => {}
        }
    }
    Some(String::from_utf8_lossy(&out).trim().to_string())
}

/// In the helper (the node's pid namespace, not dumpable): the node's root in its user
/// namespace, inside its mount namespace, then the mounts.
fn child(
    user: &OwnedFd,
    mnt: &OwnedFd,
    root: &str,
    mounts: Option<(&[ContainerMount], bool)>,
) -> Result<(), String> {
    // SAFETY: setns/setres[ug]id/chdir with valid arguments in our single-threaded helper.
    unsafe {
        if libc::setns(user.as_raw_fd(), libc::CLONE_NEWUSER) < 0 {
            return Err(os("entering the node's user namespace"));
        }
        if libc::setns(mnt.as_raw_fd(), libc::CLONE_NEWNS) < 0 {
            return Err(os("entering the node's mount namespace"));
        }
        // The node's root, so that what is made (mount points) is the node's, not an unmapped
        // host uid's.
        if libc::setresgid(0, 0, 0) < 0 || libc::setresuid(0, 0, 0) < 0 {
            return Err(os("becoming the node's root"));
        }
        if libc::chdir(c"/".as_ptr()) < 0 {
            return Err(os("chdir /"));
        }
    }
    match mounts {
        Some((m, readonly)) => bulkhead_agent::container_mounts::make(root, m, readonly),
        None => bulkhead_agent::container_mounts::unmount(root),
    }
    .map_err(|e| e.to_string())
}
