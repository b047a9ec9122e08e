//! `config.rate_limits` (and each `config.tenants[]` entry's): how fast and how much at once a
//! tenant may ask of the daemon (issue #12, ADR 0026).
//!
//! - `lifecycle_per_s` / `lifecycle_burst`: a token bucket for create, delete, pause, resume,
//!   shutdown, relaunch, suspend and restore. `exec_per_s` / `exec_burst`: one for execs
//!   (foreground and background) and shell sessions. A rate without a burst gets a burst of
//!   twice the rate; a burst without a rate is an error. Absent: no limit (today's behaviour).
//! - `max_in_flight` (default [`DEFAULT_MAX_IN_FLIGHT`]): the tenant's short requests being
//!   served at once; beyond it, 503 `busy`.
//! - `max_connections` (default [`DEFAULT_MAX_CONNECTIONS`]): connections open at once on the
//!   tenant's own UNIX socket (`api.tenant_sockets`); beyond it, 503.
//! - `max_queued` (default [`DEFAULT_MAX_QUEUED`]): lifecycle operations of the tenant admitted
//!   at once (running or waiting for a host-work slot); beyond it, 503 `busy`. At most
//!   [`MAX_QUEUED_TOTAL`], the daemon's bound over all tenants (a larger one could never fill).
//! - `max_sessions`: the tenant's long-lived requests open at once (execs, waits, followed logs,
//!   shells, forwards, watches); beyond it, 503 `busy`. In a shared daemon with several tenants
//!   it must stay below `api.max_connections`, so that one tenant's sessions never fill the
//!   shared listeners, and defaults to [`DEFAULT_MAX_SESSIONS`] (at most half of
//!   `api.max_connections`; [`RateLimits::fit_shared_listener`]). A daemon with one tenant has
//!   no one to protect: unset, only `api.max_connections` bounds its sessions.
//!
//! Every value is a positive integer within its bound; errors name the key.

use serde::{Deserialize, Serialize};

use super::error::{key_err, ConfigError};

/// As many as `max_queued`: a burst of creates (which wait for their node) meets the queue's
/// bound, not this one.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Today's bound on a tenant's waiting lifecycle operations.
pub const DEFAULT_MAX_QUEUED: usize = 256;
/// A tenant's long-lived requests open at once in a shared daemon with several tenants (at most
/// half of `api.max_connections` unless set). A quarter of the default `api.max_connections`,
/// and room for a hundred execs at once (`e2e_api`).
pub const DEFAULT_MAX_SESSIONS: usize = 128;
/// `max_sessions` unset on a daemon with one tenant: no bound of its own (the listener's
/// `api.max_connections` is the bound).
pub const UNBOUNDED_SESSIONS: usize = usize::MAX;
/// Lifecycle operations admitted over all of a daemon's tenants (`daemon::fair`).
pub const MAX_QUEUED_TOTAL: usize = 1024;
/// The largest rate or burst accepted (a million a second is "no limit" in practice).
pub const MAX_RATE: u32 = 1_000_000;
/// The largest in-flight, connection or queue bound accepted.
pub const MAX_COUNT: u32 = 65_536;

/// `config.rate_limits` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_per_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_per_s: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec_burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queued: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
}

/// One token bucket: `per_s` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_s: u32,
    pub burst: u32,
}

/// The validated block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimits {
    /// Create, delete and the power operations; `None`: unlimited.
    pub lifecycle: Option<Rate>,
    /// Execs and shell sessions; `None`: unlimited.
    pub exec: Option<Rate>,
    pub max_in_flight: usize,
    pub max_connections: usize,
    pub max_queued: usize,
    /// Long-lived requests (`daemon::rate::LONG_LIVED`) open at once.
    pub max_sessions: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            lifecycle: None,
            exec: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_queued: DEFAULT_MAX_QUEUED,
            max_sessions: UNBOUNDED_SESSIONS,
        }
    }
}

const KEY: &str = "config.rate_limits";

fn rate(what: &str, per_s: Option<u32>, burst: Option<u32>) -> Result<Option<Rate>, ConfigError> {
    let in_range = |key: String, v: u32| {
        if v == 0 || v > MAX_RATE {
            Err(key_err(
                key,
                format!("{v} is out of range: give 1..={MAX_RATE}, or omit the key for no limit"),
            ))
        } else {
            Ok(v)
        }
    };
    match (per_s, burst) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(key_err(
            format!("{KEY}.{what}_burst"),
            format!("a burst needs a rate: set {what}_per_s too, e.g. {what}_per_s: 5"),
        )),
        (Some(r), b) => {
            let per_s = in_range(format!("{KEY}.{what}_per_s"), r)?;
            let burst = match b {
                Some(b) => in_range(format!("{KEY}.{what}_burst"), b)?,
                None => per_s.saturating_mul(2).min(MAX_RATE),
            };
            Ok(Some(Rate { per_s, burst }))
        }
    }
}

