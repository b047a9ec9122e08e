//! `config.workload_identity`: the per-node identity tokens the daemon signs (ADR 0020).
//!
//! Absent block: the feature is off (no keys, no pushes, no cost at node create). Present:
//! `audiences` (required, non-empty), `ttl` (Go duration, [`MIN_TTL`]..=[`MAX_TTL`], default
//! [`DEFAULT_TTL`]), `issuer` (default from the listener: [`default_issuer_tcp`],
//! [`default_issuer_unix`]) and `api_role` (a role the API grants a node's token in the node's
//! own tenant; only with `bulkhead` among the audiences). Errors name the key. The block is
//! daemon-wide (`DaemonConfig::workload_identity`): one issuer for all of a daemon's tenants.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::error::{key_err, ConfigError};

pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// Below a minute only for tests and demos: every node gets a push every `ttl / 2`.
pub const MIN_TTL: Duration = Duration::from_secs(10);
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The audience the bulkhead API itself answers to (`api_role` needs it).
pub const API_AUDIENCE: &str = "bulkhead";

/// `config.workload_identity` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkloadIdentity {
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_role: Option<String>,
}

/// The validated block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIdentityConfig {
    /// Every token's `aud` (an array, in this order).
    pub audiences: Vec<String>,
    /// A token's lifetime (`exp - iat`); nodes get a fresh one at about half of it.
    pub ttl: Duration,
    /// `iss` of every token, and the base of the discovery document's `jwks_uri`.
    pub issuer: String,
    /// The role a node's token is bound to at the API, in the node's own tenant; `None`: the
    /// API refuses workload tokens.
    pub api_role: Option<String>,
}

/// The issuer when the config names none, for a plain TCP listener: `http://ADDR` (with TLS,
/// `https://ADDR`).
pub fn default_issuer_tcp(addr: &str) -> String {
    format!("http://{addr}")
}

/// The issuer when the config names none, for a UNIX socket: `unix://SOCKET` (unique on the
/// host, but no verifier can fetch keys from it: set `issuer` to the URL verifiers reach the
/// daemon through).
pub fn default_issuer_unix(socket: &std::path::Path) -> String {
    format!("unix://{}", socket.display())
}

const KEY: &str = "config.workload_identity";

