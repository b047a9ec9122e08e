//! What attaching volumes to nodes counts, per tenant (#13, attach), and how a supervisor's
//! answer tells that it refused its spec. Apart from `attach.rs` so that the tenant's context
//! can hold the counters without importing what imports it.

use std::sync::atomic::{AtomicU64, Ordering};

use bulkhead_driver::instruction::{SPEC_MISMATCH, VOLUME_MOUNT_FAILED};

/// What attaching volumes counted, per tenant.
#[derive(Default)]
pub struct AttachCounters {
    /// Supervisors that refused a spec whose digest differs from the daemon's, or that names
    /// volumes without the daemon's instruction.
    pub refused_spec_mismatch: AtomicU64,
    /// Volumes that could not be mounted in a node (a jail's supervisor or a microVM guest's
    /// agent failed).
    pub mount_failures: AtomicU64,
}

impl AttachCounters {
    /// The metrics this module adds for one tenant: (name, help, labels, value). The
    /// `spec_mismatch` refusals are lines of `bulkhead_volume_attach_refused_total`, written
    /// with the other reasons (`volume_attach::metrics`).
    pub fn metrics(&self, tenant: &str) -> [(&'static str, &'static str, String, u64); 1] {
        [(
            "bulkhead_volume_mount_failures_total",
            "Volumes that could not be mounted in a node (a jail's supervisor or a microVM guest's agent failed; the create or start failed).",
            format!("tenant=\"{tenant}\""),
            self.mount_failures.load(Ordering::Relaxed),
        )]
    }
}

/// The message of a supervisor's answer that refused its spec as not the daemon's.
pub fn spec_refusal(line: &str) -> Option<&str> {
    line.trim()
        .strip_prefix("error ")
        .filter(|m| m.starts_with(SPEC_MISMATCH))
}

/// The message of a supervisor's answer that could not mount a volume of its spec in the node
/// (the image does not open, its mount point cannot be made).
pub fn mount_failure(line: &str) -> Option<&str> {
    line.trim()
        .strip_prefix("error ")
        .filter(|m| m.contains(VOLUME_MOUNT_FAILED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_name_the_tenant() {
        let c = AttachCounters::default();
        c.refused_spec_mismatch.fetch_add(2, Ordering::Relaxed);
        c.mount_failures.fetch_add(1, Ordering::Relaxed);
        let m = c.metrics("t1");
        assert_eq!(m[0].0, "bulkhead_volume_mount_failures_total");
        assert_eq!(m[0].2, "tenant=\"t1\"");
        assert_eq!(m[0].3, 1);
    }

    #[test]
    fn spec_refusals_are_told_from_other_errors() {
        assert!(spec_refusal("error spec_mismatch: the spec on disk ...\n").is_some());
        assert!(
            spec_refusal("error spec_mismatch: the spec names volumes but no instruction")
                .is_some()
        );
        assert!(spec_refusal("error volume 01J: the image does not open with this key").is_none());
        assert!(spec_refusal("ready 42").is_none());
        assert!(spec_refusal("spec_mismatch without error").is_none());
    }

    #[test]
    fn mount_failures_are_told_from_other_errors() {
        let l = "error starting the node: node setup failed: volume_mount_failed: volume 01J: the image does not open\n";
        assert_eq!(
            mount_failure(l),
            Some("starting the node: node setup failed: volume_mount_failed: volume 01J: the image does not open")
        );
        assert!(mount_failure("error spec_mismatch: the spec on disk ...").is_none());
        assert!(mount_failure("error node setup failed: cgroup: EBUSY").is_none());
        assert!(mount_failure("ready 42").is_none());
    }
}
