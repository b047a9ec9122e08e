//! Dropping capabilities in a confined process: the mechanism, not the policy. Which
//! capabilities a jail node keeps is the jail's list (`bulkhead_jail::caps::KEPT`, a reason per
//! entry); QEMU keeps none. Each set the kernel knows is covered: bounding (nothing regained on
//! exec), ambient, inheritable, permitted and effective.

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Removes every capability not in `keep` (a bit mask by capability number) from the bounding
/// set of the calling thread. Needs CAP_SETPCAP (in the thread's user namespace); leaves the
/// effective set alone, so the caller can still change uids afterwards.
pub fn drop_bounding_except(keep: u64) -> Result<(), String> {
    for cap in 0..=last_cap() {
        if keep & (1u64 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
                return Err(format!(
                    "dropping capability {cap}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

/// Limits the calling thread to the capabilities in `keep`: bounding set, ambient set cleared,
/// inheritable set empty, permitted and effective set to `keep`.
pub fn limit_to(keep: u64) -> Result<(), String> {
    drop_bounding_except(keep)?;
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let (lo, hi) = (keep as u32, (keep >> 32) as u32);
    let data = [
        Data {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        Data {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a v3 header and two data structs, as the ABI requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) };
    if r < 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// In a forked child (process-wide state): after `limit_to`, /proc says exactly the kept
    /// set is left in every set.
    #[test]
    fn limit_to_leaves_only_the_kept_set() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP: needs root");
            return;
        }
        let keep: u64 = (1 << 0) | (1 << 7);
        // SAFETY: the child only makes syscalls, reads /proc and _exits.
        unsafe {
            let pid = libc::fork();
            assert!(pid >= 0);
            if pid == 0 {
                let ok = super::limit_to(keep).is_ok()
                    && std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
                        let field = |k: &str| {
                            s.lines()
                                .find_map(|l| l.strip_prefix(k))
                                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                        };
                        field("CapEff:") == Some(keep)
                            && field("CapPrm:") == Some(keep)
                            && field("CapBnd:") == Some(keep)
                            && field("CapInh:") == Some(0)
                    });
                libc::_exit(if ok { 0 } else { 1 });
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            assert_eq!(libc::WEXITSTATUS(status), 0);
        }
    }
}
