//! [`Store`]: the handle the daemon holds. Writes are jobs for one dedicated thread that owns
//! the SQLite connection; the caller awaits the job's answer, so no async worker ever blocks
//! on SQLite or on another writer. Reads (`get`, `snapshot`) are served by the index.
//!
//! Invariants:
//! - jobs run one at a time, in the order they were sent, so a job that reads the index and
//!   then writes (`insert_with`, `transition`) is atomic with respect to every other write;
//! - the writer changes the index only after its transaction committed;
//! - a job that panics fails alone (its caller gets [`StoreError::Closed`]); the thread and
//!   the other jobs carry on; the thread ends when the last handle is dropped.

use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{mpsc, Arc};

use bulkhead_core::NodeState;

use crate::db;
use crate::error::StoreError;
use crate::id::NodeId;
use crate::index::{Index, Snapshot};
use crate::node::{NewNode, NodeRow};

type Job = Box<dyn FnOnce(&mut Writer) + Send>;

/// What the writer thread owns.
pub(crate) struct Writer {
    pub(crate) conn: Connection,
    tenant: String,
    index: Arc<Index>,
    /// Volumes, attachments, snapshots (#13, `volumes.rs`).
    pub(crate) volumes: Arc<crate::volume_rows::VolumeIndex>,
    /// The sum of the commits' recorded sizes (#13, `commits.rs`): changed only here.
    pub(crate) commit_bytes: Arc<AtomicU64>,
}

impl Writer {
    /// The tenant's nodes as committed (#13: volume jobs see them).
    pub(crate) fn node_snapshot(&self) -> Arc<Snapshot> {
        self.index.snapshot()
    }
}

struct Shared {
    tenant: String,
    index: Arc<Index>,
    volumes: Arc<crate::volume_rows::VolumeIndex>, // #13, volumes
    e2b: Arc<crate::e2b::SandboxIndex>,            // #15, A: E2B sandbox records
    commit_bytes: Arc<AtomicU64>,                  // #13: commits count toward `storage`
    jobs: mpsc::Sender<Job>,
}

