//! Secrets (#13): the tenant's named secrets (Slicer's `/secrets`), sealed with the tenant's
//! data key, and their delivery to the nodes that ask for them at create
//! (`"secrets": ["db-password"]`).
//!
//! Invariants:
//! - a secret's plaintext exists only in this module's memory, for the moment of sealing or of
//!   writing it into a node (zeroed after), and in the node's tmpfs: never in the state
//!   database (sealed: AES-256-GCM under the tenant's key, AAD naming the tenant and the
//!   secret, so a row copied to another name or tenant does not open), never in a log line,
//!   an error, a metric or a file of the host;
//! - a node gets exactly the secrets its create named (recorded in its spec), each at
//!   `/run/secrets/<name>` on the tmpfs its init mounted there (nosuid, nodev, noexec,
//!   size-bounded), with the secret's owner and mode, after its agent first answers and before
//!   its userdata runs (`userdata.rs` calls [`Tenant::deliver_secrets`]);
//! - plaintext goes only onto a tmpfs: the agent writes a secret (`tmpfs_only`) only into a
//!   directory it reached without a symlink and found to be a tmpfs (fstatfs), else refuses
//!   (`not_tmpfs`, nothing written: a node whose root unmounted its `/run/secrets` gets no
//!   secret, and the delivery fails as any delivery error does); an agent without that check
//!   is given nothing;
//! - a node is given the secret's content as it is when the node (re)starts: a PATCH does not
//!   reach running nodes (a relaunch picks it up); a secret deleted since is skipped, logged
//!   by name.

use bulkhead_agent::client::{AgentInfo, CopyInRequest};
use bulkhead_agent::proto::CAP_TMPFS_ONLY;
use bulkhead_api::secrets::{self as wire, CreateSecretRequest, Secret, UpdateSecretRequest};
use bulkhead_core::{Code, DomainError};
use bulkhead_store::{SecretMeta, SecretPatch, SecretRow};

use super::Tenant;
use crate::fsutil::now_rfc3339;

/// Where a node finds its secrets (a tmpfs its init mounts).
pub const SECRETS_DIR: &str = "/run/secrets";

/// At most this many secrets per node (the node's tmpfs is sized for them).
pub const MAX_NODE_SECRETS: usize = 16;

fn no_secret(name: &str) -> DomainError {
    DomainError::not_found(format!(
        "secret {name:?} not found: `GET /secrets` lists this tenant's secrets"
    ))
}

/// Overwrites plaintext before it is freed.
fn wipe(mut b: Vec<u8>) {
    b.iter_mut().for_each(|x| *x = 0);
    std::hint::black_box(&b);
}

fn to_wire(m: SecretMeta) -> Secret {
    Secret {
        name: m.name,
        size: m.size,
        permissions: wire::format_permissions(m.permissions),
        uid: m.uid,
        gid: m.gid,
        modified_at: m.updated_at.clone(),
        mod_time: m.updated_at,
        created_at: m.created_at,
    }
}

impl Tenant {
    /// What the secret `name`'s content is bound to: this tenant and this name.
    fn secret_aad(&self, name: &str) -> Vec<u8> {
        format!("bulkhead/v1/secret/{}/{name}", self.name).into_bytes()
    }

    /// The tenant's secrets, metadata only.
    pub async fn list_secrets(&self) -> Result<Vec<Secret>, DomainError> {
        Ok(self
            .store
            .secrets()
            .await?
            .into_iter()
            .map(to_wire)
            .collect())
    }

