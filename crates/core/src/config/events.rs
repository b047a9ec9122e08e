//! `config.events` and `config.detection` (#14, part B): how many events a tenant keeps, the
//! optional event webhook, the authorization denial spike threshold and how often the
//! daemon re-checks its binaries and config.
//!
//! ```yaml
//! events:
//!   keep: 10000                # events kept per tenant (SQLite), oldest dropped first
//!   webhook: { url: http://127.0.0.1:9100/events, timeout: 2s, retries: 5, buffer: 1000 }
//! detection:
//!   denial_spike: { threshold: 20, window: 60s }   # per tenant and principal
//!   integrity_interval: 60s
//! ```
//!
//! Invariant: a config without these keys gets the defaults above and no webhook, so every
//! existing config keeps working. In a shared daemon a tenant's own block replaces the
//! daemon-wide one (`config.tenants[].events`, `.detection`).

use std::time::Duration;

use super::error::{key_err, ConfigError};
pub use super::events_raw::{RawDenialSpike, RawDetection, RawEventWebhook, RawEvents};
use super::policy::WebhookTarget;

pub const DEFAULT_KEEP: u64 = 10_000;
pub const MAX_KEEP: u64 = 1_000_000;
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_WEBHOOK_RETRIES: u32 = 5;
pub const DEFAULT_WEBHOOK_BUFFER: usize = 1000;
pub const DEFAULT_SPIKE_THRESHOLD: u32 = 20;
pub const DEFAULT_SPIKE_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_INTEGRITY_INTERVAL: Duration = Duration::from_secs(60);

/// The event webhook, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventWebhook {
    /// The URL as written (messages).
    pub url: String,
    pub target: WebhookTarget,
    /// One delivery attempt's bound.
    pub timeout: Duration,
    /// Attempts after the first failed one, with doubling backoff.
    pub retries: u32,
    /// Events waiting for delivery at most; beyond it the oldest are dropped (and counted).
    pub buffer: usize,
}

/// `config.events` and `config.detection`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// Events kept per tenant; the oldest go first.
    pub keep: u64,
    pub webhook: Option<EventWebhook>,
    /// Denials of one principal within `spike_window` that raise `auth.denial_spike`.
    pub spike_threshold: u32,
    pub spike_window: Duration,
    /// How often the daemon re-hashes its binaries and config.
    pub integrity_interval: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig {
            keep: DEFAULT_KEEP,
            webhook: None,
            spike_threshold: DEFAULT_SPIKE_THRESHOLD,
            spike_window: DEFAULT_SPIKE_WINDOW,
            integrity_interval: DEFAULT_INTEGRITY_INTERVAL,
        }
    }
}

fn duration(
    key: &str,
    v: Option<&str>,
    default: Duration,
    min: Duration,
    max: Duration,
    example: &str,
) -> Result<Duration, ConfigError> {
    let Some(s) = v else {
        return Ok(default);
    };
    let d = bulkhead_api::duration::parse(s).map_err(|m| key_err(key, m))?;
    if d < min || d > max {
        return Err(key_err(
            key,
            format!("{s:?} is out of range: give a duration between {min:?} and {max:?}, e.g. {example}"),
        ));
    }
    Ok(d)
}

