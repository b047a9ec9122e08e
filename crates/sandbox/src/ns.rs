//! Cloning a confined process: the one place that creates a node's namespaces. Both drivers
//! start their node's process here (the jail's init, QEMU for a microVM): new user, pid,
//! mount, net, uts and ipc namespaces, the user namespace owned by the tenant's host uid
//! ([`crate::as_owner`]), uid/gid maps onto the tenant's range, and close-on-exec pipes for
//! the start handshake.
//!
//! Invariants: the caller is single-threaded when it clones (the child runs Rust code without
//! exec, so a lock held by another thread would stay held forever in it); the child gets its
//! own copy of memory (no `CLONE_VM`) and either execs or exits; the child waits for the
//! caller's go-ahead before it does anything that needs its id maps.

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};

/// The namespaces of every confined process: user, pid, mount, net, uts, ipc. The cgroup
/// namespace comes later, from inside, once the process sits in its node's cgroup.
pub const NODE_NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC;

/// Creating the namespaces or mapping their ids failed.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Owner(#[from] crate::OwnerError),
}

/// A pipe whose both ends are close-on-exec: the child's copy of a write end then closes when
/// it execs, which is how the caller learns that the exec happened (EOF, no message).
pub fn cloexec_pipe() -> Result<(File, File), NsError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(NsError::Os {
            what: "pipe",
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: pipe2 returned two fresh fds that we now own.
    Ok(unsafe {
        (
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    })
}

/// Clones `child` into [`NODE_NAMESPACES`] with its user namespace owned by `owner_uid` (the
/// tenant's host uid, root of the node) and returns its pid. The child gets SIGCHLD semantics
/// (the caller waits for it) and a stack of `stack_bytes`. The child should first call
/// [`crate::restore_in_child`], then wait for the caller's go (the id maps are written after
/// this returns, by [`write_id_maps`]).
///
/// # Safety
/// The calling process must be single-threaded, and `child` must end in exec or exit: it runs
/// on a copy of the caller's memory where no other thread exists to release a lock.
pub unsafe fn clone_confined(
    owner_uid: u32,
    stack_bytes: usize,
    child: impl FnMut() -> isize,
) -> Result<i32, NsError> {
    let mut stack = vec![0u8; stack_bytes];
    let flags = nix::sched::CloneFlags::from_bits_truncate(NODE_NAMESPACES);
    let cloned = crate::as_owner(owner_uid, || {
        // SAFETY: forwarded from the caller (single-threaded, child execs or exits); the child
        // has its own copy of memory, so the stack buffer may be dropped after the call.
        unsafe { nix::sched::clone(Box::new(child), &mut stack, flags, Some(libc::SIGCHLD)) }
    })?;
    cloned.map(|p| p.as_raw()).map_err(|e| NsError::Os {
        what: "clone",
        source: std::io::Error::from_raw_os_error(e as i32),
    })
}

/// Maps uids and gids 0..count of a cloned child's user namespace onto `base..base+count` on
/// the host (root of the node is the tenant's unprivileged `base`).
pub fn write_id_maps(pid: i32, base: u32, count: u32) -> Result<(), NsError> {
    let map = id_map(base, count);
    std::fs::write(format!("/proc/{pid}/uid_map"), &map).map_err(|source| NsError::Os {
        what: "writing uid_map",
        source,
    })?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &map).map_err(|source| NsError::Os {
        what: "writing gid_map",
        source,
    })
}

fn id_map(base: u32, count: u32) -> String {
    format!("0 {base} {count}\n")
}

/// In a child cloned by [`clone_confined`], once its maps exist: becomes uid and gid 0 of the
/// new user namespace. `clear_groups` also drops the supplementary groups (QEMU keeps the
/// host's `kvm` group it was given for `/dev/kvm`).
pub fn become_ns_root(clear_groups: bool) -> Result<(), String> {
    // SAFETY: credential syscalls with integer arguments (setgroups with an empty list).
    unsafe {
        if (clear_groups && libc::setgroups(0, std::ptr::null()) < 0)
            || libc::setresgid(0, 0, 0) < 0
            || libc::setresuid(0, 0, 0) < 0
        {
            return Err(format!(
                "becoming root of the node's user namespace: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// SIGKILL and reap a child that failed to start.
pub fn kill_and_reap(pid: i32) {
    // SAFETY: kill and waitpid of our own child, by pid.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    #[test]
    fn the_map_is_root_onto_the_range() {
        assert_eq!(super::id_map(1 << 20, 65536), "0 1048576 65536\n");
    }

    #[test]
    fn pipe_ends_are_close_on_exec() {
        use std::os::fd::AsRawFd;
        let (r, w) = super::cloexec_pipe().unwrap();
        for f in [&r, &w] {
            // SAFETY: fcntl F_GETFD on an fd we own.
            let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) };
            assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        }
        let (mut r, mut w) = (r, w);
        w.write_all(b"x").unwrap();
        drop(w);
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "x");
    }

    /// A real clone into every node namespace, as root, in a forked (single-threaded) child:
    /// the clone sees itself as pid 1 and root of its namespace, and the maps land on the
    /// range asked for.
    #[test]
    fn a_confined_child_is_pid_1_and_root_of_its_range() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: needs root");
            return;
        }
        let base = 3_000_000u32;
        // SAFETY: the forked child only makes syscalls and _exits; the test harness's other
        // threads do not exist in it, so it is single-threaded as clone_confined requires.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let code = (|| -> Option<i32> {
                    let (mut go_r, mut go_w) = super::cloexec_pipe().ok()?;
                    let child = super::clone_confined(base, 64 * 1024, move || {
                        let mut b = [0u8; 1];
                        if go_r.read_exact(&mut b).is_err() {
                            return 10;
                        }
                        if super::become_ns_root(true).is_err() {
                            return 11;
                        }
                        if libc::getpid() != 1 || libc::getuid() != 0 {
                            return 12;
                        }
                        0
                    })
                    .ok()?;
                    super::write_id_maps(child, base, 65536).ok()?;
                    let mapped = std::fs::read_to_string(format!("/proc/{child}/uid_map")).ok()?;
                    go_w.write_all(b"g").ok()?;
                    let mut status = 0;
                    libc::waitpid(child, &mut status, 0);
                    if !mapped.split_whitespace().eq(["0", "3000000", "65536"]) {
                        return Some(20);
                    }
                    Some(if libc::WIFEXITED(status) {
                        libc::WEXITSTATUS(status)
                    } else {
                        30
                    })
                })()
                .unwrap_or(40);
                libc::_exit(code);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(libc::WIFEXITED(status));
            assert_eq!(libc::WEXITSTATUS(status), 0, "confined child failed");
        }
    }
}
