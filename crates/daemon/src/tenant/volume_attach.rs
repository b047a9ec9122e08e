//! Attaching volumes to nodes (#13), the bookkeeping half: a create's `volumes` entries are
//! checked against the caller's tenant, the holders recorded, and resolved into the
//! [`VolumeMount`]s the node's spec carries (helper C's part mounts them).
//!
//! Rules (each enforced here, each tested):
//! - a volume id is looked up in the node's tenant only: another tenant's id, or no volume,
//!   answers the same 404 (the node's id is the create's own, in the same tenant);
//! - one writer: a read-write attach is exclusive against any other holder, read-only attaches
//!   share (with each other only); a second writer gets 409 `conflict` naming the holder; a
//!   read-write attach is also refused while a snapshot of the volume is being taken;
//! - the holder check and the record are one store job, so two creates cannot both become a
//!   volume's writer; a node's attachments go when its record does (`Store::delete`);
//! - paths are absolute, normalized, never `/`, never on, under or above a reserved path
//!   (`bulkhead_driver::RESERVED_VOLUME_PATHS`), never the same or nested within one create;
//! - refusals that look like misbinding (an unknown or foreign id, a second writer) are counted
//!   per reason (`bulkhead_volume_attach_refused_total`).

use bulkhead_api::volumes::VolumeAttach;
use bulkhead_core::{Code, DomainError};
use bulkhead_driver::VolumeMount;
use bulkhead_store::volumes::{Attachment, ObjState, Volumes};
use bulkhead_store::VolumeId;

use super::volume_disk as disk;
pub use super::volume_rules::{mount_path, spec_of, AttachCounters, Refusal};
use super::volume_rules::{no_volume, store_err, MAX_NODE_VOLUMES};
use super::Tenant;

/// `bulkhead_volume_attach_refused_total{tenant,reason}` and `bulkhead_volumes{tenant}` for
/// `/metrics`.
pub fn metrics<'a>(tenants: impl Iterator<Item = &'a Tenant> + Clone) -> String {
    let mut out = String::new();
    let name = "bulkhead_volume_attach_refused_total";
    out.push_str(&format!("# HELP {name} Volume attaches refused at node create: not_found (an id that is not one of the tenant's volumes: unknown or another tenant's), held (a second writer, or a reader beside a writer), spec_mismatch (a node supervisor refused a spec the daemon did not write, or volumes without the daemon's instruction).\n# TYPE {name} counter\n"));
    for t in tenants.clone() {
        for r in Refusal::ALL {
            out.push_str(&format!(
                "{name}{{tenant=\"{}\",reason=\"{}\"}} {}\n",
                t.name,
                r.as_str(),
                t.volume_counters.get(r)
            ));
        }
        // #13, attach: a supervisor that refused a spec the daemon did not write.
        out.push_str(&format!(
            "{name}{{tenant=\"{}\",reason=\"{}\"}} {}\n",
            t.name,
            bulkhead_driver::instruction::SPEC_MISMATCH,
            t.attach
                .refused_spec_mismatch
                .load(std::sync::atomic::Ordering::Relaxed)
        ));
    }
    let name = "bulkhead_volumes";
    out.push_str(&format!(
        "# HELP {name} Volumes of the tenant in any state.\n# TYPE {name} gauge\n"
    ));
    for t in tenants {
        out.push_str(&format!(
            "{name}{{tenant=\"{}\"}} {}\n",
            t.name,
            t.volume_count()
        ));
    }
    out
}

/// The first reason `want` may not join the volume's current holders, as a 409 naming one.
fn held(view: &Volumes, id: VolumeId, read_only: bool, node: &str) -> Option<DomainError> {
    let mut holders = view.holders(id).filter(|a| a.node != node);
    let clash = if read_only {
        holders.find(|a| !a.read_only)
    } else {
        holders.next()
    };
    if let Some(h) = clash {
        let how = if h.read_only {
            "read-only"
        } else {
            "read-write"
        };
        return Some(DomainError::new(
            Code::Conflict,
            format!(
                "volume {id} is held {how} by node {:?}: a read-write attach is exclusive, read-only ones share; attach it read-only, or delete that node first",
                h.node
            ),
        ));
    }
    if !read_only && view.snapshots_of(id).any(|s| s.state == ObjState::Creating) {
        return Some(DomainError::new(
            Code::Conflict,
            format!("volume {id} is being snapshotted: attach it read-only, or try again when the snapshot is done"),
        ));
    }
    None
}

