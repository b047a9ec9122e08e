//! Unexpected flows (#14, ADR 0034): which node sent the packets the tenant's rules dropped,
//! by category. Pure text and parsing; [`read`] is the one call that runs `nft`, and it
//! reads the tenant's named counters (`deny_*`) in the same listing.
//!
//! Each categorised drop of the tenant's table jumps to a small chain of its own
//! (`flow_<name>`): its first rule adds the packet's source address to the category's
//! dynamic set (`flows_<category>`, one counter per element), its second counts the packet
//! in the tenant-wide named counter and drops it. Two rules, not one: should a set ever be
//! full, the `add` fails and ends its rule only, and the packet is still dropped.
//!
//! Invariants:
//! - by the time a packet reaches a flow chain, the group's guard has pinned its source to
//!   the sending node's own address, so a set element names one node (`host` is the
//!   exception for interfaces of a group no longer configured, whose sources are unchecked:
//!   an element that no live node explains is not attributed);
//! - the sets live in the tenant's table and go with it (stop, restart's rebuild); a
//!   deleted node's elements are removed with its other nft objects ([`forget`]), so an
//!   address handed out again starts from zero.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::NetError;

/// One categorised drop: its chain, the category it counts for, the named counter it counts
/// in (tenant-wide, `bulkhead_network_denied_packets_total{rule}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub chain: &'static str,
    pub category: &'static str,
    pub counter: &'static str,
}

/// Every categorised drop. Categories: `tenant` (a node of another tenant), `node` (another
/// node of this tenant, outside its bridge), `host` (the host's own addresses), `metadata`
/// (169.254.169.254), `drop_list` (a group's `drop` or a node's own), `allow_list` (outside
/// a group's or a node's `allow`).
pub const FLOWS: &[Flow] = &[
    Flow {
        chain: "flow_tenant",
        category: "tenant",
        counter: "deny_node",
    },
    Flow {
        chain: "flow_node",
        category: "node",
        counter: "deny_node",
    },
    Flow {
        chain: "flow_host",
        category: "host",
        counter: "deny_host",
    },
    Flow {
        chain: "flow_metadata",
        category: "metadata",
        counter: "deny_metadata",
    },
    Flow {
        chain: "flow_drop_list",
        category: "drop_list",
        counter: "deny_droplist",
    },
    Flow {
        chain: "flow_allow_list",
        category: "allow_list",
        counter: "deny_allowlist",
    },
    Flow {
        chain: "flow_node_drop",
        category: "drop_list",
        counter: "deny_node_policy",
    },
    Flow {
        chain: "flow_node_allow",
        category: "allow_list",
        counter: "deny_node_policy",
    },
];

/// The categories, each once, in a stable order.
pub const CATEGORIES: &[&str] = &[
    "tenant",
    "node",
    "host",
    "metadata",
    "drop_list",
    "allow_list",
];

/// Elements per set: every node address a tenant can have (16 groups of 4096 slots).
pub const SET_SIZE: u32 = 65536;

/// The dynamic set of a category.
pub fn set_name(category: &str) -> String {
    format!("flows_{category}")
}

/// The sets and flow chains, inside the tenant's `inet` table.
pub fn render() -> String {
    let mut s = String::new();
    for c in CATEGORIES {
        s += &format!(
            "  set {} {{\n    type ipv4_addr; size {SET_SIZE}; flags dynamic; counter;\n  }}\n",
            set_name(c)
        );
    }
    for f in FLOWS {
        s += &format!(
            "  chain {} {{\n    add @{} {{ ip saddr }}\n    counter name \"{}\" drop\n  }}\n",
            f.chain,
            set_name(f.category),
            f.counter
        );
    }
    s
}

/// The transaction that removes a node's address from every set (`add` first: deleting an
/// element that is not there would fail the whole transaction, and nft 1.0.6 has no
/// `destroy`).
pub fn forget(table: &str, address: Ipv4Addr) -> String {
    CATEGORIES
        .iter()
        .map(|c| {
            let set = set_name(c);
            format!(
                "add element inet {table} {set} {{ {address} }}\ndelete element inet {table} {set} {{ {address} }}\n"
            )
        })
        .collect()
}

