//! The records of volumes, attachments and snapshots (#13), the in-memory view of them that
//! reads are served from, and its load from SQLite. Changed only by `volumes.rs`'s jobs (and a
//! node's delete, `Store::delete`), on the store's writer thread.

use rusqlite::{params, Connection};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::error::StoreError;
use crate::id::{SnapshotId, VolumeId};

/// Where a volume or snapshot is in its life. `Creating` and `Deleting` rows are finished or
/// wiped by the daemon's reconciliation at start (a daemon killed halfway left them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjState {
    Creating,
    Ready,
    Deleting,
}

impl ObjState {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjState::Creating => "creating",
            ObjState::Ready => "ready",
            ObjState::Deleting => "deleting",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [ObjState::Creating, ObjState::Ready, ObjState::Deleting]
            .into_iter()
            .find(|x| x.as_str() == s)
    }
}

/// A volume as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRow {
    pub id: VolumeId,
    pub name: String,
    pub size_bytes: u64,
    pub inodes: u64,
    pub labels: BTreeMap<String, String>,
    /// The id its encryption key is derived with: its own id, or its snapshot's key id.
    pub key_id: String,
    pub state: ObjState,
    pub created_at: String,
    pub from_snapshot: Option<SnapshotId>,
}

/// A node holding a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub volume: VolumeId,
    pub node: String,
    pub path: String,
    pub read_only: bool,
}

/// A snapshot of a volume (a sealed copy of its image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRow {
    pub id: SnapshotId,
    pub volume: VolumeId,
    pub size_bytes: u64,
    /// The key id of the volume it was taken of (a volume made from it keeps it).
    pub key_id: String,
    pub state: ObjState,
    pub created_at: String,
}

/// The tenant's volumes, attachments and snapshots at one moment (immutable).
#[derive(Debug, Clone, Default)]
pub struct Volumes {
    pub(crate) volumes: BTreeMap<VolumeId, Arc<VolumeRow>>,
    pub(crate) attachments: Vec<Attachment>,
    pub(crate) snapshots: BTreeMap<SnapshotId, Arc<SnapshotRow>>,
}

impl Volumes {
    /// Every volume, oldest first (ids sort by creation time).
    pub fn volumes(&self) -> impl Iterator<Item = &Arc<VolumeRow>> {
        self.volumes.values()
    }

    pub fn volume(&self, id: VolumeId) -> Option<&Arc<VolumeRow>> {
        self.volumes.get(&id)
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<VolumeRow>> {
        self.volumes.values().find(|v| v.name == name)
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    pub fn holders(&self, volume: VolumeId) -> impl Iterator<Item = &Attachment> {
        self.attachments.iter().filter(move |a| a.volume == volume)
    }

    pub fn attached_to(&self, node: &str) -> impl Iterator<Item = &Attachment> + '_ {
        let node = node.to_string();
        self.attachments.iter().filter(move |a| a.node == node)
    }

    pub fn snapshots(&self) -> impl Iterator<Item = &Arc<SnapshotRow>> {
        self.snapshots.values()
    }

    pub fn snapshot(&self, id: SnapshotId) -> Option<&Arc<SnapshotRow>> {
        self.snapshots.get(&id)
    }

    pub fn snapshots_of(&self, volume: VolumeId) -> impl Iterator<Item = &Arc<SnapshotRow>> {
        self.snapshots.values().filter(move |s| s.volume == volume)
    }

    /// The bytes the tenant's volumes and snapshots claim (every state: a volume being made
    /// or wiped still holds its disk).
    pub fn storage_bytes(&self) -> u64 {
        let v = self.volumes.values().map(|v| v.size_bytes);
        let s = self.snapshots.values().map(|s| s.size_bytes);
        v.chain(s).fold(0u64, u64::saturating_add)
    }
}

/// The committed view; the writer replaces it after each commit.
#[derive(Default)]
pub(crate) struct VolumeIndex(Mutex<Arc<Volumes>>);

impl VolumeIndex {
    pub(crate) fn get(&self) -> Arc<Volumes> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, v: Volumes) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
    }

    pub(crate) fn load(conn: &Connection) -> Result<Self, StoreError> {
        let i = VolumeIndex::default();
        i.set(read_all(conn)?);
        Ok(i)
    }
}

pub(crate) fn bad(
    col: usize,
    e: impl std::error::Error + Send + Sync + 'static,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
}

fn state_of(col: usize, s: String) -> rusqlite::Result<ObjState> {
    ObjState::parse(&s).ok_or_else(|| {
        bad(
            col,
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("state {s:?}")),
        )
    })
}

fn read_all(conn: &Connection) -> Result<Volumes, StoreError> {
    let mut out = Volumes::default();
    let mut st = conn.prepare(
        "SELECT id, name, size_bytes, inodes, labels, key_id, state, created_at, from_snapshot
         FROM volumes",
    )?;
    let rows = st.query_map([], |r| {
        let labels: String = r.get(4)?;
        let from: Option<String> = r.get(8)?;
        Ok(VolumeRow {
            id: VolumeId::parse(&r.get::<_, String>(0)?).map_err(|e| bad(0, e))?,
            name: r.get(1)?,
            size_bytes: r.get::<_, i64>(2)? as u64,
            inodes: r.get::<_, i64>(3)? as u64,
            labels: serde_json::from_str(&labels).map_err(|e| bad(4, e))?,
            key_id: r.get(5)?,
            state: state_of(6, r.get(6)?)?,
            created_at: r.get(7)?,
            from_snapshot: from
                .map(|s| SnapshotId::parse(&s).map_err(|e| bad(8, e)))
                .transpose()?,
        })
    })?;
    for v in rows {
        let v = v?;
        out.volumes.insert(v.id, Arc::new(v));
    }
    let mut st = conn
        .prepare("SELECT volume, node, path, read_only FROM volume_attachments ORDER BY rowid")?;
    let rows = st.query_map([], |r| {
        Ok(Attachment {
            volume: VolumeId::parse(&r.get::<_, String>(0)?).map_err(|e| bad(0, e))?,
            node: r.get(1)?,
            path: r.get(2)?,
            read_only: r.get(3)?,
        })
    })?;
    out.attachments = rows.collect::<Result<_, _>>()?;
    let mut st =
        conn.prepare("SELECT id, volume, size_bytes, key_id, state, created_at FROM snapshots")?;
    let rows = st.query_map([], |r| {
        Ok(SnapshotRow {
            id: SnapshotId::parse(&r.get::<_, String>(0)?).map_err(|e| bad(0, e))?,
            volume: VolumeId::parse(&r.get::<_, String>(1)?).map_err(|e| bad(1, e))?,
            size_bytes: r.get::<_, i64>(2)? as u64,
            key_id: r.get(3)?,
            state: state_of(4, r.get(4)?)?,
            created_at: r.get(5)?,
        })
    })?;
    for s in rows {
        let s = s?;
        out.snapshots.insert(s.id, Arc::new(s));
    }
    Ok(out)
}

impl VolumeIndex {
    /// Drops a deleted node's attachments (`Store::delete`, on the writer thread).
    pub(crate) fn forget_node(&self, conn: &Connection, node: &str) -> Result<(), StoreError> {
        let view = self.get();
        if !view.attachments.iter().any(|a| a.node == node) {
            return Ok(());
        }
        conn.execute(
            "DELETE FROM volume_attachments WHERE node=?1",
            params![node],
        )?;
        let mut next = (*view).clone();
        next.attachments.retain(|a| a.node != node);
        self.set(next);
        Ok(())
    }
}
