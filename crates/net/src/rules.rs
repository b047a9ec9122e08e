//! The tenant's nftables ruleset, computed as text from plain data (no syscalls here), so the
//! whole policy is unit- and golden-tested. [`crate::nft`] applies it.
//!
//! One table per tenant, `inet bulkhead_<tenant>` (plus `bridge bulkhead_<tenant>` when a host
//! group uses bridge mode), replaced atomically in one `nft -f` transaction. Nothing outside
//! these tables is ever touched. Every rule matches only this tenant's interfaces, so the
//! tables of other tenants and of the host's own firewall are unaffected.
//!
//! What the rules enforce, for traffic that enters from a node:
//! 1. IPv6 is dropped (nodes get IPv4 only).
//! 2. Anti-spoofing: the source must route back through the interface it came in on
//!    (`fib saddr . iif`), and in isolated mode must be the node address of its /30; in bridge
//!    mode the bridge table pins each port to its node's address (IP and ARP).
//! 3. Nothing to another node: any bulkhead veth or bridge (this tenant's or another's), except
//!    nodes on the same bridge in bridge mode. These egress checks run in `forward` at priority
//!    `filter - 2`, before any tenant's inbound check (`forward_in`, `filter - 1`), so a packet
//!    between two tenants' nodes is always dropped, and counted, by the sender's table.
//! 4. Nothing to the host: the `input` chain applies 1-2 per group, then drops all but replies
//!    and DNS to that group's own `dns_servers`.
//! 5. Never the metadata address 169.254.169.254, never a `drop` CIDR.
//! 6. DNS (udp/tcp 53) to the group's `dns_servers` is accepted.
//! 7. Per-node overrides (create request `network.allow/drop`) can only narrow: they run after
//!    the group's drops and before the group's allow check, and can only drop.
//! 8. Destinations outside `allow` are dropped; the rest leaves through masquerade.
//!
//! Inbound: new connections into a node are dropped; ingress is only through the daemon's
//! explicit port forwards, which connect from the host (replies are `established`).
//! Every drop has a named counter (`deny_*`), exported per tenant. The drops of 3-5 and 7-8
//! also count per sending node and category in [`crate::flows`]' sets.

use crate::ipam::{Layout, Range};
use crate::names::{Tag, BRIDGE_PREFIX, VETH_PREFIX};
use std::fmt::Write;
use std::net::Ipv4Addr;

/// The cloud metadata address: never reachable from a node.
pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// The named counters of a tenant's table, with what each one counts.
pub const COUNTERS: &[(&str, &str)] = &[
    ("deny_ipv6", "IPv6 packets from nodes (nodes are IPv4 only)"),
    (
        "deny_spoof",
        "packets from a node with a source address that is not its own",
    ),
    ("deny_node", "packets from a node to another node"),
    (
        "deny_host",
        "packets from a node to the host's own addresses",
    ),
    ("deny_metadata", "packets from a node to 169.254.169.254"),
    ("deny_droplist", "packets from a node to a drop-listed CIDR"),
    (
        "deny_node_policy",
        "packets dropped by a node's own allow/drop override",
    ),
    (
        "deny_allowlist",
        "packets from a node to a destination outside the allow list",
    ),
    (
        "deny_inbound",
        "new connections into a node from outside it",
    ),
    (
        "deny_host_user",
        "new connections into a node from a host process that is not root",
    ),
];

/// An IPv4 CIDR as the rules need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub Ipv4Addr, pub u8);

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.0, self.1)
    }
}

/// One networked host group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRules {
    pub index: u8,
    pub name: String,
    pub range: Range,
    pub drop: Vec<Cidr>,
    /// Empty means everything (`0.0.0.0/0`).
    pub allow: Vec<Cidr>,
    pub dns: Vec<Ipv4Addr>,
}

/// A node's create-time `network` override. It narrows the group's policy only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePolicy {
    pub node: String,
    pub address: Ipv4Addr,
    pub drop: Vec<Cidr>,
    /// Empty means no extra restriction.
    pub allow: Vec<Cidr>,
}

/// A bridge-mode node's port and address, pinned by the bridge table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePort {
    pub port: String,
    pub address: Ipv4Addr,
}

/// Everything the tenant's tables are computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRules {
    pub tenant: String,
    pub tag: Tag,
    pub groups: Vec<GroupRules>,
    pub policies: Vec<NodePolicy>,
    pub ports: Vec<BridgePort>,
}

fn set<T: std::fmt::Display>(items: &[T]) -> String {
    let v: Vec<String> = items.iter().map(|i| i.to_string()).collect();
    format!("{{ {} }}", v.join(", "))
}

