//! The daemon's config: one tenant (Slicer's shape, `config.host_groups`) or several
//! (`config.tenants[]`, a shared daemon), the API's listeners, and the roles.
//!
//! A shared daemon's tenants each take the keys a one-tenant config has (host groups, image,
//! hypervisor, graceful_shutdown, forward keys); daemon-wide values at `config:` are their
//! defaults. Invariants checked here, before anything starts:
//! - tenant names are unique, and so are the host uid slots they map to;
//! - no host group name of one tenant equals another tenant's, or begins with another
//!   tenant's group name and a dash: node names (`<group>-<n>`, or a client's `hostname`,
//!   which in a shared daemon must begin with its group's name and a dash) can then never
//!   collide across tenants;
//! - address ranges never overlap across tenants;
//! - plain TCP (no `api.tcp.tls`) only on a loopback address.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::config::raw::{RawApi, RawConfig, RawFile, RawTcp};
use crate::config::storage::StorageConfig;
use crate::config::{key_err, ApiListen, ConfigError, TenantConfig};
use crate::iam::Roles;
use crate::limits::ConnLimits; // #13, keys

/// A shared daemon's tenant without `forward_ports` of its own: only host port 0 (a free
/// port the kernel picks).
pub const NO_FORWARD_PORTS: (u16, u16) = (0, 0);

/// The admin socket of a shared daemon when `api.bind_address` is not given.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/bulkhead/admin.sock";

/// A TCP listener: its address, TLS files, and the configured single bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpApi {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The API's listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    /// The admin socket (global-admin); a one-tenant daemon's only socket.
    pub socket: Option<PathBuf>,
    /// `<dir>/<tenant>.sock`, each tenant-admin of its tenant.
    pub tenant_sockets: Option<PathBuf>,
    pub tcp: Option<TcpApi>,
    /// `config.api.e2b` (#15, A): E2B's API on a listener of its own.
    pub e2b: Option<crate::config::e2b::E2bApi>,
    /// `config.api.shim` (#16, B1): the containerd shim's socket and namespace mapping.
    pub shim: Option<crate::config::shim::ShimApi>,
}

impl Api {
    /// Where the API answers, for messages (`bulkhead up` refused twice, the tenant claim).
    pub fn endpoint(&self) -> String {
        match (&self.socket, &self.tcp) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(t)) => t.addr.to_string(),
            (None, None) => "-".into(),
        }
    }
}

/// A validated daemon config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    pub tenants: Vec<TenantConfig>,
    /// `config.tenants` was used: a shared daemon (client-chosen hostnames must begin with
    /// their group's name and a dash).
    pub shared: bool,
    pub state_dir: Option<PathBuf>,
    pub api: Api,
    /// The API listener's limits (`config.api.header_timeout`, `max_connections`).
    pub conns: ConnLimits,
    pub roles: Roles,
    /// `config.auth.oidc` (#11, OIDC part; `auth.rs`): JWTs from an OpenID Connect provider
    /// on the TCP listener.
    pub oidc: Option<crate::config::OidcConfig>,
    /// `config.workload_identity` (ADR 0020): the daemon's issuer of nodes' tokens; `None`:
    /// off.
    pub workload_identity: Option<crate::config::identity::WorkloadIdentityConfig>,
    /// `config.storage` (#13, secrets and keys): where the host keyring lives.
    pub storage: crate::config::storage::StorageConfig,
    /// `config.audit` (#14, part A): the daemon's own audit trail (a shared daemon's
    /// `<state>/shared/audit`; a one-tenant daemon's is its tenant's).
    pub audit: crate::config::audit::AuditConfig,
}

/// Rewrites a one-tenant error's key into the tenant's place in `config.tenants[i]`.
fn in_tenant(i: usize, e: ConfigError) -> ConfigError {
    match e {
        ConfigError::Key { path, message } => {
            let path = if path == "config.tenant" {
                format!("config.tenants[{i}].name")
            } else if let Some(rest) = path.strip_prefix("config.") {
                format!("config.tenants[{i}].{rest}")
            } else {
                path
            };
            ConfigError::Key { path, message }
        }
        other => other,
    }
}

