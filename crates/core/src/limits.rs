//! Connection limits: how long a client may take to send a request head, how many connections
//! the API listener and each node's port forwards serve at once. Keys `config.api.header_timeout`,
//! `config.api.max_connections`, `config.forward_max_connections`,
//! `config.forward_proxy_timeout`; errors name the key.

use std::time::Duration;

use crate::config::{ConfigError, RawConfig};

/// A connection has this long, from the moment the daemon is ready for its next request (just
/// accepted, or the previous response fully sent), to send a complete request head. One clock
/// for slow headers (slowloris, answered 408) and idle keep-alive connections (closed).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Concurrent connections on the API listener; beyond it a new connection gets a 503.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Concurrent relayed connections per port forward (a tenant's forwards together: 2048).
pub const DEFAULT_FORWARD_MAX_CONNECTIONS: usize = 256;
/// How long a trusted upstream has to send its PROXY v2 header.
pub const DEFAULT_FORWARD_PROXY_TIMEOUT: Duration = Duration::from_secs(5);

const MAX_CONNECTIONS_CEILING: u32 = 65536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    pub forward_max_connections: usize,
    pub forward_proxy_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            forward_max_connections: DEFAULT_FORWARD_MAX_CONNECTIONS,
            forward_proxy_timeout: DEFAULT_FORWARD_PROXY_TIMEOUT,
        }
    }
}

fn err(path: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        path: path.into(),
        message: message.into(),
    }
}

fn timeout(path: &str, v: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(v) = v else { return Ok(default) };
    let d = bulkhead_api::duration::parse(v).map_err(|m| err(path, m))?;
    if d < Duration::from_millis(100) || d > Duration::from_secs(600) {
        return Err(err(
            path,
            format!("{v:?} is out of range: give a duration between 100ms and 10m, e.g. 10s"),
        ));
    }
    Ok(d)
}

fn count(path: &str, v: Option<u32>, default: usize) -> Result<usize, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) if (1..=MAX_CONNECTIONS_CEILING).contains(&n) => Ok(n as usize),
        Some(n) => Err(err(
            path,
            format!("{n} is out of range: give between 1 and {MAX_CONNECTIONS_CEILING}"),
        )),
    }
}

impl ConnLimits {
    pub fn from_raw(c: &RawConfig) -> Result<Self, ConfigError> {
        let api = c.api.clone().unwrap_or_default();
        Ok(ConnLimits {
            header_timeout: timeout(
                "config.api.header_timeout",
                api.header_timeout.as_deref(),
                DEFAULT_HEADER_TIMEOUT,
            )?,
            max_connections: count(
                "config.api.max_connections",
                api.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            )?,
            forward_max_connections: count(
                "config.forward_max_connections",
                c.forward_max_connections,
                DEFAULT_FORWARD_MAX_CONNECTIONS,
            )?,
            forward_proxy_timeout: timeout(
                "config.forward_proxy_timeout",
                c.forward_proxy_timeout.as_deref(),
                DEFAULT_FORWARD_PROXY_TIMEOUT,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TenantConfig;

    const BASE: &str = "config:\n  host_groups:\n    - name: a3cf\n";

    fn parse(extra: &str) -> Result<ConnLimits, String> {
        TenantConfig::parse(&format!("{BASE}{extra}"))
            .map(|c| c.conns)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse("").unwrap(), ConnLimits::default());
        let c = parse(
            "  api:\n    header_timeout: 2s\n    max_connections: 3000\n  forward_max_connections: 8\n  forward_proxy_timeout: 500ms\n",
        )
        .unwrap();
        assert_eq!(c.header_timeout, Duration::from_secs(2));
        assert_eq!(c.max_connections, 3000);
        assert_eq!(c.forward_max_connections, 8);
        assert_eq!(c.forward_proxy_timeout, Duration::from_millis(500));
    }

    #[test]
    fn errors_name_the_key() {
        for (extra, key) in [
            (
                "  api:\n    header_timeout: 10\n",
                "config.api.header_timeout",
            ),
            (
                "  api:\n    header_timeout: 1h\n",
                "config.api.header_timeout",
            ),
            (
                "  api:\n    max_connections: 0\n",
                "config.api.max_connections",
            ),
            (
                "  api:\n    max_connections: -1\n",
                "config.api.max_connections",
            ),
            (
                "  forward_max_connections: 70000\n",
                "config.forward_max_connections",
            ),
            (
                "  forward_proxy_timeout: 1ms\n",
                "config.forward_proxy_timeout",
            ),
        ] {
            let e = parse(extra).unwrap_err();
            assert!(e.contains(key), "{extra:?}: {e} should name {key}");
        }
    }
}
