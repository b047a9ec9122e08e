//! One tenant's durable state: SQLite (WAL) in the tenant's state directory, behind an async
//! API that never blocks an async worker.
//!
//! - `schema.rs`: the schema as numbered migrations (`PRAGMA user_version`);
//! - `db.rs`: the SQL, run only by the writer thread (and by [`Store::open`]);
//! - `store.rs`: [`Store`], the handle: writes go to one dedicated thread that owns the
//!   connection; reads are answered from `index.rs`, the in-memory index of the tenant's nodes
//!   that the writer updates after each commit, so reads never wait for SQLite or a writer;
//! - `cursor.rs`: opaque cursors for paged lists; `id.rs`: typed ULIDs for objects.
//!
//! Invariants: every write is one transaction, so a crash never leaves a half-written row;
//! the index holds exactly the committed rows of the tenant; nothing here holds a lock across
//! an await.

mod cursor;
mod db;
mod id;
mod index;
mod schema;
mod store;
#[cfg(test)]
mod tests;

pub use bulkhead_core::NodeState;
pub use cursor::{Cursor, CursorError};
pub use id::{Id, IdError, Kind, NodeId};
pub use index::{Page, Snapshot};
pub use schema::{SchemaError, VERSION as SCHEMA_VERSION};
pub use store::Store;

/// Id kinds (markers for [`Id`]).
pub mod kind {
    pub use crate::id::Node;
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database {path}: {source}")]
    Schema {
        path: String,
        #[source]
        source: SchemaError,
    },
    #[error("node {0:?} already exists")]
    Exists(String),
    #[error("the state database's writer did not answer (stopped, or failed on this request: see the daemon's log)")]
    Closed,
    #[error("starting the state database's writer thread")]
    Thread(#[source] std::io::Error),
}

impl From<StoreError> for bulkhead_core::DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(n) => bulkhead_core::DomainError::new(
                bulkhead_core::Code::AlreadyExists,
                format!("node {n:?} already exists: choose another hostname"),
            ),
            e => bulkhead_core::DomainError::internal(e.to_string()),
        }
    }
}

/// A node as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    /// Assigned at insert, never reused (the name may be, with `hostname`).
    pub id: NodeId,
    pub tenant: String,
    pub name: String,
    pub hostgroup: String,
    pub status: NodeState,
    pub ip: String,
    pub cpus: u32,
    pub ram_bytes: u64,
    pub tags: Vec<String>,
    pub persistent: bool,
    pub created_at: String,
    /// The node's cgroup id, once chosen (the supervisor's `spec.json` names the same one).
    pub cgroup: Option<String>,
    /// The daemon's record of the node's network (JSON, the daemon's format); `None` for a
    /// node without one.
    pub network: Option<String>,
    /// The node's port forwards (a JSON array, the daemon's format).
    pub forwards: String,
}

/// What a create records; the store adds the id and the tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNode {
    pub name: String,
    pub hostgroup: String,
    pub status: NodeState,
    pub ip: String,
    pub cpus: u32,
    pub ram_bytes: u64,
    pub tags: Vec<String>,
    pub persistent: bool,
    pub created_at: String,
    pub network: Option<String>,
}
