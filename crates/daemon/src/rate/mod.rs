//! A tenant's request limits (issue #12, ADR 0026): token buckets for lifecycle operations
//! and for execs (429 `rate_limited` with Retry-After), and its requests in flight (503
//! `busy`). The pipeline applies them once the authorization layer has resolved the tenant
//! (`http/admit.rs`); handlers know nothing of them.
//!
//! Which actions spend which bucket, and which requests are long-lived (not counted in
//! flight), is data here: [`bucket_of`], [`LONG_LIVED`].
//!
//! Invariants: a refused request spends no token and holds no in-flight place; the in-flight
//! count is released when the request's guard drops (its handler returned a response, or the
//! request was abandoned).

pub mod bucket;
pub mod session;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bulkhead_core::config::rate_limits::{Rate, RateLimits};
use bulkhead_core::{Code, DomainError};

use crate::auth::Action;
use bucket::{retry_after_secs, Bucket};
use session::Session;

/// What a busy (in-flight) answer tells the client to wait.
pub const BUSY_RETRY_AFTER_S: u32 = 1;

/// A tenant's two buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Create, delete and the power operations: each costs host work.
    Lifecycle,
    /// Execs (foreground and background) and shell sessions: each starts a process.
    Exec,
}

impl Kind {
    fn what(self) -> &'static str {
        match self {
            Kind::Lifecycle => "lifecycle operations",
            Kind::Exec => "execs",
        }
    }
}

/// The bucket an action spends, if any (everything else is bounded by in-flight only).
pub fn bucket_of(action: Action) -> Option<Kind> {
    use Action::*;
    match action {
        CreateNode | DeleteNode | PauseNode | ResumeNode | ShutdownNode | RelaunchNode
        | SuspendNode | RestoreNode => Some(Kind::Lifecycle),
        ExecInNode | ConnectToNode => Some(Kind::Exec),
        _ => None,
    }
}

/// Requests that may last as long as a workload does (a command's run, a terminal, a tunnel,
/// a watch, a followed log): not counted in flight, so that a tenant's open sessions never
/// block its short requests, but counted as sessions (`config.rate_limits.max_sessions`) until
/// their response ends, so that a tenant's sessions never fill a shared listener's
/// connections. Route path (as in the route table) and method.
pub const LONG_LIVED: &[(&str, &str)] = &[
    ("/vm/{node}/exec", "POST"),
    ("/vm/{node}/exec/{exec_id}/wait-exit", "GET"),
    ("/vm/{node}/exec/{exec_id}/logs", "GET"),
    ("/vm/{node}/shell", "GET"),
    ("/vm/{node}/forward", "GET"),
    ("/vm/{node}/fs/watch", "GET"),
    ("/events", "GET"), // #14, part B: a followed event stream
    // #15 C: E2B's process streams (a command's run, an attach, an input stream)
    ("/envd/{node}/process.Process/Start", "POST"),
    ("/envd/{node}/process.Process/Connect", "POST"),
    ("/envd/{node}/process.Process/StreamInput", "POST"),
    // #15 C end
];

pub fn long_lived(path: &str, method: &str) -> bool {
    LONG_LIVED
        .iter()
        .any(|(p, m)| *p == path && m.eq_ignore_ascii_case(method))
}

/// The bounds of a listener on UNIX socket `path`: a tenant socket
/// (`api.tenant_sockets/<tenant>.sock`) takes the smaller of `config.api.max_connections` and
/// its tenant's `rate_limits.max_connections`; any other listener keeps `global`'s.
pub fn socket_limits(
    cfg: &bulkhead_core::DaemonConfig,
    path: &std::path::Path,
    global: crate::serve::Limits,
) -> crate::serve::Limits {
    let Some(dir) = &cfg.api.tenant_sockets else {
        return global;
    };
    match cfg
        .tenants
        .iter()
        .find(|t| dir.join(format!("{}.sock", t.tenant)) == path)
    {
        Some(t) if t.rate_limits.max_connections < global.max_connections => crate::serve::Limits {
            max_connections: t.rate_limits.max_connections,
            cap_key: "config.rate_limits.max_connections",
            ..global
        },
        _ => global,
    }
}

/// One tenant's limits and what they refused.
pub struct TenantLimits {
    tenant: String,
    lifecycle: Option<(Rate, Mutex<Bucket>)>,
    exec: Option<(Rate, Mutex<Bucket>)>,
    max_in_flight: usize,
    in_flight: AtomicUsize,
    max_sessions: usize,
    sessions: Arc<AtomicUsize>,
    /// Requests answered 429 `rate_limited`.
    pub rate_limited: AtomicU64,
    /// Requests answered 503 `busy` (in flight, or the lifecycle queue full).
    pub busy: AtomicU64,
}

