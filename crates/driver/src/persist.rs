//! Persistent nodes (#13, `"persistent": true`): what a node's spec says about the storage
//! that outlives its processes, and how a driver keeps it ([`Persistence`]).
//!
//! A microVM's persistent root disk is a LUKS image of QEMU's block layer
//! ([`Persistence::EncryptedDisk`]); the key travels the same way.
//!
//! A jail's persistent writable layer is an ext4 image in the node's directory
//! ([`LAYER_IMAGE`]) whose `data` directory is encrypted with fscrypt under
//! `TenantKey::derive("layer", <node id>)`; the spec names the image and the key's id, the key
//! itself comes on the supervisor's stdin with the spec's digest ([`crate::instruction`]),
//! never in the spec. A spec naming a layer starts only with that instruction.
//!
//! Invariant: a layer's key id is [`layer_key_id`] of the node's immutable id (a ULID never
//! reused), never of its name (a hostname can be reused after a delete).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The file a jail node's persistent writable layer lives in, in the node's directory.
pub const LAYER_IMAGE: &str = "layer.img";

/// How a driver keeps a persistent node's storage across stops and daemon restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// The driver cannot: a create asking for `persistent: true` is refused.
    Unsupported,
    /// The daemon makes an encrypted ext4 image ([`LAYER_IMAGE`]) before the first start; the
    /// supervisor opens it ([`NodeSpec::persistent_layer`](crate::NodeSpec)) and the node's
    /// overlay keeps its upper and work directories in it instead of a tmpfs (a jail).
    EncryptedLayer,
    /// The driver encrypts the node's own disk, kept across starts (a microVM's root disk as
    /// a LUKS image QEMU opens): it gets the key in `NodePrep::persistent_key` to make it, the
    /// supervisor through the instruction to open it ([`NodeSpec::persistent_layer`] names the
    /// disk and the key's id).
    EncryptedDisk,
}

/// A persistent node's writable layer, as its spec names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerMount {
    /// The layer's ext4 image on the host (`<node_dir>/layer.img`).
    pub image: PathBuf,
    /// The id the instruction carries its key under ([`layer_key_id`]).
    pub key_id: String,
}

/// The key id of a node's layer: `layer:<node id>`, apart from any volume's key id.
pub fn layer_key_id(node_id: &str) -> String {
    format!("layer:{node_id}")
}

/// The key id of a commit's image (#13 commit and fork): `commit:<commit id>`; the key is
/// `TenantKey::derive("commit", <commit id>)`.
pub fn commit_key_id(commit_id: &str) -> String {
    format!("commit:{commit_id}")
}

/// How a driver's nodes take the tree of the commit they start from (#13 commit and fork).
/// The tree lives in an ext4 image whose `data` directory is fscrypt-encrypted under the
/// commit's key; it is never plain files on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitTree {
    /// The driver reads the tree only while it prepares the node
    /// (`NodePrep::image_tree`): the daemon mounts it read-only for that call alone, in a
    /// mount namespace of the calling thread's own (a microVM's disk is made from it).
    Prepare,
    /// The node's supervisor opens the image itself, as a detached read-only mount
    /// ([`NodeSpec::commit_image`](crate::NodeSpec), key in the instruction), for as long as
    /// the node lives (a jail's overlay lower).
    Supervisor,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_key_ids_name_the_node_id() {
        assert_eq!(layer_key_id("01J0"), "layer:01J0");
        let l = LayerMount {
            image: "/s/n/layer.img".into(),
            key_id: layer_key_id("01J0"),
        };
        let j = serde_json::to_string(&l).unwrap();
        assert!(!j.contains("key\""), "no key in the spec: {j}");
        assert_eq!(serde_json::from_str::<LayerMount>(&j).unwrap(), l);
    }
}
