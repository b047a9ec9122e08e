//! Volume snapshots (#13): `POST /volumes/{id}/snapshots`, list, delete; a volume made from
//! one is in `volumes.rs`.
//!
//! A snapshot is the volume's image sealed with the tenant's key (chunked AEAD, bound to the
//! tenant and the snapshot's id) in `<tenant dir>/snapshots/<id>.sealed`. The image's data is
//! already fscrypt-encrypted; sealing adds integrity and hides the file system's metadata.
//!
//! Invariants:
//! - a snapshot is refused while a node holds its volume read-write (a file system being
//!   written has no consistent image), and a read-write attach is refused while a snapshot of
//!   the volume is being taken (`volume_attach.rs`): both checks are store jobs, so atomic;
//! - the row is `creating` until the sealed file is complete under its final name; lists and
//!   lookups show only `ready` snapshots; a crash leaves a `creating` row and at most a `.tmp`
//!   file, both wiped at the next start ([`Tenant::reconcile_snapshots`]);
//! - a snapshot id is looked up in this tenant's store only: another tenant's is a 404.

use bulkhead_api::volumes::VolumeSnapshot;
use bulkhead_core::{Code, DomainError};
use bulkhead_store::volumes::{ObjState, SnapshotRow};
use bulkhead_store::SnapshotId;
use std::sync::Arc;

use super::volume_disk as disk;
pub use super::volume_rules::no_snapshot;
use super::volume_rules::{no_volume, store_err};
use super::Tenant;
use crate::fsutil::now_rfc3339;

fn api(s: &SnapshotRow) -> VolumeSnapshot {
    VolumeSnapshot {
        id: s.id.to_string(),
        volume: s.volume.to_string(),
        size: s.size_bytes,
        created_at: s.created_at.clone(),
    }
}

impl Tenant {
    /// `GET /volumes/{id}/snapshots`: the volume's ready snapshots, oldest first.
    pub fn list_snapshots(&self, volume: &str) -> Result<Vec<VolumeSnapshot>, DomainError> {
        let v = self.volume_row(volume)?;
        let view = self.store.volumes();
        Ok(view
            .snapshots_of(v.id)
            .filter(|s| s.state == ObjState::Ready)
            .map(|s| api(s))
            .collect())
    }

    /// `POST /volumes/{id}/snapshots`.
    pub async fn create_snapshot(
        self: &Arc<Self>,
        volume: &str,
    ) -> Result<VolumeSnapshot, DomainError> {
        let vid = self.volume_row(volume)?.id;
        let t = self.clone();
        super::power::to_completion(async move {
            let sid = SnapshotId::new();
            let me = t.clone();
            let row = t
                .store
                .volume_job(move |j| {
                    let v = j
                        .volume(vid)
                        .filter(|v| v.state == ObjState::Ready)
                        .cloned()
                        .ok_or_else(|| no_volume(&vid.to_string()))?;
                    if let Some(w) = j.holders(vid).find(|a| !a.read_only) {
                        return Err(DomainError::new(
                            Code::Conflict,
                            format!(
                                "volume {vid} is attached read-write to node {:?}: a file system being written has no consistent image; delete the node (or attach the volume read-only) and snapshot again",
                                w.node
                            ),
                        ));
                    }
                    let used = super::quota::usage(&me.cfg, j.nodes().rows());
                    me.check_storage_quota(used, j.storage_bytes(), v.size_bytes)?;
                    j.insert_snapshot(SnapshotRow {
                        id: sid,
                        volume: vid,
                        size_bytes: v.size_bytes,
                        key_id: v.key_id.clone(),
                        state: ObjState::Creating,
                        created_at: now_rfc3339(),
                    })
                    .map_err(store_err)
                })
                .await?;
            let key = t.volume_key()?;
            let (dir, tenant) = (t.dir.clone(), t.name.clone());
            let sealed = tokio::task::spawn_blocking(move || {
                let image = disk::image(&dir, &vid.to_string());
                let s = sid.to_string();
                // A snapshot of a guest-written volume is guest-written (#13), marked before
                // its file exists (the tenant's first snapshot makes the directory here).
                if super::guest_written::is_marked(&image) {
                    disk::ensure_snapshots_dir(&dir)?;
                    super::guest_written::mark(&disk::sealed(&dir, &s)).map_err(|e| {
                        disk::DiskError::Io {
                            what: "marking guest-written",
                            path: disk::sealed(&dir, &s),
                            source: e,
                        }
                    })?;
                }
                disk::seal_snapshot(&dir, &s, &image, &key, &disk::snapshot_aad(&tenant, &s))
            })
            .await
            .map_err(|e| DomainError::internal(format!("sealing the snapshot: {e}")))
            .and_then(|r| {
                r.map_err(|e| DomainError::internal(format!("sealing the snapshot: {e}")))
            });
            if let Err(e) = sealed {
                tracing::warn!(snapshot = %sid, error = %e, "snapshot failed; removing it");
                let _ = t.store.volume_job(move |j| j.remove_snapshot(sid)).await;
                return Err(e);
            }
            t.store
                .volume_job(move |j| j.set_snapshot_state(sid, ObjState::Ready))
                .await
                .map_err(store_err)?;
            tracing::info!(snapshot = %sid, volume = %vid, "volume snapshot taken");
            Ok(api(&SnapshotRow {
                state: ObjState::Ready,
                ..(*row).clone()
            }))
        })
        .await
    }

