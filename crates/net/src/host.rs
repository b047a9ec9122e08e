//! Applying a node's network plan on the host: the supervisor calls [`apply_host`] after it
//! cloned the node's init and before the node may run anything, so a node's agent never
//! answers before its network is in place. Everything here is netlink on an already-open
//! socket (no `ip` processes); only the optional egress limit runs `tc`.
//!
//! A node's veth lives as long as its network namespace: when the node's last process exits,
//! the kernel removes both ends. [`reconcile_links`] removes what a crash left anyway.

use crate::names::{Tag, NODE_IF};
use crate::netlink::{index_of, Netlink};
use crate::{NetError, NetworkPlan, VethPlan};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

fn ctx(what: &'static str) -> impl FnOnce(io::Error) -> NetError {
    move |source| NetError::Host { what, source }
}

/// Runs `f` with the calling thread inside the network namespace of `pid`, then returns the
/// thread to the namespace it came from.
pub fn in_netns_of<T>(pid: i32, f: impl FnOnce() -> Result<T, NetError>) -> Result<T, NetError> {
    let own =
        File::open("/proc/thread-self/ns/net").map_err(ctx("opening own network namespace"))?;
    let target = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(ctx("opening the node's network namespace"))?;
    // SAFETY: setns on valid namespace fds; only this thread's network namespace changes.
    if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(ctx("entering the node's network namespace")(
            io::Error::last_os_error(),
        ));
    }
    let r = f();
    // SAFETY: as above, back to where we were.
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        // A thread stuck in a node's namespace must not carry on doing host work.
        eprintln!(
            "bulkhead: cannot return to the host network namespace: {}",
            io::Error::last_os_error()
        );
        std::process::abort();
    }
    r
}

/// Wires the node whose init is `pid` to the host as `plan` says.
pub fn apply_host(plan: &NetworkPlan, pid: i32) -> Result<(), NetError> {
    let NetworkPlan::Veth(v) = plan else {
        return Ok(());
    };
    let mut nl = Netlink::open().map_err(ctx("opening netlink"))?;
    match nl.add_veth(&v.host_if, NODE_IF, pid) {
        // Left by a node of the same slot whose namespace something still holds: replace it.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            if let Ok(i) = index_of(&v.host_if) {
                let _ = nl.delete_link(i);
            }
            nl.add_veth(&v.host_if, NODE_IF, pid)
        }
        r => r,
    }
    .map_err(ctx("creating the node's veth pair"))?;
    let res = wire(&mut nl, v, pid);
    if res.is_err() {
        if let Ok(i) = index_of(&v.host_if) {
            let _ = nl.delete_link(i);
        }
    }
    res
}

/// Best-effort sysctl write in the calling thread's network namespace.
fn sysctl(path: &str, value: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/{path}"), value);
}

fn wire(nl: &mut Netlink, v: &VethPlan, pid: i32) -> Result<(), NetError> {
    let idx = index_of(&v.host_if).map_err(ctx("finding the node's veth"))?;
    // ICMP redirects could teach a node a direct path towards another node: the host sends
    // none on a node's link, and nodes accept none (below).
    sysctl(&format!("ipv4/conf/{}/send_redirects", v.host_if), "0");
    match &v.bridge {
        Some(b) => {
            let master = index_of(b).map_err(ctx("finding the host group's bridge"))?;
            nl.set_up(idx, Some(master))
                .map_err(ctx("adding the node's veth to its bridge"))?;
        }
        None => {
            nl.add_address(idx, v.gateway, v.prefix_len)
                .map_err(ctx("adding the gateway address"))?;
            nl.set_up(idx, None)
                .map_err(ctx("setting the host veth up"))?;
        }
    }
    in_netns_of(pid, || {
        let mut inner = Netlink::open().map_err(ctx("opening netlink in the node"))?;
        let lo = index_of("lo").map_err(ctx("finding lo in the node"))?;
        inner
            .set_up(lo, None)
            .map_err(ctx("setting lo up in the node"))?;
        if let Some(owner) = v.guest_tap {
            return wire_guest(&mut inner, owner, v.egress_mbps);
        }
        let eth = index_of(NODE_IF).map_err(ctx("finding eth0 in the node"))?;
        inner
            .add_address(eth, v.address, v.prefix_len)
            .map_err(ctx("adding the node's address"))?;
        inner.set_up(eth, None).map_err(ctx("setting eth0 up"))?;
        inner
            .add_default_route(eth, v.gateway)
            .map_err(ctx("adding the node's default route"))?;
        // ICMP echo through datagram sockets (no CAP_NET_RAW needed, the kernel builds the
        // headers): lets a workload's `ping` work without raw sockets. Best effort.
        sysctl("ipv4/ping_group_range", "0 2147483647");
        for conf in ["all", "default", NODE_IF] {
            sysctl(&format!("ipv4/conf/{conf}/accept_redirects"), "0");
        }
        if let Some(mbps) = v.egress_mbps {
            limit_egress(mbps)?;
        }
        Ok(())
    })
}