    /// `POST /secrets`: a new secret (409 `already_exists` when the name is taken).
    pub async fn create_secret(&self, req: CreateSecretRequest) -> Result<(), DomainError> {
        wire::validate_name(&req.name).map_err(DomainError::invalid)?;
        let permissions = match &req.permissions {
            Some(p) if !p.is_empty() => wire::parse_permissions(p).map_err(DomainError::invalid)?,
            _ => wire::DEFAULT_PERMISSIONS,
        };
        let (uid, gid) = (req.uid.unwrap_or(0), req.gid.unwrap_or(0));
        wire::validate_owner("uid", uid).map_err(DomainError::invalid)?;
        wire::validate_owner("gid", gid).map_err(DomainError::invalid)?;
        let plain = req.data.decode().map_err(DomainError::invalid)?;
        let size = plain.len() as u64;
        let sealed = self.key().seal(&self.secret_aad(&req.name), &plain);
        wipe(plain);
        let now = now_rfc3339();
        let row = SecretRow {
            meta: SecretMeta {
                name: req.name.clone(),
                size,
                permissions,
                uid,
                gid,
                created_at: now.clone(),
                updated_at: now,
            },
            sealed,
        };
        if !self.store.insert_secret(row).await? {
            return Err(DomainError::new(
                Code::AlreadyExists,
                format!(
                    "secret {:?} already exists: change it with PATCH /secrets/{}, or delete it first",
                    req.name, req.name
                ),
            ));
        }
        tracing::info!(tenant = %self.name, secret = %req.name, size, "secret created");
        Ok(())
    }

    /// `PATCH /secrets/{name}`: changes what is given; an empty `data` keeps the content.
    pub async fn update_secret(
        &self,
        name: &str,
        req: UpdateSecretRequest,
    ) -> Result<Secret, DomainError> {
        if wire::validate_name(name).is_err() {
            return Err(no_secret(name));
        }
        let permissions = match req.permissions.as_deref() {
            Some(p) if !p.is_empty() => {
                Some(wire::parse_permissions(p).map_err(DomainError::invalid)?)
            }
            _ => None,
        };
        for (what, id) in [("uid", req.uid), ("gid", req.gid)] {
            if let Some(id) = id {
                wire::validate_owner(what, id).map_err(DomainError::invalid)?;
            }
        }
        let content = match req.data.as_ref().filter(|d| !d.0.is_empty()) {
            Some(d) => {
                let plain = d.decode().map_err(DomainError::invalid)?;
                let size = plain.len() as u64;
                let sealed = self.key().seal(&self.secret_aad(name), &plain);
                wipe(plain);
                Some((sealed, size))
            }
            None => None,
        };
        let changed_content = content.is_some();
        let patch = SecretPatch {
            content,
            permissions,
            uid: req.uid,
            gid: req.gid,
            updated_at: now_rfc3339(),
        };
        let m = self
            .store
            .update_secret(name, patch)
            .await?
            .ok_or_else(|| no_secret(name))?;
        tracing::info!(tenant = %self.name, secret = %name, content = changed_content, "secret updated");
        Ok(to_wire(m))
    }

    /// `DELETE /secrets/{name}`. Nodes that have it keep their copy until they stop.
    pub async fn delete_secret(&self, name: &str) -> Result<(), DomainError> {
        if wire::validate_name(name).is_err() || !self.store.delete_secret(name).await? {
            return Err(no_secret(name));
        }
        tracing::info!(tenant = %self.name, secret = %name, "secret deleted");
        Ok(())
    }

