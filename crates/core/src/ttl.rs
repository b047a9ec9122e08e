//! A node's lifetime (#15, B: node TTL; ADR 0037): a node with a timeout ends when it passes,
//! unless the timeout is extended first. "Ends" is [`OnExpiry::Delete`] (Slicer's `timeout`,
//! `bulkhead vm add --ttl`, E2B's default) or [`OnExpiry::Pause`] (E2B's `autoPause`).
//!
//! This module is the pure part: what a `timeout` may be ([`parse`], [`check`]), the expiry
//! a node carries ([`Expiry`], wall-clock milliseconds, so that it survives a restart of the
//! daemon and means the same afterwards), and which expiries are due and when to look again
//! ([`plan`]). The daemon's sweeper (`daemon/src/tenant/expiry.rs`) applies it.
//!
//! Invariants:
//! - a timeout is at least [`MIN`] (1 s, the sweeper's precision) and at most [`MAX`]
//!   (30 days: longer lived nodes simply have none); errors name the field;
//! - an expiry is a point in wall-clock time: a node whose time passed while the daemon was
//!   down is due as soon as the daemon looks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bulkhead_api::ttl::NodeTimeout;

use crate::error::{Code, DomainError};

/// The shortest timeout accepted.
pub const MIN: Duration = Duration::from_secs(1);
/// The longest timeout accepted: 30 days.
pub const MAX: Duration = Duration::from_secs(30 * 86400);
/// How [`MAX`] is written in errors.
const MAX_SHOWN: &str = "30 days (720h, 2592000 seconds)";

/// What happens to a node when its timeout passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnExpiry {
    /// The node is deleted (as `DELETE` would).
    Delete,
    /// The node is paused and its expiry cleared: it waits for a resume, which may set a new
    /// timeout (E2B's `autoPause`).
    Pause,
}

impl OnExpiry {
    /// The stored and shown name.
    pub fn as_str(self) -> &'static str {
        match self {
            OnExpiry::Delete => "delete",
            OnExpiry::Pause => "pause",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "delete" => Some(OnExpiry::Delete),
            "pause" => Some(OnExpiry::Pause),
            _ => None,
        }
    }
}

/// A node's expiry: when, in wall-clock milliseconds since the Unix epoch, and what then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    pub at_ms: u64,
    pub on: OnExpiry,
}

impl Expiry {
    /// `ttl` from `now`.
    pub fn after(now: SystemTime, ttl: Duration, on: OnExpiry) -> Self {
        Expiry {
            at_ms: ms(now).saturating_add(ttl.as_millis() as u64),
            on,
        }
    }
    /// The expiry as a point in time.
    pub fn at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.at_ms)
    }
    /// Whether it has passed at `now`.
    pub fn is_due(&self, now: SystemTime) -> bool {
        ms(now) >= self.at_ms
    }
    /// Seconds since the Unix epoch, rounded up (what an RFC 3339 time shows: never earlier
    /// than the expiry).
    pub fn at_secs_ceil(&self) -> u64 {
        self.at_ms.div_ceil(1000)
    }
}

/// `t` in milliseconds since the Unix epoch (0 before it).
pub fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A bad `timeout`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("{field} {shown} is not a timeout: give whole seconds (e.g. 1800) or a duration such as \"30m\" or \"1h30m\" ({why})")]
    Malformed {
        field: String,
        shown: String,
        why: String,
    },
    #[error("{field} {shown} is shorter than 1 second: give at least 1 (seconds) or \"1s\"")]
    TooShort { field: String, shown: String },
    #[error("{field} {shown} is longer than the most a node may live, {MAX_SHOWN}: give a shorter one, or none for a node without a timeout")]
    TooLong { field: String, shown: String },
}

impl From<TtlError> for DomainError {
    fn from(e: TtlError) -> Self {
        let code = match e {
            TtlError::Malformed { .. } => Code::InvalidRequest,
            TtlError::TooShort { .. } | TtlError::TooLong { .. } => Code::OutOfRange,
        };
        DomainError::new(code, e.to_string())
    }
}

