//! Commit and fork (#13, ADR 0030): a node's root filesystem, read through its agent (the
//! node's own view, the same for a jail and a microVM), sealed into a tenant-private commit;
//! nodes started from a commit (`image: <commit id>` at create, or a fork) get its tree as
//! their image. The host-side file work is `crate::commit`; the tree is kept only in an
//! fscrypt-encrypted image (ADR 0041), so a host without fscrypt refuses commits (400
//! `unsupported` naming the missing protection), as it refuses persistent nodes.
//!
//! Invariants:
//! - a commit is visible (listed, usable) only once its row exists, and its row is written
//!   only after its sealed file is complete and its image for the node's driver was made
//!   from that file (so a commit that cannot be used is refused at once, not at a fork);
//!   a daemon killed at any step leaves files without a row, which start-up wipes;
//! - every lookup is by this tenant's store: a commit id of another tenant is unknown here
//!   (404, the same answer as an id that never existed);
//! - a commit is not deleted while a node of the tenant was made from it (409 naming them):
//!   a stopped node relaunches from the same tree;
//! - the node's volumes are left out (their mount points stay, empty): they are the tenant's
//!   volumes, not the node's root filesystem;
//! - a commit counts toward the tenant's `storage` quota by its recorded size from its row's
//!   insert to its delete: the quota is checked in the store's writer job that inserts the
//!   row (atomic with every other storage check), and the stream is stopped once it passes
//!   what the quota left at its start (`quota.rs` says why not a reservation); a refused
//!   commit leaves nothing (its sealed file and tree are wiped, it has no row);
//! - the tar is read with the node running (no pause: the agent that reads it lives in the
//!   node, and pausing would stop it too); files written meanwhile may be caught mid-write.

use bulkhead_api::commits::CommitInfo;
use bulkhead_api::CreateNodeRequest;
use bulkhead_core::{Code, DomainError, HostGroup};
use bulkhead_driver::{persist::commit_key_id, CommitTree, LayerMount};
use bulkhead_storage::Secret;
use bulkhead_store::{CommitId, CommitRow, NodeRow};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use super::conflict::CreateSpec;
use super::{NodeRef, Tenant};
use crate::commit::{self as host, Bounds, CommitError};

/// A commit's image for one driver's nodes, made and ready.
pub(super) struct CommitImage {
    pub id: String,
    pub image: PathBuf,
}

/// How a node starts from its commit, as its driver takes it (`Driver::commit_tree`).
#[derive(Default)]
pub(super) struct CommitStart {
    /// For the spec and the instruction (key id, key): the supervisor opens the image (a jail).
    pub mount: Option<(LayerMount, Secret<64>)>,
    /// For `prepare_node`: the daemon mounts the tree for that call alone (a microVM's disk).
    pub prepare: Option<CommitImage>,
}

/// Runs `f` (a driver's `prepare_node`) with the tree of `commit` at a path only this call
/// sees, or with `None` when the node takes no tree while it is prepared. Blocking.
pub(super) fn with_commit_tree<T: Send>(
    key: &host::seal::Key,
    tenant_dir: &std::path::Path,
    commit: Option<&CommitImage>,
    f: impl FnOnce(Option<&std::path::Path>) -> T + Send,
) -> Result<T, DomainError> {
    match commit {
        None => Ok(f(None)),
        Some(c) => host::image::with_tree(key, tenant_dir, &c.id, &c.image, |p| f(Some(p)))
            .map_err(|e| DomainError::internal(format!("mounting commit {}: {e}", c.id))),
    }
}

/// What a commit never reads: what the driver mounts (processes, devices, the agent), the
/// node's secrets and identity (`/run`), and scratch space (`/tmp`). The mount points
/// themselves are kept, empty.
const EXCLUDE: &[&str] = &["proc/*", "sys/*", "dev/*", "run/*", "tmp/*", ".bulkhead/*"];

fn not_found(id: &str) -> DomainError {
    DomainError::not_found(format!(
        "commit {:?} not found: `GET /vm/commits` lists this tenant's commits",
        id.chars().take(64).collect::<String>()
    ))
}

fn commit_error(node: &str, e: CommitError) -> DomainError {
    match e {
        CommitError::TooLarge { .. } => {
            DomainError::new(Code::NoSpace, format!("committing node {node:?}: {e}"))
        }
        CommitError::Unpack(u) => DomainError::new(
            Code::InvalidArchive,
            format!("node {node:?}'s root filesystem cannot be committed: {u}; nothing was kept"),
        ),
        e => DomainError::internal(format!("committing node {node:?}: {e}")),
    }
}