    /// A create's `secrets`: valid, each once, at most [`MAX_NODE_SECRETS`], and every one a
    /// secret of this tenant (400 naming those that are not). Returns them sorted.
    pub(super) async fn check_node_secrets(
        &self,
        names: &[String],
    ) -> Result<Vec<String>, DomainError> {
        let mut names = names.to_vec();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Ok(names);
        }
        if names.len() > MAX_NODE_SECRETS {
            return Err(DomainError::invalid(format!(
                "a node may be given at most {MAX_NODE_SECRETS} secrets, and {} were asked for",
                names.len()
            )));
        }
        for n in &names {
            wire::validate_name(n).map_err(DomainError::invalid)?;
        }
        let have = self.store.secrets_named(names.clone()).await?;
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !have.iter().any(|h| &h.meta.name == *n))
            .collect();
        if !missing.is_empty() {
            return Err(DomainError::invalid(format!(
                "unknown secret{} {}: create {} with POST /secrets first (`GET /secrets` lists this tenant's)",
                if missing.len() == 1 { "" } else { "s" },
                missing
                    .iter()
                    .map(|m| format!("{m:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if missing.len() == 1 { "it" } else { "them" },
            )));
        }
        Ok(names)
    }

    /// The secrets node `name` was created with (its recorded spec).
    pub(super) fn node_secrets(&self, name: &str) -> Vec<String> {
        self.store
            .get(name)
            .and_then(|r| r.spec.clone())
            .and_then(|s| serde_json::from_str::<super::conflict::CreateSpec>(&s).ok())
            .map(|s| s.secrets)
            .unwrap_or_default()
    }

    /// Writes the node's secrets into its `/run/secrets` tmpfs through its agent (the node's
    /// agent answers already). Called once per start of the node, before its userdata.
    pub(super) async fn deliver_secrets(&self, name: &str) -> Result<(), DomainError> {
        let names = self.node_secrets(name);
        if names.is_empty() {
            return Ok(());
        }
        let rows = self.store.secrets_named(names.clone()).await?;
        for gone in names
            .iter()
            .filter(|n| !rows.iter().any(|r| &r.meta.name == *n))
        {
            tracing::warn!(tenant = %self.name, node = %name, secret = %gone, "a secret the node was created with no longer exists: not given");
        }
        let node = self.running_node(name)?;
        // Only an agent that checks its directory is a tmpfs is given plaintext (an older one
        // would ignore the option and write wherever `/run/secrets` leads).
        let info = self.agent_info(&node).await?;
        if !info.has(CAP_TMPFS_ONLY) {
            return Err(DomainError::new(
                Code::Unsupported,
                format!(
                    "node {name:?}'s agent ({}) cannot check that {SECRETS_DIR} is a tmpfs, so its secrets were not given: recreate the node with this daemon's agent",
                    info.agent_version.as_deref().unwrap_or("version unknown")
                ),
            ));
        }
        for row in rows {
            let m = &row.meta;
            let plain = self
                .key()
                .open(&self.secret_aad(&m.name), &row.sealed)
                .map_err(|e| {
                    DomainError::internal(format!(
                        "secret {:?} does not open with tenant {:?}'s key ({e}): restore the keyring from the backup that sealed it",
                        m.name, self.name
                    ))
                })?;
            let r = self.write_secret(&node, &info, m, &plain).await;
            wipe(plain);
            r.map_err(|e| {
                DomainError::new(
                    e.code,
                    format!("giving secret {:?} to node {name:?}: {}", m.name, e.message),
                )
            })?;
        }
        tracing::info!(tenant = %self.name, node = %name, secrets = names.len(), "secrets given to the node");
        Ok(())
    }

    /// Writes one secret through the node's agent (`info`: what it said of itself), which
    /// refuses (`not_tmpfs`) unless the directory is a tmpfs reached without a symlink.
    async fn write_secret(
        &self,
        node: &super::NodeRef,
        info: &AgentInfo,
        m: &SecretMeta,
        plain: &[u8],
    ) -> Result<(), DomainError> {
        let _turn = self.agent_turn(node).await?;
        let req = CopyInRequest {
            path: format!("{SECRETS_DIR}/{}", m.name),
            tar: false,
            uid: Some(m.uid),
            gid: Some(m.gid),
            mode: Some(m.permissions),
            no_setid: true,
            owners: false,
            tmpfs_only: true,
        };
        let conn = self.agent_conn(node).await?.with_peer(Some(info.clone()));
        let mut up = conn
            .copy_in(req)
            .await
            .map_err(|e| self.agent_failed(node, e))?;
        // A failed write is explained by the agent's answer at the end.
        let _ = up.write(plain).await;
        up.finish()
            .await
            .map(|_| ())
            .map_err(|e| self.agent_failed(node, e))
    }
}
