//! A tenant's volumes (#13): create, list, show, delete, and their reconciliation at start.
//! Attachments to nodes are in `volume_attach.rs`, snapshots in `volume_snap.rs`, the host
//! files in `volume_disk.rs`.
//!
//! Invariants:
//! - a volume is the tenant's alone: every lookup goes through this tenant's store, and an id
//!   that is not there (another tenant's, or none) answers the same 404;
//! - a create is admitted (name free, quota) in the store job that records it `creating`, so
//!   parallel creates never both take the last of a quota; its file is made under a temporary
//!   name and renamed, and only then is the row `ready`;
//! - a delete marks the row `deleting` only when no node holds the volume (atomic with
//!   attaches), wipes the image, then removes the row; a crash anywhere in between is finished
//!   by [`Tenant::reconcile_volumes`];
//! - creates and deletes run in a task of their own: a caller that goes away stops neither.

use bulkhead_api::volumes::{CreateVolumeRequest, Size, Volume, VolumeHolder};
use bulkhead_core::{Code, DomainError};
use bulkhead_store::volumes::{ObjState, VolumeRow, Volumes};
use bulkhead_store::{SnapshotId, VolumeId};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::volume_disk as disk;
pub use super::volume_rules::no_volume;
use super::volume_rules::{no_snapshot, store_err};
use super::Tenant;
use crate::fsutil::now_rfc3339;

/// The smallest volume: what ext4 with a journal needs to be useful.
pub const MIN_VOLUME: u64 = 16 << 20;
/// The largest volume (the tenant's storage quota usually binds first).
pub const MAX_VOLUME: u64 = 16 << 40;
/// Bytes per inode by default (mkfs.ext4's own default for small file systems).
pub const BYTES_PER_INODE: u64 = 16 << 10;
pub const MIN_INODES: u64 = 64;
/// Labels per volume, and the length of a label's key and value.
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY: usize = 63;
pub const MAX_LABEL_VALUE: usize = 256;

/// The size a request asks for, rounded up to whole MiB.
pub fn parse_size(s: &Size) -> Result<u64, DomainError> {
    let bytes = match s {
        Size::Bytes(b) => *b,
        Size::Text(t) => {
            bulkhead_core::size::parse(t).map_err(|m| DomainError::invalid(format!("size: {m}")))?
        }
    };
    let mib = bytes.div_ceil(1 << 20).saturating_mul(1 << 20);
    if !(MIN_VOLUME..=MAX_VOLUME).contains(&mib) {
        return Err(DomainError::out_of_range(format!(
            "size: {bytes} bytes is outside 16M..=16T: ask for e.g. \"1G\""
        )));
    }
    Ok(mib)
}

/// The inode count for a volume of `size` bytes: the request's, else one per 16 KiB; at
/// least 64 and at most one per 4 KiB block.
pub fn inodes_for(size: u64, asked: Option<u64>) -> Result<u64, DomainError> {
    let max = size / 4096;
    match asked {
        None => Ok((size / BYTES_PER_INODE).clamp(MIN_INODES, max)),
        Some(n) if (MIN_INODES..=max).contains(&n) => Ok(n),
        Some(n) => Err(DomainError::out_of_range(format!(
            "inodes: {n} is outside {MIN_INODES}..={max} for a volume of {size} bytes (one per 4 KiB block at most): omit inodes for one per 16 KiB"
        ))),
    }
}

/// Labels: at most 64; keys like tag keys (1–63 of `a-z A-Z 0-9 . _ / -`), values printable,
/// at most 256 bytes.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), DomainError> {
    if labels.len() > MAX_LABELS {
        return Err(DomainError::invalid(format!(
            "labels: {} given, at most {MAX_LABELS} are accepted",
            labels.len()
        )));
    }
    for (k, v) in labels {
        let key_ok = !k.is_empty()
            && k.len() <= MAX_LABEL_KEY
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'-'));
        if !key_ok {
            return Err(DomainError::invalid(format!(
                "labels: key {:?} must be 1 to {MAX_LABEL_KEY} letters, digits, '.', '_', '/' or '-'",
                k.chars().take(80).collect::<String>()
            )));
        }
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(DomainError::invalid(format!(
                "labels: the value of {k:?} must be at most {MAX_LABEL_VALUE} bytes without control characters"
            )));
        }
    }
    Ok(())
}