/// Name of a node's override chain (from its address, which anti-spoofing has pinned).
/// The first rules of a group's chains (forward and input): IPv4 only, and the source must
/// be the sending node's own address.
fn guard(g: &GroupRules) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "    meta nfproto ipv6 counter name \"deny_ipv6\" drop");
    if g.range.layout == Layout::Isolated {
        let _ = writeln!(
            s,
            "    ip saddr & 0.0.0.3 != 0.0.0.2 counter name \"deny_spoof\" drop"
        );
    }
    let _ = writeln!(
        s,
        "    ip saddr != {} counter name \"deny_spoof\" drop",
        g.range
    );
    let _ = writeln!(
        s,
        "    fib saddr . iif oif missing counter name \"deny_spoof\" drop"
    );
    s
}

pub fn policy_chain(address: Ipv4Addr) -> String {
    format!("node_{}", address.to_string().replace('.', "_"))
}

impl TenantRules {
    pub fn table(&self) -> String {
        Tag::table(&self.tenant)
    }

    fn has_bridge(&self) -> bool {
        self.groups.iter().any(|g| g.range.layout == Layout::Bridge)
    }

    /// The complete ruleset: deletes and recreates the tenant's tables in one transaction.
    pub fn render(&self) -> String {
        let table = self.table();
        let t = self.tag;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# bulkhead tenant {:?}: generated, do not edit",
            self.tenant
        );
        // `table X {}` first makes the delete succeed when the table does not exist yet.
        let _ = writeln!(s, "table inet {table} {{}}\ndelete table inet {table}");
        let _ = writeln!(s, "table bridge {table} {{}}\ndelete table bridge {table}");
        let _ = writeln!(s, "table inet {table} {{");
        for (name, why) in COUNTERS {
            let _ = writeln!(s, "  counter {name} {{ comment \"{why}\"; }}");
        }
        s.push_str(&crate::flows::render());
        let _ = writeln!(s, "  map node_policy {{\n    type ipv4_addr : verdict");
        if !self.policies.is_empty() {
            let el: Vec<String> = self
                .policies
                .iter()
                .map(|p| format!("{} : jump {}", p.address, policy_chain(p.address)))
                .collect();
            let _ = writeln!(s, "    elements = {{ {} }}", el.join(", "));
        }
        let _ = writeln!(s, "  }}");

        // forward: traffic routed through the host, from this tenant's nodes (egress), at a
        // priority before every tenant's inbound check, so the sender's table judges it.
        let _ = writeln!(s, "  chain forward {{");
        let _ = writeln!(
            s,
            "    type filter hook forward priority filter - 2; policy accept;"
        );
        let from = |g: &GroupRules| match g.range.layout {
            Layout::Isolated => format!("\"{}*\"", t.group_prefix(g.index)),
            Layout::Bridge => format!("\"{}\"", t.bridge(g.index)),
        };
        for g in &self.groups {
            let _ = writeln!(s, "    iifname {} jump group_{}", from(g), g.index);
        }
        let _ = writeln!(s, "  }}");
        // forward_in: towards this tenant's nodes. What a group chain judged (it always ends
        // in accept or drop) is not judged again, as when both were one chain.
        let _ = writeln!(s, "  chain forward_in {{");
        let _ = writeln!(
            s,
            "    type filter hook forward priority filter - 1; policy accept;"
        );
        for g in &self.groups {
            let _ = writeln!(s, "    iifname {} return", from(g));
        }
        for p in [t.veth_prefix(), t.bridge_prefix()] {
            let _ = writeln!(
                s,
                "    oifname \"{p}*\" ct state established,related accept"
            );
            let _ = writeln!(s, "    oifname \"{p}*\" counter name \"deny_inbound\" drop");
        }
        let _ = writeln!(s, "  }}");