    /// `DELETE /volumes/{id}/snapshots/{sid}`: wipes and forgets it.
    pub async fn delete_snapshot(
        self: &Arc<Self>,
        volume: &str,
        snapshot: &str,
    ) -> Result<(), DomainError> {
        let vid = self.volume_row(volume)?.id;
        let sid = SnapshotId::parse(snapshot).map_err(|_| no_snapshot(snapshot))?;
        let t = self.clone();
        let shown = snapshot.to_string();
        super::power::to_completion(async move {
            t.store
                .volume_job(move |j| {
                    match j.snapshot(sid) {
                        Some(s) if s.volume == vid && s.state == ObjState::Ready => {}
                        _ => return Err(no_snapshot(&shown)),
                    }
                    j.set_snapshot_state(sid, ObjState::Deleting)
                        .map_err(store_err)
                })
                .await?;
            t.finish_snapshot_delete(sid).await
        })
        .await
    }

    async fn finish_snapshot_delete(&self, sid: SnapshotId) -> Result<(), DomainError> {
        let path = disk::sealed(&self.dir, &sid.to_string());
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        tokio::task::spawn_blocking(move || {
            disk::wipe(&path)
                .and_then(|()| disk::wipe(std::path::Path::new(&tmp)))
                .and_then(|()| disk::wipe(&super::guest_written::mark_of(&path)))
        })
        .await
        .map_err(|e| DomainError::internal(format!("wiping the snapshot: {e}")))?
        .map_err(|e| DomainError::internal(format!("wiping the snapshot: {e}")))?;
        self.store
            .volume_job(move |j| j.remove_snapshot(sid))
            .await
            .map_err(store_err)?;
        Ok(())
    }

    /// After a start: snapshots `creating` (a daemon killed while sealing) or `deleting` are
    /// wiped and forgotten.
    pub(super) async fn reconcile_snapshots(&self) {
        let half: Vec<SnapshotId> = self
            .store
            .volumes()
            .snapshots()
            .filter(|s| s.state != ObjState::Ready)
            .map(|s| s.id)
            .collect();
        for sid in half {
            tracing::warn!(snapshot = %sid, "snapshot half-made or half-deleted; wiping it");
            if let Err(e) = self.finish_snapshot_delete(sid).await {
                tracing::error!(snapshot = %sid, error = %e, "cannot finish the snapshot's removal");
            }
        }
    }
}