/// A validated `POST /volumes`.
struct Plan {
    name: String,
    size: u64,
    inodes: u64,
    labels: BTreeMap<String, String>,
    from: Option<SnapshotId>,
}

impl Tenant {
    pub fn volume_api(&self, v: &VolumeRow, view: &Volumes) -> Volume {
        Volume {
            id: v.id.to_string(),
            tenant: self.name.clone(),
            name: v.name.clone(),
            size_bytes: v.size_bytes,
            inodes: v.inodes,
            labels: v.labels.clone(),
            state: v.state.as_str().into(),
            created_at: v.created_at.clone(),
            from_snapshot: v.from_snapshot.map(|s| s.to_string()),
            attachments: view
                .holders(v.id)
                .map(|a| VolumeHolder {
                    node: a.node.clone(),
                    path: a.path.clone(),
                    read_only: a.read_only,
                })
                .collect(),
        }
    }

    /// The tenant's volumes, oldest first.
    pub fn list_volumes(&self) -> Vec<Volume> {
        let view = self.store.volumes();
        view.volumes().map(|v| self.volume_api(v, &view)).collect()
    }

    pub fn volume_count(&self) -> usize {
        self.store.volumes().volumes().count()
    }

    /// This tenant's volume `id` (404 for anything else, malformed ids included).
    pub fn volume_row(&self, id: &str) -> Result<Arc<VolumeRow>, DomainError> {
        let vid = VolumeId::parse(id).map_err(|_| no_volume(id))?;
        self.store
            .volumes()
            .volume(vid)
            .cloned()
            .ok_or_else(|| no_volume(id))
    }

    /// Whether this tenant has volume `id` (a shared daemon asks each tenant the caller may act
    /// in).
    pub fn has_volume(&self, id: &str) -> bool {
        self.volume_row(id).is_ok()
    }

    pub fn show_volume(&self, id: &str) -> Result<Volume, DomainError> {
        let v = self.volume_row(id)?;
        Ok(self.volume_api(&v, &self.store.volumes()))
    }

    fn plan_volume(&self, req: &CreateVolumeRequest) -> Result<Plan, DomainError> {
        bulkhead_api::names::validate_label("volume name", &req.name)
            .map_err(|e| DomainError::invalid(format!("name: {e}")))?;
        check_labels(&req.labels)?;
        let from = match &req.from_snapshot {
            None => None,
            Some(s) => {
                let sid = SnapshotId::parse(s).map_err(|_| no_snapshot(s))?;
                let view = self.store.volumes();
                let snap = view
                    .snapshot(sid)
                    .filter(|s| s.state == ObjState::Ready)
                    .ok_or_else(|| no_snapshot(s))?;
                Some((sid, snap.size_bytes))
            }
        };
        let size = match (&req.size, from) {
            (None, None) => {
                return Err(DomainError::invalid(
                    "size: missing: give the volume's size, e.g. \"size\": \"1G\"",
                ))
            }
            (None, Some((_, s))) => s,
            (Some(s), None) => parse_size(s)?,
            (Some(s), Some((sid, snap))) => {
                let asked = parse_size(s)?;
                if asked != snap {
                    return Err(DomainError::invalid(format!(
                        "size: a volume made from snapshot {sid} has its size ({snap} bytes): omit size"
                    )));
                }
                asked
            }
        };
        if from.is_some() && req.inodes.is_some() {
            return Err(DomainError::invalid(
                "inodes: a volume made from a snapshot keeps the snapshot's file system: omit inodes",
            ));
        }
        Ok(Plan {
            name: req.name.clone(),
            size,
            inodes: inodes_for(size, req.inodes)?,
            labels: req.labels.clone(),
            from: from.map(|(s, _)| s),
        })
    }

