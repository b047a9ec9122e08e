//! `config.auth`: how callers of the TCP listener prove who they are beyond the bearer token.
//! Today one key, `oidc` (JWTs from an OpenID Connect provider, ADR 0021); more may follow
//! beside it. Validated into [`OidcConfig`]: the issuer is an https URL (http only to a
//! loopback host), exactly one key source, the roles claim and the clock leeway bounded.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

use super::{key_err, ConfigError};

/// `config.auth` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<RawOidc>,
}

/// `config.auth.oidc` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOidc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles_claim: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, e.g. "60s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<String>,
}

/// Where the issuer's public keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS document on disk, re-read when it changes.
    File(PathBuf),
    /// A JWKS document fetched (and refreshed) over https, or http to a loopback host.
    Url(String),
}

/// A validated `config.auth.oidc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConfig {
    /// Compared byte for byte with a token's `iss`.
    pub issuer: String,
    /// Must be one of a token's `aud` values.
    pub audience: String,
    pub jwks: JwksSource,
    /// The claim that carries the caller's bindings: a top-level claim of that exact name, else
    /// a dotted path into nested objects (`realm_access.roles`).
    pub roles_claim: String,
    pub leeway: Duration,
}

pub const DEFAULT_ROLES_CLAIM: &str = "bulkhead_roles";
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// Checks that `url` is `https://HOST[:PORT][/PATH]`, or `http://` to a loopback host
/// (`localhost`, `127.0.0.0/8`, `[::1]`: a test IdP or a local proxy), with no user info,
/// query or fragment.
pub fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let what = "give an https URL, e.g. https://idp.example.com (http only to a loopback host)";
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(key_err(key, format!("{url:?} is not a URL: {what}")));
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) || url.contains(['?', '#']) {
        return Err(key_err(
            key,
            format!("{url:?} has spaces, a query or a fragment: {what}"),
        ));
    }
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(key_err(
            key,
            format!("{url:?} has no host (or has user info): {what}"),
        ));
    }
    let host = if let Some(h) = authority.strip_prefix('[') {
        h.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err(key_err(key, format!("{url:?} has no host: {what}")));
    }
    if !https && !is_loopback(host) {
        return Err(key_err(
            key,
            format!("{url:?} is plain http to a host that is not loopback: use https"),
        ));
    }
    Ok(())
}

