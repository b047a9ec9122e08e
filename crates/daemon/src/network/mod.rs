//! The tenant's networking, as the daemon runs it: the range claim, address allocation, the
//! node's network plan, the tenant's nftables tables, bridges, and their reconciliation.
//! The pure parts live in `bulkhead_net`; this module decides *when* they are applied.
//!
//! Invariants:
//! - a node's nft objects (its policy chain, its bridge-port pin) exist before its supervisor
//!   starts, so a node never sends a packet under a policy wider than its own;
//! - each networked node's record in the store holds its [`NodeNet`] (written with the node's
//!   row, before any of its objects exist), which is what reconciliation and delete read to
//!   find the node's objects again;
//! - the tenant's tables are rebuilt from config and those records at every start.

use bulkhead_core::{HostGroup, NetworkMode, TenantConfig};
use bulkhead_net::ipam::{Layout, Range};
use bulkhead_net::names::Tag;
use bulkhead_net::rules::{BridgePort, Cidr, GroupRules, NodePolicy, TenantRules};
use bulkhead_net::{nft, NetError, VethPlan};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use bulkhead_core::{Code, DomainError};

/// Host-wide registry of claimed address ranges, one file per tenant.
pub const NET_REGISTRY: &str = "/run/bulkhead/net-ranges";
/// Networked host groups per tenant (one hex digit in interface names).
pub const MAX_GROUPS: u8 = 16;
/// The file in the tenant's directory that records each networked group's index.
pub const GROUPS_FILE: &str = "network-groups.json";

