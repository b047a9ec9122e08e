//! Persistent nodes (#13, Slicer's `"persistent": true`; ADR 0030): a node whose writable
//! storage outlives its processes, a daemon stop with `graceful_shutdown: false`, a daemon
//! restart and, in principle, a host reboot; deleting the node wipes it.
//!
//! - Create: refused (400 `unsupported`) where the host group's driver keeps nothing
//!   (`Driver::persistence`), or the host has no fscrypt for a jail's layer (the probe at
//!   start says which protection is missing) or no `qemu-img` for a microVM's LUKS disk. A
//!   microVM's root disk is encrypted by its driver (`NodePrep::persistent_key`). A jail's layer is `<node>/layer.img`, an ext4 image of the node's storage size
//!   formatted at its first start with an encrypted `data` directory
//!   (`TenantKey::derive("layer", <node id>)`); the spec names it, the key goes on the
//!   supervisor's stdin with the spec's digest (`attach::supervisor_instruction`).
//! - Daemon stop with `graceful_shutdown: false`: a persistent node is synced and its
//!   processes end (supervisor, cgroup, sockets, network rules go), but its record and
//!   directory stay, with its state as it was. With `true` it runs on, as every node does.
//! - Daemon start: a persistent node whose supervisor is gone (the stop above, a crash, a
//!   reboot) is kept; one that was Running or Paused is relaunched with its layer once the
//!   tenant is open, one that was Stopped stays Stopped; one whose relaunch or restore the
//!   daemon's end cut short (`Creating`) is kept Stopped, as a failed relaunch leaves it
//!   (`restarting.rs`).
//! - Delete: the layer image (or LUKS disk) is overwritten with zeros once its loop device is
//!   gone, with the rest of the node's directory (`bulkhead_driver::cleanup`).
//!
//! Invariants: the layer's key never touches disk or the spec; a layer is formatted only at
//! a node's first start (a relaunch whose image is gone fails instead of starting empty);
//! quotas count a persistent node's storage as every node's (its recorded storage size,
//! whatever its state, until it is deleted: `quota.rs`).

use bulkhead_core::{Code, DomainError, HostGroup, NodeState};
use bulkhead_driver::{persist::layer_key_id, LayerMount, Persistence, Start, LAYER_IMAGE};
use bulkhead_storage::Secret;
use bulkhead_store::NodeRow;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::power::Wait;
use super::Tenant;

/// A persistent microVM's LUKS root disk, in its node's directory (`bulkhead_vm::driver`).
const VM_DISK: &str = "vm/disk.luks";

/// How long a relaunch at daemon start waits for the node's agent.
const RELAUNCH_TIMEOUT: Duration = Duration::from_secs(120);

/// A layer's inode count: one per 16 KiB (mkfs.ext4's default ratio), at least 4096.
fn layer_inodes(bytes: u64) -> u64 {
    (bytes / (16 << 10)).max(4096)
}

/// What the host's probe at start (`GET /info`'s `storage`) says is missing for encrypting a
/// persistent layer, if anything.
pub(super) fn fscrypt_missing(p: &bulkhead_storage::probe::Protection) -> Option<String> {
    (!p.fscrypt).then(|| {
        p.missing()
            .iter()
            .find(|m| m.starts_with("fscrypt"))
            .cloned()
            .unwrap_or_else(|| "fscrypt is unavailable".into())
    })
}

