//! The tenant config file, in Slicer's YAML shape (`config.host_groups[]`, `image`,
//! `hypervisor`, `graceful_shutdown`, `api.bind_address`) plus a few bulkhead keys (`tenant`,
//! `state_dir`, `pids_max`). Unknown keys are errors that name the key, so a typo never
//! silently changes what a tenant gets. [`TenantConfig::parse`] validates everything up front:
//! nothing starts on a bad config.

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use bulkhead_api::names;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config: {path}: {message}")]
    Key { path: String, message: String },
    #[error("config is not valid YAML: {0}")]
    Syntax(String),
}

pub(crate) fn key_err(path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Key {
        path: path.into(),
        message: message.into(),
    }
}

// ---- the file as written -------------------------------------------------------------------

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub config: RawConfig,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub host_groups: Vec<RawHostGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    #[serde(default)]
    pub graceful_shutdown: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<RawApi>,
    /// bulkhead: which host ports this tenant's port forwards may open, e.g. "20000-20999".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_ports: Option<String>,
    /// bulkhead: concurrent relayed connections per port forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_max_connections: Option<u32>,
    /// bulkhead: how long a trusted upstream has to send its PROXY v2 header, e.g. "5s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_proxy_timeout: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// File holding the bearer token that TCP clients must send (bulkhead key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// bulkhead: time to send a complete request head, from accept or the previous response
    /// (slow headers get 408; idle keep-alive connections are closed), e.g. "10s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<String>,
    /// bulkhead: concurrent connections on the API listener; beyond it, 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHostGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_size: Option<String>,
    #[serde(default)]
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_gb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    /// Per-user kernel object limits inside each node (`crate::kernel_limits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_limits: Option<crate::kernel_limits::RawKernelLimits>,
    /// bulkhead: agent operations (exec, cp) that run at once per node; more wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_concurrency: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<RawNetwork>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userdata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userdata_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Token-bucket limit on what each node sends, in Mbit/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_mbps: Option<u32>,
    // Slicer's bridge-mode fields, accepted so such configs load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tap_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

// ---- the validated config ------------------------------------------------------------------

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
}

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
pub const DEFAULT_STORAGE: u64 = 1 << 30;
pub const DEFAULT_RAM: u64 = 512 << 20;
/// Least guest RAM with `hypervisor: qemu` (32 MiB hangs at boot; 128 MiB is proven).
pub const MIN_VM_RAM: u64 = 128 << 20;
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
/// [`TenantConfig::check_host`] holds a config to the actual host's figures.
pub const MAX_RAM: u64 = 1 << 60;
pub const MAX_STORAGE: u64 = 1 << 60;
pub const MAX_EGRESS_MBPS: u32 = 1_000_000;
/// Unprivileged ports only, unless the operator says otherwise.
pub const DEFAULT_FORWARD_PORTS: (u16, u16) = (1024, 65535);

/// The default range of `bulkhead new --net=isolated` (Slicer's): 256 nodes of /30.
pub const DEFAULT_ISOLATED_RANGE: &str = "169.254.100.0/22";
/// Networked host groups per tenant (one hex digit in interface names).
pub const MAX_NETWORKED_GROUPS: usize = 16;

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
            let hg = validate_group(&p, g)?;
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
                let layer = crate::jail_layer_bytes(g.storage_bytes, g.ram_bytes);
                (layer < g.storage_bytes).then(|| {
                    format!(
                        "host group {:?}: storage_size is {} MiB, but a jail node's writable layer is held in its memory (ram {} MiB), so it holds at most {} MiB (ram less {} MiB kept for the agent and commands); writes beyond answer 507. Raise ram or lower storage_size to make them agree",
                        g.name,
                        mib(g.storage_bytes),
                        mib(g.ram_bytes),
                        mib(layer),
                        mib(crate::layer_reserve(g.ram_bytes)),
                    )
                })
            })
            .collect()
    }

    pub fn group(&self, name: &str) -> Option<&HostGroup> {
        self.groups.iter().find(|g| g.name == name)
    }
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