/// One tenant's state. Cheap to clone; all clones share the writer and the index.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl Store {
    /// Opens (creating or upgrading) the database at `path` and loads `tenant`'s nodes. Blocks
    /// on SQLite: call it at start, or from `spawn_blocking`.
    pub fn open(path: &Path, tenant: &str) -> Result<Store, StoreError> {
        let conn = db::open(path)?;
        let index = Arc::new(Index::load(db::list(&conn, tenant)?));
        let volumes = Arc::new(crate::volume_rows::VolumeIndex::load(&conn)?); // #13
        let e2b = Arc::new(crate::e2b::SandboxIndex::load(&conn)?); // #15, A
        let commit_bytes = Arc::new(AtomicU64::new(db::commit_bytes(&conn)?)); // #13
        let (jobs, rx) = mpsc::channel::<Job>();
        let mut w = Writer {
            conn,
            tenant: tenant.to_string(),
            index: index.clone(),
            volumes: volumes.clone(),
            commit_bytes: commit_bytes.clone(),
        };
        std::thread::Builder::new()
            .name("bulkhead-store".into())
            .spawn(move || {
                for job in rx {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut w)));
                    if r.is_err() {
                        tracing::error!("a state database job panicked; its request failed");
                    }
                }
            })
            .map_err(StoreError::Thread)?;
        Ok(Store {
            shared: Arc::new(Shared {
                tenant: tenant.to_string(),
                index,
                volumes,
                e2b,
                commit_bytes,
                jobs,
            }),
        })
    }

    pub fn tenant(&self) -> &str {
        &self.shared.tenant
    }

    pub(crate) fn volume_index(&self) -> &crate::volume_rows::VolumeIndex {
        &self.shared.volumes
    }

    /// #13: the sum of the commits' recorded sizes (`commits.rs`).
    pub(crate) fn commit_bytes_counter(&self) -> &AtomicU64 {
        &self.shared.commit_bytes
    }

    // #15, A: E2B sandbox records (`e2b.rs`)
    pub(crate) fn e2b_index(&self) -> &crate::e2b::SandboxIndex {
        &self.shared.e2b
    }
    pub(crate) fn e2b_index_arc(&self) -> Arc<crate::e2b::SandboxIndex> {
        self.shared.e2b.clone()
    }

    // ---- reads: the index, never SQLite ------------------------------------------------

    /// The node called `name`, as last committed.
    pub fn get(&self, name: &str) -> Option<Arc<NodeRow>> {
        self.shared.index.get(name)
    }

    /// All of the tenant's nodes at this moment, in list order.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.index.snapshot()
    }

    // ---- writes: jobs for the writer thread ----------------------------------------------

    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Writer) -> R + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |w| {
            let _ = tx.send(f(w));
        });
        self.shared.jobs.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Sends `f` to the writer thread without waiting for it (#14: events). Jobs still run
    /// in the order they were sent; a closed store drops `f`.
    pub(crate) fn post(&self, f: impl FnOnce(&mut Writer) + Send + 'static) {
        let _ = self.shared.jobs.send(Box::new(f));
    }

    /// Takes the next index of a host group (`<group>-<n>` names), starting at 1. Indexes are
    /// never reused, so a deleted node's name never points at a new node.
    pub async fn next_index(&self, group: &str) -> Result<u64, StoreError> {
        let group = group.to_string();
        self.call(move |w| db::next_index(&mut w.conn, &w.tenant, &group))
            .await?
    }

    /// Records a new node.
    pub async fn insert(&self, node: NewNode) -> Result<Arc<NodeRow>, StoreError> {
        Ok(self
            .insert_with(node, |_, _| Ok::<(), StoreError>(()))
            .await?
            .0)
    }

    /// Records a new node after `pick` saw every other node and completed it (an address, say):
    /// no other write comes between what `pick` saw and the insert. `pick` runs on the writer
    /// thread, so it must be quick and must not block.
    pub async fn insert_with<T, E, F>(&self, node: NewNode, pick: F) -> Result<(Arc<NodeRow>, T), E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Snapshot, &mut NewNode) -> Result<T, E> + Send + 'static,
    {
        self.call(move |w| {
            let mut n = node;
            let picked = pick(&w.index.snapshot(), &mut n)?;
            let row = NodeRow {
                id: NodeId::new(),
                tenant: w.tenant.clone(),
                name: n.name,
                hostgroup: n.hostgroup,
                status: n.status,
                ip: n.ip,
                cpus: n.cpus,
                ram_bytes: n.ram_bytes,
                tags: n.tags,
                persistent: n.persistent,
                created_at: n.created_at,
                cgroup: None,
                network: n.network,
                forwards: "[]".into(),
                userdata: n.userdata,
                userdata_exit: None,
                storage_bytes: n.storage_bytes,
                spec: n.spec,
                expiry: None, // #15 node TTL (B): set once the node runs
            };
            db::insert(&w.conn, &row)?;
            let row = Arc::new(row);
            w.index.put(row.clone());
            Ok((row, picked))
        })
        .await?
    }

    /// Changes a node with `change`, which sees the row as committed: no other write comes
    /// between what it sees and what it writes. `Ok(None)` when there is no such node; an
    /// error from `change` leaves the node as it was. The id, name, group and creation time are
    /// the node's identity and stay as they were; a change that changes nothing writes nothing.
    pub async fn update<E>(
        &self,
        name: &str,
        change: impl FnOnce(&mut NodeRow) -> Result<(), E> + Send + 'static,
    ) -> Result<Option<Arc<NodeRow>>, E>
    where
        E: From<StoreError> + Send + 'static,
    {
        let name = name.to_string();
        self.call(move |w| {
            let Some(cur) = w.index.get(&name) else {
                return Ok(None);
            };
            let mut new = (*cur).clone();
            change(&mut new)?;
            // Identity stays: the index's order and every reference rely on it.
            new.id = cur.id;
            new.tenant.clone_from(&cur.tenant);
            new.name.clone_from(&cur.name);
            new.hostgroup.clone_from(&cur.hostgroup);
            new.created_at.clone_from(&cur.created_at);
            if new == *cur {
                return Ok(Some(cur));
            }
            if !db::update(&w.conn, &new)? {
                w.index.remove(&name);
                return Ok(None);
            }
            let new = Arc::new(new);
            w.index.put(new.clone());
            Ok(Some(new))
        })
        .await?
    }

    /// Moves a node to the state `step` gives for its current one (a state machine's
    /// transition): of concurrent transitions, each sees the state the one before it left.
    pub async fn transition<E>(
        &self,
        name: &str,
        step: impl FnOnce(NodeState) -> Result<NodeState, E> + Send + 'static,
    ) -> Result<Option<Arc<NodeRow>>, E>
    where
        E: From<StoreError> + Send + 'static,
    {
        self.update(name, move |r| {
            r.status = step(r.status)?;
            Ok(())
        })
        .await
    }

    /// Sets a node's state unconditionally; false when there is no such node.
    pub async fn set_status(&self, name: &str, to: NodeState) -> Result<bool, StoreError> {
        Ok(self
            .transition(name, move |_| Ok::<_, StoreError>(to))
            .await?
            .is_some())
    }

    async fn set(
        &self,
        name: &str,
        f: impl FnOnce(&mut NodeRow) + Send + 'static,
    ) -> Result<bool, StoreError> {
        Ok(self
            .update(name, move |r| {
                f(r);
                Ok::<_, StoreError>(())
            })
            .await?
            .is_some())
    }

    /// Records the node's cgroup id.
    pub async fn set_cgroup(&self, name: &str, cgroup: Option<String>) -> Result<bool, StoreError> {
        self.set(name, move |r| r.cgroup = cgroup).await
    }

    /// Records the node's network (the daemon's JSON).
    pub async fn set_network(
        &self,
        name: &str,
        network: Option<String>,
    ) -> Result<bool, StoreError> {
        self.set(name, move |r| r.network = network).await
    }

    /// Records the node's port forwards (the daemon's JSON array).
    pub async fn set_forwards(&self, name: &str, forwards: String) -> Result<bool, StoreError> {
        self.set(name, move |r| r.forwards = forwards).await
    }

    /// Replaces a node's tags.
    pub async fn set_tags(&self, name: &str, tags: Vec<String>) -> Result<bool, StoreError> {
        self.set(name, move |r| r.tags = tags).await
    }

    /// Records how the node's userdata ended.
    pub async fn set_userdata_exit(&self, name: &str, code: i32) -> Result<bool, StoreError> {
        self.set(name, move |r| r.userdata_exit = Some(code)).await
    }

    /// Removes a node's record; false when there was none.
    pub async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.call(move |w| {
            let gone = db::delete(&w.conn, &w.tenant, &name)?;
            w.index.remove(&name);
            w.volumes.forget_node(&w.conn, &name)?; // #13: its attachments go with it
            Ok(gone)
        })
        .await?
    }

    /// The tenant's rows as SQLite has them (tests compare the index with this).
    #[cfg(test)]
    pub(crate) async fn read_back(&self) -> Result<Vec<NodeRow>, StoreError> {
        self.call(|w| db::list(&w.conn, &w.tenant)).await?
    }
}
