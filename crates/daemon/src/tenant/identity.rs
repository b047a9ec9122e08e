//! Workload identity delivery for this tenant's nodes (ADR 0020): the [`Target`] the
//! identity refresher (`identity/refresher.rs`) pushes tokens to, and the two moments the
//! node lifecycle calls in: an agent that just answered (the token is written before a create
//! with `wait=agent` answers) and a node that just started without waiting (pushed as soon as
//! its agent answers). Off (nothing set, nothing spent) without `config.workload_identity`.
//!
//! A token is written through the node's agent, like an upload (`copy_in`: a temporary file
//! renamed into place, 0444), to `/run/bulkhead/identity/token` on the node's own tmpfs,
//! with a turn at the node's gate that lasts one small write.

use bulkhead_agent::client::CopyInRequest;
use std::sync::{Arc, Weak};

use super::Tenant;
use crate::identity::refresher::PushFuture;
use crate::identity::{Delivery, Identity, Refresher, Target, TOKEN_PATH};

/// The tenant's running nodes, seen without keeping the tenant alive.
struct Nodes(Weak<Tenant>);

impl Target for Nodes {
    fn tenant(&self) -> String {
        self.0.upgrade().map(|t| t.name.clone()).unwrap_or_default()
    }

    fn nodes(&self) -> Option<Vec<String>> {
        let t = self.0.upgrade()?;
        let snap = t.list();
        Some(
            snap.rows()
                .iter()
                .filter(|r| r.status == bulkhead_core::NodeState::Running)
                .map(|r| r.name.clone())
                .collect(),
        )
    }

    fn push<'a>(&'a self, node: &'a str, token: &'a str) -> PushFuture<'a> {
        Box::pin(async move {
            let t = self.0.upgrade().ok_or("the tenant is gone")?;
            t.write_token(node, token).await
        })
    }
}

impl Tenant {
    /// Starts delivering workload identity tokens to this tenant's nodes (once, at start).
    pub fn start_identity(self: &Arc<Self>, identity: Arc<Identity>) {
        let target: Arc<dyn Target> = Arc::new(Nodes(Arc::downgrade(self)));
        let refresher = Refresher::new(identity);
        refresher.spawn(target.clone());
        let _ = self.identity.set(Delivery { refresher, target });
    }

    /// The node's agent just answered: give it its token now (bounded; a failure is logged
    /// and retried in the background).
    pub(super) async fn identity_ready(&self, node: &str) {
        if let Some(d) = self.identity.get() {
            let _ = d.refresher.push_now(d.target.as_ref(), node).await;
        }
    }

    /// The node just (re)started and nobody waits for its agent: push as soon as it answers.
    pub(super) fn identity_soon(&self, node: &str) {
        if let Some(d) = self.identity.get() {
            d.refresher.soon(node);
        }
    }

    async fn write_token(&self, name: &str, token: &str) -> Result<(), String> {
        let node = self.running_node(name).map_err(|e| e.message)?;
        let _turn = self.agent_turn(&node).await.map_err(|e| e.message)?;
        let mut up = self
            .copy_in(
                &node,
                CopyInRequest {
                    path: TOKEN_PATH.into(),
                    tar: false,
                    uid: None,
                    gid: None,
                    mode: Some(0o444),
                    no_setid: false,
                    owners: false,
                    tmpfs_only: false,
                },
            )
            .await
            .map_err(|e| e.message)?;
        // A failed write is explained by the agent's answer at the end.
        let _ = up.write(token.as_bytes()).await;
        up.finish().await.map(|_| ()).map_err(|e| e.to_string())
    }
}
