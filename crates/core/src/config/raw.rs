//! The config file as written: Slicer's YAML keys and bulkhead's own, each optional, unknown
//! keys refused (`deny_unknown_fields`). Validation turns these into [`super::TenantConfig`].

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub config: RawConfig,
}

impl RawFile {
    /// A config file's text as written: YAML errors name the key they are at.
    pub fn parse(text: &str) -> Result<RawConfig, super::error::ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let raw: RawFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." || path.is_empty() {
                super::error::ConfigError::Syntax(inner)
            } else {
                super::error::key_err(path, inner)
            }
        })?;
        Ok(raw.config)
    }
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
    // ---- shared daemon and roles (#11, `daemon.rs`, `crate::iam`) ----
    /// bulkhead: a shared daemon's tenants, each with the keys a one-tenant config has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<RawTenant>>,
    /// bulkhead: custom roles, resources × actions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<crate::iam::RawRole>,
    // ---- end shared daemon and roles ----
    // --- auth (#11, OIDC part): `config.auth`, validated in `auth.rs` ---
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<super::auth::RawAuth>,
    // --- end auth ---
    // ---- workload identity (#11, ADR 0020) ----
    /// bulkhead: per-node identity tokens (`config/identity.rs`); absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_identity: Option<super::identity::RawWorkloadIdentity>,
    // ---- end workload identity ----
    // ---- quotas (#12, ADR 0025): validated in `quotas.rs` ----
    /// bulkhead: what this tenant's nodes may add up to (nodes, vcpu, ram, storage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<super::quotas::RawQuotas>,
    // ---- end quotas ----
    // ---- admission policy (#12, policy; `policy.rs`, ADR 0024) ----
    /// bulkhead: what this tenant's nodes, execs and forwards may be, and its webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<super::policy_raw::RawPolicy>,
    // ---- end admission policy ----
    // ---- rate limits, fair queues, connection limits (#12, rate; `rate_limits.rs`) ----
    /// bulkhead: per-tenant token buckets and in-flight, connection and queue bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<super::rate_limits::RawRateLimits>,
    // ---- end rate limits ----
    // ---- storage keys (#13, secrets and keys; `storage.rs`) ----
    /// bulkhead: where the host's keyring lives (`master_key`); daemon-wide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<super::storage::RawStorage>,
    // ---- end storage keys ----
    // ---- usage (#14, part E; `usage.rs`) ----
    /// bulkhead: how often nodes' usage is sampled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<super::usage::RawUsage>,
    // ---- end usage ----
    // ---- events and detection (#14, part B; `events.rs`) ----
    /// bulkhead: events kept per tenant and the event webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<super::events_raw::RawEvents>,
    /// bulkhead: denial spike threshold, integrity re-check interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<super::events_raw::RawDetection>,
    // ---- end events and detection ----
    // ---- audit trail (#14, part A; `audit.rs`) ----
    /// bulkhead: the audit trail's files (rotation, checkpoints); on by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<super::audit::RawAudit>,
    // ---- end audit trail ----
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
    /// bulkhead (shared daemon): `<dir>/<tenant>.sock`, each tenant-admin of its tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_sockets: Option<PathBuf>,
    /// bulkhead: a TCP listener `{bind, tls: {cert, key}}` (bearer tokens or OIDC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<RawTcp>,
    // ---- E2B API (#15, part A; `e2b.rs`) ----
    /// bulkhead: E2B's API `{bind, tls: {cert, key}, domain}` (control plane and in-sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2b: Option<super::e2b::RawE2b>,
    // ---- end E2B API ----
    // ---- containerd shim (#16, B1; `shim.rs`) ----
    /// bulkhead: the containerd shim's socket and namespace → tenant mapping
    /// `{socket, namespaces}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shim: Option<super::shim_raw::RawShim>,
    // ---- end containerd shim ----
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHostGroup {
    pub name: String,
    /// bulkhead: this group's driver, instead of the tenant's `hypervisor`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
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
    // ---- dedicated cores (#12 noisy neighbours, `config/dedicated.rs`, ADR 0027) ----
    /// bulkhead: pin this group's nodes to this many host cores no other node uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedicated_cores: Option<u32>,
    // ---- end dedicated cores ----
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

/// `config.tenants[]` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
    pub name: String,
    #[serde(default)]
    pub host_groups: Vec<RawHostGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hypervisor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_shutdown: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_ports: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_max_connections: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_proxy_timeout: Option<String>,
    // ---- quotas (#12, ADR 0025) ----
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<super::quotas::RawQuotas>,
    // ---- end quotas ----
    // ---- admission policy (#12, policy): the tenant's own, else `config.policy` ----
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<super::policy_raw::RawPolicy>,
    // ---- end admission policy ----
    // ---- rate limits (#12, rate): the whole block, else `config.rate_limits` ----
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<super::rate_limits::RawRateLimits>,
    // ---- end rate limits ----
    // ---- usage (#14, part E): the tenant's own, else `config.usage` ----
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<super::usage::RawUsage>,
    // ---- end usage ----
    // ---- events and detection (#14, part B): the tenant's own blocks, else the daemon's ----
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<super::events_raw::RawEvents>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detection: Option<super::events_raw::RawDetection>,
    // ---- end events and detection ----
    // ---- audit trail (#14, part A): the tenant's own block, else `config.audit` ----
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<super::audit::RawAudit>,
    // ---- end audit trail ----
}

/// `config.api.tcp` as written.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTcp {
    pub bind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RawTls>,
    /// The single bearer token of earlier releases (bound global-admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}