/// `p` as a pattern matching exactly itself (the agent's patterns are Go's `path.Match`).
fn glob_escape(p: &str) -> String {
    p.chars()
        .flat_map(|c| match c {
            '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

/// Size of the files under `p` (apparent, no symlink followed).
fn tree_bytes(p: &std::path::Path) -> u64 {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if !md.is_dir() {
        return md.len();
    }
    std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| tree_bytes(&e.path()))
        .sum()
}

impl Tenant {
    fn commit_info(&self, c: &CommitRow) -> CommitInfo {
        CommitInfo {
            id: c.id.to_string(),
            tenant: self.name.clone(),
            node: c.node.clone(),
            hostgroup: c.hostgroup.clone(),
            size_bytes: c.size_bytes,
            created_at: c.created_at.clone(),
        }
    }

    fn commit_key(&self) -> Result<host::seal::Key, DomainError> {
        Ok(self.key().clone())
    }

    /// Commits keep their trees only fscrypt-encrypted: refused (400 `unsupported`, naming
    /// the missing protection from the probe at start) on a host without fscrypt.
    fn check_commit_protection(&self) -> Result<(), DomainError> {
        match super::persist::fscrypt_missing(&self.host.protection) {
            Some(why) => Err(DomainError::new(
                Code::Unsupported,
                format!("a commit's tree is kept encrypted at rest and this host cannot: {why}"),
            )),
            None => Ok(()),
        }
    }

    fn commit_bounds(&self, max_bytes: u64) -> Bounds {
        Bounds {
            max_entries: host::MAX_ENTRIES,
            max_bytes,
            strip_setid: self.admission.no_setid(),
        }
    }

    /// `POST /vm/{node}/commit`: runs to its end even if the caller goes away (a commit cut
    /// short leaves nothing, but one that got far should land).
    pub async fn commit_node(self: &Arc<Self>, node: &NodeRef) -> Result<CommitInfo, DomainError> {
        let (t, name) = (self.clone(), node.name().to_string());
        super::power::to_completion(async move { t.commit_now(&name).await }).await
    }

    async fn commit_now(self: &Arc<Self>, name: &str) -> Result<CommitInfo, DomainError> {
        let node = self.running_node(name)?;
        self.check_commit_protection()?;
        let row = node.row().clone();
        let g = self.group(&row.hostgroup)?.clone();
        let driver = self.driver_for(&g.name).clone();
        let key = self.commit_key()?;
        // Bound: what the node can hold, its writable storage and the image below it (the
        // commit it was made from, or the tenant's image in the host's image store,
        // `<state>/images/<name>/rootfs`).
        let from = match spec_image(&row) {
            Some(id) => self.find_commit(&id).await.ok().map(|c| c.size_bytes),
            None => None,
        };
        let base = self
            .dir
            .parent()
            .and_then(|p| p.parent())
            .map(|state| state.join("images").join(&self.cfg.image).join("rootfs"));
        let image_bytes = match (from, base) {
            (Some(b), _) => b,
            (None, Some(t)) => tokio::task::spawn_blocking(move || tree_bytes(&t))
                .await
                .unwrap_or(0),
            (None, None) => 0,
        };
        let limit = g.storage_bytes + image_bytes + (64 << 20);
        // The storage quota (#13): never stream more than it leaves now.
        let (cap, by_quota) =
            super::quota::commit_cap(&self.cfg.quotas, self.storage_used(), limit);
        // Volumes attached to the node are theirs, not its root filesystem's: their mount
        // points stay, empty.
        let mut exclude: Vec<String> = EXCLUDE.iter().map(|s| s.to_string()).collect();
        exclude.extend(
            self.store
                .volumes()
                .attached_to(name)
                .map(|a| format!("{}/*", glob_escape(a.path.trim_matches('/')))),
        );
        let mut out = self.copy_out_excluding(&node, "/", exclude).await?;
        let id = CommitId::new().to_string();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let (tenant, dir, id2, key2) =
            (self.name.clone(), self.dir.clone(), id.clone(), key.clone());
        let writer = tokio::task::spawn_blocking(move || {
            host::write_sealed(&key2, &tenant, &dir, &id2, host::ChanReader::new(rx, cap))
        });
        loop {
            let chunk = match out.next_chunk().await {
                Ok(Some(c)) => Ok(c),
                Ok(None) => break,
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let failed = chunk.is_err();
            if tx.send(chunk).await.is_err() || failed {
                break;
            }
        }
        drop(tx);
        drop(out);
        let size = match writer
            .await
            .map_err(|e| DomainError::internal(format!("committing node {name:?}: {e}")))?
        {
            Ok(size) => size,
            Err(CommitError::TooLarge { read, .. }) if by_quota => {
                let used = self.storage_used();
                return Err(super::quota::commit_cut(
                    &self.cfg.quotas,
                    &self.quota_key(),
                    used,
                    read,
                ));
            }
            Err(e) => return Err(commit_error(name, e)),
        };
        // The image for the node's driver, from the sealed file: proves the file opens and
        // refuses hostile content now rather than at a fork.
        let bounds = self.commit_bounds(limit);
        let (tenant, dir, id2) = (self.name.clone(), self.dir.clone(), id.clone());
        let drv = driver.clone();
        let built = tokio::task::spawn_blocking(move || {
            let owner = |u, g| drv.image_owner(u, g);
            host::image::ensure_image(&key, &tenant, &dir, &id2, drv.name(), &owner, bounds)
        })
        .await
        .map_err(|e| DomainError::internal(format!("committing node {name:?}: {e}")));
        let built = match built {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(commit_error(name, e)),
            Err(e) => Err(e),
        };
        let c = CommitRow {
            id: CommitId::parse(&id).map_err(|e| DomainError::internal(e.to_string()))?,
            node: row.name.clone(),
            hostgroup: row.hostgroup.clone(),
            size_bytes: size,
            state: "ready".into(),
            created_at: crate::fsutil::now_rfc3339(),
        };
        // The storage quota, checked with the insert: nothing can come between (#13).
        let me = self.clone();
        let recorded = match built {
            Ok(()) => {
                self.store
                    .insert_commit_checked(c.clone(), move |j| {
                        let nodes = super::quota::usage(&me.cfg, j.nodes.rows());
                        let stored = j.volumes.storage_bytes().saturating_add(j.commit_bytes);
                        me.storage_fits(nodes, stored, size)
                    })
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = recorded {
            let dir = self.dir.clone();
            let _ = tokio::task::spawn_blocking(move || host::sweep::remove(&dir, &id)).await;
            return Err(e);
        }
        tracing::info!(node = %name, commit = %c.id, bytes = size, "node committed");
        Ok(self.commit_info(&c))
    }

    /// `GET /vm/commits`.
    pub async fn list_commits(&self) -> Result<Vec<CommitInfo>, DomainError> {
        Ok(self
            .store
            .commits()
            .await?
            .iter()
            .map(|c| self.commit_info(c))
            .collect())
    }

    /// One of this tenant's commits; anything else (malformed, unknown, another tenant's) is
    /// the same 404.
    pub async fn find_commit(&self, id: &str) -> Result<CommitRow, DomainError> {
        let Ok(cid) = CommitId::parse(id) else {
            return Err(not_found(id));
        };
        self.store.commit(cid).await?.ok_or_else(|| not_found(id))
    }

    /// Whether this tenant has the commit (the daemon-wide routes search the caller's
    /// tenants with it).
    pub async fn has_commit(&self, id: &str) -> bool {
        self.find_commit(id).await.is_ok()
    }

    pub async fn commit_info_of(&self, id: &str) -> Result<CommitInfo, DomainError> {
        Ok(self.commit_info(&self.find_commit(id).await?))
    }

    /// The tenant's nodes made from commit `id`.
    fn nodes_from(&self, id: &str) -> Vec<String> {
        self.list()
            .rows()
            .iter()
            .filter(|r| spec_image(r).as_deref() == Some(id))
            .map(|r| r.name.clone())
            .collect()
    }

    /// `DELETE /vm/commits/{id}`: refused (409) while nodes made from it exist; else its
    /// record goes first (it is no longer usable), then its files are wiped.
    pub async fn delete_commit(&self, id: &str) -> Result<(), DomainError> {
        let c = self.find_commit(id).await?;
        let id = c.id.to_string();
        let users = self.nodes_from(&id);
        if !users.is_empty() {
            return Err(DomainError::new(
                Code::Conflict,
                format!(
                    "commit {id} is the image of node(s) {}: delete them first (a stopped node would relaunch from it)",
                    users.join(", ")
                ),
            ));
        }
        self.store.delete_commit(c.id).await?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || host::sweep::remove(&dir, &id))
            .await
            .map_err(|e| DomainError::internal(format!("wiping the commit: {e}")))?;
        Ok(())
    }

    /// A create's `image`: a commit of this tenant's (404 naming it otherwise), or the
    /// tenant's image name (which nodes boot anyway); anything else is refused.
    pub async fn check_create_image(&self, req: &CreateNodeRequest) -> Result<(), DomainError> {
        let Some(image) = req.image.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(());
        };
        if super::conflict::commit_image(req).is_some() {
            return self.find_commit(image).await.map(|_| ());
        }
        if image == self.cfg.image {
            return Ok(());
        }
        Err(DomainError::not_found(format!(
            "image {image:?} is neither this tenant's image ({:?}) nor one of its commits: give a commit id from `GET /vm/commits`, or omit image",
            self.cfg.image
        )))
    }

    /// How a node starts from its commit, if it was made from one: the image's mount and
    /// key for a driver whose supervisor opens it, else the image for `prepare_node`.
    pub(super) async fn commit_start(
        &self,
        row: &NodeRow,
        g: &HostGroup,
    ) -> Result<CommitStart, DomainError> {
        let Some(c) = self.commit_image_of(row, g).await? else {
            return Ok(CommitStart::default());
        };
        Ok(match self.driver_for(&g.name).commit_tree() {
            CommitTree::Supervisor => {
                let key = host::image::key_of(self.key(), &c.id);
                let mount = LayerMount {
                    image: c.image,
                    key_id: commit_key_id(&c.id),
                };
                CommitStart {
                    mount: Some((mount, key)),
                    prepare: None,
                }
            }
            CommitTree::Prepare => CommitStart {
                mount: None,
                prepare: Some(c),
            },
        })
    }

    /// The commit a node starts from, if any, with its image for the node's group's driver
    /// (made now if it is not there yet). `None`: the tenant's image.
    pub(super) async fn commit_image_of(
        &self,
        row: &NodeRow,
        g: &HostGroup,
    ) -> Result<Option<CommitImage>, DomainError> {
        let Some(id) = spec_image(row) else {
            return Ok(None);
        };
        let c = self.find_commit(&id).await.map_err(|_| {
            DomainError::new(
                Code::NodeFailed,
                format!(
                    "node {:?} was made from commit {id}, which is gone",
                    row.name
                ),
            )
        })?;
        self.check_commit_protection()?;
        let key = self.commit_key()?;
        let driver = self.driver_for(&g.name).clone();
        let bounds = self.commit_bounds(c.size_bytes);
        let (tenant, dir, id2) = (self.name.clone(), self.dir.clone(), id.clone());
        let image = tokio::task::spawn_blocking(move || {
            let owner = |u, g| driver.image_owner(u, g);
            host::image::ensure_image(&key, &tenant, &dir, &id2, driver.name(), &owner, bounds)
        })
        .await
        .map_err(|e| DomainError::internal(format!("preparing commit {}: {e}", c.id)))?
        .map_err(|e| commit_error(&row.name, e))?;
        Ok(Some(CommitImage { id, image }))
    }

    /// At start, before serving: wipes commit files and images no row explains (a commit cut
    /// short by a crash), every partial one, and an earlier version's plaintext trees of
    /// commits no node was made from.
    pub async fn sweep_commits(&self) {
        let known = match self.store.commits().await {
            Ok(rows) => rows,
            Err(e) => {
                // Without the rows nothing can be told apart: keep every file.
                tracing::error!(tenant = %self.name, error = %e, "reading commits at start; none swept");
                return;
            }
        };
        let known: HashSet<String> = known.iter().map(|c| c.id.to_string()).collect();
        let in_use: HashSet<String> = self
            .list()
            .rows()
            .iter()
            .filter_map(|r| spec_image(r))
            .collect();
        let dir = self.dir.clone();
        let s = tokio::task::spawn_blocking(move || host::sweep::sweep(&dir, &known, &in_use))
            .await
            .unwrap_or_default();
        if s.partial + s.orphans > 0 {
            tracing::warn!(
                tenant = %self.name,
                partial = s.partial,
                orphans = s.orphans,
                "wiped commits a stopped daemon left unfinished"
            );
        }
        if s.legacy > 0 {
            tracing::info!(
                tenant = %self.name,
                trees = s.legacy,
                "wiped the plaintext trees of commits an earlier version kept (their encrypted images are made on first use)"
            );
        }
    }
}

/// The commit a node was made from, from its recorded create spec.
fn spec_image(r: &NodeRow) -> Option<String> {
    r.spec
        .as_deref()
        .and_then(|s| serde_json::from_str::<CreateSpec>(s).ok())
        .and_then(|s| s.image)
}
