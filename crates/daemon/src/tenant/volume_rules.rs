//! The rules of volumes that need no tenant (#13): the 404s that make another tenant's ids
//! look like unknown ones, how a node path for a volume is checked and normalized, how a
//! create's volumes enter the conflict rule's spec, and the refusal counters. Pure: imported by
//! the tenant's volume modules and by the conflict rule.

use bulkhead_api::volumes::VolumeAttach;
use bulkhead_core::{Code, DomainError};
use bulkhead_store::StoreError;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The answer for an id this tenant has no volume of (also another tenant's).
pub fn no_volume(id: &str) -> DomainError {
    DomainError::not_found(format!(
        "volume {:?} not found: `GET /volumes` lists yours",
        id.chars().take(64).collect::<String>()
    ))
}

pub fn no_snapshot(id: &str) -> DomainError {
    DomainError::not_found(format!(
        "snapshot {:?} not found: `GET /volumes/{{id}}/snapshots` lists a volume's",
        id.chars().take(64).collect::<String>()
    ))
}

/// A store error in a volume job: a taken name is a conflict, the rest internal.
pub(super) fn store_err(e: StoreError) -> DomainError {
    match e {
        StoreError::Exists(n) => DomainError::new(
            Code::Conflict,
            format!("volume name {n:?} is taken: choose another name, or delete that volume first"),
        ),
        e => DomainError::internal(e.to_string()),
    }
}

/// Volumes one node may take.
pub const MAX_NODE_VOLUMES: usize = 16;
/// Paths a volume never goes on, under or above: the driver's one list (the node's kernel
/// views, its secrets, bulkhead's own), checked here for every driver.
pub use bulkhead_driver::RESERVED_VOLUME_PATHS as RESERVED;

/// Why an attach was refused, as the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// An id that is not one of the tenant's volumes (unknown, or another tenant's: the same).
    NotFound,
    /// A second writer, or a reader beside a writer.
    Held,
}

impl Refusal {
    pub const ALL: [Refusal; 2] = [Refusal::NotFound, Refusal::Held];
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NotFound => "not_found",
            Refusal::Held => "held",
        }
    }
}

/// Refused attaches by reason.
#[derive(Default)]
pub struct AttachCounters(Mutex<BTreeMap<Refusal, u64>>);

impl AttachCounters {
    pub fn add(&self, r: Refusal) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(r)
            .or_default() += 1;
    }

    pub fn get(&self, r: Refusal) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&r)
            .copied()
            .unwrap_or(0)
    }
}

/// A node path for a volume, normalized (`//a/./b/` is refused for `.`; `//a/b/` → `/a/b`).
pub fn mount_path(p: &str) -> Result<String, DomainError> {
    let bad = |why: &str| {
        DomainError::invalid(format!(
            "volumes: path {:?} {why}",
            p.chars().take(80).collect::<String>()
        ))
    };
    if !p.starts_with('/') {
        return Err(bad("must be absolute, e.g. /data"));
    }
    if p.len() > 1024 || p.chars().any(char::is_control) {
        return Err(bad("must be at most 1024 bytes without control characters"));
    }
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(bad("must not contain . or .. components"));
    }
    if parts.is_empty() {
        return Err(bad("must not be / (the node's root)"));
    }
    let norm = format!("/{}", parts.join("/"));
    if let Some(r) = bulkhead_driver::reserved_overlap(&norm) {
        return Err(bad(&format!(
            "is on, under or above {r}, which the node needs: choose another path, e.g. /data"
        )));
    }
    Ok(norm)
}

/// A create's volumes as the conflict rule compares them: `id:path[:ro]`, sorted.
pub fn spec_of(req: &[VolumeAttach]) -> Vec<String> {
    let mut v: Vec<String> = req
        .iter()
        .map(|a| {
            let path = mount_path(&a.path).unwrap_or_else(|_| a.path.clone());
            format!(
                "{}:{path}{}",
                a.id.to_ascii_uppercase(),
                if a.read_only { ":ro" } else { "" }
            )
        })
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_reserved_ones_refused() {
        assert_eq!(mount_path("/data").unwrap(), "/data");
        assert_eq!(mount_path("//data//x/").unwrap(), "/data/x");
        assert_eq!(mount_path("/runner").unwrap(), "/runner");
        assert_eq!(mount_path("/devices").unwrap(), "/devices");
        for bad in [
            "data",
            "/",
            "//",
            "/a/../b",
            "/a/./b",
            "/proc",
            "/proc/1",
            "/sys/x",
            "/dev",
            "/run/secrets",
            "/run/secrets/x",
            "/run",
            "/.bulkhead",
            "/.bulkhead/agent",
            "/run/bulkhead",
            "/run/bulkhead/identity",
            "/a\nb",
        ] {
            let e = mount_path(bad).unwrap_err();
            assert_eq!(e.code, Code::InvalidRequest, "{bad}");
            assert!(e.message.starts_with("volumes: path"), "{}", e.message);
        }
        assert!(mount_path(&format!("/{}", "a".repeat(1100))).is_err());
    }

    /// The guest agent (which depends on no other bulkhead crate) keeps its own copy of the
    /// reserved list: it must be the driver's, entry for entry.
    #[test]
    fn the_agent_reserves_the_same_paths() {
        assert_eq!(bulkhead_agent::volume::RESERVED, RESERVED);
    }
}
