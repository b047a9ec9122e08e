//! #15 node TTL (part B, ADR 0037): a node's expiry, kept on its row (`expires_at`,
//! `on_expiry`; migration v10) so that it survives a restart of the daemon.
//!
//! Invariants: a change names the node by name *and* id, so an expiry meant for a node never
//! lands on a later node of the same name; clearing after an expiry was acted on
//! ([`Store::clear_expiry_if`]) leaves an expiry set meanwhile (a new timeout) alone.

use std::sync::Arc;

use bulkhead_core::Expiry;

use crate::error::StoreError;
use crate::id::NodeId;
use crate::node::NodeRow;
use crate::store::Store;

/// Why a change was skipped (never leaves this module).
enum Skip {
    Store(StoreError),
    /// Another node of the name, or the expiry changed meanwhile.
    Changed,
}

impl From<StoreError> for Skip {
    fn from(e: StoreError) -> Self {
        Skip::Store(e)
    }
}

impl Store {
    /// Sets (or, with `None`, clears) the expiry of node `name` if it is still node `id`;
    /// the row as written, `None` when there is no such node any more.
    pub async fn set_expiry(
        &self,
        name: &str,
        id: NodeId,
        expiry: Option<Expiry>,
    ) -> Result<Option<Arc<NodeRow>>, StoreError> {
        self.change_expiry(name, move |r| {
            if r.id != id {
                return Err(Skip::Changed);
            }
            r.expiry = expiry;
            Ok(())
        })
        .await
    }

    /// Clears node `name`'s expiry if it still is `was` on node `id` (an expiry set meanwhile
    /// stays); whether it was cleared.
    pub async fn clear_expiry_if(
        &self,
        name: &str,
        id: NodeId,
        was: Expiry,
    ) -> Result<bool, StoreError> {
        Ok(self
            .change_expiry(name, move |r| {
                if r.id != id || r.expiry != Some(was) {
                    return Err(Skip::Changed);
                }
                r.expiry = None;
                Ok(())
            })
            .await?
            .is_some())
    }

    async fn change_expiry(
        &self,
        name: &str,
        f: impl FnOnce(&mut NodeRow) -> Result<(), Skip> + Send + 'static,
    ) -> Result<Option<Arc<NodeRow>>, StoreError> {
        match self.update(name, f).await {
            Ok(r) => Ok(r),
            Err(Skip::Changed) => Ok(None),
            Err(Skip::Store(e)) => Err(e),
        }
    }
}
