//! Each node its own kernel audit session (#14, part C; ADR 0033). The supervisor sets its
//! loginuid to the tenant's host uid base before it starts the node, which gives it (and so
//! the node's init, its processes and a microVM's QEMU, which inherit it) a fresh audit
//! session id. The kernel prints that id as `ses=` in each seccomp audit record, so the daemon
//! can attribute a record to its node even when the task that made the call has already
//! exited; it finds the node by reading `/proc/<supervisor pid>/sessionid`.
//!
//! Invariants: a node cannot change its loginuid or session (that needs CAP_AUDIT_CONTROL in
//! the host's user namespace); failure here never stops a node (the daemon then attributes
//! only records whose task it can still see).

/// Sets this thread's loginuid to `uid` (a new audit session) and returns the session id, or
/// `None` when the kernel refused (loginuid immutable, no audit support) or the session is
/// unset.
pub fn begin(uid: u32) -> Option<u32> {
    // thread-self: the kernel accepts a write only from the task itself.
    std::fs::write("/proc/thread-self/loginuid", uid.to_string()).ok()?;
    session_of("self")
}

/// The audit session id of process `pid` ("self" for this one); `None` when unset or gone.
pub fn session_of(pid: &str) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/sessionid")).ok()?;
    s.trim().parse().ok().filter(|&v| v != u32::MAX)
}
