//! A tenant's admission policy (`config.policy`, issue #12; ADR 0024): which drivers,
//! network modes and images its nodes may use, the largest node, whether execs may run as
//! root, whether and where port forwards may listen, and the policy webhook asked about every
//! create, exec and forward after these static rules pass.
//!
//! Invariants: an absent key (or an absent `policy`) restricts nothing, so a config without
//! `policy` behaves as before; a list that is given is the whole allowance (an empty list
//! allows nothing). Unknown keys are refused naming the key. Which driver names exist is the
//! driver registry's to say (`bulkhead_driver::Registry::check`); network modes are
//! [`NetworkMode`]'s; sizes parse like the rest of the config (`crate::size`).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::{key_err, ConfigError};
use super::group::NetworkMode;
pub use super::policy_raw::{RawForwards, RawMaxNode, RawPolicy, RawWebhook};

/// The webhook's timeout when the config gives none.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds of `webhook.timeout`.
pub const MIN_WEBHOOK_TIMEOUT: Duration = Duration::from_millis(1);
pub const MAX_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// A validated policy; [`Policy::default`] restricts nothing and has no webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Allowed drivers (`hypervisor` names); `None`: any.
    pub drivers: Option<Vec<String>>,
    /// Allowed network modes; `None`: any.
    pub network_modes: Option<Vec<NetworkMode>>,
    pub max_node: MaxNode,
    /// Whether an exec (or shell) may run as uid 0 in the node; `true` unless set.
    pub exec_as_root: bool,
    pub forwards: ForwardPolicy,
    /// Allowed images; `None`: any.
    pub images: Option<Vec<String>>,
    pub webhook: Option<Webhook>,
    /// Whether volumes may be mounted without `noexec` in this tenant's nodes (#13, attach);
    /// `false` unless set: a volume's files never run.
    pub volumes_exec: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            drivers: None,
            network_modes: None,
            max_node: MaxNode::default(),
            exec_as_root: true,
            forwards: ForwardPolicy::default(),
            images: None,
            webhook: None,
            volumes_exec: false,
        }
    }
}

/// The largest node a create may make (after the host group's defaults); `None`: no bound
/// beyond the host group's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MaxNode {
    pub vcpu: Option<u32>,
    pub ram_bytes: Option<u64>,
    pub storage_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardPolicy {
    /// Port forwards and forward tunnels at all.
    pub allowed: bool,
    /// Host addresses a port forward may listen on; `None`: any.
    pub bind_addresses: Option<Vec<IpAddr>>,
}

impl Default for ForwardPolicy {
    fn default() -> Self {
        ForwardPolicy {
            allowed: true,
            bind_addresses: None,
        }
    }
}

/// Where the webhook answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookTarget {
    /// `http://HOST:PORT/PATH` (or `https://`): `authority` as written (the Host header),
    /// `host` without brackets.
    Http {
        https: bool,
        host: String,
        port: u16,
        authority: String,
        path: String,
    },
    /// `unix:///PATH`: an HTTP server on a UNIX socket; requests go to `/`.
    Unix(PathBuf),
}

/// What an unanswered or unreadable webhook means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Deny,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The URL as written (messages).
    pub url: String,
    pub target: WebhookTarget,
    pub timeout: Duration,
    pub on_error: OnError,
}

