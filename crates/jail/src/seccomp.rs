//! The node's seccomp policy. The policy is data (`policy/seccomp.json`, Firecracker's
//! seccompiler format) where every allowed syscall carries the reason it is allowed. Two filters
//! are installed: `node`, an allowlist that answers EPERM to everything else (socket and
//! socketpair only for the address families a node needs); `enosys`, which makes clone3 answer
//! ENOSYS so that libc falls back to clone(2), whose namespace flags the allowlist can inspect,
//! and io_setup too (AIO contexts only have a host-wide limit); and `eafnosupport`, which makes
//! socket() of any other address family (AF_VSOCK above all) answer as a kernel without it.
//!
//! When several filters answer ERRNO the most recently installed one's errno wins, so the
//! narrower filters are installed after `node`.
//!
//! Detection (#14, ADR 0033): `node` and `eafnosupport` are installed with
//! `SECCOMP_FILTER_FLAG_LOG`, so the kernel writes an audit record (`type=1326`) for each call
//! they deny; the daemon reads those from the kernel log and counts them per node. `enosys` is
//! not logged: libc calls clone3 on every fork and thread and falls back by design, so its
//! answers are compatibility, not violations (the kernel logs the answer of the filter whose
//! action wins, and for equal actions that is the most recently installed one).

use seccompiler::{BpfProgram, TargetArch};

pub const POLICY_JSON: &str = include_str!("../policy/seccomp.json");

/// The policy's filters, in the order they must be installed.
const FILTERS: [&str; 3] = ["node", "enosys", "eafnosupport"];

/// The compiled filters, in the order they must be installed.
pub fn compile() -> Result<Vec<BpfProgram>, crate::JailError> {
    #[cfg(target_arch = "x86_64")]
    let arch = TargetArch::x86_64;
    #[cfg(target_arch = "aarch64")]
    let arch = TargetArch::aarch64;
    let mut map = seccompiler::compile_from_json(POLICY_JSON.as_bytes(), arch)
        .map_err(|e| crate::JailError::Seccomp(e.to_string()))?;
    FILTERS
        .iter()
        .map(|k| {
            map.remove(*k)
                .ok_or_else(|| crate::JailError::Seccomp(format!("filter {k} missing")))
        })
        .collect()
}

/// Packs a compiled filter into plain integers (code | jt << 16 | jf << 24 | k << 32), so the
/// daemon can compile once and hand the result to every supervisor in the node's spec.
pub fn encode(p: &BpfProgram) -> Vec<u64> {
    p.iter()
        .map(|i| i.code as u64 | (i.jt as u64) << 16 | (i.jf as u64) << 24 | (i.k as u64) << 32)
        .collect()
}

pub fn decode(v: &[u64]) -> BpfProgram {
    v.iter()
        .map(|x| seccompiler::sock_filter {
            code: *x as u16,
            jt: (*x >> 16) as u8,
            jf: (*x >> 24) as u8,
            k: (*x >> 32) as u32,
        })
        .collect()
}

/// Whether the kernel should log the denials of the filter at this index of [`compile`]'s
/// list: all but `enosys`.
pub fn logged(index: usize) -> bool {
    FILTERS.get(index).is_some_and(|f| *f != "enosys")
}

