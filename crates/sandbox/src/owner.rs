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
/// `SECBIT_NO_SETUID_FIXUP` (linux/securebits.h): uid changes leave capabilities alone.
const NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;

/// The caller's securebits before [`as_owner`] changed them, for [`restore_in_child`]. The
/// child is a copy of the caller's memory, so it reads the value the caller stored.
static ORIGINAL_SECUREBITS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);

/// Runs `f` (which clones the node's init) with the effective uid and gid set to `uid`, then
/// returns to root. Failing to switch is an error (still root, nothing changed); failing to
/// come back ends the process, which must not go on half-privileged.
pub fn as_owner<T>(uid: u32, f: impl FnOnce() -> T) -> Result<T, OwnerError> {
    let err = |what: &str| OwnerError(format!("{what}: {}", std::io::Error::last_os_error()));
    // SAFETY: prctl with integer arguments.
    let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) };
    // Keep the effective capabilities across the uid switch, so that the kernel and security
    // modules see a privileged creator (Ubuntu's AppArmor restricts namespaces created
    // without CAP_SYS_ADMIN; Debian's unprivileged_userns_clone=0 refuses them). Where the bit
    // cannot be set (no CAP_SETPCAP), the switch drops them as before.
    let fixup_off = bits >= 0
        // SAFETY: prctl with integer arguments.
        && unsafe {
            libc::prctl(
                libc::PR_SET_SECUREBITS,
                bits as libc::c_ulong | NO_SETUID_FIXUP,
                0,
                0,
                0,
            )
        } == 0;
    if fixup_off {
        ORIGINAL_SECUREBITS.store(bits as i64, std::sync::atomic::Ordering::SeqCst);
    }
    let restore_bits = || {
        if fixup_off {
            // SAFETY: prctl with integer arguments; back to the bits we found.
            unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0, 0, 0) };
            ORIGINAL_SECUREBITS.store(-1, std::sync::atomic::Ordering::SeqCst);
        }
    };
    // SAFETY: credential syscalls with integer arguments; the process is single-threaded.
    unsafe {
        if libc::setresgid(UNCHANGED, uid, UNCHANGED) != 0 {
            let e = err("switching the effective gid to the tenant's");
            restore_bits();
            return Err(e);
        }
        if libc::setresuid(UNCHANGED, uid, UNCHANGED) != 0 {
            let e = err("switching the effective uid to the tenant's");
            libc::setresgid(UNCHANGED, 0, UNCHANGED);
            restore_bits();
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
    restore_bits();
    Ok(out)
}

/// First thing in a child cloned inside [`as_owner`]: it inherited `SECBIT_NO_SETUID_FIXUP`,
/// under which a later change to a non-zero uid (the agent running a command as a user)
/// would keep capabilities. Puts the caller's original securebits back; the child holds
/// CAP_SETPCAP in its new user namespace, so this cannot fail short of a kernel refusal,
/// which the child must treat as fatal.
pub fn restore_in_child() -> Result<(), String> {
    let bits = ORIGINAL_SECUREBITS.load(std::sync::atomic::Ordering::SeqCst);
    if bits < 0 {
        return Ok(());
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(format!(
            "restoring securebits in the node: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
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
    /// Effective capability bits 0-31 of the calling thread (capget, no allocation).
    fn cap_eff_low() -> u32 {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Default, Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut h = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let mut d = [Data::default(); 2];
        // SAFETY: valid header and two-element data array, as capget v3 expects.
        unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) };
        d[0].effective
    }

    /// Inside `as_owner` the effective uid is the tenant's and, as root with CAP_SETPCAP, the
    /// effective capabilities stay (a privileged namespace creator for the kernel and LSMs);
    /// afterwards uid, capabilities and securebits are as before.
    #[test]
    fn the_switch_keeps_capabilities_and_puts_everything_back() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: needs root");
            return;
        }
        // SAFETY: the child only makes syscalls and _exits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let before = libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0);
                let caps_before = cap_eff_low();
                let inside = super::as_owner(65534, || (libc::geteuid(), cap_eff_low()));
                let code = match inside {
                    Ok((65534, caps)) if caps == caps_before => 0,
                    Ok((65534, _)) => 2,
                    Ok(_) => 3,
                    Err(_) => 4,
                };
                let code = if code == 0 && libc::geteuid() != 0 {
                    5
                } else if code == 0 && cap_eff_low() != caps_before {
                    6
                } else if code == 0 && libc::prctl(libc::PR_GET_SECUREBITS, 0, 0, 0, 0) != before {
                    7
                } else {
                    code
                };
                libc::_exit(code);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(libc::WIFEXITED(status));
            assert_eq!(libc::WEXITSTATUS(status), 0, "probe failed");
        }
    }

    #[test]
    fn plain_names_only() {
        let e = super::write_user_sysctls(&[("../../fs/file-max".into(), 1)]).unwrap_err();
        assert!(e.contains("invalid"), "{e}");
    }
}