/// A `timeout` as sent (`field` names it in errors, e.g. `"timeout"` or `"--ttl"`).
pub fn parse(field: &str, v: &NodeTimeout) -> Result<Duration, TtlError> {
    match v {
        NodeTimeout::Number(n) => {
            let shown = n.to_string();
            match n.as_u64() {
                Some(s) => check_shown(field, &shown, Duration::from_secs(s)),
                None if n.as_i64().is_some_and(|i| i < 0)
                    || n.as_f64().is_some_and(|f| f < 0.0) =>
                {
                    Err(TtlError::TooShort {
                        field: field.into(),
                        shown,
                    })
                }
                None => Err(TtlError::Malformed {
                    field: field.into(),
                    shown,
                    why: "a number must be whole seconds".into(),
                }),
            }
        }
        NodeTimeout::Text(s) => parse_str(field, s),
    }
}

/// A `timeout` written as text: whole seconds (`"1800"`) or a Go-style duration (`"30m"`,
/// `"1h30m"`, `"90s"`).
pub fn parse_str(field: &str, s: &str) -> Result<Duration, TtlError> {
    let shown = format!("{s:?}");
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return match t.parse::<u64>() {
            Ok(n) => check_shown(field, &shown, Duration::from_secs(n)),
            Err(_) => Err(TtlError::TooLong {
                field: field.into(),
                shown,
            }),
        };
    }
    // Anything past the bound is refused below with this module's words, not the parser's.
    match bulkhead_api::duration::parse_up_to(t, Duration::from_secs(u64::MAX / 4), "ever") {
        Ok(d) => check_shown(field, &shown, d),
        Err(why) if why.ends_with("longer than ever") => Err(TtlError::TooLong {
            field: field.into(),
            shown,
        }),
        Err(why) => Err(TtlError::Malformed {
            field: field.into(),
            shown,
            why,
        }),
    }
}

/// Bounds a timeout given as a [`Duration`] (E2B's control plane, the tenant's API).
pub fn check(field: &str, d: Duration) -> Result<Duration, TtlError> {
    check_shown(field, &format!("{}s", d.as_secs_f64()), d)
}

fn check_shown(field: &str, shown: &str, d: Duration) -> Result<Duration, TtlError> {
    if d < MIN {
        return Err(TtlError::TooShort {
            field: field.into(),
            shown: shown.into(),
        });
    }
    if d > MAX {
        return Err(TtlError::TooLong {
            field: field.into(),
            shown: shown.into(),
        });
    }
    Ok(d)
}

/// What a sweep finds: the nodes whose expiry is due, and when the next one falls due.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan<K> {
    pub due: Vec<(K, Expiry)>,
    /// The earliest expiry not yet due, if any.
    pub next: Option<SystemTime>,
}