/// The tap a microVM's QEMU attaches to (owned by QEMU's host uid, so QEMU needs no
/// capability to open it), and the bridge that joins it to the node's `eth0`.
pub const GUEST_TAP: &str = "tap0";
const GUEST_BRIDGE: &str = "br0";

/// Attaches an open `/dev/net/tun` fd to the tap `name` (creating it if the caller may).
/// Allocation-free, so a freshly forked child may call it before exec.
pub fn tun_set_iff(fd: i32, name: &str) -> io::Result<()> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    // SAFETY: ifreq is plain data; the ioctl gets a valid ifreq.
    unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in name.bytes().take(libc::IFNAMSIZ - 1).enumerate() {
            req.ifr_name[i] = b as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        if libc::ioctl(fd, TUNSETIFF, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn create_tap(name: &str, owner: u32) -> std::io::Result<()> {
    const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
    const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
    let tun = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    tun_set_iff(tun.as_raw_fd(), name)?;
    // SAFETY: the ioctls get integer arguments on a tun fd we own.
    unsafe {
        if libc::ioctl(tun.as_raw_fd(), TUNSETOWNER, owner as libc::c_ulong) < 0
            || libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) < 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn wire_guest(nl: &mut Netlink, owner: u32, egress_mbps: Option<u32>) -> Result<(), NetError> {
    create_tap(GUEST_TAP, owner).map_err(ctx("creating the microVM's tap"))?;
    nl.add_bridge(GUEST_BRIDGE)
        .map_err(ctx("creating the microVM's bridge"))?;
    let br = index_of(GUEST_BRIDGE).map_err(ctx("finding the microVM's bridge"))?;
    for dev in [NODE_IF, GUEST_TAP] {
        let i = index_of(dev).map_err(ctx("finding the microVM's links"))?;
        nl.set_up(i, Some(br))
            .map_err(ctx("joining the microVM's links"))?;
    }
    nl.set_up(br, None)
        .map_err(ctx("setting the microVM's bridge up"))?;
    for conf in ["all", "default"] {
        sysctl(&format!("ipv6/conf/{conf}/disable_ipv6"), "1");
    }
    if let Some(mbps) = egress_mbps {
        limit_egress(mbps)?;
    }
    Ok(())
}

/// A token bucket on the node's eth0: everything the node sends passes it. The node has no
/// CAP_NET_ADMIN, so it cannot change or remove the qdisc.
fn limit_egress(mbps: u32) -> Result<(), NetError> {
    let bytes_per_s = mbps as u64 * 1_000_000 / 8;
    // Bucket: 10 ms worth of traffic, at least a few full-size frames.
    let burst = (bytes_per_s / 100).max(16 * 1024);
    let out = std::process::Command::new("tc")
        .args(["qdisc", "replace", "dev", NODE_IF, "root", "tbf"])
        .arg("rate")
        .arg(format!("{mbps}mbit"))
        .arg("burst")
        .arg(burst.to_string())
        .args(["latency", "50ms"])
        .output()
        .map_err(ctx("running tc (install iproute2)"))?;
    if !out.status.success() {
        return Err(NetError::Tool {
            tool: "tc",
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Makes the host forward IPv4 (nodes reach the outside through it). A per-namespace setting.
pub fn enable_forwarding() -> Result<(), NetError> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
        .map_err(ctx("enabling net.ipv4.ip_forward"))
}

/// Makes sure a host group's bridge exists, holds the gateway address, and is up.
pub fn ensure_bridge(
    name: &str,
    gateway: std::net::Ipv4Addr,
    prefix_len: u8,
) -> Result<(), NetError> {
    let mut nl = Netlink::open().map_err(ctx("opening netlink"))?;
    match nl.add_bridge(name) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        r => r.map_err(ctx("creating the host group's bridge"))?,
    }
    let idx = index_of(name).map_err(ctx("finding the bridge"))?;
    sysctl(&format!("ipv4/conf/{name}/send_redirects"), "0");
    match nl.add_address(idx, gateway, prefix_len) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        r => r.map_err(ctx("adding the bridge's gateway address"))?,
    }
    nl.set_up(idx, None).map_err(ctx("setting the bridge up"))
}

/// Removes this tenant's node veths that `keep_veth` does not explain, and its bridges that
/// `keep_bridge` does not. Returns the names removed.
pub fn reconcile_links(
    tag: Tag,
    keep_veth: impl Fn(u8, u32) -> bool,
    keep_bridge: impl Fn(u8) -> bool,
) -> Result<Vec<String>, NetError> {
    let mut nl = Netlink::open().map_err(ctx("opening netlink"))?;
    let mut removed = vec![];
    for l in nl.links().map_err(ctx("listing links"))? {
        let stale = match (tag.parse_veth(&l.name), tag.parse_bridge(&l.name)) {
            (Some((g, s)), _) => !keep_veth(g, s),
            (_, Some(g)) => !keep_bridge(g),
            _ => false,
        };
        if stale {
            match nl.delete_link(l.index) {
                Ok(()) => removed.push(l.name),
                // Gone already: its peer's namespace went away meanwhile.
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
                Err(e) => return Err(ctx("removing a stale link")(e)),
            }
        }
    }
    Ok(removed)
}
