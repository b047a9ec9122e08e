//! Attaching volumes to a node (#13, attach): what the daemon adds to a node's start once the
//! create path (helper B's bookkeeping) has decided which volumes a node gets.
//!
//! - The supervisor's instruction: the SHA-256 of the exact `spec.json` bytes written, and
//!   each volume's key (`TenantKey::derive("volume", key_id)`), sent on the supervisor's stdin
//!   and never written anywhere (`bulkhead_driver::instruction`). A supervisor refuses a spec
//!   whose digest differs, or one naming volumes without an instruction: an edited spec file
//!   attaches nothing. Its refusal line is counted here
//!   (`bulkhead_volume_attach_refused_total{reason="spec_mismatch"}`), and so is its failure
//!   to mount a jail node's volume (`bulkhead_volume_mount_failures_total`, #14).
//! - A microVM's volumes (`VolumeAttach::GuestAgent`): once its agent answers, the agent is
//!   asked to mount each one (`mount_volume`, key over the agent channel); a failure fails the
//!   create and is counted (`bulkhead_volume_mount_failures_total`).
//!
//! Invariant: keys live in zero-on-drop buffers only, for the time of one start.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bulkhead_core::{Code, DomainError};
use bulkhead_driver::instruction::{self, Line};
use bulkhead_driver::{files, VolumeAttach, VolumeMount};

use super::attach_counters::{mount_failure, spec_refusal};
use super::Tenant;

impl Tenant {
    /// The instruction for the supervisor about to read `spec_bytes`: their digest, the
    /// keys of `volumes` and `extra` keys (key id, key): a persistent node's layer key (#13,
    /// persistent nodes), the key of the commit a jail node starts from (#13 commit and fork).
    pub(super) fn supervisor_instruction(
        &self,
        spec_bytes: &[u8],
        volumes: &[VolumeMount],
        extra: &[(&str, &bulkhead_storage::Secret<64>)],
    ) -> Result<Line, DomainError> {
        let extra = extra.iter().map(|(id, k)| (*id, k.expose()));
        if volumes.is_empty() {
            return Ok(instruction::line(spec_bytes, &Vec::from_iter(extra)));
        }
        let tk = self.key();
        let keys: Vec<(String, bulkhead_storage::Secret<64>)> = volumes
            .iter()
            .map(|v| (v.key_id.clone(), tk.derive("volume", &v.key_id)))
            .collect();
        let refs: Vec<(&str, &[u8; 64])> = keys
            .iter()
            .map(|(id, k)| (id.as_str(), k.expose()))
            .chain(extra)
            .collect();
        Ok(instruction::line(spec_bytes, &refs))
    }

    /// Counts a supervisor's refusal of its spec, or its failure to mount a volume in the
    /// node (its `error` line), for node `name`.
    pub(super) fn note_supervisor_answer(&self, name: &str, line: &str) {
        if let Some(msg) = spec_refusal(line) {
            self.attach
                .refused_spec_mismatch
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(tenant = %self.name, node = %name, message = %msg, "a node supervisor refused its spec");
            self.ev_spec_refused(name, msg); // #14, part B
        } else if let Some(msg) = mount_failure(line) {
            self.attach.mount_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(tenant = %self.name, node = %name, message = %msg, "a node's volume could not be mounted");
            self.ev_mount_failed(name, &DomainError::internal(msg)); // #14
        }
    }

    /// The volumes a create attaches, as its node's spec names them (helper B's records made
    /// into mounts), `exec` as the tenant's policy says; refused on a driver without volumes.
    pub(super) fn node_volumes(
        &self,
        group: &str,
        req: &[bulkhead_api::VolumeAttach],
    ) -> Result<Vec<VolumeMount>, DomainError> {
        let mut v = self.volume_mounts(req)?;
        for m in &mut v {
            m.exec = self.cfg.policy.volumes_exec;
        }
        self.check_volume_driver(group, &v)?;
        Ok(v)
    }

    /// The volumes a node holds as the store records them, for its start again (relaunch,
    /// restore): the same images, paths and flags as at its create.
    pub(super) fn recorded_volumes(
        &self,
        node: &str,
        group: &str,
    ) -> Result<Vec<VolumeMount>, DomainError> {
        let view = self.store.volumes();
        let req: Vec<bulkhead_api::VolumeAttach> = view
            .attached_to(node)
            .map(|a| bulkhead_api::VolumeAttach {
                id: a.volume.to_string(),
                path: a.path.clone(),
                read_only: a.read_only,
            })
            .collect();
        self.node_volumes(group, &req)
    }

    /// Refuses volumes on a driver that cannot take them.
    fn check_volume_driver(&self, group: &str, volumes: &[VolumeMount]) -> Result<(), DomainError> {
        let d = self.driver_for(group);
        if !volumes.is_empty() && d.volume_attach() == VolumeAttach::Unsupported {
            return Err(DomainError::new(
                Code::Unsupported,
                format!(
                    "the {} driver of host group {group:?} cannot attach volumes: omit volumes, or use a jail or qemu host group",
                    d.name()
                ),
            ));
        }
        Ok(())
    }

    /// A microVM's volumes, once its agent answers: asks the guest's agent to mount each one.
    /// Nothing to do for a driver whose supervisor mounted them already.
    pub(super) async fn mount_in_guest(
        &self,
        name: &str,
        group: &str,
        volumes: &[VolumeMount],
        deadline: Instant,
    ) -> Result<(), DomainError> {
        if volumes.is_empty() || self.driver_for(group).volume_attach() != VolumeAttach::GuestAgent
        {
            return Ok(());
        }
        let r = self.mount_in_guest_now(name, volumes, deadline).await;
        if let Err(e) = &r {
            self.attach.mount_failures.fetch_add(1, Ordering::Relaxed);
            self.ev_mount_failed(name, e); // #14, part B
        }
        r
    }

    async fn mount_in_guest_now(
        &self,
        name: &str,
        volumes: &[VolumeMount],
        deadline: Instant,
    ) -> Result<(), DomainError> {
        self.wait_agent(name, deadline).await?;
        let sock = self.node_dir(name).join(files::AGENT_SOCKET);
        let client = bulkhead_agent::client::AgentClient::new(&sock);
        let info = client.ping().await.map_err(super::agent_error)?;
        let tk = self.key();
        for v in volumes {
            let key = tk.derive("volume", &v.key_id);
            let req = bulkhead_agent::proto::MountVolume {
                serial: v.serial(),
                path: v.path.clone(),
                read_only: v.read_only,
                exec: v.exec,
                key: key.expose().iter().map(|b| format!("{b:02x}")).collect(),
            };
            drop(key);
            let conn = client.connect().await.map_err(super::agent_error)?;
            conn.with_peer(Some(info.clone()))
                .mount_volume(req)
                .await
                .map_err(|e| {
                    DomainError::new(
                        Code::NodeFailed,
                        format!(
                            "node {name:?} could not mount volume {} at {}: {e}; the node was removed",
                            v.id, v.path
                        ),
                    )
                })?;
        }
        Ok(())
    }
}