/// The group indexes recorded at the last start.
pub fn load_indexes(tenant_dir: &Path) -> HashMap<String, u8> {
    std::fs::read(tenant_dir.join(GROUPS_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn save_indexes(tenant_dir: &Path, idx: &HashMap<String, u8>) -> std::io::Result<()> {
    crate::fsutil::write_private(
        &tenant_dir.join(GROUPS_FILE),
        &serde_json::to_vec(idx).unwrap_or_default(),
    )
}

/// The file in a node's directory that recorded its network before the store did; read once
/// at start to import nodes created by an older release (`upgrade.rs`).
pub const NODE_NET_FILE: &str = "network.json";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// One networked host group: what its rules are made of, and what only its nodes need.
#[derive(Debug, Clone)]
pub struct NetGroup {
    pub rules: GroupRules,
    pub egress_mbps: Option<u32>,
}

impl std::ops::Deref for NetGroup {
    type Target = GroupRules;
    fn deref(&self) -> &GroupRules {
        &self.rules
    }
}

/// What a networked node's directory records (`network.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeNet {
    pub group: u8,
    pub slot: u32,
    pub address: Ipv4Addr,
    pub host_if: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// The node's create-time override (narrows the group's policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Override>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub allow: Vec<Ipv4Net>,
    pub drop: Vec<Ipv4Net>,
}

fn cidr(n: &Ipv4Net) -> Cidr {
    Cidr(n.network(), n.prefix_len())
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NetworkError {
    let what = what.into();
    move |source| NetworkError::Io { what, source }
}

/// The tenant's tag: its uid slot, unique on the host (claimed in the uid registry).
pub fn tag_of(uid_base: u32) -> Tag {
    Tag((uid_base / bulkhead_core::UID_COUNT - 16) as u16)
}

pub struct TenantNetwork {
    pub tenant: String,
    pub tag: Tag,
    pub groups: Vec<NetGroup>,
    /// Per group, the slot after the one handed out last (see `Range::next_free`).
    cursor: std::sync::Mutex<HashMap<u8, u32>>,
}

impl TenantNetwork {
    /// `None` when no host group has a network.
    /// `known`: the indexes groups had before (interface names of running nodes carry them),
    /// so that reordering or adding groups in the config never renames a group. New groups
    /// take the lowest free index.
    pub fn from_config(
        cfg: &TenantConfig,
        uid_base: u32,
        known: &HashMap<String, u8>,
    ) -> Result<Option<Self>, NetworkError> {
        let networked: Vec<&HostGroup> = cfg
            .groups
            .iter()
            .filter(|g| g.network.mode != NetworkMode::None)
            .collect();
        // Every recorded index stays taken, including those of groups that left the config:
        // their nodes may still run under those interface names.
        let mut taken: HashSet<u8> = known.values().copied().collect();
        let mut index_of = HashMap::new();
        for g in &networked {
            let i = match known.get(&g.name) {
                Some(i) => *i,
                None => {
                    let free = (0..MAX_GROUPS).find(|i| !taken.contains(i)).ok_or_else(|| {
                        NetworkError::Refused(format!(
                            "no free network group index for host group {:?}: {MAX_GROUPS} are recorded in {GROUPS_FILE} (groups removed from the config keep theirs while their nodes may run); stop the tenant with no node left to reset them",
                            g.name
                        ))
                    })?;
                    taken.insert(free);
                    free
                }
            };
            index_of.insert(g.name.clone(), i);
        }
        let groups: Vec<NetGroup> = networked
            .into_iter()
            .filter_map(|g| {
                let i = index_of[&g.name];
                let r = g.network.range?;
                let layout = match g.network.mode {
                    NetworkMode::Bridge => Layout::Bridge,
                    _ => Layout::Isolated,
                };
                Some(NetGroup {
                    rules: GroupRules {
                        index: i,
                        name: g.name.clone(),
                        range: Range::new(r.network(), r.prefix_len(), layout).ok()?,
                        drop: g.network.drop.iter().map(cidr).collect(),
                        allow: g.network.allow.iter().map(cidr).collect(),
                        dns: g.dns_servers.clone(),
                    },
                    egress_mbps: g.network.egress_mbps,
                })
            })
            .collect();
        Ok((!groups.is_empty()).then(|| TenantNetwork {
            tenant: cfg.tenant.clone(),
            tag: tag_of(uid_base),
            groups,
            cursor: Default::default(),
        }))
    }

    /// Group name → index, to be recorded for the next start (merged with `known`, whose
    /// entries stay until the tenant stops with no node left).
    pub fn indexes(&self, known: &HashMap<String, u8>) -> HashMap<String, u8> {
        let mut m = known.clone();
        m.extend(self.groups.iter().map(|g| (g.name.clone(), g.index)));
        m
    }

    pub fn group(&self, name: &str) -> Option<&NetGroup> {
        self.groups.iter().find(|g| g.name == name)
    }

    fn table(&self) -> String {
        Tag::table(&self.tenant)
    }

    /// Picks the node's slot: the requested address, or the lowest free slot.
    pub fn allocate(
        &self,
        g: &NetGroup,
        used: &HashSet<Ipv4Addr>,
        requested: Option<&str>,
    ) -> Result<(u32, Ipv4Addr), DomainError> {
        let used_slots: HashSet<u32> = used.iter().filter_map(|a| g.range.slot_of(*a)).collect();
        let slot = match requested {
            Some(ip) => {
                let a: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| DomainError::invalid(format!("ip {ip:?} is not an IPv4 address")))?;
                let slot = g.range.slot_of(a).ok_or_else(|| {
                    DomainError::invalid(format!(
                        "ip {a} is not a node address of host group {:?}'s range {} (e.g. {})",
                        g.name,
                        g.range,
                        g.range.addressing(0).map(|x| x.node.to_string()).unwrap_or_default()
                    ))
                })?;
                if used_slots.contains(&slot) {
                    return Err(DomainError::new(Code::AddressInUse, format!("ip {a} is already used by another node")));
                }
                slot
            }
            None => {
                let from = self
                    .cursor
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&g.index)
                    .copied()
                    .unwrap_or(0);
                g.range.next_free(&used_slots, from)
            }
            .ok_or_else(|| {
                DomainError::new(Code::RangeFull, format!(
                    "host group {:?}'s range {} is full ({} nodes): delete a node or widen the range",
                    g.name,
                    g.range,
                    g.range.slots()
                ))
            })?,
        };
        self.cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(g.index, slot + 1);
        let a = g
            .range
            .addressing(slot)
            .map(|x| x.node)
            .unwrap_or(Ipv4Addr::UNSPECIFIED);
        Ok((slot, a))
    }

    /// Checks a create request's `network` override: IPv4 CIDRs, and `allow` inside the
    /// group's allow list (a node may narrow its group's policy, never widen it).
    pub fn validate_override(
        &self,
        g: &NetGroup,
        allow: &[String],
        drop: &[String],
    ) -> Result<Option<Override>, String> {
        if allow.is_empty() && drop.is_empty() {
            return Ok(None);
        }
        if allow.len() + drop.len() > 64 {
            return Err("network.allow and network.drop take at most 64 CIDRs together".into());
        }
        let parse = |field: &str, v: &[String]| -> Result<Vec<Ipv4Net>, String> {
            v.iter()
                .map(|c| {
                    c.parse::<Ipv4Net>().map(|n| n.trunc()).map_err(|_| {
                        format!("network.{field}: {c:?} is not an IPv4 CIDR, e.g. 203.0.113.0/24")
                    })
                })
                .collect()
        };
        let allow = parse("allow", allow)?;
        let drop = parse("drop", drop)?;
        for a in &allow {
            let inside = g
                .allow
                .iter()
                .any(|c| Ipv4Net::new(c.0, c.1).is_ok_and(|n| n.contains(a)));
            if !inside {
                let group: Vec<String> = g.allow.iter().map(|c| c.to_string()).collect();
                return Err(format!(
                    "network.allow {a} is wider than host group {:?} allows ({}): a node may only narrow its group's policy",
                    g.name,
                    group.join(", ")
                ));
            }
        }
        Ok(Some(Override { allow, drop }))
    }

    pub fn node_net(
        &self,
        g: &NetGroup,
        slot: u32,
        address: Ipv4Addr,
        policy: Option<Override>,
    ) -> NodeNet {
        NodeNet {
            group: g.index,
            slot,
            address,
            host_if: self.tag.veth(g.index, slot),
            bridge: (g.range.layout == Layout::Bridge).then(|| self.tag.bridge(g.index)),
            policy,
        }
    }

    pub fn plan(&self, g: &NetGroup, n: &NodeNet) -> Option<VethPlan> {
        let a = g.range.addressing(n.slot)?;
        Some(VethPlan {
            host_if: n.host_if.clone(),
            gateway: a.gateway,
            address: a.node,
            prefix_len: a.prefix_len,
            bridge: n.bridge.clone(),
            egress_mbps: g.egress_mbps,
            dns_servers: g.dns.clone(),
            guest_tap: None,
        })
    }

    fn policy_of(name: &str, n: &NodeNet) -> Option<NodePolicy> {
        n.policy.as_ref().map(|p| NodePolicy {
            node: name.to_string(),
            address: n.address,
            drop: p.drop.iter().map(cidr).collect(),
            allow: p.allow.iter().map(cidr).collect(),
        })
    }

    fn port_of(n: &NodeNet) -> Option<BridgePort> {
        n.bridge.as_ref().map(|_| BridgePort {
            port: n.host_if.clone(),
            address: n.address,
        })
    }

    /// The tenant's whole ruleset for the given live nodes.
    pub fn rules(&self, nodes: &[(String, NodeNet)]) -> TenantRules {
        TenantRules {
            tenant: self.tenant.clone(),
            tag: self.tag,
            groups: self.groups.iter().map(|g| g.rules.clone()).collect(),
            policies: nodes
                .iter()
                .filter_map(|(name, n)| Self::policy_of(name, n))
                .collect(),
            ports: nodes.iter().filter_map(|(_, n)| Self::port_of(n)).collect(),
        }
    }

    /// At start: forwarding on, bridges up, the tenant's tables rebuilt for `nodes` (the live
    /// ones), and links that no live node explains removed.
    pub fn start(&self, nodes: &[(String, NodeNet)]) -> Result<Vec<String>, NetworkError> {
        bulkhead_net::host::enable_forwarding()?;
        for g in self
            .groups
            .iter()
            .filter(|g| g.range.layout == Layout::Bridge)
        {
            let a = g
                .range
                .addressing(0)
                .ok_or_else(|| NetworkError::Refused(format!("range {} holds no node", g.range)))?;
            bulkhead_net::host::ensure_bridge(&self.tag.bridge(g.index), a.gateway, a.prefix_len)?;
        }
        nft::apply(&self.rules(nodes))?;
        let live: HashSet<(u8, u32)> = nodes.iter().map(|(_, n)| (n.group, n.slot)).collect();
        let bridges: HashSet<u8> = self
            .groups
            .iter()
            .filter(|g| g.range.layout == Layout::Bridge)
            .map(|g| g.index)
            .collect();
        Ok(bulkhead_net::host::reconcile_links(
            self.tag,
            |g, s| live.contains(&(g, s)),
            |g| bridges.contains(&g),
        )?)
    }

    /// Installs a node's own nft objects (before its supervisor starts).
    pub fn attach(&self, name: &str, n: &NodeNet) -> Result<(), NetworkError> {
        let policy = Self::policy_of(name, n);
        let port = Self::port_of(n);
        if policy.is_none() && port.is_none() {
            return Ok(());
        }
        Ok(nft::run(&nft::node_added(
            &self.table(),
            policy.as_ref(),
            port.as_ref(),
        ))?)
    }

    /// Removes a node's own nft objects, and its veth if something kept it alive.
    pub fn detach(&self, n: &NodeNet) {
        let port = Self::port_of(n);
        let policy = n.policy.as_ref().map(|_| n.address);
        let mut txs = nft::node_removed(&self.table(), policy, port.as_ref());
        txs.push(bulkhead_net::flows::forget(&self.table(), n.address)); // #14, D
        for tx in txs {
            if let Err(e) = nft::run(&tx) {
                tracing::debug!(error = %e, "node nft object already gone");
            }
        }
        if let Ok(i) = bulkhead_net::netlink::index_of(&n.host_if) {
            if let Ok(mut nl) = bulkhead_net::netlink::Netlink::open() {
                let _ = nl.delete_link(i);
            }
        }
    }

    /// At stop with no node left: the tenant's tables, bridges and group indexes go.
    pub fn remove_all(&self, tenant_dir: &Path) {
        let _ = std::fs::remove_file(tenant_dir.join(GROUPS_FILE));
        if let Err(e) = nft::remove(&self.tenant) {
            tracing::error!(error = %e, "cannot remove the tenant's nft tables");
        }
        if let Err(e) = bulkhead_net::host::reconcile_links(self.tag, |_, _| false, |_| false) {
            tracing::error!(error = %e, "cannot remove the tenant's links");
        }
    }
}

/// The network recorded with a node, if it has one.
pub fn node_net_of(row: &bulkhead_store::NodeRow) -> Option<NodeNet> {
    serde_json::from_str(row.network.as_deref()?).ok()
}

// ---- the host-wide range registry ------------------------------------------------------------

#[derive(Debug, Serialize, Deserialize)]
struct RangeClaim {
    tenant: String,
    pid: u32,
    socket: String,
    ranges: Vec<String>,
}

/// The tenant's claim on its ranges. It outlives a crash or a graceful stop that leaves nodes
/// running (their addresses stay in use); only the same tenant can take it over. It is
/// released when the daemon stops with no node left.
pub struct NetClaim {
    path: PathBuf,
    release: std::sync::atomic::AtomicBool,
}

impl NetClaim {
    /// Release the claim when dropped (the daemon stopped with no node left).
    pub fn release_on_drop(&self) {
        self.release
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for NetClaim {
    fn drop(&mut self) {
        if self.release.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Claims the tenant's ranges, refusing when another tenant holds an overlapping one.
pub fn claim_ranges(
    registry: &Path,
    tenant: &str,
    socket: &str,
    groups: &[HostGroup],
) -> Result<NetClaim, NetworkError> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(registry).map_err(io(format!("creating {}", registry.display())))?;
    let lock =
        std::fs::File::create(registry.join(".lock")).map_err(io("locking the range registry"))?;
    // SAFETY: flock on an fd we own; released when `lock` is dropped at return.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    let mine: Vec<(String, Ipv4Net)> = groups
        .iter()
        .filter_map(|g| g.network.range.map(|r| (g.name.clone(), r)))
        .collect();
    for e in std::fs::read_dir(registry)
        .map_err(io("reading the range registry"))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == tenant {
            continue;
        }
        let Ok(b) = std::fs::read(e.path()) else {
            continue;
        };
        let Ok(other) = serde_json::from_slice::<RangeClaim>(&b) else {
            continue;
        };
        for r in other
            .ranges
            .iter()
            .filter_map(|r| r.parse::<Ipv4Net>().ok())
        {
            if let Some((g, m)) = mine
                .iter()
                .find(|(_, m)| m.contains(&r.network()) || r.contains(&m.network()))
            {
                return Err(NetworkError::Refused(format!(
                    "range {m} of host group {g:?} overlaps {r}, held by tenant {:?} (daemon pid {}, socket {}): pick a range that does not overlap, or stop that tenant (if it is gone for good, remove {})",
                    other.tenant,
                    other.pid,
                    other.socket,
                    e.path().display()
                )));
            }
        }
    }
    let claim = RangeClaim {
        tenant: tenant.to_string(),
        pid: std::process::id(),
        socket: socket.to_string(),
        ranges: mine.iter().map(|(_, r)| r.to_string()).collect(),
    };
    let path = registry.join(tenant);
    let tmp = registry.join(format!(".{tenant}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&claim).unwrap_or_default())
        .map_err(io("writing the range claim"))?;
    std::fs::rename(&tmp, &path).map_err(io("writing the range claim"))?;
    Ok(NetClaim {
        path,
        release: Default::default(),
    })
}

#[cfg(test)]
mod tests;