/// Whether `host` (no brackets) is a loopback name or address.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Validates `config.auth.oidc`; `None` when it is absent.
pub fn oidc_from_raw(auth: Option<&RawAuth>) -> Result<Option<OidcConfig>, ConfigError> {
    let Some(o) = auth.and_then(|a| a.oidc.as_ref()) else {
        return Ok(None);
    };
    const P: &str = "config.auth.oidc";
    let issuer = o
        .issuer
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            key_err(
                format!("{P}.issuer"),
                "is required: the IdP's issuer exactly as its tokens' iss says, e.g. https://idp.example.com",
            )
        })?;
    check_url(&format!("{P}.issuer"), &issuer)?;
    let audience = o
        .audience
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            key_err(
                format!("{P}.audience"),
                "is required: the aud value the IdP puts in tokens meant for bulkhead, e.g. bulkhead",
            )
        })?;
    let jwks = match (&o.jwks_file, &o.jwks_url) {
        (Some(f), None) => {
            if !f.is_absolute() {
                return Err(key_err(
                    format!("{P}.jwks_file"),
                    "must be an absolute path, e.g. /etc/bulkhead/idp-jwks.json",
                ));
            }
            JwksSource::File(f.clone())
        }
        (None, Some(u)) => {
            check_url(&format!("{P}.jwks_url"), u)?;
            JwksSource::Url(u.clone())
        }
        _ => {
            return Err(key_err(
                format!("{P}.jwks_file"),
                "give exactly one of jwks_file (a JWKS document on disk) and jwks_url (the IdP's jwks_uri)",
            ))
        }
    };
    let roles_claim = o
        .roles_claim
        .clone()
        .unwrap_or_else(|| DEFAULT_ROLES_CLAIM.into());
    if roles_claim.is_empty()
        || roles_claim.len() > 200
        || roles_claim.split('.').any(str::is_empty)
    {
        return Err(key_err(
            format!("{P}.roles_claim"),
            format!("{roles_claim:?} is not a claim name: e.g. bulkhead_roles, or a dotted path such as realm_access.roles"),
        ));
    }
    let leeway = match o.leeway.as_deref() {
        None => DEFAULT_LEEWAY,
        Some(v) => {
            let d =
                bulkhead_api::duration::parse(v).map_err(|m| key_err(format!("{P}.leeway"), m))?;
            if d > MAX_LEEWAY {
                return Err(key_err(
                    format!("{P}.leeway"),
                    format!("{v:?} is too long: give at most 5m, e.g. 60s"),
                ));
            }
            d
        }
    };
    Ok(Some(OidcConfig {
        issuer,
        audience,
        jwks,
        roles_claim,
        leeway,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Option<OidcConfig>, String> {
        let raw: RawAuth = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        oidc_from_raw(Some(&raw)).map_err(|e| e.to_string())
    }

    #[test]
    fn a_full_oidc_config_and_its_defaults() {
        let c = parse(
            "oidc: {issuer: https://idp.example.com, audience: bulkhead, jwks_file: /etc/j.json}",
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.issuer, "https://idp.example.com");
        assert_eq!(c.jwks, JwksSource::File("/etc/j.json".into()));
        assert_eq!(c.roles_claim, DEFAULT_ROLES_CLAIM);
        assert_eq!(c.leeway, DEFAULT_LEEWAY);
        let c = parse("oidc: {issuer: 'http://127.0.0.1:9000/realms/x', audience: a, jwks_url: 'http://[::1]:9000/certs', roles_claim: realm_access.roles, leeway: 5s}")
            .unwrap()
            .unwrap();
        assert_eq!(c.jwks, JwksSource::Url("http://[::1]:9000/certs".into()));
        assert_eq!(c.roles_claim, "realm_access.roles");
        assert_eq!(c.leeway, Duration::from_secs(5));
        assert_eq!(parse("{}").unwrap(), None);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "oidc: {audience: a, jwks_file: /j}",
                "config.auth.oidc.issuer",
            ),
            (
                "oidc: {issuer: 'http://idp.example.com', audience: a, jwks_file: /j}",
                "not loopback",
            ),
            (
                "oidc: {issuer: 'ftp://x', audience: a, jwks_file: /j}",
                "config.auth.oidc.issuer",
            ),
            (
                "oidc: {issuer: 'https://u@x', audience: a, jwks_file: /j}",
                "user info",
            ),
            (
                "oidc: {issuer: 'https://x', jwks_file: /j}",
                "config.auth.oidc.audience",
            ),
            (
                "oidc: {issuer: 'https://x', audience: a}",
                "exactly one of jwks_file",
            ),
            (
                "oidc: {issuer: 'https://x', audience: a, jwks_file: /j, jwks_url: 'https://x/j'}",
                "jwks_url",
            ),
            (
                "oidc: {issuer: 'https://x', audience: a, jwks_file: j.json}",
                "absolute",
            ),
            (
                "oidc: {issuer: 'https://x', audience: a, jwks_url: 'http://10.0.0.1/j'}",
                "config.auth.oidc.jwks_url",
            ),
            (
                "oidc: {issuer: 'https://x', audience: a, jwks_file: /j, leeway: 10m}",
                "config.auth.oidc.leeway",
            ),
            (
                "oidc: {issuer: 'https://x', audience: a, jwks_file: /j, roles_claim: 'a..b'}",
                "config.auth.oidc.roles_claim",
            ),
            ("oidc: {isuer: 'https://x'}", "isuer"),
        ];
        for (yaml, want) in cases {
            let e = parse(yaml).unwrap_err();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn the_daemon_config_carries_it_and_names_the_key() {
        let y = "config:\n  host_groups:\n    - name: a\n  auth:\n    oidc:\n      issuer: https://idp.example.com\n      audience: bulkhead\n      jwks_file: /etc/j.json\n";
        let d = crate::DaemonConfig::parse(y).unwrap();
        assert_eq!(d.oidc.unwrap().audience, "bulkhead");
        let e = crate::DaemonConfig::parse(&y.replace("audience:", "audiense:"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.auth.oidc"), "{e}");
        let e = crate::DaemonConfig::parse(&y.replace("https://", "http://"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("config.auth.oidc.issuer"), "{e}");
    }
}