impl Tenant {
    /// A create's `persistent`: refused where the driver keeps nothing or the host cannot
    /// encrypt the layer.
    pub(super) fn check_persistent(&self, g: &HostGroup) -> Result<(), DomainError> {
        let d = self.driver_for(&g.name);
        if d.persistence() == Persistence::Unsupported {
            return Err(DomainError::new(
                Code::Unsupported,
                format!(
                    "the {} driver of host group {:?} cannot keep a persistent node's storage: omit persistent, or send false; \
                     a Stopped node keeps its record and `POST /vm/{{node}}/relaunch` starts it again",
                    d.name(),
                    g.name
                ),
            ));
        }
        // A microVM's disk is encrypted by QEMU's LUKS driver (qemu-img makes it), a jail's
        // layer by fscrypt.
        if d.persistence() == Persistence::EncryptedDisk {
            let found = std::process::Command::new("qemu-img")
                .arg("--version")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                return Err(DomainError::new(
                    Code::Unsupported,
                    "a persistent microVM's disk is encrypted with QEMU's LUKS driver and this host has no qemu-img: install qemu-utils, or omit persistent",
                ));
            }
            return Ok(());
        }
        if let Some(why) = fscrypt_missing(&self.host.protection) {
            return Err(DomainError::new(
                Code::Unsupported,
                format!("persistent nodes are encrypted at rest and this host cannot: {why}; omit persistent, or send false"),
            ));
        }
        Ok(())
    }

    /// A persistent node's layer for its spec, and the layer's key for the instruction; the
    /// image is formatted at the node's first start. `None` for other nodes.
    pub(super) async fn layer_for(
        &self,
        row: &NodeRow,
        g: &HostGroup,
        start: Start,
    ) -> Result<Option<(LayerMount, Secret<64>)>, DomainError> {
        let kind = self.driver_for(&g.name).persistence();
        if !row.persistent || kind == Persistence::Unsupported {
            return Ok(None);
        }
        // A jail's layer image, made here; a microVM's LUKS root disk, made by its driver
        // (`NodePrep::persistent_key`) at the first start.
        let image = match kind {
            Persistence::EncryptedDisk => self.node_dir(&row.name).join(VM_DISK),
            _ => self.node_dir(&row.name).join(LAYER_IMAGE),
        };
        let id = row.id.to_string();
        let key = self.key().derive("layer", &id);
        let layer = LayerMount {
            image: image.clone(),
            key_id: layer_key_id(&id),
        };
        let exists = image.exists();
        match (start, exists) {
            (_, true) => {}
            (Start::Fresh, false) if kind == Persistence::EncryptedDisk => {}
            (Start::Fresh, false) => {
                let bytes = row.storage_bytes.unwrap_or(g.storage_bytes);
                let (owner, k) = (self.uid_base, Secret::<64>::from_slice(key.expose()));
                let k = k.ok_or_else(|| DomainError::internal("layer key"))?;
                tokio::task::spawn_blocking(move || {
                    bulkhead_storage::ext4img::format_encrypted(
                        &image,
                        bytes,
                        layer_inodes(bytes),
                        owner,
                        owner,
                        &k,
                    )
                })
                .await
                .map_err(|e| DomainError::internal(format!("making the persistent layer: {e}")))?
                .map_err(|e| DomainError::internal(format!("making the persistent layer: {e}")))?;
            }
            (_, false) => {
                return Err(DomainError::new(
                    Code::NodeFailed,
                    format!(
                        "node {:?}'s persistent layer {} is gone: delete the node",
                        row.name,
                        image.display()
                    ),
                ))
            }
        }
        Ok(Some((layer, key)))
    }

    /// At a daemon stop with `graceful_shutdown: false`: a persistent node's processes end,
    /// its record (with its state as it was) and its directory stay for the next start.
    pub(super) async fn keep_persistent(&self, name: &str) {
        if let Ok(node) = self.node(name) {
            if node.row().status.is_live() {
                self.sync_node(&node).await;
            }
        }
        self.clear_processes(name).await;
        tracing::info!(node = %name, "persistent node stopped with the daemon; its layer is kept");
    }

    /// At a daemon start, for a node whose supervisor is gone: whether reconciliation keeps
    /// it (a persistent node that was Running, Paused or Stopped) and, if it ran, remembers
    /// it for [`Tenant::relaunch_kept`].
    pub(super) fn keep_at_start(&self, row: &NodeRow) -> bool {
        if !row.persistent {
            return false;
        }
        match row.status {
            NodeState::Running | NodeState::Paused => {
                self.kept
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(row.name.clone());
                true
            }
            NodeState::Stopped => true,
            _ => false,
        }
    }

    /// Relaunches, in the background, the persistent nodes that ran when the daemon (or the
    /// host) went; called once the tenant is open (network, standbys). A failed relaunch
    /// leaves the node Stopped (its layer kept), as any failed relaunch does.
    pub fn relaunch_kept(self: &Arc<Self>) {
        let names = std::mem::take(&mut *self.kept.lock().unwrap_or_else(|p| p.into_inner()));
        for name in names {
            let t = self.clone();
            tokio::spawn(async move {
                t.mark_stopped(&name).await;
                let Ok(node) = t.node(&name) else { return };
                let t0 = Instant::now();
                match t.relaunch(&node, Wait::Agent, RELAUNCH_TIMEOUT).await {
                    Ok(_) => {
                        tracing::info!(node = %name, ms = t0.elapsed().as_millis() as u64, "persistent node relaunched at start with its layer")
                    }
                    Err(e) => {
                        tracing::warn!(node = %name, error = %e, "persistent node could not be relaunched at start; it is Stopped")
                    }
                }
            });
        }
    }
}

/// Before a node's directory is wiped (`bulkhead_driver::cleanup`, which overwrites its
/// persistent layer or LUKS disk with every other file in it): waits until no loop device
/// backs its layer image any more (the node's mount namespace releases it as its last
/// process goes), so that the wipe's zeros are not followed by a late write-back through the
/// device. Blocking.
pub(super) fn release_layer(node_dir: &Path) {
    let image = node_dir.join(LAYER_IMAGE);
    if !image.exists() {
        return;
    }
    let until = Instant::now() + Duration::from_secs(10);
    while matches!(bulkhead_storage::loopdev::find_backing(&image), Ok(Some(_)))
        && Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Ok(Some(dev)) = bulkhead_storage::loopdev::find_backing(&image) {
        tracing::warn!(image = %image.display(), device = %dev.display(), "a loop device still backs the layer; wiping it anyway");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_have_inodes_for_their_size() {
        assert_eq!(layer_inodes(16 << 20), 4096);
        assert_eq!(layer_inodes(1 << 30), 65536);
    }
}
