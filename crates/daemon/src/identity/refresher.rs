//! Keeping every running node's token fresh: one background task per tenant.
//!
//! Each node that should hold a token (the [`Target`] says which: running, agent up) gets one
//! as soon as it is seen, then again every `ttl / 2`, so a node always holds a token with at
//! least half its lifetime left. A failed push is retried soon and logged: every second while
//! a node has never had its token (its agent may still be starting; a warning from the tenth
//! failure in a row), else after a backoff (1s, doubling, at most [`MAX_BACKOFF`], never later
//! than `ttl / 2`). At most [`CONCURRENCY`] pushes run at once per
//! tenant, each bounded by [`PUSH_TIMEOUT`], so a slow node never holds the others up nor its
//! agent's turn for long. A node that leaves the target's list is forgotten: its token went
//! with its tmpfs, and it gets a new one as soon as it runs again. The task ends when the
//! target is gone (the tenant dropped).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::issuer::Identity;

pub const CONCURRENCY: usize = 4;
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Failed pushes in a row before each further one is logged as a warning (a booting guest's
/// agent takes a while).
const QUIET_FAILURES: u32 = 10;
/// Until its first token, a node is retried every second this many times, then with backoff.
const FIRST_TRIES: u32 = 60;
const TICK: Duration = Duration::from_secs(1);

pub type PushFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Where tokens go: a tenant's running nodes.
pub trait Target: Send + Sync + 'static {
    /// The tenant's name (the tokens' `tenant` claim).
    fn tenant(&self) -> String;
    /// The nodes that should hold a token now; `None` once the target is gone.
    fn nodes(&self) -> Option<Vec<String>>;
    /// Writes `token` into `node`.
    fn push<'a>(&'a self, node: &'a str, token: &'a str) -> PushFuture<'a>;
}

#[derive(Debug, Clone, Copy)]
struct Due {
    at: Instant,
    failures: u32,
    /// A push has succeeded since the node was (re)seen.
    served: bool,
    running: bool,
}

/// A tenant's token delivery, as the tenant holds it: its refresher and the target it
/// pushes to (`tenant/identity.rs` makes it).
pub struct Delivery {
    pub refresher: Arc<Refresher>,
    pub target: Arc<dyn Target>,
}

/// One tenant's refresher.
pub struct Refresher {
    pub identity: Arc<Identity>,
    due: Mutex<HashMap<String, Due>>,
    wake: Notify,
    slots: Arc<Semaphore>,
}

impl Refresher {
    pub fn new(identity: Arc<Identity>) -> Arc<Self> {
        Arc::new(Refresher {
            identity,
            due: Mutex::default(),
            wake: Notify::new(),
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
        })
    }

    fn due(&self) -> std::sync::MutexGuard<'_, HashMap<String, Due>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a token is left before the next one: half its lifetime.
    pub fn interval(&self) -> Duration {
        self.identity.cfg.ttl / 2
    }

    /// Mints a token for `node` and pushes it, bounded by [`PUSH_TIMEOUT`]; records the
    /// outcome (next refresh, or a retry soon).
    pub async fn push_now(&self, target: &dyn Target, node: &str) -> Result<(), String> {
        let r = async {
            let (token, _) = self
                .identity
                .mint(&target.tenant(), node)
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(PUSH_TIMEOUT, target.push(node, &token)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {}s", PUSH_TIMEOUT.as_secs())),
            }
        }
        .await;
        let mut due = self.due();
        let d = due.entry(node.to_string()).or_insert(Due {
            at: Instant::now(),
            failures: 0,
            served: false,
            running: false,
        });
        d.running = false;
        match &r {
            Ok(()) => {
                d.failures = 0;
                d.served = true;
                d.at = Instant::now() + self.interval();
            }
            Err(e) => {
                d.failures += 1;
                // A node that never got its token is usually one whose agent is still
                // starting (a booting guest): keep trying every second for a while.
                let cap = if d.served || d.failures > FIRST_TRIES {
                    MAX_BACKOFF
                } else {
                    Duration::from_secs(1)
                };
                let backoff = (Duration::from_secs(1) * 2u32.saturating_pow(d.failures - 1))
                    .min(cap)
                    .min(self.interval());
                d.at = Instant::now() + backoff;
                // A booting node's agent may not answer for a few seconds: quiet until then.
                if d.failures >= QUIET_FAILURES {
                    tracing::warn!(node = %node, error = %e, failures = d.failures, retry_in_s = backoff.as_secs(), "pushing the workload identity token failed");
                } else {
                    tracing::debug!(node = %node, error = %e, failures = d.failures, "pushing the workload identity token failed; retrying");
                }
            }
        }
        r
    }