fn validate_group(p: &str, g: &RawHostGroup) -> Result<HostGroup, ConfigError> {
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
    Ok(HostGroup {
        name: g.name.clone(),
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLICER: &str = r#"
config:
  host_groups:
    - name: a3cf
      storage: image
      storage_size: 25G
      count: 0
      vcpu: 2
      ram_gb: 4
      network:
        mode: none
  image: "minimal"
  hypervisor: jail
  graceful_shutdown: false
  api:
    bind_address: "/run/bulkhead/a3cf.sock"
"#;

    #[test]
    fn loads_slicer_shape() {
        let c = TenantConfig::parse(SLICER).unwrap();
        assert_eq!(c.tenant, "a3cf");
        assert_eq!(c.groups[0].ram_bytes, 4 << 30);
        assert_eq!(c.groups[0].storage_bytes, 25 << 30);
        assert_eq!(c.listen, ApiListen::Unix("/run/bulkhead/a3cf.sock".into()));
    }

    fn err_of(text: &str) -> String {
        TenantConfig::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        let e = err_of(&SLICER.replace("vcpu: 2", "vcpus: 2"));
        assert!(e.contains("host_groups[0]") && e.contains("vcpus"), "{e}");
        let e = err_of(&SLICER.replace("25G", "25Q"));
        assert!(e.contains("host_groups[0].storage_size"), "{e}");
        let e =
            err_of(&SLICER.replace("mode: none", "mode: none\n        drop: [\"300.1.1.0/24\"]"));
        assert!(e.contains("network.drop[0]"), "{e}");
        let e = err_of(&SLICER.replace("ram_gb: 4", "ram_gb: 4\n      ram_mb: 5"));
        assert!(e.contains("ram_mb") && e.contains("only one"), "{e}");
        let e = err_of(&SLICER.replace("name: a3cf", "name: A3CF"));
        assert!(e.contains("host_groups[0].name"), "{e}");
        let e = err_of(
            &SLICER
                .replace("hypervisor: jail", "hypervisor: qemu")
                .replace("ram_gb: 4", "ram_mb: 32"),
        );
        assert!(
            e.contains("host_groups[0].ram_mb") && e.contains("128 MiB"),
            "{e}"
        );
        let e = err_of(&SLICER.replace("hypervisor: jail", "hypervisor: xen"));
        assert!(e.contains("config.hypervisor"), "{e}");
        let e = err_of(&SLICER.replace("\"/run/bulkhead/a3cf.sock\"", "\"nowhere\""));
        assert!(e.contains("bind_address"), "{e}");
        let e = err_of("config: [");
        assert!(e.contains("YAML") || e.contains("config"), "{e}");
        let e = err_of(&SLICER.replace("  image:", "  forward_ports: 9000-80\n  image:"));
        assert!(e.contains("config.forward_ports"), "{e}");
        let e = err_of(&SLICER.replace("mode: none", "mode: isolated"));
        assert!(e.contains("network.range"), "{e}");
        let e = err_of(&SLICER.replace(
            "mode: none",
            "mode: isolated\n        range: 10.0.0.0/24\n      dns_servers: [\"10.0.0.9\"]\n      userdata: x",
        ));
        assert!(e.contains("dns_servers") && e.contains("own range"), "{e}");
        let e = err_of(&SLICER.replace("mode: none", "mode: none\n        egress_mbps: 5"));
        assert!(e.contains("network.egress_mbps"), "{e}");
    }

    #[test]
    fn overflow_prone_sizes_are_refused_by_key() {
        for (from, to, key) in [
            ("ram_gb: 4", "ram_gb: 18446744073709551615", "ram_gb"),
            ("ram_gb: 4", "ram_gb: 1073741825", "ram_gb"),
            ("ram_gb: 4", "ram_mb: 9999999999999", "ram_mb"),
            (
                "storage_size: 25G",
                "storage_size: 2000000T",
                "storage_size",
            ),
        ] {
            let e = err_of(&SLICER.replace(from, to));
            assert!(
                e.contains(&format!("host_groups[0].{key}")) && e.contains("beyond any host"),
                "{to}: {e}"
            );
        }
        // Beyond u64 altogether: the parser names the key.
        let e = err_of(&SLICER.replace("ram_gb: 4", "ram_mb: 99999999999999999999999"));
        assert!(e.contains("host_groups[0].ram_mb"), "{e}");
        let e = err_of(&SLICER.replace("vcpu: 2", "vcpu: 4294967296"));
        assert!(e.contains("host_groups[0].vcpu"), "{e}");
        let net = "mode: isolated\n        range: 10.0.0.0/24\n        egress_mbps: ";
        for bad in ["0", "4294967295"] {
            let e = err_of(&SLICER.replace("mode: none", &format!("{net}{bad}")));
            assert!(e.contains("network.egress_mbps"), "{bad}: {e}");
        }
        TenantConfig::parse(&SLICER.replace("mode: none", &format!("{net}1000000"))).unwrap();
    }

    #[test]
    fn forward_ports_default_to_unprivileged() {
        let c = TenantConfig::parse(SLICER).unwrap();
        assert_eq!(c.forward_ports, (1024, 65535));
        let c = TenantConfig::parse(
            &SLICER.replace("  image:", "  forward_ports: 20000-20999\n  image:"),
        )
        .unwrap();
        assert_eq!(c.forward_ports, (20000, 20999));
    }

    #[test]
    fn agent_concurrency_defaults_from_pids_and_is_bounded() {
        let c = TenantConfig::parse(SLICER).unwrap();
        assert_eq!(c.groups[0].agent_concurrency, 64);
        let c = TenantConfig::parse(&SLICER.replace("ram_gb: 4", "ram_gb: 4\n      pids_max: 64"))
            .unwrap();
        assert_eq!(c.groups[0].agent_concurrency, 6);
        let c = TenantConfig::parse(
            &SLICER.replace("ram_gb: 4", "ram_gb: 4\n      agent_concurrency: 200"),
        )
        .unwrap();
        assert_eq!(c.groups[0].agent_concurrency, 200);
        let e = err_of(&SLICER.replace("ram_gb: 4", "ram_gb: 4\n      agent_concurrency: 0"));
        assert!(e.contains("host_groups[0].agent_concurrency"), "{e}");
    }

    #[test]
    fn warns_when_the_writable_layer_exceeds_ram() {
        let c = TenantConfig::parse(SLICER).unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("storage_size") && w[0].contains("3840 MiB"),
            "{w:?}"
        );
        let fits = SLICER.replace("storage_size: 25G", "storage_size: 1G");
        assert!(TenantConfig::parse(&fits).unwrap().warnings().is_empty());
    }

    #[test]
    fn duplicate_groups_rejected() {
        let dup = SLICER.replace("  image:", "    - name: a3cf\n  image:");
        assert!(err_of(&dup).contains("defined twice"));
    }

    #[test]
    fn tcp_bind() {
        let c = TenantConfig::parse(&SLICER.replace(
            "\"/run/bulkhead/a3cf.sock\"",
            "\"127.0.0.1\"\n    port: 9000",
        ))
        .unwrap();
        assert_eq!(
            c.listen,
            ApiListen::Tcp {
                addr: "127.0.0.1:9000".into(),
                token_file: None
            }
        );
    }
}
