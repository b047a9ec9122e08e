//! Per-node limits on kernel objects that the kernel counts per user (`/proc/sys/user/` of the
//! node's own user namespace), configured per host group as `kernel_limits`.
//!
//! Why they exist: the kernel charges inotify instances and watches, POSIX message-queue bytes,
//! pending signals and namespaces to a `(user namespace, uid)` pair and to every ancestor's
//! owner on the way up. A node's user namespace is owned by the tenant's own host uid (the
//! supervisor creates it with that effective uid), so the host-wide per-user limits
//! (`fs.inotify.max_user_instances`, ...) bound a tenant as a whole, never root or another
//! tenant. The limits here bound each user inside one node, below that, so that one node
//! cannot take all of its tenant's share on its own through a single uid.
//!
//! Namespaces: nodes never create namespaces (the seccomp policy refuses the flags), and their
//! `max_*_namespaces` are set to 0 as a second wall (1 for cgroup namespaces: the node's init
//! enters its own after the limits are written). The rendered list is plain data the jail
//! writes from inside the node's namespace before it drops its capabilities.

use serde::{Deserialize, Serialize};

/// Defaults: the kernel's own default per-user instance count, and a watch count that covers
/// editors and build watchers on large trees.
pub const DEFAULT_INOTIFY_INSTANCES: u64 = 128;
pub const DEFAULT_INOTIFY_WATCHES: u64 = 65536;
/// What a sysctl of `/proc/sys/user/` takes (an `int`).
const MAX_VALUE: u64 = i32::MAX as u64;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKernelLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inotify_instances: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inotify_watches: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelLimits {
    pub inotify_instances: u64,
    pub inotify_watches: u64,
}

impl Default for KernelLimits {
    fn default() -> Self {
        KernelLimits {
            inotify_instances: DEFAULT_INOTIFY_INSTANCES,
            inotify_watches: DEFAULT_INOTIFY_WATCHES,
        }
    }
}

/// Namespace kinds whose per-namespace count is set to 0 inside every node.
const NAMESPACE_KINDS: &[&str] = &["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"];

impl KernelLimits {
    /// Validates the raw keys; `p` is the host group's key path for error messages.
    pub fn validate(p: &str, raw: Option<&RawKernelLimits>) -> Result<Self, (String, String)> {
        let d = KernelLimits::default();
        let Some(raw) = raw else { return Ok(d) };
        let check = |key: &str, v: Option<u64>, default: u64| match v {
            None => Ok(default),
            Some(v) if (1..=MAX_VALUE).contains(&v) => Ok(v),
            Some(v) => Err((
                format!("{p}.kernel_limits.{key}"),
                format!("{v} is out of range: give a number from 1 to {MAX_VALUE}"),
            )),
        };
        Ok(KernelLimits {
            inotify_instances: check(
                "inotify_instances",
                raw.inotify_instances,
                d.inotify_instances,
            )?,
            inotify_watches: check("inotify_watches", raw.inotify_watches, d.inotify_watches)?,
        })
    }

    /// The `/proc/sys/user/` entries to write inside the node's user namespace, in order.
    pub fn user_sysctls(&self) -> Vec<(String, u64)> {
        let mut v = vec![
            ("max_inotify_instances".to_string(), self.inotify_instances),
            ("max_inotify_watches".to_string(), self.inotify_watches),
        ];
        // The init enters one cgroup namespace after these are written, so that count is 1.
        v.extend(NAMESPACE_KINDS.iter().map(|k| {
            let n = if *k == "cgroup" { 1 } else { 0 };
            (format!("max_{k}_namespaces"), n)
        }));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(
            KernelLimits::validate("g", None).unwrap(),
            KernelLimits::default()
        );
        let raw = RawKernelLimits {
            inotify_instances: Some(16),
            inotify_watches: None,
        };
        let k = KernelLimits::validate("g", Some(&raw)).unwrap();
        assert_eq!(k.inotify_instances, 16);
        assert_eq!(k.inotify_watches, DEFAULT_INOTIFY_WATCHES);
        for bad in [0, MAX_VALUE + 1] {
            let raw = RawKernelLimits {
                inotify_instances: None,
                inotify_watches: Some(bad),
            };
            let (key, msg) = KernelLimits::validate("host_groups[0]", Some(&raw)).unwrap_err();
            assert_eq!(key, "host_groups[0].kernel_limits.inotify_watches");
            assert!(msg.contains("out of range"), "{msg}");
        }
    }

    #[test]
    fn no_namespace_beyond_the_nodes_own_and_names_are_plain() {
        let s = KernelLimits::default().user_sysctls();
        assert_eq!(s[0], ("max_inotify_instances".into(), 128));
        for k in NAMESPACE_KINDS {
            let name = format!("max_{k}_namespaces");
            let want = if *k == "cgroup" { 1 } else { 0 };
            assert!(s.contains(&(name, want)), "{k}");
        }
        assert!(s
            .iter()
            .all(|(n, _)| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }
}
