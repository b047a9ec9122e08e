//! The error events the agent answers with when the node's operating system refuses it: a
//! resource the node ran out of (pids, file descriptors) or a failed file operation. Each
//! maps an `io::Error` to a stable `code` (a wire contract) and a message naming what failed.

use std::io;

use crate::proto::{self, Event};

/// The error event for a resource the node ran out of: EAGAIN from fork or thread creation is
/// the node's pids limit (processes and threads); anything else is internal.
pub(crate) fn resource_error(what: &str, e: &io::Error) -> Event {
    if e.raw_os_error() == Some(libc::EAGAIN) || e.kind() == io::ErrorKind::WouldBlock {
        Event::error(
            proto::PIDS_LIMIT,
            format!("{what}: the node is at its limit of processes and threads ({e})"),
        )
    } else if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
        Event::error(
            proto::AGENT_BUSY,
            format!("{what}: the agent is out of file descriptors ({e})"),
        )
    } else {
        Event::error("internal", format!("{what}: {e}"))
    }
}

/// `no_space` when the writable layer (or a quota) is full, `no_memory` when the node's memory
/// is: on a jail the writable layer is a tmpfs charged to the node's memory cgroup, and a write
/// the cgroup cannot hold fails with ENOMEM (the agent is never the OOM killer's victim).
pub(crate) fn space_code(e: &io::Error) -> Option<&'static str> {
    match (e.raw_os_error(), e.kind()) {
        (Some(libc::ENOSPC) | Some(libc::EDQUOT), _)
        | (_, io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) => Some("no_space"),
        (Some(libc::ENOMEM), _) | (_, io::ErrorKind::OutOfMemory) => Some("no_memory"),
        _ => None,
    }
}

/// The error event for a failed file operation: `what` (a verb phrase) on `path`.
pub(crate) fn io_event(what: &str, path: &str, e: &io::Error) -> Event {
    let code = match e.kind() {
        _ if space_code(e).is_some() => space_code(e).unwrap_or_default(),
        io::ErrorKind::NotFound => "not_found",
        io::ErrorKind::PermissionDenied => "permission_denied",
        io::ErrorKind::AlreadyExists => "already_exists",
        _ if e.raw_os_error() == Some(libc::EISDIR) => "is_a_directory",
        _ if e.raw_os_error() == Some(libc::ENOTDIR) => "not_a_directory",
        // What the caller asked cannot be done there (a read-only or special file system, a
        // mount point, a name too long, a symlink loop): their request, not our failure.
        _ if matches!(
            e.raw_os_error(),
            Some(
                libc::EROFS
                    | libc::EBUSY
                    | libc::ENAMETOOLONG
                    | libc::ELOOP
                    | libc::EINVAL
                    | libc::EXDEV
                    | libc::ENOTEMPTY
                    | libc::EPERM
            )
        ) =>
        {
            "invalid_argument"
        }
        _ => "io_error",
    };
    Event::error(code, format!("{what} {path}: {e}"))
}
