//! `config.usage` (#14, part E): how often the daemon samples its nodes' usage (CPU, memory,
//! network, storage, execs) into the tenant's usage records (docs/detection.md "Usage",
//! ADR 0035).
//!
//! Invariant: a config without `usage:` samples every [`DEFAULT_SAMPLE_INTERVAL`].

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::error::{key_err, ConfigError};

/// How often nodes are sampled when the config does not say.
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
/// Bounds of `usage.sample_interval`: often enough to be a figure, rarely enough to be cheap.
pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
pub const MAX_SAMPLE_INTERVAL: Duration = Duration::from_secs(3600);

/// `config.usage` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsage {
    /// A Go duration, e.g. `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_interval: Option<String>,
}

/// `config.usage`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageConfig {
    pub sample_interval: Duration,
}

impl Default for UsageConfig {
    fn default() -> Self {
        UsageConfig {
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
        }
    }
}

impl UsageConfig {
    pub fn from_raw(raw: Option<&RawUsage>) -> Result<Self, ConfigError> {
        let Some(s) = raw.and_then(|r| r.sample_interval.as_deref()) else {
            return Ok(Self::default());
        };
        let k = "config.usage.sample_interval";
        let d = bulkhead_api::duration::parse(s).map_err(|e| key_err(k, e))?;
        if !(MIN_SAMPLE_INTERVAL..=MAX_SAMPLE_INTERVAL).contains(&d) {
            return Err(key_err(
                k,
                format!("{s:?} is out of range: give a duration from 1s to 1h, e.g. 10s"),
            ));
        }
        Ok(UsageConfig { sample_interval: d })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_default_parse_and_are_bounded() {
        assert_eq!(
            UsageConfig::from_raw(None).unwrap().sample_interval,
            Duration::from_secs(10)
        );
        let raw = |s: &str| RawUsage {
            sample_interval: Some(s.into()),
        };
        assert_eq!(
            UsageConfig::from_raw(Some(&raw("1s")))
                .unwrap()
                .sample_interval,
            Duration::from_secs(1)
        );
        for bad in ["500ms", "2h", "10", "x"] {
            let e = UsageConfig::from_raw(Some(&raw(bad)))
                .unwrap_err()
                .to_string();
            assert!(e.contains("config.usage.sample_interval"), "{bad}: {e}");
        }
    }
}
