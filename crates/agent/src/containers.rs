//! Containers in a node (#16): what a container's mounts are on the agent's wire, and their
//! checks. [`crate::container_mounts`] makes them: the one implementation both the jail's
//! supervisor (in a child that entered the node's user and mount namespaces) and a microVM
//! guest's agent (real root of the guest) use. Everything mounted comes from the node itself
//! (its /proc, /dev, /sys, /dev/pts, /dev/mqueue, or a fresh tmpfs): a container never sees a
//! host path.
//!
//! Invariants (kept by `container_mounts`):
//! - a root is `CONTAINERS_DIR/<id>/rootfs` and is opened without following any symlink;
//! - the root is first bound onto itself (read-only when asked), and every other mount lands
//!   under that bind: detaching the root's bind (`MNT_DETACH`) takes them all, whatever a
//!   crash left half made;
//! - a destination's mount point is made by walking from the root's descriptor one component
//!   at a time with `O_NOFOLLOW` (a symlink the rootfs planted, e.g. `proc -> /etc`, is refused,
//!   never followed), and the mount goes onto that descriptor (`move_mount`), never a path;
//! - every mount is private (no propagation back into the node's own mounts), `nosuid,nodev`
//!   for tmpfs.

use serde::{Deserialize, Serialize};

/// Where containers live inside a node: the same as `bulkhead_api::containers::CONTAINERS_DIR`.
pub const CONTAINERS_DIR: &str = "/var/lib/bulkhead/containers";

/// What is mounted at a destination (the wire shape of `bulkhead_api::containers::MountKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    Proc,
    Dev,
    Sys,
    Devpts,
    Mqueue,
    Tmpfs,
}

/// One mount of a container (the wire shape of `bulkhead_api::containers::ContainerMount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerMount {
    pub destination: String,
    pub kind: MountKind,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// A tmpfs's size when none is asked: 64 MiB.
pub const DEFAULT_TMPFS_SIZE: u64 = 64 << 20;
/// A tmpfs's mode when none is asked.
pub const DEFAULT_TMPFS_MODE: u32 = 0o1777;

/// What went wrong making or removing a container's mounts.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("{0}")]
    Invalid(String),
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(m: impl Into<String>) -> MountError {
    MountError::Invalid(m.into())
}

/// Checks a root and its mounts without touching anything.
pub fn check(root: &str, mounts: &[ContainerMount]) -> Result<(), MountError> {
    let id = root
        .strip_prefix(CONTAINERS_DIR)
        .and_then(|r| r.strip_prefix('/'))
        .and_then(|r| r.strip_suffix("/rootfs"))
        .unwrap_or("");
    let id_ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !id_ok {
        return Err(invalid(format!(
            "container root {root:?} is not {CONTAINERS_DIR}/<id>/rootfs"
        )));
    }
    for m in mounts {
        components(&m.destination)?;
        if m.kind != MountKind::Tmpfs && (m.size_bytes.is_some() || m.mode.is_some()) {
            return Err(invalid(format!(
                "mount at {}: size_bytes and mode apply to tmpfs only",
                m.destination
            )));
        }
        if m.mode.is_some_and(|m| m > 0o7777) {
            return Err(invalid(format!(
                "mount at {}: mode is permission bits (at most 0o7777)",
                m.destination
            )));
        }
    }
    Ok(())
}

/// The components of an absolute destination; `.`, `..`, empty ones and `/` itself refused.
pub(crate) fn components(dest: &str) -> Result<Vec<&str>, MountError> {
    let bad = || {
        invalid(format!(
            "mount destination {dest:?} must be an absolute path below the container's root, without . or .. or //"
        ))
    };
    let rest = dest.strip_prefix('/').ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let parts: Vec<&str> = rest.split('/').collect();
    if rest.is_empty()
        || parts.len() > 32
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
    {
        return Err(bad());
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpfs(dest: &str) -> ContainerMount {
        ContainerMount {
            destination: dest.into(),
            kind: MountKind::Tmpfs,
            read_only: false,
            size_bytes: None,
            mode: None,
        }
    }

    #[test]
    fn roots_and_destinations_are_checked() {
        let root = format!("{CONTAINERS_DIR}/abc/rootfs");
        assert!(check(&root, &[tmpfs("/tmp"), tmpfs("/dev/shm/")]).is_ok());
        for bad in [
            "/etc",
            "/var/lib/bulkhead/containers/rootfs",
            "/var/lib/bulkhead/containers/../rootfs",
            "/var/lib/bulkhead/containers/a/b/rootfs",
            "/var/lib/bulkhead/containers/.x/rootfs",
        ] {
            assert!(check(bad, &[]).is_err(), "{bad}");
        }
        for bad in ["tmp", "/", "/a/../b", "/a//b", "/./a"] {
            assert!(check(&root, &[tmpfs(bad)]).is_err(), "{bad}");
        }
        let mut p = tmpfs("/proc");
        p.kind = MountKind::Proc;
        p.size_bytes = Some(1);
        let e = check(&root, &[p]).unwrap_err().to_string();
        assert!(e.contains("tmpfs only"), "{e}");
    }

    #[test]
    fn wire_shape_matches_the_api() {
        let m: ContainerMount = serde_json::from_str(
            r#"{"destination":"/tmp","kind":"tmpfs","read_only":true,"size_bytes":1024,"mode":448}"#,
        )
        .unwrap();
        assert_eq!(m.kind, MountKind::Tmpfs);
        assert!(
            serde_json::from_str::<ContainerMount>(r#"{"destination":"/x","kind":"bind"}"#)
                .is_err()
        );
    }
}
