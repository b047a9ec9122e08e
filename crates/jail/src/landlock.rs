//! A landlock domain for the whole node (the agent and every command inherit it), where the
//! kernel has landlock. It denies creating device nodes anywhere (on top of the missing
//! CAP_MKNOD) and, from ABI 6, keeps the node's signals and abstract UNIX sockets inside the
//! node (on top of its pid and network namespaces). Moving files between directories stays
//! allowed everywhere in the node (ABI 2's REFER right, granted on `/`). One domain per node, not per command, so
//! that a node's own processes keep signalling and connecting to each other.

const CREATE_RULESET_VERSION: u32 = 1;
const ACCESS_FS_MAKE_CHAR: u64 = 1 << 6;
const ACCESS_FS_MAKE_BLOCK: u64 = 1 << 11;
const ACCESS_FS_REFER: u64 = 1 << 13;
const RULE_PATH_BENEATH: u32 = 1;
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// The landlock ABI version the kernel offers, or `None` without landlock.
pub fn abi() -> Option<u32> {
    // SAFETY: the version query takes a null attribute pointer and size 0.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as u32)
}

/// Restricts the calling process (and its future children). Needs no_new_privs. Returns the
/// ABI applied, or `None` when the kernel has no landlock (nothing is restricted then).
pub fn restrict_node() -> Result<Option<u32>, String> {
    let Some(abi) = abi() else { return Ok(None) };
    let mut attr = RulesetAttr {
        handled_access_fs: ACCESS_FS_MAKE_CHAR | ACCESS_FS_MAKE_BLOCK,
        handled_access_net: 0,
        scoped: 0,
    };
    // Landlock denies moving a file to another directory (REFER) under any ruleset unless a
    // rule grants it: from ABI 2 the whole node gets it back (`mv`, a tar upload moved into
    // place). On ABI 1 such renames fail with EXDEV.
    if abi >= 2 {
        attr.handled_access_fs |= ACCESS_FS_REFER;
    }
    // The kernel takes the attribute's size to learn which fields the caller knows.
    let size = if abi >= 6 {
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL;
        std::mem::size_of::<RulesetAttr>()
    } else {
        std::mem::size_of::<u64>()
    };
    // SAFETY: attr is a valid ruleset attribute of `size` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            size,
            0u32,
        )
    };
    if fd < 0 {
        return Err(format!(
            "landlock ruleset: {}",
            std::io::Error::last_os_error()
        ));
    }
    if abi >= 2 {
        // SAFETY: a NUL-terminated path; the fd is closed below.
        let root = unsafe { libc::open(c"/".as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        let rule = PathBeneathAttr {
            allowed_access: ACCESS_FS_REFER,
            parent_fd: root,
        };
        // SAFETY: fd is our ruleset, rule a valid path-beneath attribute.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                fd as i32,
                RULE_PATH_BENEATH,
                &rule as *const PathBeneathAttr,
                0u32,
            )
        };
        let err = std::io::Error::last_os_error();
        // SAFETY: closing our own fds.
        unsafe {
            libc::close(root);
            if r < 0 {
                libc::close(fd as i32);
            }
        }
        if r < 0 {
            return Err(format!("landlock rule for /: {err}"));
        }
    }
    // SAFETY: fd is the ruleset we just created; we close it right after.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd as i32, 0u32) };
    let err = std::io::Error::last_os_error();
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd as i32) };
    if r < 0 {
        return Err(format!("landlock restrict: {err}"));
    }
    Ok(Some(abi))
}
