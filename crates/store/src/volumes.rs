//! Volumes, their attachments to nodes and their snapshots (issue #13): the records, the
//! schema step that makes their tables (version 6), and [`Store::volume_job`], the one way
//! to change them.
//!
//! Invariants:
//! - every change is a job on the store's writer thread inside one SQLite transaction; the
//!   in-memory view ([`Volumes`], read without waiting) is replaced only after the commit, so
//!   a reader never sees an uncommitted row and a job sees every job before it;
//! - node jobs run on the same thread, so a node create's quota check that reads this view
//!   (from its `insert_with` closure) is atomic with every volume job, and the other way round;
//! - ids are ULIDs made here, never given by a caller; a volume's name is unique in its tenant
//!   (the store is one tenant's);
//! - a job that fails changes nothing: its transaction is dropped, its working view too.

use rusqlite::{params, Transaction};
use std::sync::Arc;

use crate::error::StoreError;
use crate::id::{SnapshotId, VolumeId};
use crate::store::Store;
pub use crate::volume_rows::{Attachment, ObjState, SnapshotRow, VolumeRow, Volumes};

/// One volume job: a transaction, and the view as it will be once committed. Reads (through
/// `Deref`) see the job's own changes.
pub struct VolumeTx<'a> {
    tx: Transaction<'a>,
    next: Volumes,
    nodes: Arc<crate::index::Snapshot>,
}

impl std::ops::Deref for VolumeTx<'_> {
    type Target = Volumes;
    fn deref(&self) -> &Volumes {
        &self.next
    }
}

impl VolumeTx<'_> {
    /// The tenant's nodes as committed (quotas count them).
    pub fn nodes(&self) -> &crate::index::Snapshot {
        &self.nodes
    }

    /// Records a new volume. A name already taken fails with [`StoreError::Exists`].
    pub fn insert_volume(&mut self, v: VolumeRow) -> Result<Arc<VolumeRow>, StoreError> {
        if self.next.by_name(&v.name).is_some() {
            return Err(StoreError::Exists(v.name));
        }
        self.tx.execute(
            "INSERT INTO volumes(id, name, size_bytes, inodes, labels, key_id, state, created_at, from_snapshot)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                v.id.to_string(),
                v.name,
                v.size_bytes as i64,
                v.inodes as i64,
                serde_json::to_string(&v.labels).unwrap_or_else(|_| "{}".into()),
                v.key_id,
                v.state.as_str(),
                v.created_at,
                v.from_snapshot.map(|s| s.to_string()),
            ],
        )?;
        let v = Arc::new(v);
        self.next.volumes.insert(v.id, v.clone());
        Ok(v)
    }

    /// Sets a volume's state; false when there is no such volume.
    pub fn set_volume_state(&mut self, id: VolumeId, state: ObjState) -> Result<bool, StoreError> {
        let Some(cur) = self.next.volumes.get(&id) else {
            return Ok(false);
        };
        self.tx.execute(
            "UPDATE volumes SET state=?2 WHERE id=?1",
            params![id.to_string(), state.as_str()],
        )?;
        let mut v = (**cur).clone();
        v.state = state;
        self.next.volumes.insert(id, Arc::new(v));
        Ok(true)
    }

    /// Removes a volume's record and its attachments; false when there was none.
    pub fn remove_volume(&mut self, id: VolumeId) -> Result<bool, StoreError> {
        self.tx.execute(
            "DELETE FROM volume_attachments WHERE volume=?1",
            params![id.to_string()],
        )?;
        self.tx
            .execute("DELETE FROM volumes WHERE id=?1", params![id.to_string()])?;
        self.next.attachments.retain(|a| a.volume != id);
        Ok(self.next.volumes.remove(&id).is_some())
    }

    /// Records that a node holds a volume (the caller checked who else does).
    pub fn attach(&mut self, a: Attachment) -> Result<(), StoreError> {
        self.tx.execute(
            "INSERT INTO volume_attachments(volume, node, path, read_only) VALUES(?1, ?2, ?3, ?4)",
            params![a.volume.to_string(), a.node, a.path, a.read_only],
        )?;
        self.next.attachments.push(a);
        Ok(())
    }

    /// Drops every attachment of a node; what it held.
    pub fn detach_node(&mut self, node: &str) -> Result<Vec<Attachment>, StoreError> {
        self.tx.execute(
            "DELETE FROM volume_attachments WHERE node=?1",
            params![node],
        )?;
        let (gone, keep) = std::mem::take(&mut self.next.attachments)
            .into_iter()
            .partition(|a| a.node == node);
        self.next.attachments = keep;
        Ok(gone)
    }

    pub fn insert_snapshot(&mut self, s: SnapshotRow) -> Result<Arc<SnapshotRow>, StoreError> {
        self.tx.execute(
            "INSERT INTO snapshots(id, volume, size_bytes, key_id, state, created_at)
             VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                s.id.to_string(),
                s.volume.to_string(),
                s.size_bytes as i64,
                s.key_id,
                s.state.as_str(),
                s.created_at
            ],
        )?;
        let s = Arc::new(s);
        self.next.snapshots.insert(s.id, s.clone());
        Ok(s)
    }

    pub fn set_snapshot_state(
        &mut self,
        id: SnapshotId,
        state: ObjState,
    ) -> Result<bool, StoreError> {
        let Some(cur) = self.next.snapshots.get(&id) else {
            return Ok(false);
        };
        self.tx.execute(
            "UPDATE snapshots SET state=?2 WHERE id=?1",
            params![id.to_string(), state.as_str()],
        )?;
        let mut s = (**cur).clone();
        s.state = state;
        self.next.snapshots.insert(id, Arc::new(s));
        Ok(true)
    }

    pub fn remove_snapshot(&mut self, id: SnapshotId) -> Result<bool, StoreError> {
        self.tx
            .execute("DELETE FROM snapshots WHERE id=?1", params![id.to_string()])?;
        Ok(self.next.snapshots.remove(&id).is_some())
    }
}

