//! Host work (node setups: a supervisor started, a node relaunched or restored) shared fairly
//! between a daemon's tenants (issue #12, ADR 0026).
//!
//! One [`Fair`] per daemon holds a fixed number of host-work slots; each tenant has a
//! [`Lane`]. A lifecycle operation first takes a [`Ticket`] ([`Lane::admit`]: a place in its
//! tenant's bounded queue, held for the whole operation), then, for its host work, a
//! [`Permit`] ([`Lane::host_work`], waiting at most until the request's deadline, then 503
//! `busy`). A permit covers a node's setup and at most [`BOOT_SLOT_BUDGET`] of its boot
//! ([`Permit::hold_while`]): a node whose agent never answers waits on without a slot, so
//! [`HOST_WORK_SLOTS`] slow boots cannot block every tenant until their timeouts. A free slot goes at once; otherwise the operation waits in
//! its lane, and every slot that frees goes to the next lane with a waiter after the one
//! served last (round-robin), to that lane's oldest waiter. So one tenant's burst waits
//! behind its own requests, never in front of another tenant's: a tenant with one waiter is
//! served within one round however many another has queued.
//!
//! Invariants:
//! - memory is bounded: tickets per lane ≤ the lane's `max_queued`, tickets over all lanes ≤
//!   the daemon's `max_total`, waiters per lane ≤ `max_queued` (a full lane or daemon answers
//!   [`FairError`], 503 `busy` with Retry-After);
//! - a slot is never lost: a [`Permit`] returns its slot on drop (to the next waiter, else to
//!   the free count), a waiter that gave up (its future dropped) is skipped;
//! - no lock is held across an await, and a permit is never dropped while the lock is held.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bulkhead_core::{Code, DomainError};
use tokio::sync::oneshot;

/// Host-work slots of a daemon (what each tenant had for itself before #12).
pub const HOST_WORK_SLOTS: usize = 8;
/// Lifecycle operations admitted over all of a daemon's tenants (a tenant's
/// `rate_limits.max_queued` is at most this, checked at config load).
pub use bulkhead_core::config::rate_limits::MAX_QUEUED_TOTAL;
/// How long a permit may cover a node's setup and boot: a microVM under TCG boots in several
/// seconds, a jail in well under one; longer than this, the boot waits on without a slot.
pub const BOOT_SLOT_BUDGET: Duration = Duration::from_secs(60);
/// What a busy answer tells the client to wait.
pub const RETRY_AFTER_S: u32 = 1;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FairError {
    #[error("tenant {tenant:?} has {max} node operations queued already (config.rate_limits.max_queued): retry after {RETRY_AFTER_S}s")]
    TenantFull { tenant: String, max: usize },
    #[error("the daemon has {max} node operations queued already over all tenants: retry after {RETRY_AFTER_S}s")]
    DaemonFull { max: usize },
    #[error("no host-work slot freed for tenant {tenant:?} before the request's timeout (the daemon's {HOST_WORK_SLOTS} slots are busy): retry after {RETRY_AFTER_S}s")]
    TimedOut { tenant: String },
    #[error("the daemon is shutting down")]
    Closed,
}

impl From<FairError> for DomainError {
    fn from(e: FairError) -> Self {
        match e {
            FairError::Closed => DomainError::new(Code::Busy, e.to_string()),
            _ => DomainError::new(Code::Busy, e.to_string()).retry_after(RETRY_AFTER_S),
        }
    }
}

struct LaneState {
    name: String,
    max: usize,
    admitted: usize,
    waiting: VecDeque<oneshot::Sender<Permit>>,
}

struct State {
    free: usize,
    admitted: usize,
    /// The lane to look at first when a slot frees.
    cursor: usize,
    lanes: Vec<LaneState>,
}

/// The daemon's host-work scheduler.
pub struct Fair {
    max_total: usize,
    state: Mutex<State>,
}

