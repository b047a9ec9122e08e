//! A host group: its validated shape ([`HostGroup`], [`GroupNetwork`]), its defaults and
//! bounds, and the validation of one `config.host_groups[]` entry and its network.

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};

use bulkhead_api::names;

use super::error::{key_err, ConfigError};
use super::raw::{RawHostGroup, RawNetwork};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    None,
    Isolated,
    Bridge,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::None => "none",
            NetworkMode::Isolated => "isolated",
            NetworkMode::Bridge => "bridge",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupNetwork {
    pub mode: NetworkMode,
    /// Set for isolated and bridge modes (IPv4).
    pub range: Option<Ipv4Net>,
    pub drop: Vec<Ipv4Net>,
    /// Empty only in mode none; defaults to 0.0.0.0/0.
    pub allow: Vec<Ipv4Net>,
    pub egress_mbps: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGroup {
    pub name: String,
    /// The group's driver: its own `hypervisor`, else the tenant's.
    pub hypervisor: String,
    pub count: u32,
    pub vcpu: u32,
    pub ram_bytes: u64,
    /// The key RAM was given with (`ram_gb`, `ram_mb`, `ram_bytes`); `None`: the default.
    pub ram_key: Option<&'static str>,
    pub storage_bytes: u64,
    pub pids_max: u64,
    pub kernel_limits: crate::kernel_limits::KernelLimits,
    /// Exec and copy operations that run at once per node (see [`default_agent_concurrency`]).
    pub agent_concurrency: u32,
    pub network: GroupNetwork,
    pub dns_servers: Vec<std::net::Ipv4Addr>,
    pub userdata: Option<String>,
    /// Host cores this group's nodes get to themselves (`dedicated.rs`, ADR 0027); `None`:
    /// they share the CPUs no group reserved.
    pub dedicated_cores: Option<u32>,
}

pub const DEFAULT_STORAGE: u64 = 1 << 30;
pub const DEFAULT_RAM: u64 = 512 << 20;
pub const DEFAULT_PIDS: u64 = 1024;
/// Pids (processes and threads) one exec costs a node at least: the agent's connection,
/// output and stdin threads, and the command itself.
pub const PIDS_PER_EXEC: u64 = 5;
/// Most agent operations per node by default, whatever the pids limit.
pub const DEFAULT_AGENT_CONCURRENCY: u32 = 64;

/// Agent operations per node when the config does not say: 64, or fewer where the node's pids
/// limit could not hold that many execs beside a workload of half the limit.
pub fn default_agent_concurrency(pids_max: u64) -> u32 {
    ((pids_max / 2 / PIDS_PER_EXEC) as u32).clamp(1, DEFAULT_AGENT_CONCURRENCY)
}
pub const MAX_COUNT: u32 = 256;
/// Sanity bounds that hold on any host, so that no later sum or unit conversion can overflow;
/// `TenantConfig::check_host` holds a config to the actual host's figures.
pub const MAX_RAM: u64 = 1 << 60;
pub const MAX_STORAGE: u64 = 1 << 60;
pub const MAX_EGRESS_MBPS: u32 = 1_000_000;

/// The default range of `bulkhead new --net=isolated` (Slicer's): 256 nodes of /30.
pub const DEFAULT_ISOLATED_RANGE: &str = "169.254.100.0/22";

fn parse_cidr(path: &str, c: &str) -> Result<Ipv4Net, ConfigError> {
    match c.parse::<IpNet>() {
        Ok(IpNet::V4(n)) => Ok(n),
        Ok(IpNet::V6(_)) => Err(key_err(
            path,
            format!("{c:?} is IPv6: nodes have IPv4 only, so give IPv4 CIDRs"),
        )),
        Err(_) => Err(key_err(
            path,
            format!("{c:?} is not a CIDR, e.g. 192.168.1.0/24"),
        )),
    }
}

fn parse_cidrs(path: &str, v: &[String]) -> Result<Vec<Ipv4Net>, ConfigError> {
    v.iter()
        .enumerate()
        .map(|(i, c)| parse_cidr(&format!("{path}[{i}]"), c))
        .collect()
}

fn validate_network(
    p: &str,
    mode: NetworkMode,
    rn: &RawNetwork,
    dns: &[std::net::Ipv4Addr],
) -> Result<GroupNetwork, ConfigError> {
    let np = format!("{p}.network");
    let drop = parse_cidrs(&format!("{np}.drop"), &rn.drop)?;
    let mut allow = parse_cidrs(&format!("{np}.allow"), &rn.allow)?;
    if mode == NetworkMode::None {
        for (k, set) in [
            ("range", rn.range.is_some()),
            ("drop", !rn.drop.is_empty()),
            ("allow", !rn.allow.is_empty()),
            ("egress_mbps", rn.egress_mbps.is_some()),
        ] {
            if set {
                return Err(key_err(
                    format!("{np}.{k}"),
                    "applies to modes isolated and bridge only: remove it, or set mode: isolated",
                ));
            }
        }
        if !dns.is_empty() {
            return Err(key_err(
                format!("{p}.dns_servers"),
                "a group with network mode none reaches no DNS server: remove dns_servers or set network.mode",
            ));
        }
        return Ok(GroupNetwork {
            mode,
            range: None,
            drop,
            allow,
            egress_mbps: None,
        });
    }
    let range = match &rn.range {
        Some(r) => parse_cidr(&format!("{np}.range"), r)?,
        None => {
            return Err(key_err(
                format!("{np}.range"),
                format!(
                    "mode {} needs a range, e.g. range: {DEFAULT_ISOLATED_RANGE} (256 nodes)",
                    mode.as_str()
                ),
            ))
        }
    };
    if range.network() != range.addr() {
        return Err(key_err(
            format!("{np}.range"),
            format!("{range} has host bits set: use {}", range.trunc()),
        ));
    }
    if range.prefix_len() > 30 {
        return Err(key_err(
            format!("{np}.range"),
            "holds no node: use a /30 or larger (a /22 holds 256 isolated nodes)",
        ));
    }
    if allow.is_empty() {
        allow.push(Ipv4Net::default());
    }
    for d in dns {
        if let Some(c) = drop.iter().find(|c| c.contains(d)) {
            return Err(key_err(
                format!("{p}.dns_servers"),
                format!("{d} is inside drop-listed {c}: nodes could never reach it"),
            ));
        }
        if range.contains(d) {
            return Err(key_err(
                format!("{p}.dns_servers"),
                format!("{d} is inside the group's own range {range}: give the address of a resolver outside it"),
            ));
        }
    }
    if let Some(e) = rn.egress_mbps {
        if e == 0 || e > MAX_EGRESS_MBPS {
            return Err(key_err(
                format!("{np}.egress_mbps"),
                format!("{e} is outside 1..={MAX_EGRESS_MBPS} (Mbit/s); remove it for no limit"),
            ));
        }
    }
    Ok(GroupNetwork {
        mode,
        range: Some(range),
        drop,
        allow,
        egress_mbps: rn.egress_mbps,
    })
}

pub(super) fn validate_group(p: &str, g: &RawHostGroup) -> Result<HostGroup, ConfigError> {
    names::validate_label("host group name", &g.name)
        .map_err(|m| key_err(format!("{p}.name"), m))?;
    if let Some(s) = &g.storage {
        if s != "image" {
            return Err(key_err(
                format!("{p}.storage"),
                format!("{s:?} is not supported: use \"image\""),
            ));
        }
    }
    let storage_bytes = match &g.storage_size {
        Some(s) => crate::size::parse(s).map_err(|m| key_err(format!("{p}.storage_size"), m))?,
        None => DEFAULT_STORAGE,
    };
    if storage_bytes < (16 << 20) {
        return Err(key_err(format!("{p}.storage_size"), "must be at least 16M"));
    }
    if storage_bytes > MAX_STORAGE {
        return Err(key_err(
            format!("{p}.storage_size"),
            format!("{storage_bytes} bytes is beyond any host (at most 1 EiB): give the size a node needs, e.g. 25G"),
        ));
    }
    let rams = [
        g.ram_gb.map(|v| (v, 1u64 << 30, "ram_gb")),
        g.ram_mb.map(|v| (v, 1 << 20, "ram_mb")),
        g.ram_bytes.map(|v| (v, 1, "ram_bytes")),
    ];
    let set: Vec<_> = rams.iter().flatten().collect();
    if set.len() > 1 {
        return Err(key_err(
            format!("{p}.{}", set[1].2),
            "give only one of ram_gb, ram_mb and ram_bytes",
        ));
    }
    let ram_bytes = match set.first() {
        Some((v, m, k)) => {
            let b = v.checked_mul(*m).filter(|b| *b <= MAX_RAM).ok_or_else(|| {
                key_err(
                    format!("{p}.{k}"),
                    format!("{k} {v} is beyond any host (at most 1 EiB): give the memory a node needs, e.g. ram_mb: 512"),
                )
            })?;
            if b < 16 << 20 {
                return Err(key_err(format!("{p}.{k}"), "must be at least 16 MiB"));
            }
            b
        }
        None => DEFAULT_RAM,
    };
    let ram_key = set.first().map(|(_, _, k)| *k);
    let vcpu = g.vcpu.unwrap_or(1);
    if vcpu == 0 || vcpu > 256 {
        return Err(key_err(format!("{p}.vcpu"), "must be between 1 and 256"));
    }
    if g.count > MAX_COUNT {
        return Err(key_err(
            format!("{p}.count"),
            format!("must be at most {MAX_COUNT}"),
        ));
    }
    let pids_max = g.pids_max.unwrap_or(DEFAULT_PIDS);
    if !(16..=1 << 22).contains(&pids_max) {
        return Err(key_err(
            format!("{p}.pids_max"),
            "must be between 16 and 4194304",
        ));
    }
    let kernel_limits = crate::kernel_limits::KernelLimits::validate(p, g.kernel_limits.as_ref())
        .map_err(|(k, m)| key_err(k, m))?;
    let agent_concurrency = g
        .agent_concurrency
        .unwrap_or_else(|| default_agent_concurrency(pids_max));
    if !(1..=4096).contains(&agent_concurrency) {
        return Err(key_err(
            format!("{p}.agent_concurrency"),
            "must be between 1 and 4096",
        ));
    }
    let rn = g.network.clone().unwrap_or_default();
    let mode = match rn.mode.as_deref().unwrap_or("none") {
        "none" => NetworkMode::None,
        "isolated" => NetworkMode::Isolated,
        "bridge" => NetworkMode::Bridge,
        m => {
            return Err(key_err(
                format!("{p}.network.mode"),
                format!("unknown mode {m:?}: use none, isolated or bridge"),
            ))
        }
    };
    let dns_servers: Vec<std::net::Ipv4Addr> = g
        .dns_servers
        .iter()
        .enumerate()
        .map(|(i, d)| {
            d.parse().map_err(|_| {
                key_err(
                    format!("{p}.dns_servers[{i}]"),
                    format!("{d:?} is not an IPv4 address"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    let network = validate_network(p, mode, &rn, &dns_servers)?;
    let userdata = match (&g.userdata, &g.userdata_file) {
        (Some(_), Some(_)) => {
            return Err(key_err(
                format!("{p}.userdata_file"),
                "give userdata or userdata_file, not both",
            ))
        }
        (Some(u), None) => Some(u.clone()),
        (None, Some(f)) => Some(std::fs::read_to_string(f).map_err(|e| {
            key_err(
                format!("{p}.userdata_file"),
                format!("cannot read {}: {e}", f.display()),
            )
        })?),
        (None, None) => None,
    };
    if g.hypervisor.as_deref() == Some("") {
        return Err(key_err(
            format!("{p}.hypervisor"),
            "is empty: name a driver, e.g. \"jail\" or \"qemu\", or leave it out for the tenant's",
        ));
    }
    Ok(HostGroup {
        name: g.name.clone(),
        // Filled with the tenant's when the group names none (`TenantConfig::from_raw`).
        hypervisor: g.hypervisor.clone().unwrap_or_default(),
        count: g.count,
        vcpu,
        ram_bytes,
        ram_key,
        storage_bytes,
        pids_max,
        kernel_limits,
        agent_concurrency,
        network,
        dns_servers,
        userdata,
        dedicated_cores: super::dedicated::validate(p, g, vcpu)?, // dedicated cores (#12)
    })
}
