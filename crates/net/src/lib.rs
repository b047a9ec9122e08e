//! Node networking. A [`NetworkPlan`] says what a node's network should be; the rest of the
//! crate computes plans and rules as plain data and applies them to the host.
//!
//! - [`names`]: host-side names (veths, bridges, nft tables) derived from the tenant's tag;
//! - [`ipam`]: which addresses slot N of a host group's range gets;
//! - [`rules`]: the tenant's nftables ruleset, rendered as text (pure, golden-tested);
//! - [`netlink`], [`host`]: veth pairs, addresses, routes, bridges, via rtnetlink;
//! - [`nft`]: applying rulesets and per-node changes, reading counters;
//! - [`flows`]: per-node counts of dropped packets by category (unexpected flows, #14).
//!
//! Modes: `none` is [`NetworkPlan::Loopback`] (own namespace, `lo` only). `isolated` and
//! `bridge` are [`NetworkPlan::Veth`]: the node's `eth0` is one end of a veth pair whose host
//! end is routed (isolated, one /30 per node) or a bridge port (bridge, one subnet per group).

pub mod flows;
pub mod host;
pub mod ipam;
pub mod names;
pub mod netlink;
pub mod nft;
pub mod rules;

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkPlan {
    /// Own network namespace, loopback only.
    Loopback,
    /// Own network namespace with `lo` and `eth0`, the node end of a veth pair.
    Veth(VethPlan),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VethPlan {
    /// The host end's name (`bv<tag><group><slot>`).
    pub host_if: String,
    /// The node's default gateway: the host end (isolated) or the group's bridge (bridge).
    pub gateway: Ipv4Addr,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    /// Bridge mode: the bridge the host end joins (it holds the gateway address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Token-bucket limit on everything the node sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_mbps: Option<u32>,
    /// Written to the node's /etc/resolv.conf when not empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<Ipv4Addr>,
    /// A microVM node: the namespace is QEMU's. `eth0` and a tap owned by this host uid
    /// (QEMU's) are joined by a bridge, and the addresses belong to the guest, not the
    /// namespace, so the host side sees the guest exactly where it would see a jail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_tap: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot bring up loopback: {0}")]
    Loopback(#[source] std::io::Error),
    #[error("{what}: {source}")]
    Host {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
}

/// Applies the part of the plan that runs inside the node (after pivot_root, before the
/// capabilities are dropped): loopback up, and the node's resolv.conf.
pub fn apply_inside(plan: &NetworkPlan) -> Result<(), NetError> {
    loopback_up().map_err(NetError::Loopback)?;
    if let NetworkPlan::Veth(v) = plan {
        if !v.dns_servers.is_empty() {
            let text: String = v
                .dns_servers
                .iter()
                .map(|d| format!("nameserver {d}\n"))
                .collect();
            let _ = std::fs::create_dir_all("/etc");
            let _ = std::fs::remove_file("/etc/resolv.conf");
            std::fs::write("/etc/resolv.conf", text).map_err(|source| NetError::Host {
                what: "writing /etc/resolv.conf",
                source,
            })?;
        }
    }
    Ok(())
}

/// Sets IFF_UP on `lo` of the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket used only for the interface ioctls below, closed before return.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; we fill the name and read/write flags through the union.
    let res = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    res
}