/// Sorts `items` (each a key and its expiry) into due at `now` and the next time to look.
pub fn plan<K>(now: SystemTime, items: impl IntoIterator<Item = (K, Expiry)>) -> Plan<K> {
    let mut out = Plan {
        due: Vec::new(),
        next: None,
    };
    for (k, e) in items {
        if e.is_due(now) {
            out.due.push((k, e));
        } else {
            let at = e.at();
            out.next = Some(out.next.map_or(at, |n: SystemTime| n.min(at)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Result<Duration, TtlError> {
        parse("timeout", &NodeTimeout::Text(s.into()))
    }
    fn num(json: &str) -> Result<Duration, TtlError> {
        parse("timeout", &serde_json::from_str(json).unwrap())
    }

    #[test]
    fn parses_seconds_and_durations() {
        assert_eq!(num("2").unwrap(), Duration::from_secs(2));
        assert_eq!(num("1800").unwrap(), Duration::from_secs(1800));
        assert_eq!(text("1800").unwrap(), Duration::from_secs(1800));
        assert_eq!(text("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(text("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(text(" 90s ").unwrap(), Duration::from_secs(90));
        assert_eq!(text("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(text("720h").unwrap(), MAX);
        assert_eq!(num("2592000").unwrap(), MAX);
    }

    #[test]
    fn refuses_malformed_ones_naming_the_field() {
        for bad in ["", "abc", "5x", "30 m", "-5s", "1d"] {
            let e = text(bad).unwrap_err();
            assert!(matches!(e, TtlError::Malformed { .. }), "{bad}: {e}");
            assert!(e.to_string().starts_with("timeout "), "{e}");
            assert!(e.to_string().contains("\"30m\""), "{e}");
        }
        let e = num("1.5").unwrap_err();
        assert!(matches!(e, TtlError::Malformed { .. }), "{e}");
        assert!(e.to_string().contains("whole seconds"), "{e}");
        let e = parse_str("--ttl", "soon").unwrap_err();
        assert!(e.to_string().starts_with("--ttl \"soon\""), "{e}");
    }

    #[test]
    fn bounds_are_1s_to_30_days() {
        for short in ["0", "0s", "500ms"] {
            assert!(
                matches!(text(short), Err(TtlError::TooShort { .. })),
                "{short}"
            );
        }
        assert!(matches!(num("0"), Err(TtlError::TooShort { .. })));
        assert!(matches!(num("-3"), Err(TtlError::TooShort { .. })));
        for long in [
            "721h",
            "2592001",
            "99999999999999999999999",
            "9999999999h",
            "99999999999999999999h",
        ] {
            let e = text(long).unwrap_err();
            assert!(matches!(e, TtlError::TooLong { .. }), "{long}: {e}");
            assert!(e.to_string().contains("30 days"), "{e}");
        }
        assert!(matches!(num("2592001"), Err(TtlError::TooLong { .. })));
        assert!(check("timeout", Duration::from_secs(60)).is_ok());
        assert!(check("timeout", Duration::ZERO).is_err());
        let d: DomainError = text("721h").unwrap_err().into();
        assert_eq!(d.code, Code::OutOfRange);
        let d: DomainError = text("x").unwrap_err().into();
        assert_eq!(d.code, Code::InvalidRequest);
    }

    #[test]
    fn expiry_is_wall_clock_and_due_once_passed() {
        let t0 = UNIX_EPOCH + Duration::from_millis(1_000_000_500);
        let e = Expiry::after(t0, Duration::from_secs(2), OnExpiry::Pause);
        assert_eq!(e.at_ms, 1_000_002_500);
        assert_eq!(e.at(), t0 + Duration::from_secs(2));
        assert_eq!(e.at_secs_ceil(), 1_000_003);
        assert!(!e.is_due(t0 + Duration::from_millis(1999)));
        assert!(e.is_due(t0 + Duration::from_secs(2)));
        assert!(e.is_due(t0 + Duration::from_secs(3600)));
        for on in [OnExpiry::Delete, OnExpiry::Pause] {
            assert_eq!(OnExpiry::parse(on.as_str()), Some(on));
        }
        assert_eq!(OnExpiry::parse("kill"), None);
    }

    #[test]
    fn plan_splits_due_from_the_next_wake() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let at = |s: u64| Expiry {
            at_ms: s * 1000,
            on: OnExpiry::Delete,
        };
        let p = plan(
            now,
            [
                ("a", at(999)),
                ("b", at(1005)),
                ("c", at(1000)),
                ("d", at(1002)),
            ],
        );
        let due: Vec<&str> = p.due.iter().map(|(k, _)| *k).collect();
        assert_eq!(due, ["a", "c"]);
        assert_eq!(p.next, Some(UNIX_EPOCH + Duration::from_secs(1002)));
        let p = plan::<&str>(now, []);
        assert_eq!(
            p,
            Plan {
                due: vec![],
                next: None
            }
        );
    }
}
