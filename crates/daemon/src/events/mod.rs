//! The tenant's event stream (#14): lifecycle changes and detection signals, each with a
//! cursor that only grows, for `GET /events?since=<cursor>` (NDJSON) and the webhook sink.
//!
//! Anything that notices something calls [`Events::emit`] with one of the [`kind`]s; what
//! keeps, streams and forwards events lives here and nowhere else (ADR 0032):
//! - kept events are in memory (`since`) and in the tenant's SQLite (`events`, migration v8),
//!   written on the store's thread without waiting; the newest `events.keep` stay;
//! - [`Events::open`] (at start, before reconciliation) reloads what was kept, so cursors go
//!   on from the last one across a restart: a cursor is never reused;
//! - live readers [`Events::subscribe`]; `webhook.rs` forwards every event when
//!   `events.webhook` is set (bounded buffer, oldest dropped and counted);
//! - `denials.rs` counts authorization denials per principal and raises
//!   `auth.denial_spike`; `integrity.rs` watches the daemon's binaries and config.
//!
//! Invariants: cursors are given under one lock together with the ring push and the store
//! write, so memory, disk and the stream see events in cursor order; `emit` never blocks on a
//! reader or on SQLite.

pub mod denials;
pub mod integrity;
pub mod integrity_watch;
pub mod metrics;
mod reserve;
mod webhook;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bulkhead_core::config::events::EventsConfig;
use bulkhead_store::{EventRow, Store};
use serde::Serialize;
use tokio::sync::{broadcast, watch};

/// Event kinds: stable names, documented in docs/detection.md. Never rename one.
pub mod kind {
    pub const NODE_CREATED: &str = "node.created";
    pub const NODE_DELETED: &str = "node.deleted";
    /// The node's init exited (shutdown, crash, OOM, killed).
    pub const NODE_STOPPED: &str = "node.stopped";
    /// Reconciliation at start found the node gone (or its supervisor dead).
    pub const NODE_LOST: &str = "node.lost";
    /// The node's timeout passed: it was deleted or paused (#15, B: node TTL).
    pub const NODE_EXPIRED: &str = "node.expired";
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

/// How many events a tenant keeps before it is opened (and the default, `events.keep`).
pub const KEEP: usize = 10_000;

struct Ring {
    /// The cursor the next event gets.
    next: u64,
    /// Cursors below this may have been given (`reserve.rs`); 0 before [`Events::open`].
    reserved: u64,
    keep: usize,
    events: VecDeque<Event>,
}

/// What [`Events::open`] attaches.
struct Opened {
    store: Store,
    reserve: reserve::Reserve,
    keep: u64,
    webhook: Option<Arc<webhook::Sink>>,
}

/// A tenant's events.
pub struct Events {
    tenant: String,
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Event>,
    opened: OnceLock<Opened>,
    /// Authorization denials per principal and their spikes (`denials.rs`).
    pub denials: denials::Denials,
    /// Events emitted since start.
    emitted: AtomicU64,
    /// True once the daemon stops: live streams end.
    closed: watch::Sender<bool>,
}

impl Events {
    pub fn new(tenant: &str) -> Self {
        let (tx, _) = broadcast::channel(1024);
        Events {
            tenant: tenant.to_owned(),
            ring: Mutex::new(Ring {
                next: 1,
                reserved: 0,
                keep: KEEP,
                events: VecDeque::new(),
            }),
            tx,
            opened: OnceLock::new(),
            denials: Default::default(),
            emitted: AtomicU64::new(0),
            closed: watch::Sender::new(false),
        }
    }

