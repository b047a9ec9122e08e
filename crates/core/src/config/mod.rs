//! The tenant config file, in Slicer's YAML shape (`config.host_groups[]`, `image`,
//! `hypervisor`, `graceful_shutdown`, `api.bind_address`) plus a few bulkhead keys (`tenant`,
//! `state_dir`, `pids_max`). Unknown keys are errors that name the key, so a typo never
//! silently changes what a tenant gets. [`TenantConfig::parse`] validates everything up front:
//! nothing starts on a bad config.

pub mod audit; // the audit trail's files (#14, part A)
pub mod auth;
mod dedicated;
pub mod e2b; // the E2B listener (#15, part A)
mod error;
pub mod events; // events and detection (#14, part B)
mod events_raw;
mod group;
pub mod identity;
pub mod policy;
mod policy_raw;
pub mod quotas; // quotas (#12, ADR 0025)
pub mod rate_limits; // rate limits, fair queues, connection limits (#12, ADR 0026)
pub(crate) mod raw;
pub mod shim; // the containerd shim's listener and namespace mapping (#16, B1)
pub mod shim_raw; // its YAML as written (#16)
pub mod storage; // the host keyring's place (#13, secrets and keys)
#[cfg(test)]
mod tests;
pub mod usage; // usage sampling (#14, part E)

use ipnet::Ipv4Net;
use std::path::PathBuf;

use bulkhead_api::names;

