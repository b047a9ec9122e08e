//! Capabilities a node keeps (the policy; `bulkhead_sandbox::caps` drops the rest). Everything
//! else leaves the bounding set before the agent starts, so no process in the node can ever
//! regain it. Each kept capability only has effect inside
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
