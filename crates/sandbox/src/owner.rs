//! Who owns a node's user namespace on the host.
//!
//! The kernel charges per-user counts (inotify instances and watches, POSIX message-queue
//! bytes, pending signals, user namespaces) to the user namespace a process runs in and then,
//! level by level, to the *owner* of each namespace in its parent. A namespace created by host
//! root is owned by uid 0, so every node used to spend root's per-user allowance: one node with
//! 128 inotify instances left root and every other tenant with EMFILE. The owner is the
//! effective uid of the process that creates the namespace, so the supervisor creates it with
//! its effective uid and gid switched to the tenant's own unprivileged host uid (the node's
//! root), and switches back to root right after. Real and saved ids stay 0 throughout, which
//! keeps the permitted capabilities for the way back.
//!
//! Credentials are per thread in the kernel and glibc's wrappers change every thread; the
//! callers are single-threaded when they clone, so either is the same here.

/// Switching the effective ids to the tenant's failed (the process is still root).
#[derive(Debug)]
pub struct OwnerError(pub String);

impl std::fmt::Display for OwnerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OwnerError {}

const UNCHANGED: libc::uid_t = libc::uid_t::MAX;

/// Runs `f` (which clones the node's init) with the effective uid and gid set to `uid`, then
/// returns to root. Failing to switch is an error (still root, nothing changed); failing to
/// come back ends the process, which must not go on half-privileged.
pub fn as_owner<T>(uid: u32, f: impl FnOnce() -> T) -> Result<T, OwnerError> {
    let err = |what: &str| OwnerError(format!("{what}: {}", std::io::Error::last_os_error()));
    // SAFETY: credential syscalls with integer arguments; the process is single-threaded.
    unsafe {
        if libc::setresgid(UNCHANGED, uid, UNCHANGED) != 0 {
            return Err(err("switching the effective gid to the tenant's"));
        }
        if libc::setresuid(UNCHANGED, uid, UNCHANGED) != 0 {
            let e = err("switching the effective uid to the tenant's");
            libc::setresgid(UNCHANGED, 0, UNCHANGED);
            return Err(e);
        }
    }
    let out = f();
    // SAFETY: as above. The saved uid is 0, so returning the effective uid to 0 is allowed and
    // restores the effective capabilities from the permitted set.
    unsafe {
        if libc::setresuid(UNCHANGED, 0, UNCHANGED) != 0
            || libc::setresgid(UNCHANGED, 0, UNCHANGED) != 0
        {
            // Cannot happen with a saved uid of 0; if it did, nothing may go on half-privileged.
            // A child, if any, waits for `go` and exits when its pipe closes with us.
            let e = err("returning to root after creating the node's namespaces");
            use std::io::Write;
            let _ = writeln!(std::io::stdout(), "error {e}");
            libc::_exit(1);
        }
        // A change of effective uid makes the process non-dumpable, which would make its
        // /proc files root-owned-but-unreadable to tools that inspect supervisors.
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
    }
    Ok(out)
}

/// Writes the node's `/proc/sys/user/` limits. Runs in the node's init, inside its new user
/// namespace and while it still holds CAP_SYS_RESOURCE there (the kernel applies these files
/// to the writer's own user namespace).
pub fn write_user_sysctls(entries: &[(String, u64)]) -> Result<(), String> {
    for (name, value) in entries {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(format!("invalid /proc/sys/user entry {name:?}"));
        }
        let path = format!("/proc/sys/user/{name}");
        match std::fs::write(&path, value.to_string()) {
            Ok(()) => {}
            // An older kernel without this counter: nothing there to bound.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("setting {path} to {value}: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn plain_names_only() {
        let e = super::write_user_sysctls(&[("../../fs/file-max".into(), 1)]).unwrap_err();
        assert!(e.contains("invalid"), "{e}");
    }
}
