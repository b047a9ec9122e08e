//! Commits and forks (#13): `POST /vm/{node}/commit`, `GET /vm/commits`,
//! `DELETE /vm/commits/{id}`, `POST /vm/commits/{id}/fork`.

use serde::{Deserialize, Serialize};

/// One commit: a node's root filesystem, sealed as a tenant-private image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommitInfo {
    /// Immutable, unguessable (a ULID); give it as a create's `image` or to fork.
    pub id: String,
    /// The tenant that owns it.
    pub tenant: String,
    /// The node it was made from (which may since be gone).
    pub node: String,
    /// That node's host group: where a fork goes unless it names another.
    pub hostgroup: String,
    /// Bytes of the committed tree (before sealing).
    pub size_bytes: u64,
    pub created_at: String,
}