/// A request's place in flight; released on drop.
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TenantLimits {
    pub fn new(tenant: &str, cfg: &RateLimits) -> Self {
        let now = Instant::now();
        let bucket = |r: Option<Rate>| r.map(|r| (r, Mutex::new(Bucket::new(r, now))));
        TenantLimits {
            tenant: tenant.to_string(),
            lifecycle: bucket(cfg.lifecycle),
            exec: bucket(cfg.exec),
            max_in_flight: cfg.max_in_flight,
            in_flight: AtomicUsize::new(0),
            max_sessions: cfg.max_sessions,
            sessions: Arc::new(AtomicUsize::new(0)),
            rate_limited: AtomicU64::new(0),
            busy: AtomicU64::new(0),
        }
    }

    /// Spends a token of `kind`'s bucket at `now`, or refuses with 429 and Retry-After.
    pub fn spend(&self, kind: Kind, now: Instant) -> Result<(), DomainError> {
        let b = match kind {
            Kind::Lifecycle => &self.lifecycle,
            Kind::Exec => &self.exec,
        };
        let Some((rate, bucket)) = b else {
            return Ok(());
        };
        let taken = bucket.lock().unwrap_or_else(|p| p.into_inner()).take(now);
        taken.map_err(|wait| {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            let secs = retry_after_secs(wait);
            DomainError::new(
                Code::RateLimited,
                format!(
                    "rate limit: {} {} per second (burst {}) for tenant {:?}: retry after {secs}s",
                    rate.per_s,
                    kind.what(),
                    rate.burst,
                    self.tenant
                ),
            )
            .retry_after(secs)
        })
    }

    /// A place among the tenant's requests in flight, or 503 `busy`.
    pub fn enter(&self) -> Result<InFlight<'_>, DomainError> {
        let n = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(&self.in_flight);
        if n >= self.max_in_flight {
            drop(guard);
            self.busy.fetch_add(1, Ordering::Relaxed);
            return Err(DomainError::new(
                Code::Busy,
                format!(
                    "tenant {:?} has {} requests in flight already (config.rate_limits.max_in_flight): retry after {BUSY_RETRY_AFTER_S}s",
                    self.tenant, self.max_in_flight
                ),
            )
            .retry_after(BUSY_RETRY_AFTER_S));
        }
        Ok(guard)
    }

    /// A place among the tenant's open long-lived requests, or 503 `busy`.
    pub fn open_session(&self) -> Result<Session, DomainError> {
        Session::open(&self.sessions, self.max_sessions).ok_or_else(|| {
            self.busy.fetch_add(1, Ordering::Relaxed);
            DomainError::new(
                Code::Busy,
                format!(
                    "tenant {:?} has {} long-lived requests open already (execs, waits, followed logs, shells, forwards, watches; config.rate_limits.max_sessions): end one or retry after {BUSY_RETRY_AFTER_S}s",
                    self.tenant, self.max_sessions
                ),
            )
            .retry_after(BUSY_RETRY_AFTER_S)
        })
    }

    /// Long-lived requests open now.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::SeqCst)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits(yaml: &str) -> TenantLimits {
        let raw: bulkhead_core::config::rate_limits::RawRateLimits =
            serde_yaml::from_str(yaml).unwrap();
        TenantLimits::new("a", &RateLimits::from_raw(Some(&raw)).unwrap())
    }

    #[test]
    fn an_empty_bucket_answers_429_naming_the_limit() {
        let l = limits("{ lifecycle_per_s: 5, lifecycle_burst: 10 }");
        let t0 = Instant::now();
        for _ in 0..10 {
            l.spend(Kind::Lifecycle, t0).unwrap();
        }
        let e = l.spend(Kind::Lifecycle, t0).unwrap_err();
        assert_eq!(e.code, Code::RateLimited);
        assert_eq!(e.retry_after, Some(1));
        assert_eq!(
            e.message,
            "rate limit: 5 lifecycle operations per second (burst 10) for tenant \"a\": retry after 1s"
        );
        // Execs have no bucket here: unlimited.
        for _ in 0..1000 {
            l.spend(Kind::Exec, t0).unwrap();
        }
        assert_eq!(l.rate_limited.load(Ordering::Relaxed), 1);
        l.spend(Kind::Lifecycle, t0 + Duration::from_millis(200))
            .unwrap();
    }

    #[test]
    fn in_flight_is_bounded_and_released() {
        let l = limits("{ max_in_flight: 2 }");
        let a = l.enter().unwrap();
        let _b = l.enter().unwrap();
        let e = l.enter().err().unwrap();
        assert_eq!((e.code, e.retry_after), (Code::Busy, Some(1)));
        assert!(e.message.contains("max_in_flight"), "{}", e.message);
        assert_eq!(l.in_flight(), 2, "a refusal holds no place");
        drop(a);
        let _c = l.enter().unwrap();
        assert_eq!(l.busy.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn sessions_are_bounded_and_released() {
        let l = limits("{ max_sessions: 1 }");
        let s = l.open_session().unwrap();
        let e = l.open_session().err().unwrap();
        assert_eq!((e.code, e.retry_after), (Code::Busy, Some(1)));
        assert!(e.message.contains("max_sessions"), "{}", e.message);
        assert_eq!(l.sessions(), 1, "a refusal holds no place");
        assert_eq!(l.in_flight(), 0, "sessions are not in flight");
        drop(s);
        let _t = l.open_session().unwrap();
    }

    #[test]
    fn every_lifecycle_and_exec_action_spends_its_bucket() {
        assert_eq!(bucket_of(Action::CreateNode), Some(Kind::Lifecycle));
        assert_eq!(bucket_of(Action::RestoreNode), Some(Kind::Lifecycle));
        assert_eq!(bucket_of(Action::ExecInNode), Some(Kind::Exec));
        assert_eq!(bucket_of(Action::ConnectToNode), Some(Kind::Exec));
        assert_eq!(bucket_of(Action::ListNodes), None);
        assert_eq!(bucket_of(Action::CopyToNode), None);
    }
}
