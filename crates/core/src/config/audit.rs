//! `config.audit` (#14, part A; each `config.tenants[]` entry may have its own, else the
//! daemon-wide one): the audit trail's files (ADR 0031).
//!
//! - `enabled` (default true): one hash-chained JSON line per decision under
//!   `<tenant dir>/audit/`.
//! - `rotate_size` (default 64M, at least 1K) and `rotate_age` (default 24h, 1s..=366 days):
//!   the current file is closed (with a signed checkpoint) and a new one begun when either is
//!   reached; the chain continues across files.
//! - `checkpoint_interval` (default 5m, 1s..=24h): how often the chain's head is signed when
//!   lines were added since the last checkpoint (and always at stop).
//!
//! Invariant: a config without `audit` gets the defaults (audit on), so every existing config
//! keeps loading; errors name the key.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::error::{key_err, ConfigError};

pub const DEFAULT_ROTATE_SIZE: u64 = 64 << 20;
pub const DEFAULT_ROTATE_AGE: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(300);
const MIN_ROTATE_SIZE: u64 = 1 << 10;

/// `config.audit` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_interval: Option<String>,
}

/// `config.audit`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    pub enabled: bool,
    pub rotate_size: u64,
    pub rotate_age: Duration,
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            rotate_size: DEFAULT_ROTATE_SIZE,
            rotate_age: DEFAULT_ROTATE_AGE,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
        }
    }
}

fn duration(
    key: String,
    v: Option<&str>,
    default: Duration,
    max: Duration,
    max_name: &str,
) -> Result<Duration, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    let d = bulkhead_api::duration::parse_up_to(v, max, max_name).map_err(|m| key_err(&key, m))?;
    if d < Duration::from_secs(1) {
        return Err(key_err(
            key,
            format!("{v:?} is too short: give at least 1s, e.g. 5m"),
        ));
    }
    Ok(d)
}

impl AuditConfig {
    /// `key` is where the block is (`config.audit`, `config.tenants[2].audit`).
    pub fn from_raw(key: &str, raw: Option<&RawAudit>) -> Result<Self, ConfigError> {
        let Some(r) = raw else {
            return Ok(AuditConfig::default());
        };
        let rotate_size = match &r.rotate_size {
            None => DEFAULT_ROTATE_SIZE,
            Some(s) => {
                let k = format!("{key}.rotate_size");
                let n = crate::size::parse(s).map_err(|m| key_err(&k, m))?;
                if n < MIN_ROTATE_SIZE {
                    return Err(key_err(
                        k,
                        format!("{s:?} is too small: give at least 1K, e.g. 64M"),
                    ));
                }
                n
            }
        };
        Ok(AuditConfig {
            enabled: r.enabled.unwrap_or(true),
            rotate_size,
            rotate_age: duration(
                format!("{key}.rotate_age"),
                r.rotate_age.as_deref(),
                DEFAULT_ROTATE_AGE,
                Duration::from_secs(366 * 86400),
                "366 days",
            )?,
            checkpoint_interval: duration(
                format!("{key}.checkpoint_interval"),
                r.checkpoint_interval.as_deref(),
                DEFAULT_CHECKPOINT_INTERVAL,
                Duration::from_secs(86400),
                "a day",
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_key() {
        assert_eq!(
            AuditConfig::from_raw("config.audit", None).unwrap(),
            AuditConfig::default()
        );
        let raw = RawAudit {
            enabled: Some(false),
            rotate_size: Some("2K".into()),
            rotate_age: Some("1h".into()),
            checkpoint_interval: Some("10s".into()),
        };
        let c = AuditConfig::from_raw("config.audit", Some(&raw)).unwrap();
        assert!(!c.enabled);
        assert_eq!(c.rotate_size, 2048);
        assert_eq!(c.rotate_age, Duration::from_secs(3600));
        assert_eq!(c.checkpoint_interval, Duration::from_secs(10));
        for (raw, key) in [
            (
                RawAudit {
                    rotate_size: Some("12".into()),
                    ..Default::default()
                },
                "config.audit.rotate_size",
            ),
            (
                RawAudit {
                    rotate_age: Some("5".into()),
                    ..Default::default()
                },
                "config.audit.rotate_age",
            ),
            (
                RawAudit {
                    checkpoint_interval: Some("10ms".into()),
                    ..Default::default()
                },
                "config.audit.checkpoint_interval",
            ),
            (
                RawAudit {
                    checkpoint_interval: Some("48h".into()),
                    ..Default::default()
                },
                "config.audit.checkpoint_interval",
            ),
        ] {
            let e = AuditConfig::from_raw("config.audit", Some(&raw)).unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
    }
}
