//! The event webhook sink (`events.webhook`, #14): every event of the tenant, one `POST` of
//! its JSON each (the same object `GET /events` streams), in cursor order, to `http://`
//! (loopback only), `https://` (the system's roots) or `unix://PATH` (`crate::webhook_post`,
//! shared with the policy webhook).
//!
//! Invariants: `push` never blocks: events wait in a buffer of `buffer` events; when it is
//! full the oldest is dropped and counted (`bulkhead_event_webhook_dropped_total`). A failed
//! delivery (no connection, timeout, a non-2xx answer) is retried `retries` times with a
//! backoff that doubles from [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`]; after the last one the
//! event is given up and counted (`..._failed_total`). Redirects are not followed.

use http_body_util::BodyExt;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{watch, Notify};

use bulkhead_core::config::events::EventWebhook;

pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("event webhook timed out after {0:?}")]
    Timeout(Duration),
    #[error("event webhook is unreachable: {0}")]
    Unreachable(String),
    #[error("event webhook answered HTTP {0} (expected 2xx)")]
    Status(u16),
}

/// One event waiting: its cursor (logs) and its JSON.
pub struct Pending {
    pub cursor: u64,
    pub body: Vec<u8>,
}

pub struct Sink {
    tenant: String,
    cfg: EventWebhook,
    buf: Mutex<VecDeque<Pending>>,
    more: Notify,
    poster: crate::webhook_post::Poster,
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub retried: AtomicU64,
}

impl Sink {
    pub fn new(tenant: &str, cfg: EventWebhook) -> Sink {
        Sink {
            tenant: tenant.to_owned(),
            cfg,
            buf: Mutex::new(VecDeque::new()),
            more: Notify::new(),
            poster: crate::webhook_post::Poster::new(),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            retried: AtomicU64::new(0),
        }
    }

    /// Queues `e` for delivery, dropping the oldest waiting event when the buffer is full.
    pub fn push(&self, e: Pending) {
        let mut b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        while b.len() >= self.cfg.buffer.max(1) {
            b.pop_front();
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        b.push_back(e);
        drop(b);
        self.more.notify_one();
    }

    fn pop(&self) -> Option<Pending> {
        self.buf
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Delivers events until `closed` turns true.
    pub async fn run(self: std::sync::Arc<Self>, mut closed: watch::Receiver<bool>) {
        loop {
            if *closed.borrow() {
                return;
            }
            let Some(e) = self.pop() else {
                tokio::select! {
                    _ = self.more.notified() => {}
                    _ = closed.changed() => {}
                }
                continue;
            };
            let body = e.body;
            let mut backoff = FIRST_BACKOFF;
            let mut attempt = 0;
            loop {
                match self.post(body.clone()).await {
                    Ok(()) => {
                        self.delivered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(err) if attempt < self.cfg.retries => {
                        attempt += 1;
                        self.retried.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(cursor = e.cursor, attempt, error = %err, "event webhook failed; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = closed.changed() => return,
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Err(err) => {
                        self.failed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(tenant = %self.tenant, cursor = e.cursor, url = %self.cfg.url, error = %err, "event webhook failed; the event is given up (it stays on GET /events)");
                        break;
                    }
                }
            }
        }
    }

    /// One delivery attempt, bounded by the configured timeout.
    async fn post(&self, body: Vec<u8>) -> Result<(), SinkError> {
        let t = self.cfg.timeout;
        match tokio::time::timeout(t, self.exchange(body)).await {
            Ok(r) => r,
            Err(_) => Err(SinkError::Timeout(t)),
        }
    }

    async fn exchange(&self, body: Vec<u8>) -> Result<(), SinkError> {
        let resp = (self.poster)
            .post(&self.cfg.target, &[], body)
            .await
            .map_err(SinkError::Unreachable)?;
        let status = resp.status().as_u16();
        // The answer's body is read (up to 64 KiB) and dropped.
        let _ = http_body_util::Limited::new(resp.into_body(), 64 << 10)
            .collect()
            .await;
        if !(200..300).contains(&status) {
            return Err(SinkError::Status(status));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_core::config::policy::WebhookTarget;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ev(cursor: u64) -> Pending {
        Pending {
            cursor,
            body: format!(r#"{{"cursor":{cursor},"kind":"node.created"}}"#).into_bytes(),
        }
    }

    fn sink(target: WebhookTarget, retries: u32, buffer: usize) -> Arc<Sink> {
        Arc::new(Sink::new(
            "t",
            EventWebhook {
                url: "test".into(),
                target,
                timeout: Duration::from_secs(2),
                retries,
                buffer,
            },
        ))
    }

    #[test]
    fn a_full_buffer_drops_the_oldest() {
        let s = sink(WebhookTarget::Unix("/nonexistent".into()), 0, 2);
        for c in 1..=5 {
            s.push(ev(c));
        }
        assert_eq!(s.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(s.pop().map(|e| e.cursor), Some(4));
        assert_eq!(s.pop().map(|e| e.cursor), Some(5));
    }

    #[tokio::test]
    async fn a_failed_delivery_is_retried_then_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        // First answer 500, then 200: the event arrives twice, the second time accepted.
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let seen2 = seen.clone();
        tokio::spawn(async move {
            for status in ["500 Oops", "200 OK"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut got = Vec::new();
                let mut buf = vec![0u8; 8192];
                while !got.ends_with(b"}") {
                    let n = s.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                seen2
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&got).into_owned());
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let s = sink(WebhookTarget::Unix(path.clone()), 3, 10);
        let (stop, closed) = watch::channel(false);
        tokio::spawn(s.clone().run(closed));
        s.push(ev(7));
        for _ in 0..100 {
            if s.delivered.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.delivered.load(Ordering::Relaxed), 1);
        assert_eq!(s.retried.load(Ordering::Relaxed), 1);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert!(seen[1].starts_with("POST / HTTP/1.1"), "{}", seen[1]);
        assert!(seen[1].contains("\"cursor\":7"), "{}", seen[1]);
        // Nobody listens any more: retries, then given up.
        drop(std::fs::remove_file(&path));
        s.push(ev(8));
        for _ in 0..200 {
            if s.failed.load(Ordering::Relaxed) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.failed.load(Ordering::Relaxed), 1);
        let _ = stop.send(true);
    }
}