/// What one set element counted: packets a node sent that a category's rules dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowCount {
    pub category: String,
    pub address: Ipv4Addr,
    pub packets: u64,
    pub bytes: u64,
}

/// What one listing of the tenant's table counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The named counters, `(name, packets)` (`deny_*`, tenant-wide).
    pub counters: Vec<(String, u64)>,
    /// The flow sets' elements.
    pub flows: Vec<FlowCount>,
}

/// The named counters and flow counts in `nft -j list table inet <table>` output. Objects it
/// does not know (another shape, another set) are skipped, never an error: the caller
/// exports what it can read.
pub fn parse(json: &[u8]) -> Result<Listing, NetError> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| NetError::Tool {
        tool: "nft",
        message: format!("unreadable JSON: {e}"),
    })?;
    let mut out = Listing::default();
    for o in v["nftables"].as_array().into_iter().flatten() {
        if let Some(c) = o.get("counter") {
            if let (Some(name), Some(packets)) = (c["name"].as_str(), c["packets"].as_u64()) {
                out.counters.push((name.to_string(), packets));
            }
            continue;
        }
        let Some(set) = o.get("set") else { continue };
        let Some(category) = set["name"]
            .as_str()
            .and_then(|n| n.strip_prefix("flows_"))
            .filter(|c| CATEGORIES.contains(c))
        else {
            continue;
        };
        for e in set["elem"].as_array().into_iter().flatten() {
            // {"elem": {"val": "10.0.0.2", "counter": {"packets": 1, "bytes": 84}}}
            let e = e.get("elem").unwrap_or(e);
            let (Some(address), Some(c)) = (
                e["val"].as_str().and_then(|a| a.parse().ok()),
                e.get("counter"),
            ) else {
                continue;
            };
            out.flows.push(FlowCount {
                category: category.to_string(),
                address,
                packets: c["packets"].as_u64().unwrap_or(0),
                bytes: c["bytes"].as_u64().unwrap_or(0),
            });
        }
    }
    Ok(out)
}

