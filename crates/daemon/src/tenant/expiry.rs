//! Node TTL (#15, B; ADR 0037): a node's expiry and the tenant's sweeper that acts on it.
//!
//! [`Tenant::set_expiry`] (a timeout from now, or none) and [`Tenant::expiry`] are what every
//! surface uses: Slicer's create `timeout` (through [`Tenant::expire_after_create`]),
//! `bulkhead vm add --ttl`, E2B's control plane (create, `/timeout`, `/refreshes`, resume).
//! The expiry lives on the node's row (`bulkhead_store`, migration v10), so it survives a
//! restart; what is due is decided by `bulkhead_core::ttl`.
//!
//! The sweeper (one task per tenant, [`Tenant::start_expiry`]) sleeps until the earliest
//! expiry (at most [`MAX_SLEEP`], so a change of the wall clock is seen within a minute) or
//! until an expiry changes ([`Sweeper::wake`]); no polling in between. A due node is acted on
//! in a task of its own: [`OnExpiry::Delete`] deletes it as `DELETE` would, [`OnExpiry::Pause`]
//! pauses it (if it runs) and clears its expiry. Each is one audit line and one
//! `node.expired` event through [`Tenant::by_daemon`]. A node that cannot be acted on now (still
//! being created, a power operation under way, a full queue) is tried again after a back-off
//! that doubles from 1 s to 60 s.
//!
//! Invariants: an expiry is acted on only if the node's row still carries exactly it (an
//! extension that lands first wins); a paused node's expiry is cleared only if it is still
//! the one acted on; one action per node at a time.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use bulkhead_core::ttl::{self, Expiry, OnExpiry};
use bulkhead_core::{DomainError, NodeState};
use bulkhead_store::NodeId;
use tokio::sync::Notify;

use super::sweeper::Slot;
use super::{NodeRef, Tenant};
use crate::events::kind;

/// The longest the sweeper sleeps without looking.
pub const MAX_SLEEP: Duration = Duration::from_secs(60);
/// The first wait before a failed expiry is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

impl Tenant {
    /// Gives `node` a timeout of `ttl` from now (`None`: none), acted on with `on`; the time
    /// it passes. Bounded as a create's `timeout` (1 s to 30 days; the error names `timeout`).
    pub async fn set_expiry(
        &self,
        node: &NodeRef,
        ttl: Option<Duration>,
        on: OnExpiry,
    ) -> Result<Option<SystemTime>, DomainError> {
        let expiry = match ttl {
            Some(d) => Some(Expiry::after(
                SystemTime::now(),
                ttl::check("timeout", d)?,
                on,
            )),
            None => None,
        };
        let row = self
            .store
            .set_expiry(node.name(), node.row().id, expiry)
            .await?
            .ok_or_else(|| DomainError::no_node(node.name()))?;
        self.sweeper.wake();
        Ok(row.expiry.map(|e| e.at()))
    }

    /// When `node`'s timeout passes and what happens then; `None` without one. Read from
    /// memory, as last committed (not the [`NodeRef`]'s copy of the row).
    pub fn expiry(&self, node: &NodeRef) -> Option<(SystemTime, OnExpiry)> {
        let r = self.store.get(node.name())?;
        if r.id != node.row().id {
            return None;
        }
        r.expiry.map(|e| (e.at(), e.on))
    }

    /// A create's `timeout` (Slicer's API, `vm add --ttl`): the node, up and running, is
    /// deleted once it passes.
    pub(super) async fn expire_after_create(
        &self,
        name: &str,
        ttl: Duration,
    ) -> Result<(), DomainError> {
        let node = self.node(name)?;
        self.set_expiry(&node, Some(ttl), OnExpiry::Delete)
            .await
            .map(|_| ())
    }

    /// Starts the tenant's sweeper; it ends with the tenant. At start it finds every expiry
    /// that passed while the daemon was down due at once.
    pub fn start_expiry(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let wake = self.sweeper.wake.clone();
        tokio::spawn(sweep(weak, wake));
    }