fn count(what: &str, v: Option<u32>, default: usize) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if n == 0 || n > MAX_COUNT => Err(key_err(
            format!("{KEY}.{what}"),
            format!(
                "{n} is out of range: give 1..={MAX_COUNT}, or omit it for {}",
                if default == UNBOUNDED_SESSIONS {
                    "no bound of its own".to_string()
                } else {
                    default.to_string()
                }
            ),
        )),
        Some(n) => Ok(n as usize),
    }
}

impl RateLimits {
    pub fn from_raw(raw: Option<&RawRateLimits>) -> Result<Self, ConfigError> {
        let Some(r) = raw else {
            return Ok(RateLimits::default());
        };
        Ok(RateLimits {
            lifecycle: rate("lifecycle", r.lifecycle_per_s, r.lifecycle_burst)?,
            exec: rate("exec", r.exec_per_s, r.exec_burst)?,
            max_in_flight: count("max_in_flight", r.max_in_flight, DEFAULT_MAX_IN_FLIGHT)?,
            max_connections: count(
                "max_connections",
                r.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            )?,
            max_queued: max_queued(r.max_queued)?,
            max_sessions: count("max_sessions", r.max_sessions, UNBOUNDED_SESSIONS)?,
        })
    }

    /// In a shared daemon with more than one tenant: a tenant's sessions must leave room on the
    /// shared listeners (admin socket, TCP; `api.max_connections` each) for the others. A value
    /// set (`raw`) at or above `max_connections` is refused naming both keys; the default is
    /// lowered to half of `max_connections` where that is smaller.
    pub fn fit_shared_listener(
        &mut self,
        raw: Option<&RawRateLimits>,
        max_connections: usize,
    ) -> Result<(), ConfigError> {
        if raw.and_then(|r| r.max_sessions).is_none() {
            self.max_sessions = DEFAULT_MAX_SESSIONS.min((max_connections / 2).max(1));
            return Ok(());
        }
        if self.max_sessions >= max_connections {
            return Err(key_err(
                format!("{KEY}.max_sessions"),
                format!(
                    "{} is not below config.api.max_connections ({max_connections}): one tenant's sessions could hold every connection of the shared listeners; give at most {}",
                    self.max_sessions,
                    max_connections.saturating_sub(1)
                ),
            ));
        }
        Ok(())
    }
}