    /// `POST /volumes`: validates, admits (name, quota) and records the volume, makes its file,
    /// and answers with it `ready`.
    pub async fn create_volume(
        self: &Arc<Self>,
        req: CreateVolumeRequest,
    ) -> Result<Volume, DomainError> {
        let plan = self.plan_volume(&req)?;
        let t = self.clone();
        super::power::to_completion(async move { t.create_volume_now(plan).await }).await
    }

    async fn create_volume_now(self: &Arc<Self>, plan: Plan) -> Result<Volume, DomainError> {
        let id = VolumeId::new();
        // A volume from a snapshot keeps the snapshot's key id: its file system was made
        // with that key.
        let view = self.store.volumes();
        let key_id = match plan.from.and_then(|s| view.snapshot(s).cloned()) {
            Some(s) => s.key_id.clone(),
            None if plan.from.is_some() => {
                return Err(no_snapshot(
                    &plan.from.map(|s| s.to_string()).unwrap_or_default(),
                ))
            }
            None => id.to_string(),
        };
        let row = VolumeRow {
            id,
            name: plan.name.clone(),
            size_bytes: plan.size,
            inodes: plan.inodes,
            labels: plan.labels.clone(),
            key_id: key_id.clone(),
            state: ObjState::Creating,
            created_at: now_rfc3339(),
            from_snapshot: plan.from,
        };
        let me = self.clone();
        let name = plan.name.clone();
        self.store
            .volume_job(move |j| {
                if j.by_name(&name).is_some() {
                    return Err(DomainError::new(
                        Code::Conflict,
                        format!("volume name {name:?} is taken in tenant {:?}: choose another name, or delete that volume first", me.name),
                    ));
                }
                if let Some(s) = row.from_snapshot {
                    if j.snapshot(s).is_none_or(|s| s.state != ObjState::Ready) {
                        return Err(no_snapshot(&s.to_string()));
                    }
                }
                let used = super::quota::usage(&me.cfg, j.nodes().rows());
                me.check_storage_quota(used, j.storage_bytes(), row.size_bytes)?;
                j.insert_volume(row).map_err(store_err)
            })
            .await?;
        let made = self.make_volume_file(id, &key_id, &plan).await;
        if let Err(e) = made {
            tracing::warn!(volume = %id, error = %e, "volume create failed; removing it");
            let _ = self.store.volume_job(move |j| j.remove_volume(id)).await;
            return Err(e);
        }
        self.store
            .volume_job(move |j| j.set_volume_state(id, ObjState::Ready))
            .await
            .map_err(store_err)?;
        tracing::info!(volume = %id, size = plan.size, "volume created");
        self.show_volume(&id.to_string())
    }

    async fn make_volume_file(
        &self,
        id: VolumeId,
        key_id: &str,
        plan: &Plan,
    ) -> Result<(), DomainError> {
        let key = self.volume_key()?;
        let (dir, owner, size, inodes) = (self.dir.clone(), self.uid_base, plan.size, plan.inodes);
        let (idt, kid, from, tenant) = (
            id.to_string(),
            key_id.to_string(),
            plan.from,
            self.name.clone(),
        );
        tokio::task::spawn_blocking(move || match from {
            None => disk::make_volume(&dir, &idt, size, inodes, owner, &key.derive("volume", &kid))
                .map(|_| ()),
            Some(s) => {
                let s = s.to_string();
                // A volume restored from a guest-written snapshot is guest-written (#13).
                if super::guest_written::is_marked(&disk::sealed(&dir, &s)) {
                    super::guest_written::mark(&disk::image(&dir, &idt)).map_err(|e| {
                        disk::DiskError::Io {
                            what: "marking guest-written",
                            path: disk::image(&dir, &idt),
                            source: e,
                        }
                    })?;
                }
                disk::restore_volume(
                    &dir,
                    &idt,
                    &disk::sealed(&dir, &s),
                    &key,
                    &disk::snapshot_aad(&tenant, &s),
                )
                .map(|_| ())
            }
        })
        .await
        .map_err(|e| DomainError::internal(format!("making the volume's image: {e}")))?
        .map_err(|e| DomainError::internal(format!("making the volume's image: {e}")))
    }

