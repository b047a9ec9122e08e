//! The tenant's event stream (#14): lifecycle changes and detection signals, each with a
//! cursor that only grows, for `GET /events?since=<cursor>` (NDJSON) and the webhook sink.
//!
//! Anything that notices something calls [`Events::emit`] with one of the [`kind`]s; what
//! keeps, streams and forwards events lives here and nowhere else.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

/// Event kinds: stable names, documented in docs/detection.md. Never rename one.
pub mod kind {
    pub const NODE_CREATED: &str = "node.created";
    pub const NODE_DELETED: &str = "node.deleted";
    /// The node's init exited (shutdown, crash, OOM, killed).
    pub const NODE_STOPPED: &str = "node.stopped";
    /// Reconciliation at start found the node gone (or its supervisor dead).
    pub const NODE_LOST: &str = "node.lost";
    /// The kernel's OOM killer killed a process of the node.
    pub const NODE_OOM_KILL: &str = "node.oom_kill";
    /// A system call the node's seccomp policy denies.
    pub const SECCOMP_VIOLATION: &str = "seccomp.violation";
    /// Packets dropped by the tenant's nft rules (towards another tenant, the host, metadata
    /// addresses, the drop list).
    pub const FLOW_DROPPED: &str = "flow.dropped";
    /// Authorization denials of one principal crossed the configured spike threshold.
    pub const AUTH_DENIAL_SPIKE: &str = "auth.denial_spike";
    /// A binary of the daemon or its config changed on disk since start.
    pub const INTEGRITY_CHANGED: &str = "integrity.changed";
    /// A volume attach was refused (foreign id, mismatch, a second writer).
    pub const VOLUME_ATTACH_REFUSED: &str = "volume.attach_refused";
    /// Mounting a volume in a node failed.
    pub const VOLUME_MOUNT_FAILED: &str = "volume.mount_failed";
}

/// One event as kept and streamed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    /// Grows by one per event of the tenant; `GET /events?since=<cursor>` resumes after it.
    pub cursor: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub tenant: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Kind-specific fields (documented per kind). Never secrets or tokens.
    pub detail: serde_json::Value,
}

/// How many events a tenant keeps in memory before the oldest go.
pub const KEEP: usize = 10_000;

/// A tenant's events.
pub struct Events {
    tenant: String,
    next: AtomicU64,
    ring: Mutex<VecDeque<Event>>,
    tx: broadcast::Sender<Event>,
}

impl Events {
    pub fn new(tenant: &str) -> Self {
        let (tx, _) = broadcast::channel(1024);
        Events {
            tenant: tenant.to_owned(),
            next: AtomicU64::new(1),
            ring: Mutex::new(VecDeque::new()),
            tx,
        }
    }

    /// Records an event; returns its cursor. Never blocks on a reader.
    pub fn emit(&self, kind: &str, node: Option<&str>, detail: serde_json::Value) -> u64 {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let cursor = self.next.fetch_add(1, Ordering::Relaxed);
        let e = Event {
            cursor,
            time: crate::fsutil::now_rfc3339(),
            tenant: self.tenant.clone(),
            kind: kind.to_owned(),
            node: node.map(str::to_owned),
            detail,
        };
        if ring.len() == KEEP {
            ring.pop_front();
        }
        ring.push_back(e.clone());
        drop(ring);
        let _ = self.tx.send(e);
        cursor
    }

    /// The kept events after `cursor` (0: from the oldest kept).
    pub fn since(&self, cursor: u64) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().filter(|e| e.cursor > cursor).cloned().collect()
    }

    /// New events as they come.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
