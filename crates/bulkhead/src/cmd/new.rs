//! `bulkhead new NAME`: prints a tenant config in Slicer's shape.

use anyhow::{bail, Context};
use bulkhead_core::config::{self, RawApi, RawConfig, RawFile, RawHostGroup, RawNetwork};
use bulkhead_core::TenantConfig;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct NewArgs {
    /// Tenant and host group name (node names become NAME-1, NAME-2, ...)
    name: String,
    /// Network mode: none (loopback only), isolated, bridge
    #[arg(long, default_value = "none")]
    net: String,
    /// Address range for isolated and bridge modes [default: 169.254.100.0/22, 256 nodes]
    #[arg(long, alias = "cidr")]
    isolated_range: Option<String>,
    /// Limit on what each node sends, in Mbit/s (isolated and bridge modes)
    #[arg(long)]
    egress_mbps: Option<u32>,
    /// DNS server written into each node's resolv.conf and reachable on port 53 (repeatable)
    #[arg(long)]
    dns: Vec<String>,
    /// CIDR nodes may never reach (repeatable)
    #[arg(long)]
    drop: Vec<String>,
    /// CIDR nodes may reach (repeatable; default everything not dropped)
    #[arg(long)]
    allow: Vec<String>,
    /// UNIX socket of the tenant's API
    #[arg(long)]
    socket: Option<PathBuf>,
    /// TCP address of the API instead of a socket, e.g. 127.0.0.1:8080
    #[arg(long, conflicts_with = "socket")]
    api_bind: Option<String>,
    /// Nodes created when the daemon starts
    #[arg(long, default_value_t = 0)]
    count: u32,
    /// Leave nodes running when the daemon stops
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    graceful_shutdown: bool,
    #[arg(long, default_value_t = 1)]
    vcpu: u32,
    /// RAM per node in GiB (use --ram-mb for less)
    #[arg(long, conflicts_with = "ram_mb")]
    ram_gb: Option<u64>,
    #[arg(long)]
    ram_mb: Option<u64>,
    /// Writable storage per node, e.g. 1G
    #[arg(long, default_value = "1G")]
    storage_size: String,
    /// jail (namespaces) or qemu (microVM)
    #[arg(long, default_value = "jail")]
    hypervisor: String,
    /// Image name in the local store
    #[arg(long, default_value = "minimal")]
    image: String,
    /// State directory for this tenant's daemon
    #[arg(long)]
    state_dir: Option<PathBuf>,
}

pub fn run(a: NewArgs) -> anyhow::Result<ExitCode> {
    let ram_mb = match (a.ram_gb, a.ram_mb) {
        (None, None) => Some(512),
        (_, m) => m,
    };
    let raw = RawConfig {
        tenant: Some(a.name.clone()),
        state_dir: a.state_dir,
        host_groups: vec![RawHostGroup {
            name: a.name.clone(),
            storage: Some("image".into()),
            storage_size: Some(a.storage_size),
            count: a.count,
            vcpu: Some(a.vcpu),
            ram_gb: a.ram_gb,
            ram_mb,
            network: Some(RawNetwork {
                range: a.isolated_range.or_else(|| {
                    (a.net != "none").then(|| config::DEFAULT_ISOLATED_RANGE.to_string())
                }),
                mode: Some(a.net),
                drop: a.drop,
                allow: a.allow,
                egress_mbps: a.egress_mbps,
                ..Default::default()
            }),
            dns_servers: a.dns,
            ..Default::default()
        }],
        image: Some(a.image),
        hypervisor: Some(a.hypervisor),
        graceful_shutdown: a.graceful_shutdown,
        api: Some(RawApi {
            bind_address: Some(match (a.socket, a.api_bind) {
                (Some(s), _) => s.to_str().context("socket path is not UTF-8")?.to_string(),
                (None, Some(b)) => b,
                (None, None) => format!("/run/bulkhead/{}.sock", a.name),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Refuse to print a config that `up` would refuse.
    if let Err(e) = TenantConfig::from_raw(raw.clone()) {
        bail!("{e}");
    }
    print!("{}", serde_yaml::to_string(&RawFile { config: raw })?);
    Ok(ExitCode::SUCCESS)
}