fn parse_tcp(path: &str, t: &RawTcp) -> Result<TcpApi, ConfigError> {
    let addr: SocketAddr = t.bind.parse().map_err(|_| {
        key_err(
            format!("{path}.bind"),
            format!("{:?} is not host:port, e.g. 127.0.0.1:8443", t.bind),
        )
    })?;
    let tls = match &t.tls {
        None if !addr.ip().is_loopback() => {
            return Err(key_err(
                format!("{path}.tls"),
                format!("plain TCP is allowed only on a loopback address, and {addr} is not: add tls: {{cert: FILE, key: FILE}}, or bind 127.0.0.1"),
            ))
        }
        None => None,
        Some(tls) => {
            for (k, p) in [("cert", &tls.cert), ("key", &tls.key)] {
                if !p.is_absolute() {
                    return Err(key_err(
                        format!("{path}.tls.{k}"),
                        "must be an absolute path to a PEM file",
                    ));
                }
            }
            Some(TlsFiles {
                cert: tls.cert.clone(),
                key: tls.key.clone(),
            })
        }
    };
    if let Some(f) = &t.token_file {
        if !f.is_absolute() {
            return Err(key_err(
                format!("{path}.token_file"),
                "must be an absolute path",
            ));
        }
    }
    Ok(TcpApi {
        addr,
        tls,
        token_file: t.token_file.clone(),
    })
}

