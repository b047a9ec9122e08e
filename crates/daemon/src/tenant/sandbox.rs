//! E2B sandbox records of the tenant (#15, A; `bulkhead_store::e2b`): what an E2B create
//! asked for beyond the node's row, kept beside it. The sandbox's `envVars` are sealed with
//! the tenant's key (AAD naming the tenant and the node's id), so the state database never
//! holds them in clear and a record copied to another node does not open.

use bulkhead_core::DomainError;
use bulkhead_store::e2b::SandboxRow;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{NodeRef, Tenant};

fn store_err(e: bulkhead_store::StoreError) -> DomainError {
    DomainError::internal(format!("the sandbox record: {e}"))
}

impl Tenant {
    fn env_aad(&self, node_id: &str) -> Vec<u8> {
        format!("e2b-env/{}/{node_id}", self.name).into_bytes()
    }

    /// The record of `node`, if it is an E2B sandbox.
    pub fn sandbox_record(&self, node: &NodeRef) -> Option<Arc<SandboxRow>> {
        self.store
            .sandboxes()
            .get(node.name(), &node.row().id.to_string())
    }

    /// Seals a sandbox's environment for its record (empty: nothing to seal).
    pub fn seal_sandbox_env(&self, node_id: &str, env: &BTreeMap<String, String>) -> Vec<u8> {
        if env.is_empty() {
            return Vec::new();
        }
        let plain = serde_json::to_vec(env).unwrap_or_default();
        self.key().seal(&self.env_aad(node_id), &plain)
    }

    /// A sandbox's `envVars`; empty for a node without a record (or one that does not open,
    /// logged: it was not sealed for this node).
    pub fn sandbox_env(&self, node: &NodeRef) -> BTreeMap<String, String> {
        let Some(r) = self.sandbox_record(node) else {
            return BTreeMap::new();
        };
        if r.env_sealed.is_empty() {
            return BTreeMap::new();
        }
        match self.key().open(&self.env_aad(&r.node_id), &r.env_sealed) {
            Ok(p) => serde_json::from_slice(&p).unwrap_or_default(),
            Err(e) => {
                tracing::error!(node = %node.name(), error = %e, "a sandbox's sealed envVars do not open: ignored");
                BTreeMap::new()
            }
        }
    }

    pub async fn put_sandbox_record(&self, r: SandboxRow) -> Result<(), DomainError> {
        self.store.put_sandbox(r).await.map_err(store_err)
    }

    pub async fn set_sandbox_end(&self, node: &NodeRef, end_ms: u64) -> Result<(), DomainError> {
        self.store
            .set_sandbox_end(node.name(), &node.row().id.to_string(), end_ms)
            .await
            .map(|_| ())
            .map_err(store_err)
    }

    /// Forgets the records of nodes that are gone (deleted, or expired); cheap when none are.
    pub async fn prune_sandbox_records(&self) {
        for r in self.store.sandboxes().all() {
            let live = self
                .store
                .get(&r.name)
                .is_some_and(|n| n.id.to_string() == r.node_id);
            if !live {
                if let Err(e) = self.store.delete_sandbox(&r.name, &r.node_id).await {
                    tracing::warn!(sandbox = %r.name, error = %e, "cannot forget a deleted sandbox's record");
                }
            }
        }
    }
}