impl EventsConfig {
    pub fn from_raw(
        events: Option<&RawEvents>,
        detection: Option<&RawDetection>,
    ) -> Result<EventsConfig, ConfigError> {
        let mut c = EventsConfig::default();
        if let Some(e) = events {
            if let Some(k) = e.keep {
                if !(1..=MAX_KEEP).contains(&k) {
                    return Err(key_err(
                        "config.events.keep",
                        format!(
                            "{k} is out of range: keep between 1 and {MAX_KEEP} events, e.g. 10000"
                        ),
                    ));
                }
                c.keep = k;
            }
            if let Some(w) = &e.webhook {
                c.webhook = Some(webhook(w)?);
            }
        }
        if let Some(d) = detection {
            if let Some(s) = &d.denial_spike {
                if let Some(t) = s.threshold {
                    if t == 0 {
                        return Err(key_err(
                            "config.detection.denial_spike.threshold",
                            "must be at least 1 (denials in the window that raise the event), e.g. 20",
                        ));
                    }
                    c.spike_threshold = t;
                }
                c.spike_window = duration(
                    "config.detection.denial_spike.window",
                    s.window.as_deref(),
                    DEFAULT_SPIKE_WINDOW,
                    Duration::from_secs(1),
                    Duration::from_secs(86400),
                    "60s",
                )?;
            }
            c.integrity_interval = duration(
                "config.detection.integrity_interval",
                d.integrity_interval.as_deref(),
                DEFAULT_INTEGRITY_INTERVAL,
                Duration::from_secs(1),
                Duration::from_secs(86400),
                "60s",
            )?;
        }
        Ok(c)
    }
}

fn webhook(w: &RawEventWebhook) -> Result<EventWebhook, ConfigError> {
    const P: &str = "config.events.webhook";
    let target = super::policy::target(&w.url).map_err(|m| key_err(format!("{P}.url"), m))?;
    let timeout = duration(
        &format!("{P}.timeout"),
        w.timeout.as_deref(),
        DEFAULT_WEBHOOK_TIMEOUT,
        Duration::from_millis(1),
        Duration::from_secs(60),
        "2s",
    )?;
    let retries = w.retries.unwrap_or(DEFAULT_WEBHOOK_RETRIES);
    if retries > 100 {
        return Err(key_err(
            format!("{P}.retries"),
            format!("{retries} is too many: at most 100 (backoff doubles up to 30s), e.g. 5"),
        ));
    }
    let buffer = w.buffer.unwrap_or(DEFAULT_WEBHOOK_BUFFER);
    if !(1..=1_000_000).contains(&buffer) {
        return Err(key_err(
            format!("{P}.buffer"),
            format!("{buffer} is out of range: between 1 and 1000000 events, e.g. 1000"),
        ));
    }
    Ok(EventWebhook {
        url: w.url.clone(),
        target,
        timeout,
        retries,
        buffer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(events: &str, detection: &str) -> Result<EventsConfig, String> {
        let e: Option<RawEvents> = serde_yaml::from_str(events).unwrap();
        let d: Option<RawDetection> = serde_yaml::from_str(detection).unwrap();
        EventsConfig::from_raw(e.as_ref(), d.as_ref()).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse("null", "null").unwrap(), EventsConfig::default());
        let c = parse(
            "{keep: 5, webhook: {url: 'http://127.0.0.1:9100/events', timeout: 500ms, retries: 2, buffer: 3}}",
            "{denial_spike: {threshold: 3, window: 10s}, integrity_interval: 2s}",
        )
        .unwrap();
        assert_eq!(c.keep, 5);
        let w = c.webhook.unwrap();
        assert_eq!(
            (w.timeout, w.retries, w.buffer),
            (Duration::from_millis(500), 2, 3)
        );
        assert_eq!(
            (c.spike_threshold, c.spike_window, c.integrity_interval),
            (3, Duration::from_secs(10), Duration::from_secs(2))
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (e, d, key) in [
            ("{keep: 0}", "null", "config.events.keep"),
            (
                "{webhook: {url: 'http://example.com/x'}}",
                "null",
                "config.events.webhook.url",
            ),
            (
                "{webhook: {url: 'ftp://x'}}",
                "null",
                "config.events.webhook.url",
            ),
            (
                "{webhook: {url: 'http://127.0.0.1:1/', buffer: 0}}",
                "null",
                "config.events.webhook.buffer",
            ),
            (
                "null",
                "{denial_spike: {threshold: 0}}",
                "config.detection.denial_spike.threshold",
            ),
            (
                "null",
                "{integrity_interval: 10ms}",
                "config.detection.integrity_interval",
            ),
        ] {
            let err = parse(e, d).unwrap_err();
            assert!(err.contains(key), "{e} {d}: {err}");
        }
    }
}
