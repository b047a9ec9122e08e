//! Containers in a node on the wire (#16): what containerd's shim asks the daemon for, and the
//! shim's placement answer. A container is a chrooted process tree inside a node: its rootfs is
//! uploaded to [`rootfs_dir`], its mounts made under it, its processes run with `container=ID`.
//!
//! This module only carries data and checks ids; the daemon decides and the node makes mounts.

use serde::{Deserialize, Serialize};

/// Where containers live inside a node (the node's writable layer).
pub const CONTAINERS_DIR: &str = "/var/lib/bulkhead/containers";

/// The root of container `id` inside its node.
pub fn rootfs_dir(id: &str) -> String {
    format!("{CONTAINERS_DIR}/{id}/rootfs")
}

/// A container id: 1–128 of `[A-Za-z0-9_.-]`, not starting with `.` (containerd's are 64 hex).
pub fn validate_container_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid container id {id:?}: use 1 to 128 of A-Z a-z 0-9 _ . - (not starting with '.')"
        ))
    }
}

/// What is mounted at a destination under a container's root. Everything comes from the node
/// itself: a container never sees a host path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// The node's /proc (recursive bind: its masks come along).
    Proc,
    /// The node's /dev (recursive bind).
    Dev,
    /// The node's /sys, read-only.
    Sys,
    /// The node's /dev/pts.
    Devpts,
    /// The node's /dev/mqueue.
    Mqueue,
    /// A fresh tmpfs of at most `size_bytes` (default 64 MiB) with `mode` (default 0o1777).
    Tmpfs,
}

/// One mount of a container: `destination` is absolute, inside the container's root.
/// `size_bytes` and `mode` apply to `tmpfs` only (the daemon refuses them elsewhere).
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

/// `POST /vm/{node}/containers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateContainerRequest {
    pub id: String,
    #[serde(default)]
    pub mounts: Vec<ContainerMount>,
    /// Mount the container's root read-only (OCI `root.readonly`).
    #[serde(default)]
    pub readonly: bool,
}

/// A container of a node (`POST` answer, `GET /vm/{node}/containers` items).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    pub id: String,
    /// Its root inside the node ([`rootfs_dir`]).
    pub root: String,
    #[serde(default)]
    pub mounts: Vec<ContainerMount>,
    #[serde(default)]
    pub readonly: bool,
}

/// `GET /shim/placement?namespace=N&driver=D`: where a namespace's pods go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub tenant: String,
    pub hostgroup: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_container_id(&"a".repeat(64)).is_ok());
        assert!(validate_container_id("web-1.x_y").is_ok());
        for bad in ["", ".x", "a/b", "..", "a b", &"a".repeat(129)] {
            assert!(validate_container_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mounts_on_the_wire() {
        let m: ContainerMount =
            serde_json::from_str(r#"{"destination":"/tmp","kind":"tmpfs","size_bytes":1048576}"#)
                .unwrap();
        assert_eq!((m.kind, m.size_bytes), (MountKind::Tmpfs, Some(1 << 20)));
        assert!(serde_json::from_str::<ContainerMount>(
            r#"{"destination":"/x","kind":"bind","source":"/etc"}"#
        )
        .is_err());
        assert_eq!(rootfs_dir("abc"), "/var/lib/bulkhead/containers/abc/rootfs");
    }
}