/// Installs the filters on the calling thread (not TSYNC: the node's init is single-threaded
/// here). no_new_privs must already be set.
pub fn install(filters: &[BpfProgram]) -> Result<(), String> {
    for (i, f) in filters.iter().enumerate() {
        let flags = if logged(i) {
            libc::SECCOMP_FILTER_FLAG_LOG
        } else {
            0
        };
        set_mode_filter(f, flags).map_err(|e| format!("seccomp: {e}"))?;
    }
    Ok(())
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, flags, prog)`. A kernel that does not know
/// `SECCOMP_FILTER_FLAG_LOG` (before 4.14) answers EINVAL: the filter is then installed
/// without it (same semantics, no audit records).
fn set_mode_filter(f: &BpfProgram, flags: libc::c_ulong) -> std::io::Result<()> {
    let prog = libc::sock_fprog {
        len: f.len() as u16,
        filter: f.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the kernel copies the program from `prog`, which outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if flags != 0 && e.raw_os_error() == Some(libc::EINVAL) {
        return set_mode_filter(f, 0);
    }
    Err(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_compiles_and_every_rule_has_a_reason() {
        assert_eq!(compile().unwrap().len(), 3);
        let v: serde_json::Value = serde_json::from_str(POLICY_JSON).unwrap();
        for (name, filter) in v.as_object().unwrap() {
            for rule in filter["filter"].as_array().unwrap() {
                let c = rule["comment"].as_str().unwrap_or("");
                assert!(!c.is_empty(), "{name}: {} has no reason", rule["syscall"]);
            }
        }
    }

    /// Runs `probe` in a forked child under the compiled filters and returns its exit code.
    fn under_filters(probe: fn() -> i32) -> i32 {
        let filters = compile().unwrap();
        // SAFETY: the child only makes syscalls on data prepared before the fork and _exits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                for f in &filters {
                    let prog = libc::sock_fprog {
                        len: f.len() as u16,
                        filter: f.as_ptr() as *mut libc::sock_filter,
                    };
                    if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog) != 0 {
                        libc::_exit(100);
                    }
                }
                libc::_exit(probe());
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(libc::WIFEXITED(status), "probe died: {status:#x}");
            libc::WEXITSTATUS(status)
        }
    }

    fn errno_of(r: i64) -> i32 {
        if r >= 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        }
    }

    #[test]
    fn address_families_a_node_does_not_need_are_refused() {
        // Each probe returns 0 when the call was answered as the policy says, else a code
        // naming which one was not.
        let code = under_filters(|| {
            // SAFETY: plain syscalls; descriptors leak into a child that exits at once.
            let sock = |fam: i32, ty: i32, proto: i32| unsafe {
                errno_of(libc::socket(fam, ty | libc::SOCK_CLOEXEC, proto) as i64)
            };
            let checks = [
                (sock(libc::AF_UNIX, libc::SOCK_STREAM, 0), 0),
                (sock(libc::AF_INET, libc::SOCK_STREAM, 0), 0),
                (sock(libc::AF_INET6, libc::SOCK_DGRAM, 0), 0),
                (
                    sock(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
                    0,
                ),
                (
                    sock(libc::AF_VSOCK, libc::SOCK_STREAM, 0),
                    libc::EAFNOSUPPORT,
                ),
                (sock(libc::AF_PACKET, libc::SOCK_RAW, 0), libc::EAFNOSUPPORT),
                (
                    sock(libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
                    libc::EAFNOSUPPORT,
                ),
                (
                    sock(libc::AF_BLUETOOTH, libc::SOCK_RAW, 0),
                    libc::EAFNOSUPPORT,
                ),
                (
                    sock(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
                    libc::EPERM,
                ),
            ];
            for (i, (got, want)) in checks.iter().enumerate() {
                if got != want {
                    return 10 + i as i32;
                }
            }
            let mut fds = [0; 2];
            // SAFETY: fds is a valid two-element array.
            let mut pair = |fam| unsafe {
                errno_of(libc::socketpair(fam, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) as i64)
            };
            if pair(libc::AF_UNIX) != 0 || pair(libc::AF_VSOCK) != libc::EPERM {
                return 30;
            }
            0
        });
        assert_eq!(code, 0, "probe {code} was not answered as the policy says");
    }

    #[test]
    fn aio_contexts_answer_enosys_and_chroot_is_allowed() {
        let code = under_filters(|| {
            let mut ctx: libc::c_ulong = 0;
            // SAFETY: io_setup with a valid out pointer.
            let r = unsafe { libc::syscall(libc::SYS_io_setup, 16, &mut ctx) };
            if errno_of(r) != libc::ENOSYS {
                return 1;
            }
            // The filter lets chroot through; the kernel then decides on CAP_SYS_CHROOT, which a
            // node keeps (EPERM only when this test runs without it).
            // SAFETY: chroot to "/" changes nothing.
            let r = unsafe { libc::chroot(c"/".as_ptr()) };
            match errno_of(r as i64) {
                0 => 0,
                e if e == libc::EPERM && unsafe { libc::geteuid() } != 0 => 0,
                _ => 2,
            }
        });
        assert_eq!(code, 0);
    }

    /// `install` (with the LOG flag on `node` and `eafnosupport`) answers as the plain filters
    /// do: EPERM for a call outside the allowlist, ENOSYS for clone3, EAFNOSUPPORT for vsock.
    #[test]
    fn logged_filters_keep_their_answers() {
        let filters = compile().unwrap();
        // SAFETY: the child only makes syscalls on data prepared before the fork and _exits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if install(&filters).is_err() {
                    libc::_exit(100);
                }
                let unshare = errno_of(libc::unshare(libc::CLONE_NEWUTS) as i64);
                let clone3 = errno_of(libc::syscall(libc::SYS_clone3, 0, 0));
                let vsock = errno_of(libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) as i64);
                let code = match (unshare, clone3, vsock) {
                    (libc::EPERM, libc::ENOSYS, libc::EAFNOSUPPORT) => 0,
                    (libc::EPERM, libc::ENOSYS, _) => 3,
                    (libc::EPERM, _, _) => 2,
                    _ => 1,
                };
                libc::_exit(code);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert!(libc::WIFEXITED(status), "probe died: {status:#x}");
            assert_eq!(libc::WEXITSTATUS(status), 0);
        }
    }

    #[test]
    fn encoding_round_trips() {
        for p in compile().unwrap() {
            let back = decode(&encode(&p));
            assert_eq!(back.len(), p.len());
            assert!(back
                .iter()
                .zip(&p)
                .all(|(a, b)| (a.code, a.jt, a.jf, a.k) == (b.code, b.jt, b.jf, b.k)));
        }
    }

    #[test]
    fn dangerous_syscalls_are_not_allowed() {
        let v: serde_json::Value = serde_json::from_str(POLICY_JSON).unwrap();
        let allowed: Vec<&str> = v["node"]["filter"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["syscall"].as_str().unwrap())
            .collect();
        for bad in [
            "mount",
            "umount2",
            "pivot_root",
            "unshare",
            "setns",
            "init_module",
            "finit_module",
            "delete_module",
            "kexec_load",
            "bpf",
            "perf_event_open",
            "ptrace",
            "keyctl",
            "add_key",
            "request_key",
            "userfaultfd",
            "open_by_handle_at",
            "reboot",
            "swapon",
            "acct",
            "io_uring_setup",
            "settimeofday",
            "clock_settime",
            "fsopen",
            "move_mount",
            "open_tree",
        ] {
            assert!(!allowed.contains(&bad), "{bad} must not be allowed");
        }
    }
}