impl Store {
    /// The tenant's volumes, attachments and snapshots as last committed (from memory).
    pub fn volumes(&self) -> Arc<Volumes> {
        self.volume_index().get()
    }

    /// Runs `f` as one transaction on the writer thread: it sees every committed change (and
    /// the tenant's nodes), and what it changes is committed, and shown to readers, only when
    /// it returns `Ok`. `f` must be quick and must not block (no I/O beyond the SQL).
    pub async fn volume_job<R, E>(
        &self,
        f: impl FnOnce(&mut VolumeTx<'_>) -> Result<R, E> + Send + 'static,
    ) -> Result<R, E>
    where
        R: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        self.call(move |w| {
            let index = w.volumes.clone();
            let nodes = w.node_snapshot();
            let tx = w.conn.transaction().map_err(StoreError::from)?;
            let mut job = VolumeTx {
                tx,
                next: (*index.get()).clone(),
                nodes,
            };
            let r = f(&mut job)?;
            let VolumeTx { tx, next, .. } = job;
            tx.commit().map_err(StoreError::from)?;
            index.set(next);
            Ok(r)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::NodeId;

    fn vol(name: &str) -> VolumeRow {
        let id = VolumeId::new();
        VolumeRow {
            id,
            name: name.into(),
            size_bytes: 64 << 20,
            inodes: 4096,
            labels: [("team".to_string(), "a".to_string())].into(),
            key_id: id.to_string(),
            state: ObjState::Creating,
            created_at: "2026-01-01T00:00:00Z".into(),
            from_snapshot: None,
        }
    }

    #[tokio::test]
    async fn volumes_attachments_and_snapshots_survive_a_reopen() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s.db");
        let s = Store::open(&path, "t").unwrap();
        let v = vol("data");
        let id = v.id;
        s.volume_job(move |j| j.insert_volume(v)).await.unwrap();
        assert_eq!(s.volumes().volume(id).unwrap().state, ObjState::Creating);
        s.volume_job(move |j| j.set_volume_state(id, ObjState::Ready))
            .await
            .unwrap();
        s.volume_job(move |j| {
            j.attach(Attachment {
                volume: id,
                node: "web-1".into(),
                path: "/data".into(),
                read_only: false,
            })
        })
        .await
        .unwrap();
        let sid = SnapshotId::new();
        s.volume_job(move |j| {
            j.insert_snapshot(SnapshotRow {
                id: sid,
                volume: id,
                size_bytes: 1 << 20,
                key_id: id.to_string(),
                state: ObjState::Ready,
                created_at: "x".into(),
            })
        })
        .await
        .unwrap();
        assert_eq!(s.volumes().storage_bytes(), (64 << 20) + (1 << 20));
        let before = s.volumes();
        drop(s);
        let s = Store::open(&path, "t").unwrap();
        let after = s.volumes();
        assert_eq!(
            after.volumes().collect::<Vec<_>>(),
            before.volumes().collect::<Vec<_>>()
        );
        assert_eq!(after.attachments(), before.attachments());
        assert_eq!(after.snapshot(sid).unwrap().volume, id);
        assert_eq!(after.volume(id).unwrap().labels["team"], "a");
        // Detaching the node frees the volume; removing the volume drops its row.
        let gone = s.volume_job(|j| j.detach_node("web-1")).await.unwrap();
        assert_eq!(gone.len(), 1);
        assert_eq!(s.volumes().holders(id).count(), 0);
        assert!(s.volume_job(move |j| j.remove_volume(id)).await.unwrap());
        assert!(s.volumes().volume(id).is_none());
    }

    #[tokio::test]
    async fn a_failed_job_changes_nothing_and_names_are_unique() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.db"), "t").unwrap();
        let v = vol("data");
        s.volume_job(move |j| j.insert_volume(v)).await.unwrap();
        let again = vol("data");
        let e = s
            .volume_job(move |j| j.insert_volume(again))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Exists(n) if n == "data"));
        // A job that wrote, then failed: neither the view nor the database keep its write.
        let other = vol("other");
        let r: Result<(), StoreError> = s
            .volume_job(move |j| {
                j.insert_volume(other)?;
                Err(StoreError::Closed)
            })
            .await;
        assert!(r.is_err());
        assert!(s.volumes().by_name("other").is_none());
        let back = s.volume_job(|j| Ok::<_, StoreError>(j.by_name("other").is_none()));
        assert!(back.await.unwrap());
        assert_eq!(s.volumes().volumes().count(), 1);
    }

    #[tokio::test]
    async fn a_job_sees_the_tenants_nodes() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.db"), "t").unwrap();
        s.insert(crate::NewNode {
            name: "web-1".into(),
            hostgroup: "web".into(),
            status: crate::NodeState::Running,
            ip: String::new(),
            cpus: 1,
            ram_bytes: 1 << 30,
            tags: vec![],
            persistent: false,
            created_at: "x".into(),
            network: None,
            userdata: None,
            storage_bytes: Some(1 << 30),
            spec: None,
        })
        .await
        .unwrap();
        let n = s
            .volume_job(|j| Ok::<_, StoreError>(j.nodes().len()))
            .await
            .unwrap();
        assert_eq!(n, 1);
        let _ = NodeId::new();
    }
}