pub use auth::{JwksSource, OidcConfig};
pub use error::key_err;
pub use error::ConfigError;
pub use group::{
    default_agent_concurrency, GroupNetwork, HostGroup, NetworkMode, DEFAULT_AGENT_CONCURRENCY,
    DEFAULT_ISOLATED_RANGE, DEFAULT_PIDS, DEFAULT_RAM, DEFAULT_STORAGE, MAX_COUNT, MAX_EGRESS_MBPS,
    MAX_RAM, MAX_STORAGE, PIDS_PER_EXEC,
};
pub use raw::{RawApi, RawConfig, RawFile, RawHostGroup, RawNetwork, RawTcp, RawTenant, RawTls};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiListen {
    Unix(PathBuf),
    Tcp {
        addr: String,
        token_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    pub tenant: String,
    pub state_dir: Option<PathBuf>,
    pub groups: Vec<HostGroup>,
    pub image: String,
    pub hypervisor: String,
    pub graceful_shutdown: bool,
    pub listen: ApiListen,
    /// Host ports port forwards may open (inclusive); port 0 (any free port) is always
    /// allowed and lands in the kernel's ephemeral range.
    pub forward_ports: (u16, u16),
    /// Connection timeouts and caps (API listener, port forwards).
    pub conns: crate::limits::ConnLimits,
    /// The tenant is one of a shared daemon's (`config.tenants`): a client-chosen hostname
    /// must begin with its host group's name and a dash.
    pub shared_daemon: bool,
    /// `quotas` (#12, ADR 0025): what the tenant's nodes may add up to; unlimited when unset.
    pub quotas: quotas::Quotas,
    /// Admission policy (#12, `policy.rs`): the default restricts nothing.
    pub policy: policy::Policy,
    /// Token buckets and in-flight, connection and queue bounds (#12, rate).
    pub rate_limits: rate_limits::RateLimits,
    /// `usage` (#14, part E): how often nodes' usage is sampled.
    pub usage: usage::UsageConfig,
    /// `events` and `detection` (#14, part B): events kept, the event webhook, the denial
    /// spike threshold, the integrity re-check interval.
    pub events: events::EventsConfig,
    /// The audit trail's files (#14, part A; `audit.rs`): on by default.
    pub audit: audit::AuditConfig,
}

pub const DEFAULT_IMAGE: &str = "minimal";
/// Unprivileged ports only, unless the operator says otherwise.
pub const DEFAULT_FORWARD_PORTS: (u16, u16) = (1024, 65535);
/// Networked host groups per tenant (one hex digit in interface names).
pub const MAX_NETWORKED_GROUPS: usize = 16;

impl TenantConfig {
    /// Parses and validates a config file's text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::from_raw(RawFile::parse(text)?)
    }

    pub fn from_raw(c: RawConfig) -> Result<Self, ConfigError> {
        if c.host_groups.is_empty() {
            return Err(key_err(
                "config.host_groups",
                "at least one host group is required",
            ));
        }
        let mut groups: Vec<HostGroup> = Vec::new();
        for (i, g) in c.host_groups.iter().enumerate() {
            let p = format!("config.host_groups[{i}]");
            let hg = group::validate_group(&p, g)?;
            if groups.iter().any(|x| x.name == hg.name) {
                return Err(key_err(
                    format!("{p}.name"),
                    format!(
                        "host group {:?} is defined twice: names must be unique",
                        hg.name
                    ),
                ));
            }
            groups.push(hg);
        }
        let networked: Vec<(usize, Ipv4Net)> = groups
            .iter()
            .enumerate()
            .filter_map(|(i, g)| g.network.range.map(|r| (i, r)))
            .collect();
        if networked.len() > MAX_NETWORKED_GROUPS {
            return Err(key_err(
                "config.host_groups",
                format!("at most {MAX_NETWORKED_GROUPS} host groups per tenant may have a network (isolated or bridge)"),
            ));
        }
        for (n, (i, a)) in networked.iter().enumerate() {
            if let Some((j, b)) = networked[..n]
                .iter()
                .find(|(_, b)| a.contains(&b.network()) || b.contains(&a.network()))
            {
                return Err(key_err(
                    format!("config.host_groups[{i}].network.range"),
                    format!(
                        "{a} overlaps {b} of host group {:?}: give each group its own range",
                        groups[*j].name
                    ),
                ));
            }
        }
        let tenant = c.tenant.clone().unwrap_or_else(|| groups[0].name.clone());
        names::validate_label("tenant", &tenant).map_err(|m| key_err("config.tenant", m))?;
        // Which drivers exist is the registry's to say (`bulkhead_driver::Registry::check`,
        // which also runs each driver's own checks); here only that one is named.
        let hypervisor = c.hypervisor.clone().unwrap_or_else(|| "jail".into());
        if hypervisor.is_empty() {
            return Err(key_err(
                "config.hypervisor",
                "is empty: name a driver, e.g. \"jail\" or \"qemu\"",
            ));
        }
        for g in &mut groups {
            if g.hypervisor.is_empty() {
                g.hypervisor = hypervisor.clone();
            }
        }
        let image = c.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into());
        if image.is_empty() || image.contains('/') || image.contains(':') {
            return Err(key_err(
                "config.image",
                format!("{image:?} is not a local image name: bulkhead does not pull images; import one with `bulkhead image import --name NAME DIR|TARBALL` and name it here"),
            ));
        }
        let api = c.api.clone().unwrap_or_default();
        let listen = match api.bind_address.as_deref() {
            None => ApiListen::Unix(PathBuf::from(format!("/run/bulkhead/{tenant}.sock"))),
            Some(a) if a.starts_with('/') => {
                if api.port.is_some() {
                    return Err(key_err(
                        "config.api.port",
                        "port does not apply to a UNIX socket bind_address",
                    ));
                }
                ApiListen::Unix(PathBuf::from(a))
            }
            Some(a) => {
                let addr = if a.contains(':') {
                    a.to_string()
                } else {
                    format!("{a}:{}", api.port.unwrap_or(8080))
                };
                addr.parse::<std::net::SocketAddr>().map_err(|_| {
                    key_err("config.api.bind_address", format!("{a:?} is neither an absolute socket path nor host:port (e.g. 127.0.0.1:8080)"))
                })?;
                ApiListen::Tcp {
                    addr,
                    token_file: api.token_file.clone(),
                }
            }
        };
        let forward_ports = match c.forward_ports.as_deref() {
            None => DEFAULT_FORWARD_PORTS,
            Some(r) => r
                .split_once('-')
                .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
                .filter(|(a, b): &(u16, u16)| *a >= 1 && a <= b)
                .ok_or_else(|| {
                    key_err(
                        "config.forward_ports",
                        format!("{r:?} is not a port range LOW-HIGH, e.g. 20000-20999"),
                    )
                })?,
        };
        if let Some(sd) = &c.state_dir {
            if !sd.is_absolute() {
                return Err(key_err("config.state_dir", "must be an absolute path"));
            }
        }
        let conns = crate::limits::ConnLimits::from_raw(&c)?;
        // quotas (#12): validated, and the groups' own `count` must fit them.
        let quotas = quotas::Quotas::from_raw("config.quotas", c.quotas.as_ref())?;
        let mut at_start = quotas::Usage::default();
        for g in &groups {
            for _ in 0..g.count {
                at_start.add(&quotas::Usage::node(g.vcpu, g.ram_bytes, g.storage_bytes));
            }
        }
        quotas.check_start("config.quotas", &at_start)?;
        let policy = policy::Policy::from_raw(c.policy.as_ref())?; // admission policy (#12)
        let rate_limits = rate_limits::RateLimits::from_raw(c.rate_limits.as_ref())?;
        let usage = usage::UsageConfig::from_raw(c.usage.as_ref())?; // #14, part E
                                                                     // #14, part B: events and detection
        let events = events::EventsConfig::from_raw(c.events.as_ref(), c.detection.as_ref())?;
        let audit = audit::AuditConfig::from_raw("config.audit", c.audit.as_ref())?; // #14, A
        Ok(TenantConfig {
            usage,
            quotas,
            policy,
            conns,
            tenant,
            state_dir: c.state_dir.clone(),
            groups,
            image,
            hypervisor,
            graceful_shutdown: c.graceful_shutdown,
            listen,
            forward_ports,
            shared_daemon: false,
            rate_limits,
            events, // #14, part B
            audit,  // #14, A
        })
    }

    /// The drivers the tenant's groups use, each once, the tenant's own first.
    pub fn drivers(&self) -> Vec<&str> {
        let mut v = vec![self.hypervisor.as_str()];
        for g in &self.groups {
            if !v.contains(&g.hypervisor.as_str()) {
                v.push(&g.hypervisor);
            }
        }
        v
    }

    /// The config as driver `driver` sees it: only its groups, with their indexes in this
    /// config (for error keys), and `hypervisor` set to it.
    pub fn for_driver(&self, driver: &str) -> (TenantConfig, Vec<usize>) {
        let idx: Vec<usize> = (0..self.groups.len())
            .filter(|i| self.groups[*i].hypervisor == driver)
            .collect();
        let mut sub = self.clone();
        sub.groups = idx.iter().map(|i| self.groups[*i].clone()).collect();
        sub.hypervisor = driver.to_string();
        (sub, idx)
    }

    pub fn group(&self, name: &str) -> Option<&HostGroup> {
        self.groups.iter().find(|g| g.name == name)
    }
}