    /// Asks for a push to `node` as soon as possible (a node that just started again).
    pub fn soon(&self, node: &str) {
        self.due().remove(node);
        self.wake.notify_one();
    }

    /// One round: forget nodes that left, start pushes that are due. `false`: target gone.
    fn round(self: &Arc<Self>, target: &Arc<dyn Target>) -> bool {
        let Some(nodes) = target.nodes() else {
            return false;
        };
        let now = Instant::now();
        let mut start = vec![];
        {
            let mut due = self.due();
            due.retain(|n, _| nodes.contains(n));
            for n in nodes {
                let d = due.entry(n.clone()).or_insert(Due {
                    at: now,
                    failures: 0,
                    served: false,
                    running: false,
                });
                if !d.running && d.at <= now {
                    d.running = true;
                    start.push(n);
                }
            }
        }
        for n in start {
            let (me, t) = (self.clone(), target.clone());
            tokio::spawn(async move {
                let Ok(_slot) = me.slots.clone().acquire_owned().await else {
                    return;
                };
                let _ = me.push_now(t.as_ref(), &n).await;
            });
        }
        true
    }

    /// Runs the refresher until the target is gone.
    pub fn spawn(self: &Arc<Self>, target: Arc<dyn Target>) {
        let me = self.clone();
        tokio::spawn(async move {
            while me.round(&target) {
                tokio::select! {
                    _ = tokio::time::sleep(TICK) => {}
                    _ = me.wake.notified() => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_core::config::identity::WorkloadIdentityConfig;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A tenant of nodes whose "agent" keeps the last token it was given, and fails on demand.
    #[derive(Default)]
    struct Nodes {
        names: Mutex<Vec<String>>,
        tokens: Mutex<HashMap<String, Vec<String>>>,
        failing: AtomicBool,
    }

    impl Target for Nodes {
        fn tenant(&self) -> String {
            "t".into()
        }
        fn nodes(&self) -> Option<Vec<String>> {
            Some(self.names.lock().unwrap().clone())
        }
        fn push<'a>(&'a self, node: &'a str, token: &'a str) -> PushFuture<'a> {
            Box::pin(async move {
                if self.failing.load(Ordering::SeqCst) {
                    return Err("agent gone".into());
                }
                self.tokens
                    .lock()
                    .unwrap()
                    .entry(node.into())
                    .or_default()
                    .push(token.into());
                Ok(())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn nodes_get_tokens_at_once_then_at_half_ttl_and_failures_retry() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = WorkloadIdentityConfig {
            audiences: vec!["vault".into()],
            ttl: Duration::from_secs(20),
            issuer: "https://bh.example".into(),
            api_role: None,
        };
        let id = Arc::new(Identity::open(cfg, tmp.path()).unwrap());
        let r = Refresher::new(id);
        let nodes = Arc::new(Nodes::default());
        nodes.names.lock().unwrap().push("g-1".into());
        r.spawn(nodes.clone());
        let count = |n: &str| nodes.tokens.lock().unwrap().get(n).map_or(0, |v| v.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(count("g-1"), 1, "a new node gets a token at once");
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(count("g-1"), 1, "not before half the ttl");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(count("g-1"), 2, "again at half the ttl");
        let (a, b) = {
            let t = nodes.tokens.lock().unwrap();
            (t["g-1"][0].clone(), t["g-1"][1].clone())
        };
        assert_ne!(a, b);
        // A failing node is retried soon, not at the next half-ttl.
        nodes.failing.store(true, Ordering::SeqCst);
        nodes.names.lock().unwrap().push("g-2".into());
        r.soon("g-2");
        tokio::time::sleep(Duration::from_secs(2)).await;
        nodes.failing.store(false, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(count("g-2"), 1, "retried within seconds");
        // A node that leaves is forgotten; back again, it gets a token at once.
        nodes.names.lock().unwrap().retain(|n| n != "g-2");
        tokio::time::sleep(Duration::from_secs(2)).await;
        nodes.names.lock().unwrap().push("g-2".into());
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(count("g-2"), 2);
    }
}