impl DaemonConfig {
    /// Parses and validates a config file's text (either shape).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Self::from_raw(RawFile::parse(text)?)
    }

    pub fn from_raw(c: RawConfig) -> Result<Self, ConfigError> {
        let roles = Roles::from_config(&c.roles)?;
        let oidc = crate::config::auth::oidc_from_raw(c.auth.as_ref())?; // OIDC (#11)
        let conns = ConnLimits::from_raw(&c)?;
        let raw_api = c.api.clone().unwrap_or_default();
        let Some(raw_tenants) = c.tenants.clone() else {
            // One tenant: Slicer's shape, exactly as before.
            let t = TenantConfig::from_raw(c.clone())?;
            let mut api = match &t.listen {
                ApiListen::Unix(p) => Api {
                    socket: Some(p.clone()),
                    tenant_sockets: None,
                    tcp: None,
                    e2b: None,  // #15, A: set below
                    shim: None, // #16, B1: set below
                },
                ApiListen::Tcp { addr, token_file } => Api {
                    socket: None,
                    tenant_sockets: None,
                    e2b: None,  // #15, A: set below
                    shim: None, // #16, B1: set below
                    tcp: Some(parse_tcp(
                        "config.api.bind_address",
                        &RawTcp {
                            bind: addr.clone(),
                            tls: None,
                            token_file: token_file.clone(),
                        },
                    )?),
                },
            };
            if let Some(tcp) = &raw_api.tcp {
                if api.tcp.is_some() {
                    return Err(key_err(
                        "config.api.tcp",
                        "bind_address is already a TCP address: give the TCP listener once, in api.tcp",
                    ));
                }
                api.tcp = Some(parse_tcp("config.api.tcp", tcp)?);
            }
            api.e2b = e2b_api(&raw_api, api.tcp.as_ref())?; // #15, A
            api.shim = shim_api(&raw_api, &api, std::slice::from_ref(&t))?; // #16, B1
            if raw_api.tenant_sockets.is_some() {
                return Err(key_err(
                    "config.api.tenant_sockets",
                    "applies to a shared daemon (config.tenants); a one-tenant daemon's socket is api.bind_address",
                ));
            }
            return Ok(DaemonConfig {
                audit: t.audit.clone(), // #14, A
                workload_identity: workload_identity(&c, &api)?,
                storage: StorageConfig::from_raw(c.storage.as_ref())?, // #13, keys
                state_dir: t.state_dir.clone(),
                tenants: vec![t],
                shared: false,
                api,
                conns,
                roles,
                oidc,
            });
        };
        // A shared daemon.
        if !c.host_groups.is_empty() {
            return Err(key_err(
                "config.host_groups",
                "with config.tenants, host groups go under each tenant (config.tenants[].host_groups)",
            ));
        }
        if c.tenant.is_some() {
            return Err(key_err(
                "config.tenant",
                "with config.tenants, each tenant is named in config.tenants[].name",
            ));
        }
        if c.forward_ports.is_some() {
            return Err(key_err(
                "config.forward_ports",
                "host ports are one space for the whole host: give each tenant its own range in config.tenants[].forward_ports (ranges may not overlap)",
            ));
        }
        if c.quotas.is_some() {
            // quotas (#12): per tenant, never one pool for the daemon.
            return Err(key_err(
                "config.quotas",
                "quotas are per tenant in a shared daemon: give each tenant its own in config.tenants[].quotas",
            ));
        }
        if raw_tenants.is_empty() {
            return Err(key_err(
                "config.tenants",
                "list at least one tenant, e.g. - {name: a3cf, host_groups: [...]}",
            ));
        }
        let socket = match raw_api.bind_address.as_deref() {
            None => PathBuf::from(DEFAULT_ADMIN_SOCKET),
            Some(a) if a.starts_with('/') => PathBuf::from(a),
            Some(a) => {
                return Err(key_err(
                    "config.api.bind_address",
                    format!("{a:?}: a shared daemon's bind_address is its admin socket (an absolute path); put TCP in api.tcp {{bind, tls}}"),
                ))
            }
        };
        if raw_api.port.is_some() || raw_api.token_file.is_some() {
            return Err(key_err(
                "config.api",
                "port and token_file belong to api.tcp in a shared daemon",
            ));
        }
        let tenant_sockets = match &raw_api.tenant_sockets {
            Some(d) if !d.is_absolute() => {
                return Err(key_err(
                    "config.api.tenant_sockets",
                    "must be an absolute directory, e.g. /run/bulkhead/tenants",
                ))
            }
            d => d.clone(),
        };
        if let Some(d) = &tenant_sockets {
            if socket.parent() == Some(d.as_path()) {
                return Err(key_err(
                    "config.api.tenant_sockets",
                    format!(
                        "{} holds the admin socket {}: give the tenant sockets a directory of their own",
                        d.display(),
                        socket.display()
                    ),
                ));
            }
        }
        let tcp = raw_api
            .tcp
            .as_ref()
            .map(|t| parse_tcp("config.api.tcp", t))
            .transpose()?;
        let mut tenants: Vec<TenantConfig> = Vec::new();
        for (i, rt) in raw_tenants.iter().enumerate() {
            let one = RawConfig {
                tenant: Some(rt.name.clone()),
                state_dir: c.state_dir.clone(),
                host_groups: rt.host_groups.clone(),
                image: rt.image.clone().or_else(|| c.image.clone()),
                hypervisor: rt.hypervisor.clone().or_else(|| c.hypervisor.clone()),
                graceful_shutdown: rt.graceful_shutdown.unwrap_or(c.graceful_shutdown),
                api: Some(RawApi {
                    bind_address: Some(
                        match &tenant_sockets {
                            Some(d) => d.join(format!("{}.sock", rt.name)),
                            None => socket.clone(),
                        }
                        .display()
                        .to_string(),
                    ),
                    header_timeout: raw_api.header_timeout.clone(),
                    max_connections: raw_api.max_connections,
                    ..Default::default()
                }),
                forward_ports: rt.forward_ports.clone(),
                forward_max_connections: rt.forward_max_connections.or(c.forward_max_connections),
                forward_proxy_timeout: rt
                    .forward_proxy_timeout
                    .clone()
                    .or_else(|| c.forward_proxy_timeout.clone()),
                quotas: rt.quotas.clone(), // quotas (#12)
                // admission policy (#12): the tenant's own, else the daemon-wide one
                policy: rt.policy.clone().or_else(|| c.policy.clone()),
                // rate limits (#12, rate): the tenant's own block, else the daemon's
                rate_limits: rt.rate_limits.clone().or_else(|| c.rate_limits.clone()),
                // usage (#14, part E): the tenant's own, else the daemon's
                usage: rt.usage.clone().or_else(|| c.usage.clone()),
                // events and detection (#14, part B): the tenant's own blocks, else the daemon's
                events: rt.events.clone().or_else(|| c.events.clone()),
                detection: rt.detection.clone().or_else(|| c.detection.clone()),
                // audit trail (#14, A): the tenant's own block, else the daemon's
                audit: rt.audit.clone().or_else(|| c.audit.clone()),
                ..Default::default()
            };
            if rt.name.is_empty() {
                return Err(key_err(
                    format!("config.tenants[{i}].name"),
                    "every tenant needs a name",
                ));
            }
            let raw_rates = one.rate_limits.clone();
            let mut t = TenantConfig::from_raw(one).map_err(|e| in_tenant(i, e))?;
            t.shared_daemon = true;
            if raw_tenants.len() > 1 {
                // rate limits (#12, rate): a tenant's sessions leave room on shared listeners
                let max_conns = t.conns.max_connections;
                (t.rate_limits)
                    .fit_shared_listener(raw_rates.as_ref(), max_conns)
                    .map_err(|e| in_tenant(i, e))?;
            }
            if rt.forward_ports.is_none() {
                // No fixed host ports unless the tenant is given its own range: host ports are
                // one host-wide space, so tenants' ranges never overlap.
                t.forward_ports = NO_FORWARD_PORTS;
            }
            check_against_others(i, &t, &tenants)?;
            tenants.push(t);
        }
        let mut api = Api {
            e2b: e2b_api(&raw_api, tcp.as_ref())?, // #15, A
            socket: Some(socket),
            tenant_sockets,
            tcp,
            shim: None,
        };
        api.shim = shim_api(&raw_api, &api, &tenants)?; // #16, B1
        Ok(DaemonConfig {
            audit: crate::config::audit::AuditConfig::from_raw("config.audit", c.audit.as_ref())?, // #14, A
            workload_identity: workload_identity(&c, &api)?,
            storage: StorageConfig::from_raw(c.storage.as_ref())?, // #13, keys
            tenants,
            shared: true,
            state_dir: c.state_dir.clone(),
            api,
            conns,
            roles,
            oidc,
        })
    }

    pub fn tenant(&self, name: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.tenant == name)
    }
}