    /// `DELETE /volumes/{id}`: refused (409 naming the nodes) while a node holds it or while
    /// it has snapshots; else wiped and removed.
    pub async fn delete_volume(self: &Arc<Self>, id: &str) -> Result<(), DomainError> {
        let vid = self.volume_row(id)?.id;
        let t = self.clone();
        super::power::to_completion(async move { t.delete_volume_now(vid).await }).await
    }

    async fn delete_volume_now(self: &Arc<Self>, id: VolumeId) -> Result<(), DomainError> {
        self.store
            .volume_job(move |j| {
                let Some(v) = j.volume(id) else {
                    return Err(no_volume(&id.to_string()));
                };
                if v.state != ObjState::Ready {
                    return Err(DomainError::new(
                        Code::Conflict,
                        format!("volume {id} is {}: try again when it is ready", v.state.as_str()),
                    ));
                }
                let holders: Vec<String> = j.holders(id).map(|a| a.node.clone()).collect();
                if !holders.is_empty() {
                    return Err(DomainError::new(
                        Code::Conflict,
                        format!("volume {id} is attached to node {}: delete the node first", holders.join(", ")),
                    ));
                }
                let snaps: Vec<String> = j.snapshots_of(id).map(|s| s.id.to_string()).collect();
                if !snaps.is_empty() {
                    return Err(DomainError::new(
                        Code::Conflict,
                        format!("volume {id} has snapshots ({}): delete them first (DELETE /volumes/{id}/snapshots/{{sid}})", snaps.join(", ")),
                    ));
                }
                j.set_volume_state(id, ObjState::Deleting).map_err(store_err)
            })
            .await?;
        self.finish_volume_delete(id).await
    }

    /// Wipes a `deleting` volume's image and removes its row.
    async fn finish_volume_delete(&self, id: VolumeId) -> Result<(), DomainError> {
        let path = disk::image(&self.dir, &id.to_string());
        let tmp = {
            let mut s = path.as_os_str().to_owned();
            s.push(".tmp");
            std::path::PathBuf::from(s)
        };
        tokio::task::spawn_blocking(move || {
            disk::wipe(&path)
                .and_then(|()| disk::wipe(&tmp))
                .and_then(|()| disk::wipe(&super::guest_written::mark_of(&path)))
        })
        .await
        .map_err(|e| DomainError::internal(format!("wiping the volume: {e}")))?
        .map_err(|e| {
            DomainError::internal(format!(
                "wiping the volume: {e} (it stays deleting; the daemon's next start retries)"
            ))
        })?;
        self.store
            .volume_job(move |j| j.remove_volume(id))
            .await
            .map_err(store_err)?;
        tracing::info!(volume = %id, "volume wiped and deleted");
        Ok(())
    }