fn max_queued(v: Option<u32>) -> Result<usize, ConfigError> {
    let n = count("max_queued", v, DEFAULT_MAX_QUEUED)?;
    if n > MAX_QUEUED_TOTAL {
        return Err(key_err(
            format!("{KEY}.max_queued"),
            format!("{n} is above the daemon's {MAX_QUEUED_TOTAL} node operations queued over all tenants: give 1..={MAX_QUEUED_TOTAL}"),
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConfig;

    const BASE: &str = "config:\n  host_groups:\n    - name: a3cf\n";

    fn parse(extra: &str) -> Result<RateLimits, String> {
        TenantConfig::parse(&format!("{BASE}{extra}"))
            .map(|c| c.rate_limits)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn absent_means_no_rate_limit_and_default_bounds() {
        let r = parse("").unwrap();
        assert_eq!(r, RateLimits::default());
        assert_eq!(r.lifecycle, None);
        assert_eq!(r.exec, None);
        assert_eq!(r.max_in_flight, 256);
        assert_eq!(r.max_connections, 256);
        assert_eq!(r.max_queued, 256);
        assert_eq!(r.max_sessions, UNBOUNDED_SESSIONS);
        assert_eq!(
            parse("  rate_limits: { max_queued: 1024 }\n")
                .unwrap()
                .max_queued,
            1024
        );
        let e = parse("  rate_limits: { max_queued: 2000 }\n").unwrap_err();
        assert!(e.contains("above the daemon's 1024"), "{e}");
    }

    #[test]
    fn a_tenants_sessions_stay_below_the_shared_listeners_connections() {
        let two = |api: &str, a: &str| {
            crate::DaemonConfig::parse(&format!(
                "config:\n{api}  tenants:\n    - name: a\n      host_groups: [ {{ name: a }} ]\n{a}    - name: b\n      host_groups: [ {{ name: b }} ]\n"
            ))
        };
        // Defaults: 128 under the default 512; half of a small api.max_connections.
        let d = two("", "").unwrap();
        assert_eq!(d.tenants[0].rate_limits.max_sessions, 128);
        let d = two("  api: { max_connections: 20 }\n", "").unwrap();
        assert_eq!(d.tenants[1].rate_limits.max_sessions, 10);
        let d = two(
            "  api: { max_connections: 20 }\n",
            "      rate_limits: { max_sessions: 19 }\n",
        )
        .unwrap();
        assert_eq!(d.tenants[0].rate_limits.max_sessions, 19);
        let e = two(
            "  api: { max_connections: 20 }\n",
            "      rate_limits: { max_sessions: 20 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("config.tenants[0].rate_limits.max_sessions")
                && e.contains("config.api.max_connections (20)"),
            "{e}"
        );
        // One tenant can only hold its own connections: no check.
        let one = TenantConfig::parse(&format!(
            "{BASE}  api: {{ max_connections: 20 }}\n  rate_limits: {{ max_sessions: 500 }}\n"
        ))
        .unwrap();
        assert_eq!(one.rate_limits.max_sessions, 500);
    }

    #[test]
    fn the_issue_example_parses() {
        let r = parse("  rate_limits: { lifecycle_per_s: 5, lifecycle_burst: 10, exec_per_s: 50, exec_burst: 100 }\n").unwrap();
        assert_eq!(
            r.lifecycle,
            Some(Rate {
                per_s: 5,
                burst: 10
            })
        );
        assert_eq!(
            r.exec,
            Some(Rate {
                per_s: 50,
                burst: 100
            })
        );
        let r = parse("  rate_limits: { exec_per_s: 7, max_in_flight: 3, max_connections: 4, max_queued: 2 }\n").unwrap();
        assert_eq!(
            r.exec,
            Some(Rate {
                per_s: 7,
                burst: 14
            })
        );
        assert_eq!(
            (r.max_in_flight, r.max_connections, r.max_queued),
            (3, 4, 2)
        );
    }

    #[test]
    fn a_shared_daemons_tenants_take_their_own_block_else_the_daemons() {
        let d = crate::DaemonConfig::parse(
            "config:\n  rate_limits: { exec_per_s: 10 }\n  tenants:\n    - name: a\n      host_groups: [ { name: a } ]\n      rate_limits: { lifecycle_per_s: 2, max_queued: 3 }\n    - name: b\n      host_groups: [ { name: b } ]\n",
        )
        .unwrap();
        let (a, b) = (&d.tenants[0].rate_limits, &d.tenants[1].rate_limits);
        // a's block replaces the daemon's whole: no exec limit for a.
        assert_eq!(a.lifecycle, Some(Rate { per_s: 2, burst: 4 }));
        assert_eq!((a.exec, a.max_queued), (None, 3));
        assert_eq!(
            b.exec,
            Some(Rate {
                per_s: 10,
                burst: 20
            })
        );
        assert_eq!((b.lifecycle, b.max_queued), (None, DEFAULT_MAX_QUEUED));
        let e = crate::DaemonConfig::parse(
            "config:\n  tenants:\n    - name: a\n      host_groups: [ { name: a } ]\n      rate_limits: { exec_burst: 3 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("config.tenants[0].rate_limits.exec_burst"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (yaml, key) in [
            ("lifecycle_per_s: 0", "config.rate_limits.lifecycle_per_s"),
            ("exec_burst: 5", "config.rate_limits.exec_burst"),
            (
                "exec_per_s: 1, exec_burst: 0",
                "config.rate_limits.exec_burst",
            ),
            (
                "lifecycle_per_s: 2000000",
                "config.rate_limits.lifecycle_per_s",
            ),
            ("max_in_flight: 0", "config.rate_limits.max_in_flight"),
            (
                "max_connections: 100000",
                "config.rate_limits.max_connections",
            ),
            ("max_queued: 0", "config.rate_limits.max_queued"),
            ("max_queued: 1025", "config.rate_limits.max_queued"),
            ("max_sessions: 0", "config.rate_limits.max_sessions"),
            ("lifecycle_rate: 3", "rate_limits"),
        ] {
            let e = parse(&format!("  rate_limits: {{ {yaml} }}\n")).unwrap_err();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }
}