/// `config.api.e2b` (#15, A): validated, and never on the TCP API's address.
fn e2b_api(
    raw: &RawApi,
    tcp: Option<&TcpApi>,
) -> Result<Option<crate::config::e2b::E2bApi>, ConfigError> {
    let Some(r) = &raw.e2b else {
        return Ok(None);
    };
    let e = crate::config::e2b::E2bApi::from_raw("config.api.e2b", r)?;
    if tcp.is_some_and(|t| t.addr == e.addr) {
        return Err(key_err(
            "config.api.e2b.bind",
            format!("{} is api.tcp's address too: give the E2B API a port of its own (E2B's SDKs use 3000 in debug mode)", e.addr),
        ));
    }
    Ok(Some(e))
}

/// `config.api.shim` (#16, B1): validated against the tenants, on a socket of its own.
fn shim_api(
    raw: &RawApi,
    api: &Api,
    tenants: &[TenantConfig],
) -> Result<Option<crate::config::shim::ShimApi>, ConfigError> {
    let Some(r) = &raw.shim else {
        return Ok(None);
    };
    let s = crate::config::shim::ShimApi::from_raw("config.api.shim", r, tenants)?;
    let taken = api.socket.as_ref() == Some(&s.socket)
        || api
            .tenant_sockets
            .as_ref()
            .is_some_and(|d| s.socket.parent() == Some(d.as_path()));
    if taken {
        return Err(key_err(
            "config.api.shim.socket",
            format!(
                "{} is (or is beside) another listener's socket: give the shim a socket of its own, e.g. {}",
                s.socket.display(),
                crate::config::shim::DEFAULT_SOCKET
            ),
        ));
    }
    Ok(Some(s))
}

