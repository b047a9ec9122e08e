//! The tenant's stored objects in usage accounting (#14, part E; ADR 0035): what it holds
//! outside the nodes a round counts — volumes no counted node holds, snapshots, commits, by
//! their recorded sizes — as one more row of the usage tables, node id [`STORED_ID`].
//!
//! Invariants:
//! - a volume is in this row exactly when no node counted in the same round holds it, so it
//!   is never counted twice (and a read-only volume held by a counted node and another is
//!   that node's);
//! - the row is stepped like a stopped node's storage (level × seconds since its last
//!   reading, kept in `usage_last`), and its last values are never forgotten: a restart
//!   counts the interval it was down at the level then.

use crate::usage::Reading;
use crate::volumes::Volumes;

/// The node id of the tenant's stored objects that no node accounts for (a volume attached
/// to no counted node, every snapshot and commit). No node has it: node ids are ULIDs.
pub const STORED_ID: &str = "_stored";
/// The node name of that row (no node can have it: names are DNS labels).
pub const STORED_NAME: &str = "(stored)";

/// Bytes the tenant's stored objects outside its counted nodes hold: the recorded size of
/// each volume that `counted` (a node this round accounts for) does not hold, plus each
/// snapshot's and commit's recorded size (`commits`). A volume held by several nodes, one of
/// them counted, is not here.
pub fn stored_bytes(
    volumes: &Volumes,
    counted: impl Fn(&str) -> bool,
    commits: impl IntoIterator<Item = u64>,
) -> u64 {
    let unattached = volumes
        .volumes()
        .filter(|v| !volumes.holders(v.id).any(|a| counted(&a.node)))
        .map(|v| v.size_bytes);
    let snaps = volumes.snapshots().map(|s| s.size_bytes);
    unattached
        .chain(snaps)
        .chain(commits)
        .fold(0u64, u64::saturating_add)
}

/// The reading of the stored objects' row: `bytes` held now. First seen, it counts from now.
pub fn stored_reading(at_ms: i64, bytes: u64) -> Reading {
    Reading {
        node_id: STORED_ID.into(),
        node: STORED_NAME.into(),
        at_ms,
        since_ms: at_ms,
        storage_bytes: bytes,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::usage::step;

    const T0: i64 = 1_800_000_000_000; // ms; a bucket boundary (divisible by 60 s)

    #[test]
    fn stored_bytes_count_what_no_counted_node_holds_once() {
        use crate::id::{SnapshotId, VolumeId};
        use crate::volumes::{Attachment, ObjState, SnapshotRow, VolumeRow, Volumes};
        use std::sync::Arc;
        let vol = |size: u64| {
            let id = VolumeId::new();
            Arc::new(VolumeRow {
                id,
                name: id.to_string().to_lowercase(),
                size_bytes: size,
                inodes: 1,
                labels: Default::default(),
                key_id: id.to_string(),
                state: ObjState::Ready,
                created_at: String::new(),
                from_snapshot: None,
            })
        };
        let (a, b, c) = (vol(100), vol(1000), vol(10_000));
        let snap = Arc::new(SnapshotRow {
            id: SnapshotId::new(),
            volume: a.id,
            size_bytes: 100,
            key_id: a.key_id.clone(),
            state: ObjState::Ready,
            created_at: String::new(),
        });
        let at = |v: &VolumeRow, node: &str| Attachment {
            volume: v.id,
            node: node.into(),
            path: "/data".into(),
            read_only: true,
        };
        let mut v = Volumes::default();
        for x in [&a, &b, &c] {
            v.volumes.insert(x.id, x.clone());
        }
        v.snapshots.insert(snap.id, snap);
        // b is held by a counted node; c by a node no round counts (being created).
        v.attachments = vec![at(&b, "g-1"), at(&c, "g-new")];
        let counted = |n: &str| n == "g-1";
        assert_eq!(stored_bytes(&v, counted, [7]), 100 + 10_000 + 100 + 7);
        // c also held by g-1: counted there, not here (no volume is counted twice).
        v.attachments.push(at(&c, "g-1"));
        assert_eq!(stored_bytes(&v, counted, []), 100 + 100);
        // No node counted: every volume is stored.
        assert_eq!(stored_bytes(&v, |_| false, []), 11_200);
    }

    #[tokio::test]
    async fn stored_objects_accrue_from_their_first_round_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let s = Store::open(&path, "t").unwrap();
        // First seen: nothing yet (no interval), but its time is kept.
        let a = step(None, &stored_reading(T0, 1 << 20));
        assert!(a.delta.is_empty());
        s.record_usage(vec![a.delta], vec![a.last.clone()], vec![])
            .await
            .unwrap();
        drop(s);
        let s = Store::open(&path, "t").unwrap();
        let last = s.usage_last().await.unwrap();
        assert_eq!(last, vec![a.last.clone()]);
        // 30 s later (the daemon was restarted meanwhile): 1 MiB × 30 s, storage only.
        let b = step(last.first(), &stored_reading(T0 + 30_000, 1 << 20));
        assert_eq!(b.delta.storage_byte_seconds, (1u64 << 20) as f64 * 30.0);
        let mut only_storage = b.delta.clone();
        only_storage.storage_byte_seconds = 0.0;
        assert!(only_storage.is_empty(), "{:?}", b.delta);
        s.record_usage(vec![b.delta], vec![b.last], vec![])
            .await
            .unwrap();
        let rows = s.usage_by_node(None, None).await.unwrap();
        assert_eq!(
            (rows[0].node_id.as_str(), rows[0].node.as_str()),
            (STORED_ID, STORED_NAME)
        );
        assert_eq!(rows[0].storage_byte_seconds, 31_457_280.0);
        assert_eq!(s.usage_tenant_peak(None, None).await.unwrap(), 0);
    }
}