        for g in &self.groups {
            let _ = writeln!(s, "  chain group_{} {{", g.index);
            let _ = writeln!(
                s,
                "    # host group {:?}, {:?} {}",
                g.name, g.range.layout, g.range
            );
            s.push_str(&guard(g));
            let _ = writeln!(s, "    ct state established,related accept");
            if g.range.layout == Layout::Bridge {
                let b = t.bridge(g.index);
                let _ = writeln!(s, "    oifname \"{b}\" accept");
            }
            let _ = writeln!(
                s,
                "    oifname {{ \"{}*\", \"{}*\" }} jump flow_node",
                t.veth_prefix(),
                t.bridge_prefix()
            );
            let _ = writeln!(
                s,
                "    oifname {{ \"{VETH_PREFIX}*\", \"{BRIDGE_PREFIX}*\" }} jump flow_tenant"
            );
            let _ = writeln!(s, "    ip daddr {METADATA} jump flow_metadata");
            if !g.drop.is_empty() {
                let _ = writeln!(s, "    ip daddr {} jump flow_drop_list", set(&g.drop));
            }
            if !g.dns.is_empty() {
                let _ = writeln!(
                    s,
                    "    ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 accept",
                    set(&g.dns)
                );
            }
            let _ = writeln!(s, "    ip saddr vmap @node_policy");
            if !g.allow.is_empty() && !g.allow.contains(&Cidr(Ipv4Addr::UNSPECIFIED, 0)) {
                let _ = writeln!(s, "    ip daddr != {} jump flow_allow_list", set(&g.allow));
            }
            let _ = writeln!(s, "    accept\n  }}");
        }

        for p in &self.policies {
            let _ = writeln!(s, "  chain {} {{", policy_chain(p.address));
            let _ = writeln!(s, "    # node {:?}", p.node);
            if !p.drop.is_empty() {
                let _ = writeln!(s, "    ip daddr {} jump flow_node_drop", set(&p.drop));
            }
            if !p.allow.is_empty() {
                let _ = writeln!(s, "    ip daddr != {} jump flow_node_allow", set(&p.allow));
            }
            let _ = writeln!(s, "  }}");
        }

        // input: traffic from a node to the host itself.
        let ifs = format!("{{ \"{}*\", \"{}*\" }}", t.veth_prefix(), t.bridge_prefix());
        let _ = writeln!(s, "  chain input {{");
        let _ = writeln!(
            s,
            "    type filter hook input priority filter - 1; policy accept;"
        );
        // Each group's own chain: the same source checks as on the forward path (a node
        // must not reach even its DNS server with a borrowed address: the answer would go to
        // the address it borrowed), then replies, then that group's DNS servers only.
        for g in &self.groups {
            let _ = writeln!(s, "    iifname {} jump input_{}", from(g), g.index);
        }
        let _ = writeln!(s, "    iifname {ifs} jump flow_host");
        let _ = writeln!(s, "  }}");
        for g in &self.groups {
            let _ = writeln!(s, "  chain input_{} {{", g.index);
            s.push_str(&guard(g));
            let _ = writeln!(s, "    ct state established,related accept");
            if !g.dns.is_empty() {
                let _ = writeln!(
                    s,
                    "    ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 accept",
                    set(&g.dns)
                );
            }
            let _ = writeln!(s, "  }}");
        }

        // output: the host's own processes. Only root (the daemon's forwards, the operator) may
        // open connections to nodes; other host users may not.
        let _ = writeln!(s, "  chain output {{");
        let _ = writeln!(
            s,
            "    type filter hook output priority filter - 1; policy accept;"
        );
        let outs = format!("{{ \"{}*\", \"{}*\" }}", t.veth_prefix(), t.bridge_prefix());
        let _ = writeln!(
            s,
            "    oifname {outs} ct state new meta skuid != 0 counter name \"deny_host_user\" drop"
        );
        let _ = writeln!(s, "  }}");

        // postrouting: nodes leave through the host's address.
        let ranges: Vec<String> = self.groups.iter().map(|g| g.range.to_string()).collect();
        let _ = writeln!(s, "  chain postrouting {{");
        let _ = writeln!(
            s,
            "    type nat hook postrouting priority srcnat; policy accept;"
        );
        let _ = writeln!(
            s,
            "    oifname {{ \"{VETH_PREFIX}*\", \"{BRIDGE_PREFIX}*\" }} return"
        );
        if !ranges.is_empty() {
            let _ = writeln!(s, "    ip saddr {} masquerade", set(&ranges));
        }
        let _ = writeln!(s, "  }}\n}}");