/// Reads the tenant's counts: one `nft -j list table` in the caller's network namespace
/// (the daemon's, where the table lives).
pub fn read(tenant: &str) -> Result<Listing, NetError> {
    let table = crate::names::Tag::table(tenant);
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", &table])
        .output()
        .map_err(|source| NetError::Host {
            what: "running nft",
            source,
        })?;
    if !out.status.success() {
        return Err(NetError::Tool {
            tool: "nft",
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    parse(&out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What nft 1.0.6 printed for a table with two flow sets (trimmed to the objects that
    /// matter, plus one of each kind that does not).
    const LISTING: &str = r#"{"nftables": [
      {"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
      {"table": {"family": "inet", "name": "bulkhead_a", "handle": 1}},
      {"counter": {"family": "inet", "name": "deny_node", "table": "bulkhead_a", "handle": 3, "comment": "x", "packets": 9, "bytes": 540}},
      {"set": {"family": "inet", "name": "flows_tenant", "table": "bulkhead_a", "type": "ipv4_addr", "handle": 4, "size": 65536,
               "elem": [{"elem": {"val": "10.61.0.2", "counter": {"packets": 3, "bytes": 180}}},
                        {"elem": {"val": "10.61.0.6", "counter": {"packets": 0, "bytes": 0}}}],
               "stmt": [{"counter": null}]}},
      {"set": {"family": "inet", "name": "flows_metadata", "table": "bulkhead_a", "type": "ipv4_addr", "handle": 5, "size": 65536,
               "elem": [{"elem": {"val": "10.61.0.2", "counter": {"packets": 2, "bytes": 120}}}],
               "stmt": [{"counter": null}]}},
      {"set": {"family": "inet", "name": "flows_host", "table": "bulkhead_a", "type": "ipv4_addr", "handle": 6, "size": 65536, "stmt": [{"counter": null}]}},
      {"set": {"family": "bridge", "name": "ports", "table": "bulkhead_a", "type": ["ifname", "ipv4_addr"], "handle": 7,
               "elem": [{"concat": ["bv0a1b1000", "10.77.0.2"]}]}},
      {"set": {"family": "inet", "name": "flows_future", "table": "bulkhead_a", "type": "ipv4_addr", "handle": 8,
               "elem": [{"elem": {"val": "10.61.0.2", "counter": {"packets": 7, "bytes": 7}}}]}},
      {"map": {"family": "inet", "name": "node_policy", "table": "bulkhead_a", "type": "ipv4_addr", "handle": 9, "map": "verdict"}},
      {"chain": {"family": "inet", "table": "bulkhead_a", "name": "flow_tenant", "handle": 10}},
      {"rule": {"family": "inet", "table": "bulkhead_a", "chain": "flow_tenant", "handle": 11,
                "expr": [{"set": {"op": "add", "elem": {"payload": {"protocol": "ip", "field": "saddr"}}, "set": "@flows_tenant"}}]}}
    ]}"#;

    #[test]
    fn parses_the_named_counters_and_the_flow_sets_elements_and_nothing_else() {
        let got = parse(LISTING.as_bytes()).unwrap();
        assert_eq!(got.counters, vec![("deny_node".to_string(), 9)]);
        let a: Ipv4Addr = "10.61.0.2".parse().unwrap();
        assert_eq!(
            got.flows,
            vec![
                FlowCount {
                    category: "tenant".into(),
                    address: a,
                    packets: 3,
                    bytes: 180
                },
                FlowCount {
                    category: "tenant".into(),
                    address: "10.61.0.6".parse().unwrap(),
                    packets: 0,
                    bytes: 0
                },
                FlowCount {
                    category: "metadata".into(),
                    address: a,
                    packets: 2,
                    bytes: 120
                },
            ]
        );
    }

    #[test]
    fn odd_listings_give_nothing_or_a_clear_error() {
        assert_eq!(parse(b"{}").unwrap(), Listing::default());
        let flows = |j: &str| parse(j.as_bytes()).unwrap().flows;
        assert!(
            flows(r#"{"nftables": [{"set": {"name": "flows_host", "elem": ["10.0.0.2"]}}]}"#)
                .is_empty()
        );
        // An element without a counter, or with a value that is not an address: skipped.
        assert!(flows(
            r#"{"nftables": [{"set": {"name": "flows_host", "elem": [{"elem": {"val": "x", "counter": {"packets": 1}}}, {"elem": {"val": "10.0.0.2"}}]}}]}"#
        )
        .is_empty());
        let e = parse(b"not json").unwrap_err().to_string();
        assert!(e.contains("unreadable JSON"), "{e}");
    }

    #[test]
    fn every_flow_has_a_known_category_and_counter() {
        for f in FLOWS {
            assert!(CATEGORIES.contains(&f.category), "{f:?}");
            assert!(
                crate::rules::COUNTERS.iter().any(|(n, _)| *n == f.counter),
                "{f:?}"
            );
            assert!(f.chain.starts_with("flow_"));
        }
        for c in CATEGORIES {
            assert!(FLOWS.iter().any(|f| f.category == *c), "{c} has no chain");
        }
    }

    #[test]
    fn forget_removes_the_address_from_every_set_and_cannot_fail_on_absence() {
        let s = forget("bulkhead_a", "10.61.0.2".parse().unwrap());
        for c in CATEGORIES {
            let add = format!("add element inet bulkhead_a flows_{c} {{ 10.61.0.2 }}\n");
            let del = format!("delete element inet bulkhead_a flows_{c} {{ 10.61.0.2 }}\n");
            let (a, d) = (s.find(&add).unwrap(), s.find(&del).unwrap());
            assert!(a < d, "add before delete for {c}");
        }
    }
}