impl WorkloadIdentityConfig {
    pub fn from_raw(
        raw: Option<&RawWorkloadIdentity>,
        default_issuer: impl FnOnce() -> String,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(raw) = raw else { return Ok(None) };
        if raw.audiences.is_empty() {
            return Err(key_err(
                format!("{KEY}.audiences"),
                "at least one audience is required, e.g. [vault]: verifiers check that they are in a token's aud",
            ));
        }
        for (i, a) in raw.audiences.iter().enumerate() {
            if a.is_empty() || a.len() > 256 || a.chars().any(|c| c.is_control() || c == ' ') {
                return Err(key_err(
                    format!("{KEY}.audiences[{i}]"),
                    format!("{a:?} is not an audience: give a non-empty name without spaces, e.g. vault or https://sts.example.com"),
                ));
            }
            if raw.audiences[..i].contains(a) {
                return Err(key_err(
                    format!("{KEY}.audiences[{i}]"),
                    format!("{a:?} is listed twice"),
                ));
            }
        }
        let ttl = match raw.ttl.as_deref() {
            None => DEFAULT_TTL,
            Some(v) => {
                let d = bulkhead_api::duration::parse(v)
                    .map_err(|m| key_err(format!("{KEY}.ttl"), m))?;
                if !(MIN_TTL..=MAX_TTL).contains(&d) {
                    return Err(key_err(
                        format!("{KEY}.ttl"),
                        format!(
                            "{v:?} is out of range: give a duration between 10s and 24h, e.g. 10m"
                        ),
                    ));
                }
                d
            }
        };
        let issuer = match raw.issuer.as_deref() {
            None => default_issuer(),
            Some(i) => {
                let ok = (i.starts_with("https://") || i.starts_with("http://"))
                    && !i.ends_with('/')
                    && !i.contains(['?', '#', ' '])
                    && i.split_once("://").is_some_and(|(_, h)| !h.is_empty());
                if !ok {
                    return Err(key_err(
                        format!("{KEY}.issuer"),
                        format!("{i:?} is not an issuer URL: give https://HOST[/PATH] without a trailing slash, query or fragment, as verifiers reach this daemon"),
                    ));
                }
                i.to_string()
            }
        };
        let api_role = match raw.api_role.as_deref() {
            None => None,
            Some(r) => {
                if r.is_empty() {
                    return Err(key_err(
                        format!("{KEY}.api_role"),
                        "is empty: name a role, e.g. viewer, or leave the key out",
                    ));
                }
                if r == crate::iam::GLOBAL_ADMIN {
                    return Err(key_err(
                        format!("{KEY}.api_role"),
                        "global-admin cannot be bound to a node's token: it would reach every tenant; name a tenant role, e.g. viewer",
                    ));
                }
                if !raw.audiences.iter().any(|a| a == API_AUDIENCE) {
                    return Err(key_err(
                        format!("{KEY}.api_role"),
                        format!("needs {API_AUDIENCE:?} among config.workload_identity.audiences: the API accepts only tokens meant for it"),
                    ));
                }
                Some(r.to_string())
            }
        };
        Ok(Some(WorkloadIdentityConfig {
            audiences: raw.audiences.clone(),
            ttl,
            issuer,
            api_role,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Option<WorkloadIdentityConfig>, String> {
        let raw: RawWorkloadIdentity = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        WorkloadIdentityConfig::from_raw(Some(&raw), || default_issuer_tcp("127.0.0.1:8080"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_bounds() {
        let c = parse("audiences: [vault, storage.internal]")
            .unwrap()
            .unwrap();
        assert_eq!(c.ttl, DEFAULT_TTL);
        assert_eq!(c.issuer, "http://127.0.0.1:8080");
        assert_eq!(c.audiences, ["vault", "storage.internal"]);
        assert_eq!(c.api_role, None);
        let unix = WorkloadIdentityConfig::from_raw(
            Some(&RawWorkloadIdentity {
                audiences: vec!["vault".into()],
                ..Default::default()
            }),
            || default_issuer_unix(std::path::Path::new("/run/bulkhead/t.sock")),
        )
        .unwrap()
        .unwrap();
        assert_eq!(unix.issuer, "unix:///run/bulkhead/t.sock");
        assert_eq!(
            parse("{audiences: [a], ttl: 15s}").unwrap().unwrap().ttl,
            Duration::from_secs(15)
        );
        for (y, key) in [
            ("audiences: []", "audiences"),
            ("{audiences: [a, a]}", "audiences[1]"),
            ("{audiences: ['a b']}", "audiences[0]"),
            ("{audiences: [a], ttl: 5s}", "ttl"),
            ("{audiences: [a], ttl: 25h}", "ttl"),
            ("{audiences: [a], ttl: ten}", "ttl"),
            ("{audiences: [a], issuer: 'https://x/'}", "issuer"),
            ("{audiences: [a], issuer: 'idp.example.com'}", "issuer"),
            ("{audiences: [a], api_role: viewer}", "api_role"),
            (
                "{audiences: [bulkhead], api_role: global-admin}",
                "api_role",
            ),
        ] {
            let e = parse(y).unwrap_err();
            assert!(
                e.contains(&format!("config.workload_identity.{key}")),
                "{y}: {e}"
            );
        }
        let e = parse("{audiences: [vault], api_role: viewer}").unwrap_err();
        assert!(e.contains("needs \"bulkhead\""), "{e}");
        let c = parse(
            "{audiences: [vault, bulkhead], api_role: viewer, issuer: 'https://id.example.com/bh'}",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.api_role.as_deref(), Some("viewer"));
        assert_eq!(c.issuer, "https://id.example.com/bh");
        assert!(parse("{audiences: [a], colour: blue}").is_err());
    }

    #[test]
    fn the_daemon_holds_it_with_an_issuer_from_its_listener() {
        use crate::DaemonConfig;
        let shared = "config:\n  tenants:\n    - name: a\n      host_groups: [{name: a}]\n  api:\n    tcp: {bind: '127.0.0.1:8443'}\n  workload_identity: {audiences: [vault]}\n";
        let c = DaemonConfig::parse(shared).unwrap();
        assert_eq!(c.workload_identity.unwrap().issuer, "http://127.0.0.1:8443");
        let one = "config:\n  host_groups: [{name: a}]\n  workload_identity: {audiences: [vault], ttl: 1m}\n";
        let w = DaemonConfig::parse(one).unwrap().workload_identity.unwrap();
        assert_eq!(w.issuer, "unix:///run/bulkhead/a.sock");
        assert_eq!(w.ttl, Duration::from_secs(60));
        let off = "config:\n  host_groups: [{name: a}]\n";
        assert_eq!(DaemonConfig::parse(off).unwrap().workload_identity, None);
        let e = DaemonConfig::parse("config:\n  host_groups: [{name: a}]\n  workload_identity: {audiences: [vault], api_role: viewer}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.workload_identity.api_role"), "{e}");
    }
}