    /// After a start: finishes what a stopped daemon left half-done. A volume or snapshot
    /// `creating` is wiped and forgotten (its caller got no answer), one `deleting` is wiped
    /// and forgotten; files no record explains are wiped; attachments of nodes that are gone
    /// are dropped.
    pub async fn reconcile_volumes(&self) {
        let view = self.store.volumes();
        let half: Vec<VolumeId> = view
            .volumes()
            .filter(|v| v.state != ObjState::Ready)
            .map(|v| v.id)
            .collect();
        for id in half {
            tracing::warn!(volume = %id, "volume half-made or half-deleted; wiping it");
            if let Err(e) = self.finish_volume_delete(id).await {
                tracing::error!(volume = %id, error = %e, "cannot finish the volume's removal");
            }
        }
        self.reconcile_snapshots().await;
        let nodes = self.list();
        let gone: Vec<String> = view
            .attachments()
            .iter()
            .filter(|a| !nodes.rows().iter().any(|r| r.name == a.node))
            .map(|a| a.node.clone())
            .collect();
        for n in gone {
            let _ = self.store.volume_job(move |j| j.detach_node(&n)).await;
        }
        let view = self.store.volumes();
        let (vols, snaps): (Vec<String>, Vec<String>) = (
            view.volumes().map(|v| format!("{}.img", v.id)).collect(),
            view.snapshots()
                .map(|s| format!("{}.sealed", s.id))
                .collect(),
        );
        let dir = self.dir.clone();
        let swept = tokio::task::spawn_blocking(move || {
            use super::guest_written::keep;
            let mut g = disk::sweep(&disk::volumes_dir(&dir), |n| {
                keep(n, |n| vols.iter().any(|v| v == n))
            });
            g.extend(disk::sweep(&disk::snapshots_dir(&dir), |n| {
                keep(n, |n| snaps.iter().any(|s| s == n))
            }));
            g
        })
        .await
        .unwrap_or_default();
        for f in swept {
            tracing::warn!(file = %f, "wiped a volume or snapshot file that no record explains");
        }
    }

    /// The tenant's data key (#13, keys): volume keys derive from it.
    pub(super) fn volume_key(&self) -> Result<bulkhead_storage::TenantKey, DomainError> {
        Ok(self.key().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_mib_and_are_bounded() {
        assert_eq!(parse_size(&Size::Text("1G".into())).unwrap(), 1 << 30);
        assert_eq!(parse_size(&Size::Bytes((16 << 20) - 5)).unwrap(), 16 << 20);
        assert_eq!(parse_size(&Size::Bytes((32 << 20) + 1)).unwrap(), 33 << 20);
        for bad in [
            Size::Text("1M".into()),
            Size::Bytes(0),
            Size::Text("17T".into()),
        ] {
            let e = parse_size(&bad).unwrap_err();
            assert_eq!(e.code, Code::OutOfRange, "{bad:?}");
            assert!(e.message.starts_with("size:"), "{}", e.message);
        }
        let e = parse_size(&Size::Text("1Q".into())).unwrap_err();
        assert_eq!(e.code, Code::InvalidRequest);
        assert!(e.message.contains("size"), "{}", e.message);
    }

    #[test]
    fn inodes_default_to_one_per_16k_and_are_bounded() {
        assert_eq!(inodes_for(16 << 20, None).unwrap(), 1024);
        assert_eq!(inodes_for(1 << 30, Some(100)).unwrap(), 100);
        assert!(inodes_for(16 << 20, Some(10)).is_err());
        let e = inodes_for(16 << 20, Some(5000)).unwrap_err();
        assert!(e.message.starts_with("inodes:"), "{}", e.message);
    }

    #[test]
    fn labels_are_bounded_and_named() {
        let ok: BTreeMap<_, _> = [("team".to_string(), "data eng".to_string())].into();
        check_labels(&ok).unwrap();
        for (k, v) in [("", "x"), ("a b", "x"), ("k", "\n")] {
            let l: BTreeMap<_, _> = [(k.to_string(), v.to_string())].into();
            let e = check_labels(&l).unwrap_err();
            assert!(e.message.starts_with("labels:"), "{}", e.message);
        }
        let many: BTreeMap<_, _> = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_labels(&many).is_err());
        let long: BTreeMap<_, _> = [("k".to_string(), "v".repeat(257))].into();
        assert!(check_labels(&long).is_err());
    }
}