impl Tenant {
    /// Checks a create's `volumes` against this tenant before anything is recorded: ids are
    /// this tenant's ready volumes (else 404), paths are valid and distinct, and no holder
    /// stands in the way now (the store job of [`Tenant::attach_volumes`] checks again).
    /// `node`: the create's hostname, if it named one (its own holds are no obstacle: a retry
    /// of the same create is the conflict rule's to answer).
    pub fn check_volume_request(
        &self,
        req: &[VolumeAttach],
        node: Option<&str>,
    ) -> Result<(), DomainError> {
        if req.len() > MAX_NODE_VOLUMES {
            return Err(DomainError::invalid(format!(
                "volumes: {} given, a node takes at most {MAX_NODE_VOLUMES}",
                req.len()
            )));
        }
        let mut paths: Vec<String> = Vec::new();
        let mut ids: Vec<VolumeId> = Vec::new();
        let view = self.store.volumes();
        for a in req {
            let path = mount_path(&a.path)?;
            if let Some(p) = paths.iter().find(|p| {
                **p == path
                    || path.starts_with(&format!("{p}/"))
                    || p.starts_with(&format!("{path}/"))
            }) {
                return Err(DomainError::invalid(format!(
                    "volumes: paths {p:?} and {path:?} overlap: give each volume a path of its own, not nested"
                )));
            }
            paths.push(path);
            let v = match self.volume_row(&a.id) {
                Ok(v) => v,
                Err(e) => {
                    self.attach_refused(Refusal::NotFound, node, &e); // #14: counted and an event
                    return Err(e);
                }
            };
            if ids.contains(&v.id) {
                return Err(DomainError::invalid(format!(
                    "volumes: volume {} is given twice: attach a volume once per node",
                    v.id
                )));
            }
            ids.push(v.id);
            if v.state != ObjState::Ready {
                return Err(DomainError::new(
                    Code::Conflict,
                    format!(
                        "volume {} is {}: attach it once it is ready",
                        v.id,
                        v.state.as_str()
                    ),
                ));
            }
            if let Some(e) = held(&view, v.id, a.read_only, node.unwrap_or("")) {
                self.attach_refused(Refusal::Held, node, &e); // #14: counted and an event
                return Err(e);
            }
        }
        Ok(())
    }

    /// Records that `node` (just recorded, not started) holds the volumes of `req`, checking
    /// the holders again in the same store job. On an error nothing is recorded.
    pub async fn attach_volumes(
        &self,
        node: &str,
        req: &[VolumeAttach],
    ) -> Result<(), DomainError> {
        if req.is_empty() {
            return Ok(());
        }
        let mut want = Vec::new();
        for a in req {
            let v = self.volume_row(&a.id).inspect_err(|e| {
                self.attach_refused(Refusal::NotFound, Some(node), e); // #14
            })?;
            want.push(Attachment {
                volume: v.id,
                node: node.to_string(),
                path: mount_path(&a.path)?,
                read_only: a.read_only,
            });
        }
        let r = self
            .store
            .volume_job(move |j| {
                for a in want {
                    match j.volume(a.volume) {
                        Some(v) if v.state == ObjState::Ready => {}
                        _ => {
                            return Err(AttachErr(
                                Some(Refusal::NotFound),
                                no_volume(&a.volume.to_string()),
                            ))
                        }
                    }
                    if let Some(e) = held(j, a.volume, a.read_only, &a.node) {
                        return Err(AttachErr(Some(Refusal::Held), e));
                    }
                    j.attach(a)?;
                }
                Ok(())
            })
            .await;
        match r {
            Ok(()) => Ok(()),
            Err(AttachErr(why, e)) => {
                if let Some(w) = why {
                    self.attach_refused(w, Some(node), &e); // #14: counted and an event
                }
                Err(e)
            }
        }
    }

    /// What the node's spec names for `req` (checked before with
    /// [`Tenant::check_volume_request`]): each volume's image, key id, path and flags.
    pub fn volume_mounts(&self, req: &[VolumeAttach]) -> Result<Vec<VolumeMount>, DomainError> {
        req.iter()
            .map(|a| {
                let v = self.volume_row(&a.id)?;
                Ok(VolumeMount {
                    id: v.id.to_string(),
                    image: disk::image(&self.dir, &v.id.to_string()),
                    key_id: v.key_id.clone(),
                    path: mount_path(&a.path)?,
                    read_only: a.read_only,
                    // The tenant's policy decides (helper C wires `volumes_exec`); never by default.
                    exec: false,
                })
            })
            .collect()
    }
}

/// An attach job's refusal, with the reason it counts under (none for a store failure).
struct AttachErr(Option<Refusal>, DomainError);

impl From<bulkhead_store::StoreError> for AttachErr {
    fn from(e: bulkhead_store::StoreError) -> Self {
        AttachErr(None, store_err(e))
    }
}