    /// One look: acts on every due node not already in hand; the next time to look.
    fn sweep_once(self: &Arc<Self>) -> Option<SystemTime> {
        let now = SystemTime::now();
        let snap = self.list();
        let plan = ttl::plan(
            now,
            snap.rows()
                .iter()
                .filter_map(|r| r.expiry.map(|e| ((r.name.clone(), r.id), e))),
        );
        let mut next = plan.next;
        let mut slots = self.sweeper.slots();
        // Nodes gone, or their expiry cleared: nothing left to retry.
        slots.retain(|id, _| {
            snap.rows()
                .iter()
                .any(|r| r.id == *id && r.expiry.is_some())
        });
        for ((name, id), e) in plan.due {
            let backoff = match slots.get(&id) {
                Some(Slot::Acting) => continue,
                Some(Slot::RetryAt { at, .. }) if *at > now => {
                    next = Some(next.map_or(*at, |n| n.min(*at)));
                    continue;
                }
                Some(Slot::RetryAt { backoff, .. }) => Some(*backoff),
                None => None,
            };
            slots.insert(id, Slot::Acting);
            let t = self.clone();
            tokio::spawn(async move {
                let r = t.expire(&name, id, e).await;
                {
                    let mut slots = t.sweeper.slots();
                    match r {
                        Ok(()) => {
                            slots.remove(&id);
                        }
                        Err(err) => {
                            let backoff = backoff.map_or(RETRY_FIRST, |b| (b * 2).min(RETRY_MAX));
                            tracing::warn!(tenant = %t.name, node = %name, error = %err, retry_in_s = backoff.as_secs(), "cannot act on the node's expired timeout yet");
                            slots.insert(
                                id,
                                Slot::RetryAt {
                                    at: SystemTime::now() + backoff,
                                    backoff,
                                },
                            );
                        }
                    }
                }
                t.sweeper.wake();
            });
        }
        next
    }

    /// Acts on node `name`'s expiry `e`, if the node is still `id` and still carries `e`.
    async fn expire(&self, name: &str, id: NodeId, e: Expiry) -> Result<(), DomainError> {
        let Ok(node) = self.node(name) else {
            return Ok(()); // gone meanwhile
        };
        if node.row().id != id || node.row().expiry != Some(e) {
            return Ok(()); // another node of the name, or a new timeout
        }
        // Still being created, or being deleted: tried again after a back-off (the latter
        // is gone by then).
        if matches!(node.row().status, NodeState::Creating | NodeState::Deleting) {
            node.row().status.delete(name)?;
        }
        let at = crate::fsutil::rfc3339(e.at_secs_ceil());
        match e.on {
            OnExpiry::Delete => {
                self.delete(&node).await?;
                tracing::info!(tenant = %self.name, node = %name, expired_at = %at, "node's timeout passed; deleted");
                self.by_daemon(
                    "expire",
                    kind::NODE_EXPIRED,
                    name,
                    &format!("its timeout passed at {at}: deleted"),
                );
            }
            OnExpiry::Pause => {
                let what = match node.row().status {
                    NodeState::Running => {
                        self.set_paused(&node, true).await?;
                        "paused"
                    }
                    // Paused, stopped or suspended already: nothing runs to pause.
                    s => {
                        tracing::debug!(node = %name, status = s.as_str(), "expired node runs nothing; its timeout is cleared");
                        "not running: left as it is"
                    }
                };
                self.store.clear_expiry_if(name, id, e).await?;
                tracing::info!(tenant = %self.name, node = %name, expired_at = %at, "node's timeout passed; {what}");
                self.by_daemon(
                    "expire",
                    kind::NODE_EXPIRED,
                    name,
                    &format!("its timeout passed at {at}: {what}"),
                );
            }
        }
        Ok(())
    }
}

/// The sweeper's loop: look, then sleep until the next expiry, a change, or [`MAX_SLEEP`].
async fn sweep(weak: Weak<Tenant>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(t) = weak.upgrade() else { return };
            t.sweep_once()
        };
        let wait = next
            .map(|n| {
                n.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            })
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP);
        // A change while looking left a permit: `notified` then returns at once.
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
    }
}