impl Fair {
    pub fn new(slots: usize, max_total: usize) -> Arc<Fair> {
        Arc::new(Fair {
            max_total,
            state: Mutex::new(State {
                free: slots,
                admitted: 0,
                cursor: 0,
                lanes: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent counts.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A tenant's lane, with at most `max_queued` of its operations admitted at once.
    pub fn lane(self: &Arc<Self>, tenant: &str, max_queued: usize) -> Lane {
        let mut st = self.lock();
        st.lanes.push(LaneState {
            name: tenant.to_string(),
            max: max_queued,
            admitted: 0,
            waiting: VecDeque::new(),
        });
        Lane {
            fair: self.clone(),
            idx: st.lanes.len() - 1,
        }
    }

    /// Hands a freed slot to the next lane's oldest live waiter, else back to the pool.
    fn release(self: &Arc<Self>) {
        let mut st = self.lock();
        loop {
            let n = st.lanes.len();
            let next = (0..n)
                .map(|k| (st.cursor + k) % n)
                .find(|&i| !st.lanes[i].waiting.is_empty());
            let Some(i) = next else {
                st.free += 1;
                return;
            };
            let tx = st.lanes[i].waiting.pop_front().expect("lane has a waiter");
            match tx.send(Permit {
                fair: Some(self.clone()),
                granted: Instant::now(),
            }) {
                Ok(()) => {
                    st.cursor = (i + 1) % n;
                    return;
                }
                // The waiter gave up: disarm the permit (its drop must not release again,
                // and certainly not under this lock) and look again, this lane first.
                Err(mut p) => {
                    p.fair = None;
                    st.cursor = i;
                }
            }
        }
    }
}

/// One tenant's place at the scheduler.
pub struct Lane {
    fair: Arc<Fair>,
    idx: usize,
}

impl Lane {
    /// A place in the tenant's bounded queue for one lifecycle operation, or busy.
    pub fn admit(&self) -> Result<Ticket, FairError> {
        let mut st = self.fair.lock();
        let lane = &st.lanes[self.idx];
        if lane.admitted >= lane.max {
            return Err(FairError::TenantFull {
                tenant: lane.name.clone(),
                max: lane.max,
            });
        }
        if st.admitted >= self.fair.max_total {
            return Err(FairError::DaemonFull {
                max: self.fair.max_total,
            });
        }
        st.lanes[self.idx].admitted += 1;
        st.admitted += 1;
        Ok(Ticket {
            fair: self.fair.clone(),
            idx: self.idx,
        })
    }

    /// A host-work slot: at once if one is free, else when the round-robin reaches this lane,
    /// but not after `deadline` (then [`FairError::TimedOut`]; the waiter's place is skipped).
    pub async fn host_work(&self, deadline: Instant) -> Result<Permit, FairError> {
        let rx = {
            let mut st = self.fair.lock();
            if st.free > 0 {
                st.free -= 1;
                return Ok(Permit {
                    fair: Some(self.fair.clone()),
                    granted: Instant::now(),
                });
            }
            let lane = &mut st.lanes[self.idx];
            if lane.waiting.len() >= lane.max {
                lane.waiting.retain(|tx| !tx.is_closed());
            }
            if lane.waiting.len() >= lane.max {
                return Err(FairError::TenantFull {
                    tenant: lane.name.clone(),
                    max: lane.max,
                });
            }
            let (tx, rx) = oneshot::channel();
            lane.waiting.push_back(tx);
            rx
        };
        let until = tokio::time::Instant::from_std(deadline);
        match tokio::time::timeout_at(until, rx).await {
            Ok(r) => r.map_err(|_| FairError::Closed),
            // The receiver is gone: a permit sent meanwhile drops with it and is handed on.
            Err(_) => Err(FairError::TimedOut {
                tenant: self.fair.lock().lanes[self.idx].name.clone(),
            }),
        }
    }

    /// Operations of this lane admitted now (tests, metrics).
    pub fn admitted(&self) -> usize {
        self.fair.lock().lanes[self.idx].admitted
    }

    /// Operations of this lane waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.fair.lock().lanes[self.idx].waiting.len()
    }
}

/// A place in a tenant's queue; released on drop.
pub struct Ticket {
    fair: Arc<Fair>,
    idx: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.fair.lock();
        st.lanes[self.idx].admitted -= 1;
        st.admitted -= 1;
    }
}

/// A host-work slot; handed on (round-robin) on drop.
pub struct Permit {
    fair: Option<Arc<Fair>>,
    granted: Instant,
}

impl Permit {
    /// Runs `fut` (a node's boot) holding this slot until `budget` after it was granted at
    /// most, then lets `fut` go on without it. Callers pass [`BOOT_SLOT_BUDGET`].
    pub async fn hold_while<F: Future>(self, budget: Duration, fut: F) -> F::Output {
        let until = tokio::time::Instant::from_std(self.granted + budget);
        tokio::pin!(fut);
        let done = tokio::select! {
            r = &mut fut => Some(r),
            _ = tokio::time::sleep_until(until) => None,
        };
        drop(self);
        match done {
            Some(r) => r,
            None => {
                tracing::debug!(
                    budget_s = budget.as_secs(),
                    "a boot outlasted its host-work slot's budget; waiting on without the slot"
                );
                fut.await
            }
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(f) = self.fair.take() {
            f.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    /// Spawns `n` waiters on `lane` that record `tag` when served and give the slot back.
    fn waiters(
        lane: &Arc<Lane>,
        n: usize,
        tag: &'static str,
        order: &Arc<Mutex<Vec<&'static str>>>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let (lane, order) = (lane.clone(), order.clone());
                tokio::spawn(async move {
                    let p = lane.host_work(far()).await.unwrap();
                    order.lock().unwrap().push(tag);
                    tokio::task::yield_now().await;
                    drop(p);
                })
            })
            .collect()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_burst_waits_behind_itself_not_in_front_of_another_tenant() {
        let fair = Fair::new(1, 1000);
        let a = Arc::new(fair.lane("a", 200));
        let b = Arc::new(fair.lane("b", 200));
        let held = a.host_work(far()).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = waiters(&a, 100, "a", &order);
        settle().await;
        tasks.extend(waiters(&b, 1, "b", &order));
        settle().await;
        assert_eq!((a.waiting(), b.waiting()), (100, 1));
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        assert_eq!(order.len(), 101);
        let pos = order.iter().position(|t| *t == "b").unwrap();
        assert!(pos <= 1, "b served at {pos}, after a round of a: {order:?}");
        assert_eq!(fair.lock().free, 1, "every slot came back");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lanes_alternate_while_both_have_waiters() {
        let fair = Fair::new(1, 1000);
        let lanes: Vec<Arc<Lane>> = ["a", "b", "c"]
            .iter()
            .map(|t| Arc::new(fair.lane(t, 10)))
            .collect();
        let held = lanes[0].host_work(far()).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (lane, tag) in lanes.iter().zip(["a", "b", "c"]) {
            tasks.extend(waiters(lane, 3, tag, &order));
            settle().await;
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            vec!["a", "b", "c", "a", "b", "c", "a", "b", "c"]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn free_slots_go_at_once_up_to_the_count() {
        let fair = Fair::new(2, 10);
        let a = fair.lane("a", 10);
        let p1 = a.host_work(far()).await.unwrap();
        let _p2 = a.host_work(far()).await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(50), a.host_work(far())).await;
        assert!(third.is_err(), "a third slot waits");
        drop(p1);
        let _p3 = tokio::time::timeout(Duration::from_secs(1), a.host_work(far()))
            .await
            .expect("a freed slot is handed on")
            .unwrap();
    }

    #[test]
    fn tickets_are_bounded_per_tenant_and_per_daemon() {
        let fair = Fair::new(1, 3);
        let a = fair.lane("a", 2);
        let b = fair.lane("b", 2);
        let a1 = a.admit().unwrap();
        let _a2 = a.admit().unwrap();
        let e = a.admit().err().unwrap();
        assert!(matches!(e, FairError::TenantFull { max: 2, .. }), "{e}");
        let d: DomainError = e.into();
        assert_eq!((d.code, d.retry_after), (Code::Busy, Some(1)));
        assert!(
            d.message.contains("\"a\"") && d.message.contains("max_queued"),
            "{}",
            d.message
        );
        let _b1 = b.admit().unwrap();
        assert_eq!(b.admit().err(), Some(FairError::DaemonFull { max: 3 }));
        drop(a1);
        let _b2 = b.admit().unwrap();
        assert_eq!((a.admitted(), b.admitted()), (1, 2));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn waiters_are_bounded_and_a_waiter_that_gave_up_is_skipped() {
        let fair = Fair::new(1, 100);
        let a = Arc::new(fair.lane("a", 2));
        let held = a.host_work(far()).await.unwrap();
        let w1 = {
            let a = a.clone();
            tokio::spawn(async move { a.host_work(far()).await.map(drop) })
        };
        let w2 = {
            let a = a.clone();
            tokio::spawn(async move { a.host_work(far()).await.map(drop) })
        };
        settle().await;
        assert_eq!(a.waiting(), 2);
        let third = tokio::time::timeout(Duration::from_millis(20), a.host_work(far())).await;
        assert!(
            matches!(third, Ok(Err(FairError::TenantFull { .. }))),
            "a full lane refuses"
        );
        w1.abort();
        let _ = w1.await;
        // The aborted waiter's place is reclaimed when the lane is full.
        let w3 = {
            let a = a.clone();
            tokio::spawn(async move { a.host_work(far()).await.map(drop) })
        };
        settle().await;
        assert_eq!(a.waiting(), 2);
        drop(held);
        w2.await.unwrap().unwrap();
        w3.await.unwrap().unwrap();
        assert_eq!(fair.lock().free, 1, "the slot came back, nothing lost");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_wait_for_a_slot_ends_at_the_deadline_with_busy() {
        let fair = Fair::new(1, 100);
        let a = fair.lane("a", 10);
        let held = a.host_work(far()).await.unwrap();
        let t0 = Instant::now();
        let e = a
            .host_work(Instant::now() + Duration::from_millis(50))
            .await
            .err()
            .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert_eq!(e, FairError::TimedOut { tenant: "a".into() });
        let d: DomainError = e.into();
        assert_eq!((d.code, d.retry_after), (Code::Busy, Some(1)));
        // The waiter that gave up is skipped: the slot comes back.
        drop(held);
        assert_eq!(fair.lock().free, 1);
        let _p = a.host_work(Instant::now()).await.unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_boot_gives_its_slot_back_after_the_budget_and_goes_on() {
        let fair = Fair::new(1, 100);
        let a = Arc::new(fair.lane("a", 10));
        let b = fair.lane("b", 10);
        let p = a.host_work(far()).await.unwrap();
        let (tx, rx) = oneshot::channel::<u32>();
        // A boot that answers only when told (an agent that never answers, until it does).
        let boot = tokio::spawn(async move {
            p.hold_while(Duration::from_millis(100), async { rx.await.unwrap() })
                .await
        });
        // b waits for the one slot, and gets it once a's budget is spent, a's boot still on.
        let t0 = Instant::now();
        let pb = tokio::time::timeout(Duration::from_secs(5), b.host_work(far()))
            .await
            .expect("the slot came back after the budget")
            .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(50), "not before it");
        assert!(!boot.is_finished(), "a's boot goes on without the slot");
        tx.send(7).unwrap();
        assert_eq!(boot.await.unwrap(), 7);
        drop(pb);
        // A quick boot keeps its slot to the end and hands it back once.
        let p = a.host_work(far()).await.unwrap();
        assert_eq!(p.hold_while(BOOT_SLOT_BUDGET, async { 1 }).await, 1);
        assert_eq!(fair.lock().free, 1, "nothing lost, nothing doubled");
    }
}
