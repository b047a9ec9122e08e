//! The tenant config file, in Slicer's YAML shape (`config.host_groups[]`, `image`,
//! `hypervisor`, `graceful_shutdown`, `api.bind_address`) plus a few bulkhead keys (`tenant`,
//! `state_dir`, `pids_max`). Unknown keys are errors that name the key, so a typo never
//! silently changes what a tenant gets. [`TenantConfig::parse`] validates everything up front:
//! nothing starts on a bad config.

mod error;
mod group;
mod raw;
#[cfg(test)]
mod tests;

use ipnet::Ipv4Net;
use std::path::PathBuf;

use bulkhead_api::names;

pub(crate) use error::key_err;
pub use error::ConfigError;
pub use group::{
    default_agent_concurrency, GroupNetwork, HostGroup, NetworkMode, DEFAULT_AGENT_CONCURRENCY,
    DEFAULT_ISOLATED_RANGE, DEFAULT_PIDS, DEFAULT_RAM, DEFAULT_STORAGE, MAX_COUNT, MAX_EGRESS_MBPS,
    MAX_RAM, MAX_STORAGE, PIDS_PER_EXEC,
};
pub use raw::{RawApi, RawConfig, RawFile, RawHostGroup, RawNetwork};

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
}

pub const DEFAULT_IMAGE: &str = "minimal";
/// Least guest RAM with `hypervisor: qemu` (32 MiB hangs at boot; 128 MiB is proven).
pub const MIN_VM_RAM: u64 = 128 << 20;
/// Unprivileged ports only, unless the operator says otherwise.
pub const DEFAULT_FORWARD_PORTS: (u16, u16) = (1024, 65535);
/// Networked host groups per tenant (one hex digit in interface names).
pub const MAX_NETWORKED_GROUPS: usize = 16;

impl TenantConfig {
    /// Parses and validates a config file's text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let raw: RawFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                ConfigError::Syntax(inner)
            } else {
                key_err(path, inner)
            }
        })?;
        Self::from_raw(raw.config)
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
        let hypervisor = c.hypervisor.clone().unwrap_or_else(|| "jail".into());
        match hypervisor.as_str() {
            "jail" => {}
            "qemu" => {}
            "firecracker" | "cloud-hypervisor" => {
                return Err(key_err(
                    "config.hypervisor",
                    format!("{hypervisor:?} is not packaged for this host: use \"qemu\" (microVM) or \"jail\""),
                ))
            }
            h => {
                return Err(key_err(
                    "config.hypervisor",
                    format!("unknown hypervisor {h:?}: use \"jail\" or \"qemu\""),
                ))
            }
        }
        if hypervisor == "qemu" {
            for (i, (g, raw)) in groups.iter().zip(&c.host_groups).enumerate() {
                if g.ram_bytes < MIN_VM_RAM {
                    let key = if raw.ram_gb.is_some() {
                        "ram_gb"
                    } else if raw.ram_bytes.is_some() {
                        "ram_bytes"
                    } else {
                        "ram_mb"
                    };
                    return Err(key_err(
                        format!("config.host_groups[{i}].{key}"),
                        format!(
                            "a microVM (hypervisor: qemu) needs at least {} MiB: its guest kernel and agent do not boot in less",
                            MIN_VM_RAM >> 20
                        ),
                    ));
                }
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
        Ok(TenantConfig {
            conns,
            tenant,
            state_dir: c.state_dir.clone(),
            groups,
            image,
            hypervisor,
            graceful_shutdown: c.graceful_shutdown,
            listen,
            forward_ports,
        })
    }

    /// Settings that work but not as their numbers suggest, one sentence each (printed by
    /// `validate`, logged by `up`).
    pub fn warnings(&self) -> Vec<String> {
        if self.hypervisor != "jail" {
            return Vec::new();
        }
        let mib = |b: u64| b >> 20;
        self.groups
            .iter()
            .filter_map(|g| {
                let layer = crate::layer::jail_layer_bytes(g.storage_bytes, g.ram_bytes);
                (layer < g.storage_bytes).then(|| {
                    format!(
                        "host group {:?}: storage_size is {} MiB, but a jail node's writable layer is held in its memory (ram {} MiB), so it holds at most {} MiB (ram less {} MiB kept for the agent and commands); writes beyond answer 507. Raise ram or lower storage_size to make them agree",
                        g.name,
                        mib(g.storage_bytes),
                        mib(g.ram_bytes),
                        mib(layer),
                        mib(crate::layer::layer_reserve(g.ram_bytes)),
                    )
                })
            })
            .collect()
    }

    pub fn group(&self, name: &str) -> Option<&HostGroup> {
        self.groups.iter().find(|g| g.name == name)
    }
}
