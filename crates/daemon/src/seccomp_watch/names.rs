//! Names of the system calls a seccomp record names by number, for the calling architecture
//! (x86_64 or aarch64; the numbers come from `libc`, so they are this build's own). Only the
//! calls a node's policy denies and a few it allows are listed: an unlisted number is named
//! `""` and the event still carries the number.

/// Builds the table from `libc::SYS_<name>` constants.
macro_rules! table {
    ($($name:ident),* $(,)?) => {
        &[$((libc::$name as i64, strip(stringify!($name)))),*]
    };
}

/// `SYS_mount` → `mount` (at compile time, so the table is a plain static).
const fn strip(s: &'static str) -> &'static str {
    match s.as_bytes() {
        [b'S', b'Y', b'S', b'_', rest @ ..] => match std::str::from_utf8(rest) {
            Ok(name) => name,
            Err(_) => s,
        },
        _ => s,
    }
}

/// Calls on every architecture we build for.
const COMMON: &[(i64, &str)] = table!(
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_unshare,
    SYS_setns,
    SYS_init_module,
    SYS_finit_module,
    SYS_delete_module,
    SYS_kexec_load,
    SYS_kexec_file_load,
    SYS_bpf,
    SYS_perf_event_open,
    SYS_ptrace,
    SYS_keyctl,
    SYS_add_key,
    SYS_request_key,
    SYS_userfaultfd,
    SYS_open_by_handle_at,
    SYS_name_to_handle_at,
    SYS_reboot,
    SYS_swapon,
    SYS_swapoff,
    SYS_acct,
    SYS_io_uring_setup,
    SYS_io_uring_enter,
    SYS_io_uring_register,
    SYS_settimeofday,
    SYS_clock_settime,
    SYS_clock_adjtime,
    SYS_adjtimex,
    SYS_fsopen,
    SYS_fsconfig,
    SYS_fsmount,
    SYS_fspick,
    SYS_move_mount,
    SYS_open_tree,
    SYS_mount_setattr,
    SYS_process_vm_readv,
    SYS_process_vm_writev,
    SYS_kcmp,
    SYS_quotactl,
    SYS_syslog,
    SYS_vhangup,
    SYS_sethostname,
    SYS_setdomainname,
    SYS_personality,
    SYS_pidfd_getfd,
    SYS_fanotify_init,
    SYS_fanotify_mark,
    SYS_clone3,
    SYS_io_setup,
    SYS_socket,
    SYS_socketpair,
    SYS_migrate_pages,
    SYS_move_pages,
    SYS_lookup_dcookie,
    SYS_nfsservctl,
    SYS_process_madvise,
    SYS_memfd_secret,
    SYS_pidfd_open,
    SYS_seccomp,
    SYS_chroot,
    SYS_setpgid,
    SYS_execve,
    SYS_clone,
    SYS_getrandom,
    SYS_ioctl,
    SYS_prctl,
    SYS_statx,
    SYS_read,
    SYS_write,
    SYS_openat,
    SYS_close,
);

#[cfg(target_arch = "x86_64")]
const ARCH: &[(i64, &str)] = table!(
    SYS_iopl,
    SYS_ioperm,
    SYS_uselib,
    SYS__sysctl,
    SYS_modify_ldt,
    SYS_ustat,
    SYS_sysfs,
    SYS_open,
);
#[cfg(not(target_arch = "x86_64"))]
const ARCH: &[(i64, &str)] = &[];

/// The audit architecture of this build (`arch=` in a record): native calls only are named.
#[cfg(target_arch = "x86_64")]
pub const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
pub const AUDIT_ARCH: u32 = 0xc000_00b7;

/// The name of native call `nr` made under audit architecture `arch`, or `""`.
pub fn name(arch: u32, nr: i64) -> &'static str {
    if arch != AUDIT_ARCH {
        return "";
    }
    COMMON
        .iter()
        .chain(ARCH)
        .find(|(n, _)| *n == nr)
        .map_or("", |(_, s)| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_by_number() {
        assert_eq!(name(AUDIT_ARCH, libc::SYS_unshare), "unshare");
        assert_eq!(name(AUDIT_ARCH, libc::SYS_keyctl), "keyctl");
        assert_eq!(name(AUDIT_ARCH, 99_999), "");
        // A compat (i386) call's number means something else: not named.
        assert_eq!(name(0x4000_0003, libc::SYS_unshare), "");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x86_64_numbers_are_the_kernels() {
        assert_eq!(name(AUDIT_ARCH, 272), "unshare");
        assert_eq!(name(AUDIT_ARCH, 165), "mount");
        assert_eq!(name(AUDIT_ARCH, 41), "socket");
        assert_eq!(name(AUDIT_ARCH, 110), "");
    }
}