    /// Attaches the tenant's store and config: reloads the kept events (cursors continue
    /// after the last one) and starts the webhook sink. Call once, at start, before anything
    /// emits; a second call changes nothing.
    pub async fn open(
        &self,
        store: Store,
        cfg: &EventsConfig,
        tenant_dir: &std::path::Path,
    ) -> Result<(), bulkhead_store::StoreError> {
        let kept = store.events(cfg.keep).await?;
        self.denials
            .configure(cfg.spike_threshold, cfg.spike_window);
        let webhook = cfg.webhook.clone().map(|w| {
            let sink = Arc::new(webhook::Sink::new(&self.tenant, w));
            tokio::spawn(sink.clone().run(self.closed.subscribe()));
            sink
        });
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.keep = cfg.keep as usize;
        let before: Vec<Event> = ring.events.drain(..).collect();
        let last = kept.last().map_or(0, |e| e.cursor);
        // After a crash the reservation is above the last kept cursor: never give a cursor
        // that may have been streamed already.
        let reserve = reserve::Reserve::new(tenant_dir);
        ring.next = ring.next.max(last + 1).max(reserve.read());
        ring.reserved = ring.next + reserve::BLOCK;
        reserve.write(ring.reserved);
        for r in kept {
            ring.events.push_back(Event {
                cursor: r.cursor,
                time: r.time,
                tenant: self.tenant.clone(),
                kind: r.kind,
                node: r.node,
                detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
            });
        }
        let opened = self.opened.set(Opened {
            store,
            reserve,
            keep: cfg.keep,
            webhook,
        });
        drop(ring);
        if opened.is_ok() {
            // Anything emitted before (nothing should be) is kept too, with cursors after
            // the reloaded ones.
            for e in before {
                self.emit(&e.kind, e.node.as_deref(), e.detail);
            }
        }
        Ok(())
    }

    /// Records an event; returns its cursor. Never blocks on a reader.
    pub fn emit(&self, kind: &str, node: Option<&str>, detail: serde_json::Value) -> u64 {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let cursor = ring.next;
        ring.next += 1;
        if let Some(o) = self.opened.get() {
            if cursor >= ring.reserved {
                ring.reserved = cursor + reserve::BLOCK;
                o.reserve.write(ring.reserved);
            }
        }
        let e = Event {
            cursor,
            time: crate::fsutil::now_rfc3339(),
            tenant: self.tenant.clone(),
            kind: kind.to_owned(),
            node: node.map(str::to_owned),
            detail,
        };
        while ring.events.len() >= ring.keep.max(1) {
            ring.events.pop_front();
        }
        ring.events.push_back(e.clone());
        if let Some(o) = self.opened.get() {
            o.store.append_event(
                EventRow {
                    cursor,
                    time: e.time.clone(),
                    kind: e.kind.clone(),
                    node: e.node.clone(),
                    detail: e.detail.to_string(),
                },
                o.keep,
            );
            if let Some(w) = &o.webhook {
                w.push(webhook::Pending {
                    cursor,
                    body: serde_json::to_vec(&e).unwrap_or_default(),
                });
            }
        }
        drop(ring);
        self.emitted.fetch_add(1, Ordering::Relaxed);
        tracing::info!(tenant = %self.tenant, cursor, kind, node = node.unwrap_or("-"), "event");
        let _ = self.tx.send(e);
        cursor
    }

    /// The kept events after `cursor` (0: from the oldest kept).
    pub fn since(&self, cursor: u64) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let start = ring.events.partition_point(|e| e.cursor <= cursor);
        ring.events.range(start..).cloned().collect()
    }

    /// New events as they come.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Turns true when the daemon stops (live streams end then).
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// The daemon stops: live streams and the webhook sink end; what was emitted is on disk
    /// once this returns.
    pub async fn close(&self) {
        self.closed.send_replace(true);
        if let Some(o) = self.opened.get() {
            if o.store.flush().await.is_ok() {
                // Everything given is kept: the next start continues right after it.
                let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
                ring.reserved = ring.next;
                o.reserve.write(ring.next);
            }
        }
    }

    /// A request of `principal` was refused by authorization in this tenant: counted, and
    /// `auth.denial_spike` when the principal's denials in the window reach the threshold.
    pub fn denied(&self, principal: &str) {
        if let Some(s) = self.denials.record(principal) {
            self.emit(
                kind::AUTH_DENIAL_SPIKE,
                None,
                serde_json::json!({
                    "principal": s.principal,
                    "denials": s.count,
                    "window_seconds": s.window.as_secs(),
                    "threshold": s.threshold,
                }),
            );
        }
    }