/// `config.workload_identity` (#11); the issuer defaults to the TCP listener's URL, else
/// the admin socket's.
fn workload_identity(
    c: &RawConfig,
    api: &Api,
) -> Result<Option<crate::config::identity::WorkloadIdentityConfig>, ConfigError> {
    use crate::config::identity::{
        default_issuer_tcp, default_issuer_unix, WorkloadIdentityConfig,
    };
    WorkloadIdentityConfig::from_raw(c.workload_identity.as_ref(), || {
        match (&api.tcp, &api.socket) {
            (Some(t), _) if t.tls.is_some() => format!("https://{}", t.addr),
            (Some(t), _) => default_issuer_tcp(&t.addr.to_string()),
            (None, Some(p)) => default_issuer_unix(p),
            (None, None) => default_issuer_unix(std::path::Path::new(DEFAULT_ADMIN_SOCKET)),
        }
    })
}

/// Whether node names of group `a` and group `b` could ever be equal: the same name, or one
/// is the other followed by a dash and more.
fn names_may_collide(a: &str, b: &str) -> bool {
    let prefix = |short: &str, long: &str| {
        long.strip_prefix(short)
            .is_some_and(|rest| rest.starts_with('-'))
    };
    a == b || prefix(a, b) || prefix(b, a)
}

/// Tenant `i` against the tenants before it: names, uid slots, host groups, ranges.
fn check_against_others(
    i: usize,
    t: &TenantConfig,
    others: &[TenantConfig],
) -> Result<(), ConfigError> {
    let p = format!("config.tenants[{i}]");
    for o in others {
        if o.tenant == t.tenant {
            return Err(key_err(
                format!("{p}.name"),
                format!(
                    "tenant {:?} is listed twice: names must be unique",
                    t.tenant
                ),
            ));
        }
        if crate::uid::uid_base(&o.tenant) == crate::uid::uid_base(&t.tenant) {
            return Err(key_err(
                format!("{p}.name"),
                format!(
                    "tenants {:?} and {:?} map to the same host uid range: rename one of them",
                    o.tenant, t.tenant
                ),
            ));
        }
        let (lo, hi) = t.forward_ports;
        let (olo, ohi) = o.forward_ports;
        if t.forward_ports != NO_FORWARD_PORTS
            && o.forward_ports != NO_FORWARD_PORTS
            && lo <= ohi
            && olo <= hi
        {
            return Err(key_err(
                format!("{p}.forward_ports"),
                format!(
                    "{lo}-{hi} of tenant {:?} overlaps {olo}-{ohi} of tenant {:?}: host ports are one space for the host, give each tenant its own range",
                    t.tenant, o.tenant
                ),
            ));
        }
        for (j, g) in t.groups.iter().enumerate() {
            if let Some(og) = o
                .groups
                .iter()
                .find(|og| names_may_collide(&og.name, &g.name))
            {
                return Err(key_err(
                    format!("{p}.host_groups[{j}].name"),
                    format!(
                        "host group {:?} of tenant {:?} and host group {:?} of tenant {:?} could name the same node: host group names are unique across a daemon's tenants, and none may be another's name followed by a dash",
                        g.name, t.tenant, og.name, o.tenant
                    ),
                ));
            }
            let ranges = |x: &crate::config::HostGroup| -> Option<Ipv4Net> { x.network.range };
            if let Some(r) = ranges(g) {
                if let Some(og) = o.groups.iter().find(|og| {
                    ranges(og)
                        .is_some_and(|or| or.contains(&r.network()) || r.contains(&or.network()))
                }) {
                    return Err(key_err(
                        format!("{p}.host_groups[{j}].network.range"),
                        format!(
                            "{r} of tenant {:?} overlaps {} of tenant {:?} (host group {:?}): give each tenant its own range",
                            t.tenant,
                            og.network.range.expect("checked"),
                            o.tenant,
                            og.name
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}
