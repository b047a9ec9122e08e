//! `config.api.e2b` (#15, part A; ADR 0036): the listener that speaks E2B's API (control plane
//! and every sandbox's in-sandbox API) beside Slicer's.
//!
//! ```yaml
//! api:
//!   e2b: { bind: "127.0.0.1:3000", tls: { cert: /etc/bulkhead/e2b.pem, key: /etc/bulkhead/e2b.key }, domain: sandbox.example.com }
//! ```
//! - `bind` (required): `host:port`;
//! - `tls`: absolute PEM files; without it the listener is plain HTTP, allowed only on a
//!   loopback address (as `api.tcp`: API keys and access tokens must not cross a network in
//!   clear);
//! - `domain` (default `localhost`): what responses report as a sandbox's `domain`, and the
//!   suffix `<port>-<sandboxID>.<domain>` host names are matched against.
//!
//! Invariant: a config without `api.e2b` has no E2B listener (every existing config keeps
//! loading and behaving as before); errors name the key.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

use super::error::{key_err, ConfigError};

/// `config.api.e2b.tls` as written (and validated: absolute paths).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct E2bTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The domain a sandbox reports when `config.api.e2b.domain` is not given.
pub const DEFAULT_DOMAIN: &str = "localhost";

/// `config.api.e2b` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawE2b {
    pub bind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<E2bTls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// `config.api.e2b`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct E2bApi {
    pub addr: SocketAddr,
    pub tls: Option<E2bTls>,
    /// Lowercase DNS name without a trailing dot.
    pub domain: String,
}

/// A DNS name: dot-separated labels of a-z, 0-9 and `-` (not at a label's ends), at most 253
/// characters.
fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl E2bApi {
    /// Validates `config.api.e2b` (`path` names it in errors).
    pub fn from_raw(path: &str, raw: &RawE2b) -> Result<E2bApi, ConfigError> {
        let addr: SocketAddr = raw.bind.parse().map_err(|_| {
            key_err(
                format!("{path}.bind"),
                format!("{:?} is not host:port, e.g. 127.0.0.1:3000", raw.bind),
            )
        })?;
        let tls = match &raw.tls {
            None if !addr.ip().is_loopback() => {
                return Err(key_err(
                    format!("{path}.tls"),
                    format!("plain HTTP is allowed only on a loopback address, and {addr} is not: add tls: {{cert: FILE, key: FILE}}, or bind 127.0.0.1"),
                ))
            }
            None => None,
            Some(t) => {
                for (k, p) in [("cert", &t.cert), ("key", &t.key)] {
                    if !p.is_absolute() {
                        return Err(key_err(
                            format!("{path}.tls.{k}"),
                            "must be an absolute path to a PEM file",
                        ));
                    }
                }
                Some(t.clone())
            }
        };
        let domain = match &raw.domain {
            None => DEFAULT_DOMAIN.to_string(),
            Some(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if !valid_domain(&d) {
                    return Err(key_err(
                        format!("{path}.domain"),
                        format!("{d:?} is not a DNS name: give e.g. sandbox.example.com (sandboxes are then <port>-<id>.sandbox.example.com)"),
                    ));
                }
                d
            }
        };
        Ok(E2bApi { addr, tls, domain })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(bind: &str) -> RawE2b {
        RawE2b {
            bind: bind.into(),
            ..Default::default()
        }
    }

    #[test]
    fn loopback_plain_else_tls() {
        let e = E2bApi::from_raw("config.api.e2b", &raw("127.0.0.1:3000")).unwrap();
        assert_eq!(e.addr.port(), 3000);
        assert_eq!(e.domain, DEFAULT_DOMAIN);
        assert!(e.tls.is_none());
        let err = E2bApi::from_raw("config.api.e2b", &raw("0.0.0.0:3000"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config.api.e2b.tls") && err.contains("loopback"),
            "{err}"
        );
        let err = E2bApi::from_raw("config.api.e2b", &raw("nope"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.api.e2b.bind"), "{err}");
        let mut r = raw("0.0.0.0:3000");
        r.tls = Some(E2bTls {
            cert: "cert.pem".into(),
            key: "/k.pem".into(),
        });
        let err = E2bApi::from_raw("config.api.e2b", &r)
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.api.e2b.tls.cert"), "{err}");
        r.tls = Some(E2bTls {
            cert: "/c.pem".into(),
            key: "/k.pem".into(),
        });
        assert!(E2bApi::from_raw("config.api.e2b", &r)
            .unwrap()
            .tls
            .is_some());
    }

    #[test]
    fn domains_are_dns_names() {
        let mut r = raw("127.0.0.1:3000");
        r.domain = Some("Sandbox.Example.com.".into());
        assert_eq!(
            E2bApi::from_raw("config.api.e2b", &r).unwrap().domain,
            "sandbox.example.com"
        );
        for bad in ["", "a..b", "-a.b", "a_b.c", "a b"] {
            r.domain = Some(bad.into());
            let err = E2bApi::from_raw("config.api.e2b", &r)
                .unwrap_err()
                .to_string();
            assert!(err.contains("config.api.e2b.domain"), "{bad}: {err}");
        }
    }

    #[test]
    fn both_shapes_take_it_and_it_never_shares_the_tcp_address() {
        use crate::DaemonConfig;
        let one = "config:\n  tenant: t\n  host_groups: [{name: g, count: 0}]\n  api:\n    bind_address: /run/t.sock\n    e2b: { bind: \"127.0.0.1:3000\", domain: sb.example.com }\n";
        let c = DaemonConfig::parse(one).unwrap();
        let e = c.api.e2b.unwrap();
        assert_eq!((e.addr.port(), e.domain.as_str()), (3000, "sb.example.com"));
        let shared = "config:\n  tenants:\n    - name: a\n      host_groups: [{name: g, count: 0}]\n  api:\n    tcp: { bind: \"127.0.0.1:3000\" }\n    e2b: { bind: \"127.0.0.1:3000\" }\n";
        let err = DaemonConfig::parse(shared).unwrap_err().to_string();
        assert!(err.contains("config.api.e2b.bind"), "{err}");
        let none = "config:\n  tenant: t\n  host_groups: [{name: g, count: 0}]\n";
        assert!(DaemonConfig::parse(none).unwrap().api.e2b.is_none());
        let typo = one.replace("domain:", "domian:");
        assert!(DaemonConfig::parse(&typo).is_err());
    }
}
