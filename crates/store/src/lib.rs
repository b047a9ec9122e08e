//! One tenant's durable state: SQLite (WAL) in the tenant's state directory, behind an async
//! API that never blocks an async worker.
//!
//! - `schema.rs`: the schema as numbered migrations (`PRAGMA user_version`);
//! - `db.rs`: the SQL, run only by the writer thread (and by [`Store::open`]);
//! - `store.rs`: [`Store`], the handle: writes go to one dedicated thread that owns the
//!   connection; reads are answered from `index.rs`, the in-memory index of the tenant's nodes
//!   that the writer updates after each commit, so reads never wait for SQLite or a writer;
//! - `cursor.rs`: opaque cursors for paged lists; `id.rs`: typed ULIDs for objects;
//! - `node.rs`: [`NodeRow`] and [`NewNode`], the records; `error.rs`: [`StoreError`];
//! - `secrets.rs`: the tenant's secrets, sealed by the daemon with the tenant's key (#13);
//! - `volumes.rs`: volumes, their attachments to nodes and their snapshots (#13): one
//!   transaction per job over an in-memory view that is replaced after each commit;
//! - `commits.rs`: [`CommitRow`], a node's root filesystem sealed as a tenant-private image
//!   (#13; rows only for commits whose sealed file is complete);
//! - `events.rs`: [`EventRow`], the tenant's event stream by cursor (#14; the oldest beyond
//!   `events.keep` trimmed);
//! - `tokens.rs`: [`TokenStore`], the daemon's API tokens in a file of their own (`auth.db`),
//!   answered from memory by the secret's hash (ADR 0022);
//! - `usage.rs`: what each node used per time bucket and the counters last read from it (#14);
//! - `expiry.rs`: a node's expiry, on its row (#15 node TTL, migration v10).
//!
//! Invariants: every write is one transaction, so a crash never leaves a half-written row;
//! the index holds exactly the committed rows of the tenant; nothing here holds a lock across
//! an await.

mod commits; // #13 commit and fork
mod cursor;
mod db;
pub mod e2b; // E2B sandbox records (#15, A)
mod e2b_store; // their writes (#15, A)
mod error;
mod events; // #14 events (part B)
mod expiry; // #15 node TTL (part B)
mod id;
mod index;
mod node;
mod schema;
mod secrets; // secrets, sealed (#13)
mod store;
#[cfg(test)]
mod tests;
pub mod tokens;
pub mod usage;
pub mod usage_stored; // usage of what the tenant stores outside its nodes (#14, part E)
mod volume_rows; // volumes and snapshots (#13)
pub mod volumes; // volumes and snapshots (#13) // usage accounting (#14, part E)

pub use bulkhead_core::NodeState;
pub use commits::{CommitCheck, CommitRow};
pub use cursor::{Cursor, CursorError};
pub use error::StoreError;
pub use events::EventRow; // #14
pub use id::{CommitId, Id, IdError, Kind, NodeId, SnapshotId, TokenId, VolumeId};
pub use index::{Page, Snapshot};
pub use node::{NewNode, NodeRow};
pub use schema::{SchemaError, VERSION as SCHEMA_VERSION};
pub use secrets::{SecretMeta, SecretPatch, SecretRow}; // #13
pub use store::Store;
pub use tokens::{TokenRow, TokenStore, TokenStoreError};

/// Id kinds (markers for [`Id`]).
pub mod kind {
    pub use crate::id::{Commit, Node, Snapshot, Token, Volume};
}