impl Policy {
    /// Validates `config.policy` (`None`: the default, which restricts nothing).
    pub fn from_raw(raw: Option<&RawPolicy>) -> Result<Policy, ConfigError> {
        let Some(r) = raw else {
            return Ok(Policy::default());
        };
        const P: &str = "config.policy";
        let drivers = r
            .drivers
            .as_ref()
            .map(|v| names(&format!("{P}.drivers"), v, "a driver, e.g. jail or qemu"))
            .transpose()?;
        let network_modes = r
            .network_modes
            .as_ref()
            .map(|v| {
                v.iter()
                    .enumerate()
                    .map(|(i, m)| match m.as_str() {
                        "none" => Ok(NetworkMode::None),
                        "isolated" => Ok(NetworkMode::Isolated),
                        "bridge" => Ok(NetworkMode::Bridge),
                        _ => Err(key_err(
                            format!("{P}.network_modes[{i}]"),
                            format!("unknown mode {m:?}: use none, isolated or bridge"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let images = r
            .images
            .as_ref()
            .map(|v| {
                names(
                    &format!("{P}.images"),
                    v,
                    "a local image name, e.g. minimal",
                )
            })
            .transpose()?;
        let max_node = match &r.max_node {
            None => MaxNode::default(),
            Some(m) => {
                if m.vcpu == Some(0) {
                    return Err(key_err(
                        format!("{P}.max_node.vcpu"),
                        "must be at least 1 (a node has at least one vCPU)",
                    ));
                }
                let size = |k: &str, v: &Option<String>| -> Result<Option<u64>, ConfigError> {
                    v.as_deref()
                        .map(|s| {
                            let b = crate::size::parse(s)
                                .map_err(|e| key_err(format!("{P}.max_node.{k}"), e))?;
                            if b < 16 << 20 {
                                return Err(key_err(
                                    format!("{P}.max_node.{k}"),
                                    format!("{s:?} is below 16M, the smallest node: give e.g. 4G"),
                                ));
                            }
                            Ok(b)
                        })
                        .transpose()
                };
                MaxNode {
                    vcpu: m.vcpu,
                    ram_bytes: size("ram", &m.ram)?,
                    storage_bytes: size("storage", &m.storage)?,
                }
            }
        };
        let forwards = match &r.forwards {
            None => ForwardPolicy::default(),
            Some(f) => ForwardPolicy {
                allowed: f.allowed.unwrap_or(true),
                bind_addresses: f
                    .bind_addresses
                    .as_ref()
                    .map(|v| {
                        v.iter()
                            .enumerate()
                            .map(|(i, a)| {
                                a.parse::<IpAddr>().map_err(|_| {
                                    key_err(
                                        format!("{P}.forwards.bind_addresses[{i}]"),
                                        format!("{a:?} is not an IP address, e.g. 127.0.0.1"),
                                    )
                                })
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?,
            },
        };
        let webhook = r.webhook.as_ref().map(webhook).transpose()?;
        Ok(Policy {
            drivers,
            network_modes,
            max_node,
            exec_as_root: r.exec_as_root.unwrap_or(true),
            forwards,
            images,
            webhook,
            volumes_exec: r.volumes_exec.unwrap_or(false), // #13, attach
        })
    }
}

/// A list of non-empty names without duplicates.
fn names(path: &str, v: &[String], what: &str) -> Result<Vec<String>, ConfigError> {
    for (i, n) in v.iter().enumerate() {
        if n.is_empty() {
            return Err(key_err(
                format!("{path}[{i}]"),
                format!("is empty: name {what}"),
            ));
        }
        if v[..i].contains(n) {
            return Err(key_err(
                format!("{path}[{i}]"),
                format!("{n:?} is listed twice"),
            ));
        }
    }
    Ok(v.to_vec())
}

fn webhook(w: &RawWebhook) -> Result<Webhook, ConfigError> {
    const P: &str = "config.policy.webhook";
    let target = target(&w.url).map_err(|m| key_err(format!("{P}.url"), m))?;
    let timeout = match w.timeout.as_deref() {
        None => DEFAULT_WEBHOOK_TIMEOUT,
        Some(t) => {
            let d =
                bulkhead_api::duration::parse(t).map_err(|m| key_err(format!("{P}.timeout"), m))?;
            if !(MIN_WEBHOOK_TIMEOUT..=MAX_WEBHOOK_TIMEOUT).contains(&d) {
                return Err(key_err(
                    format!("{P}.timeout"),
                    format!("{t:?} is out of range: give a duration between 1ms and 60s, e.g. 2s"),
                ));
            }
            d
        }
    };
    let on_error = match w.on_error.as_deref() {
        None | Some("deny") => OnError::Deny,
        Some("allow") => OnError::Allow,
        Some(o) => {
            return Err(key_err(
                format!("{P}.on_error"),
                format!("{o:?} is neither deny nor allow (deny, the default, fails closed)"),
            ))
        }
    };
    Ok(Webhook {
        url: w.url.clone(),
        target,
        timeout,
        on_error,
    })
}

/// `http://HOST[:PORT][/PATH]`, `https://…` or `unix:///ABSOLUTE/PATH` (also the event
/// webhook's, #14).
pub(crate) fn target(url: &str) -> Result<WebhookTarget, String> {
    if let Some(p) = url.strip_prefix("unix://") {
        if !p.starts_with('/') || p.len() < 2 {
            return Err(format!(
                "{url:?}: a unix URL names an absolute socket path, e.g. unix:///run/policy.sock"
            ));
        }
        return Ok(WebhookTarget::Unix(PathBuf::from(p)));
    }
    let (https, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => {
            return Err(format!(
                "{url:?} is not a webhook URL: use http://HOST:PORT/PATH, https://… or unix:///PATH"
            ))
        }
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let bad =
        || format!("{url:?}: give HOST[:PORT] after the scheme, e.g. http://127.0.0.1:9000/admit");
    if authority.is_empty() || authority.contains('@') || path.contains(char::is_whitespace) {
        return Err(bad());
    }
    let (host, port) = if let Some(r) = authority.strip_prefix('[') {
        let (h, tail) = r.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p),
            None if tail.is_empty() => None,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.to_string(), None),
        }
    };
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(bad)?,
    };
    if host.is_empty() {
        return Err(bad());
    }
    // The webhook's answer admits requests: plain HTTP only where nobody can sit in between.
    if !https && !super::auth::is_loopback(&host) {
        return Err(format!(
            "{url:?}: plain http only to a loopback host (127.0.0.1, ::1, localhost); use https or a unix:// socket"
        ));
    }
    Ok(WebhookTarget::Http {
        https,
        host,
        port,
        authority: authority.to_string(),
        path: path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TenantConfig;

    fn with(policy: &str) -> Result<Policy, String> {
        let text = format!(
            "config:\n  host_groups:\n    - name: g\n  policy:\n{}",
            policy
                .lines()
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
        TenantConfig::parse(&text)
            .map(|c| c.policy)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn absent_restricts_nothing() {
        let c = TenantConfig::parse("config:\n  host_groups:\n    - name: g\n").unwrap();
        assert_eq!(c.policy, Policy::default());
        assert!(c.policy.exec_as_root && c.policy.forwards.allowed);
        assert!(c.policy.webhook.is_none());
        assert!(
            !c.policy.volumes_exec,
            "volumes are noexec unless the policy says"
        );
        assert!(with("volumes_exec: true\n").unwrap().volumes_exec);
        assert!(with("volumes_exec: sometimes\n").is_err());
    }

    #[test]
    fn the_issue_example_loads() {
        let p = with(
            "drivers: [qemu]\nnetwork_modes: [isolated]\nmax_node: { vcpu: 2, ram: 4G, storage: 10G }\n\
             exec_as_root: false\nforwards: { allowed: true, bind_addresses: [127.0.0.1] }\n\
             images: [minimal, python]\nwebhook:\n  url: http://127.0.0.1:9000/admit\n  timeout: 2s\n  on_error: deny\n",
        )
        .unwrap();
        assert_eq!(p.drivers, Some(vec!["qemu".to_string()]));
        assert_eq!(p.network_modes, Some(vec![NetworkMode::Isolated]));
        assert_eq!(
            p.max_node,
            MaxNode {
                vcpu: Some(2),
                ram_bytes: Some(4 << 30),
                storage_bytes: Some(10 << 30)
            }
        );
        assert!(!p.exec_as_root);
        assert_eq!(
            p.forwards.bind_addresses,
            Some(vec!["127.0.0.1".parse().unwrap()])
        );
        let w = p.webhook.unwrap();
        assert_eq!(
            w.target,
            WebhookTarget::Http {
                https: false,
                host: "127.0.0.1".into(),
                port: 9000,
                authority: "127.0.0.1:9000".into(),
                path: "/admit".into()
            }
        );
        assert_eq!(
            (w.timeout, w.on_error),
            (Duration::from_secs(2), OnError::Deny)
        );
        let w = with("webhook: { url: \"unix:///run/policy.sock\", on_error: allow }")
            .unwrap()
            .webhook
            .unwrap();
        assert_eq!(w.target, WebhookTarget::Unix("/run/policy.sock".into()));
        assert_eq!(
            (w.timeout, w.on_error),
            (DEFAULT_WEBHOOK_TIMEOUT, OnError::Allow)
        );
    }

    #[test]
    fn every_bad_key_is_named() {
        for (policy, key, says) in [
            ("drivers: [jail]\nrootful: true", "config.policy", "rootful"),
            ("drivers: [\"\"]", "config.policy.drivers[0]", "is empty"),
            ("drivers: [jail, jail]", "config.policy.drivers[1]", "twice"),
            (
                "network_modes: [open]",
                "config.policy.network_modes[0]",
                "none, isolated or bridge",
            ),
            ("max_node: { vcpus: 2 }", "config.policy.max_node", "vcpus"),
            (
                "max_node: { vcpu: 0 }",
                "config.policy.max_node.vcpu",
                "at least 1",
            ),
            (
                "max_node: { ram: 4Q }",
                "config.policy.max_node.ram",
                "unknown unit",
            ),
            (
                "max_node: { storage: 1K }",
                "config.policy.max_node.storage",
                "below 16M",
            ),
            ("exec_as_root: maybe", "config.policy.exec_as_root", ""),
            (
                "forwards: { allowed: true, bind: [x] }",
                "config.policy.forwards",
                "bind",
            ),
            (
                "forwards: { bind_addresses: [localhost] }",
                "config.policy.forwards.bind_addresses[0]",
                "not an IP",
            ),
            ("images: [\"\"]", "config.policy.images[0]", "is empty"),
            ("webhook: { timeout: 2s }", "config.policy.webhook", "url"),
            (
                "webhook: { url: \"ftp://x/\" }",
                "config.policy.webhook.url",
                "http://HOST:PORT/PATH",
            ),
            (
                "webhook: { url: \"unix://run/p.sock\" }",
                "config.policy.webhook.url",
                "absolute",
            ),
            (
                "webhook: { url: \"http://:80/\" }",
                "config.policy.webhook.url",
                "HOST[:PORT]",
            ),
            (
                "webhook: { url: \"http://127.0.0.1:99999/\" }",
                "config.policy.webhook.url",
                "HOST[:PORT]",
            ),
            (
                "webhook: { url: \"http://10.0.0.1/admit\" }",
                "config.policy.webhook.url",
                "only to a loopback host",
            ),
            (
                "webhook: { url: \"unix:///p\", timeout: 0s }",
                "config.policy.webhook.timeout",
                "between 1ms and 60s",
            ),
            (
                "webhook: { url: \"unix:///p\", timeout: 61s }",
                "config.policy.webhook.timeout",
                "between 1ms and 60s",
            ),
            (
                "webhook: { url: \"unix:///p\", timeout: soon }",
                "config.policy.webhook.timeout",
                "",
            ),
            (
                "webhook: { url: \"unix:///p\", on_error: maybe }",
                "config.policy.webhook.on_error",
                "neither deny nor allow",
            ),
            (
                "webhook: { url: \"unix:///p\", retries: 3 }",
                "config.policy.webhook",
                "retries",
            ),
        ] {
            let e = with(policy).unwrap_err();
            assert!(e.contains(key) && e.contains(says), "{policy}: {e}");
        }
    }

    #[test]
    fn a_shared_daemons_tenant_has_its_own_policy() {
        let c = crate::DaemonConfig::parse(
            "config:\n  policy: { exec_as_root: false }\n  tenants:\n    - name: a\n      host_groups: [{name: ga}]\n      policy: { images: [minimal] }\n    - name: b\n      host_groups: [{name: gb}]\n",
        )
        .unwrap();
        // A tenant's own policy replaces the daemon-wide one, which is the default of the rest.
        assert!(c.tenants[0].policy.exec_as_root);
        assert_eq!(
            c.tenants[0].policy.images,
            Some(vec!["minimal".to_string()])
        );
        assert!(!c.tenants[1].policy.exec_as_root);
        let e = crate::DaemonConfig::parse(
            "config:\n  tenants:\n    - name: a\n      host_groups: [{name: ga}]\n      policy: { exec_as_root: nope }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("config.tenants[0].policy.exec_as_root"), "{e}");
    }
}
