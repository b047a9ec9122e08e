//! The expiry sweeper's state (node TTL, #15 B): what wakes it and where each due node stands.
//! A leaf, held by [`super::Tenant`]; the sweeper itself is `expiry.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bulkhead_store::NodeId;
use tokio::sync::Notify;

/// Where a due node's expiry stands with the sweeper.
#[derive(Debug, Clone, Copy)]
pub(super) enum Slot {
    /// Being acted on.
    Acting,
    /// Failed; tried again at `at`.
    RetryAt { at: SystemTime, backoff: Duration },
}

/// The tenant's sweeper state.
#[derive(Default)]
pub struct Sweeper {
    pub(super) wake: Arc<Notify>,
    pub(super) slots: Mutex<HashMap<NodeId, Slot>>,
}

impl Sweeper {
    /// Makes the sweeper look again now (an expiry changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
    pub(super) fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}