        if self.has_bridge() {
            s.push_str(&self.render_bridge(&table));
        }
        s
    }

    /// Bridge mode: each port may only send from its node's address (IP and ARP).
    fn render_bridge(&self, table: &str) -> String {
        let t = self.tag;
        let mut s = String::new();
        let _ = writeln!(s, "table bridge {table} {{");
        let _ = writeln!(s, "  counter deny_spoof {{ comment \"frames from a bridge port with another node's address\"; }}");
        let _ = writeln!(s, "  set ports {{\n    type ifname . ipv4_addr");
        if !self.ports.is_empty() {
            let el: Vec<String> = self
                .ports
                .iter()
                .map(|p| format!("\"{}\" . {}", p.port, p.address))
                .collect();
            let _ = writeln!(s, "    elements = {{ {} }}", el.join(", "));
        }
        let _ = writeln!(s, "  }}");
        let p = t.veth_prefix();
        let _ = writeln!(s, "  chain prerouting {{");
        let _ = writeln!(
            s,
            "    type filter hook prerouting priority filter; policy accept;"
        );
        let _ = writeln!(s, "    iifname \"{p}*\" ether type ip iifname . ip saddr != @ports counter name \"deny_spoof\" drop");
        let _ = writeln!(s, "    iifname \"{p}*\" ether type arp iifname . arp saddr ip != @ports counter name \"deny_spoof\" drop");
        let _ = writeln!(
            s,
            "    iifname \"{p}*\" ether type != {{ ip, arp }} counter name \"deny_spoof\" drop"
        );
        let _ = writeln!(s, "  }}\n}}");
        s
    }

    /// The commands that remove the tenant's tables (no error when they are absent).
    pub fn render_delete(tenant: &str) -> String {
        let table = Tag::table(tenant);
        format!(
            "table inet {table} {{}}\ndelete table inet {table}\ntable bridge {table} {{}}\ndelete table bridge {table}\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        let (a, p) = s.split_once('/').unwrap();
        Cidr(a.parse().unwrap(), p.parse().unwrap())
    }

    pub(crate) fn sample() -> TenantRules {
        TenantRules {
            tenant: "a3cf".into(),
            tag: Tag(0x0a1b),
            groups: vec![
                GroupRules {
                    index: 0,
                    name: "web".into(),
                    range: Range::new("169.254.100.0".parse().unwrap(), 22, Layout::Isolated)
                        .unwrap(),
                    drop: vec![cidr("192.168.1.0/24")],
                    allow: vec![cidr("0.0.0.0/0")],
                    dns: vec!["192.0.2.53".parse().unwrap()],
                },
                GroupRules {
                    index: 1,
                    name: "k3s".into(),
                    range: Range::new("10.77.0.0".parse().unwrap(), 24, Layout::Bridge).unwrap(),
                    drop: vec![],
                    allow: vec![cidr("203.0.113.0/24")],
                    dns: vec![],
                },
            ],
            policies: vec![NodePolicy {
                node: "web-2".into(),
                address: "169.254.100.6".parse().unwrap(),
                drop: vec![cidr("198.51.100.0/24")],
                allow: vec![cidr("203.0.113.0/24")],
            }],
            ports: vec![BridgePort {
                port: "bv0a1b1000".into(),
                address: "10.77.0.2".parse().unwrap(),
            }],
        }
    }

    /// The rendered ruleset is reviewed as a file: `UPDATE_GOLDEN=1 cargo test -p bulkhead-net`
    /// rewrites it after an intended change.
    #[test]
    fn ruleset_matches_golden_file() {
        let got = sample().render();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/tenant.nft");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(path, &got).unwrap();
        }
        let want = std::fs::read_to_string(path).expect("golden file (UPDATE_GOLDEN=1 makes it)");
        assert_eq!(got, want, "ruleset changed: review, then UPDATE_GOLDEN=1");
    }

    #[test]
    fn rules_only_match_this_tenants_interfaces() {
        let text = sample().render();
        for line in text
            .lines()
            .filter(|l| l.contains("iifname") && !l.contains(" . "))
        {
            assert!(
                line.contains("bv0a1b") || line.contains("bb0a1b"),
                "rule matches interfaces of other tenants: {line}"
            );
        }
        // No chain has a drop policy: traffic that is not ours is never touched.
        assert!(!text.contains("policy drop"));
    }

    #[test]
    fn no_allow_means_everything_and_no_bridge_table_without_bridge_groups() {
        let mut r = sample();
        r.groups.truncate(1);
        r.groups[0].allow.clear();
        let text = r.render();
        assert!(!text.contains("jump flow_allow_list"));
        assert!(!text.contains("table bridge bulkhead_a3cf {\n"));
        // Yet the bridge table of an earlier config is removed.
        assert!(text.contains("delete table bridge bulkhead_a3cf"));
    }
}

#[cfg(test)]
mod kernel_tests {
    /// The golden ruleset loads into a real kernel (in a scratch network namespace, checked
    /// with `nft -c`, which validates without committing).
    #[test]
    fn golden_ruleset_loads_into_the_kernel() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to create a network namespace for nft -c");
            return;
        }
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/tenant.nft");
        let out = std::process::Command::new("unshare")
            .args(["--net", "nft", "-c", "-f", path])
            .output()
            .expect("unshare and nft are installed (scripts/setup.sh)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