    fn webhook(&self) -> Option<&webhook::Sink> {
        self.opened.get().and_then(|o| o.webhook.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cursors_grow_survive_a_reopen_and_keep_trims() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let cfg = EventsConfig {
            keep: 3,
            ..Default::default()
        };
        let ev = Events::new("t");
        ev.open(Store::open(&db, "t").unwrap(), &cfg, dir.path())
            .await
            .unwrap();
        let mut rx = ev.subscribe();
        for i in 0..5 {
            assert_eq!(
                ev.emit(
                    kind::NODE_CREATED,
                    Some(&format!("g-{i}")),
                    serde_json::json!({})
                ),
                i + 1
            );
        }
        assert_eq!(rx.recv().await.unwrap().cursor, 1);
        let kept: Vec<u64> = ev.since(0).iter().map(|e| e.cursor).collect();
        assert_eq!(kept, vec![3, 4, 5]);
        assert_eq!(ev.since(4).len(), 1);
        assert!(ev.since(5).is_empty());
        ev.close().await;
        drop(ev);
        // A restart: the kept events come back and the next cursor follows the last.
        let ev = Events::new("t");
        ev.open(Store::open(&db, "t").unwrap(), &cfg, dir.path())
            .await
            .unwrap();
        let kept: Vec<(u64, Option<String>)> = ev
            .since(0)
            .into_iter()
            .map(|e| (e.cursor, e.node))
            .collect();
        assert_eq!(
            kept,
            vec![
                (3, Some("g-2".into())),
                (4, Some("g-3".into())),
                (5, Some("g-4".into()))
            ]
        );
        assert_eq!(ev.emit(kind::NODE_DELETED, None, serde_json::json!({})), 6);
    }

    #[tokio::test]
    async fn after_a_crash_cursors_jump_past_what_may_have_been_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let cfg = EventsConfig::default();
        let ev = Events::new("t");
        ev.open(Store::open(&db, "t").unwrap(), &cfg, dir.path())
            .await
            .unwrap();
        for _ in 0..3 {
            ev.emit(kind::NODE_CREATED, None, serde_json::json!({}));
        }
        drop(ev); // no close: as if the daemon were killed
        let ev = Events::new("t");
        ev.open(Store::open(&db, "t").unwrap(), &cfg, dir.path())
            .await
            .unwrap();
        let c = ev.emit(kind::NODE_CREATED, None, serde_json::json!({}));
        assert_eq!(c, 1 + reserve::BLOCK, "past the reservation, not 4");
        // Many more than a block: the reservation moves ahead of them.
        for _ in 0..reserve::BLOCK + 5 {
            ev.emit(kind::NODE_CREATED, None, serde_json::json!({}));
        }
        let last = ev.emit(kind::NODE_CREATED, None, serde_json::json!({}));
        assert!(reserve::Reserve::new(dir.path()).read() > last);
    }

    #[tokio::test]
    async fn a_denial_spike_is_one_event_per_window() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = EventsConfig {
            spike_threshold: 3,
            ..Default::default()
        };
        let ev = Events::new("t");
        let store = Store::open(&dir.path().join("state.db"), "t").unwrap();
        ev.open(store, &cfg, dir.path()).await.unwrap();
        for _ in 0..2 {
            ev.denied("token:a");
            ev.denied("token:b");
        }
        assert!(ev.since(0).is_empty());
        ev.denied("token:a");
        let got = ev.since(0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, kind::AUTH_DENIAL_SPIKE);
        assert_eq!(got[0].detail["principal"], "token:a");
        assert_eq!(got[0].detail["denials"], 3);
        for _ in 0..10 {
            ev.denied("token:a");
        }
        assert_eq!(ev.since(0).len(), 1, "one spike event per window");
        assert_eq!(ev.denials.total("token:a"), 13);
    }
}
