//! Capabilities a node keeps. Everything else leaves the bounding set before the agent starts,
//! so no process in the node can ever regain it. Each kept capability only has effect inside
//! the node's own user namespace, where uid 0 is an unprivileged uid on the host.

/// (capability number, name, why the node keeps it). Docker's default set without NET_RAW
/// (no raw sockets, no ping spoofing) and MKNOD (no device nodes).
pub const KEPT: &[(u32, &str, &str)] = &[
    (
        0,
        "CHOWN",
        "package managers and cp -a set file owners inside the node",
    ),
    (
        1,
        "DAC_OVERRIDE",
        "root in the node reads and writes its own files regardless of mode",
    ),
    (
        3,
        "FOWNER",
        "chmod and utime on files owned by other uids of the node",
    ),
    (
        4,
        "FSETID",
        "keep setgid bits when root in the node edits files",
    ),
    (
        5,
        "KILL",
        "signal processes of other uids, all inside the node's pid namespace",
    ),
    (6, "SETGID", "the agent runs commands as the requested gid"),
    (7, "SETUID", "the agent runs commands as the requested uid"),
    (
        8,
        "SETPCAP",
        "drop capabilities further from within the node",
    ),
    (
        10,
        "NET_BIND_SERVICE",
        "servers in the node listen on ports below 1024 of its own netns",
    ),
    (
        18,
        "SYS_CHROOT",
        "build tools chroot inside the node's filesystem",
    ),
    (
        29,
        "AUDIT_WRITE",
        "login-style tools write audit records (answered by the host's policy)",
    ),
    (
        31,
        "SETFCAP",
        "package managers set file capabilities on files inside the node",
    ),
];

pub fn kept_mask() -> u64 {
    KEPT.iter().fold(0, |m, (c, _, _)| m | (1u64 << c))
}

/// Drops every capability not in [`KEPT`] from the bounding, inheritable, ambient, permitted
/// and effective sets of the calling thread.
pub fn drop_all_but_kept() -> Result<(), String> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let keep = kept_mask();
    for cap in 0..=last {
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
        version: 0x2008_0522,
        pid: 0,
    };
    let lo = keep as u32;
    let hi = (keep >> 32) as u32;
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
