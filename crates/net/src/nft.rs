//! Applies rendered rulesets with `nft -f -`: one transaction per call, so a table is replaced
//! atomically or not at all. Per-node changes are small incremental transactions (a set
//! element, a node's policy chain); the tenant's table is rendered in full only at start.
//! Counters are read by [`crate::flows::read`] (named counters and flow sets, one listing).

use crate::rules::{policy_chain, BridgePort, NodePolicy, TenantRules};
use crate::NetError;
use std::io::Write;
use std::process::{Command, Stdio};

/// Runs one `nft -f -` transaction.
pub fn run(script: &str) -> Result<(), NetError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetError::Host {
            what: "running nft (install the nftables package)",
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| NetError::Host {
        what: "waiting for nft",
        source,
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Tool {
            tool: "nft",
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Replaces the tenant's tables with the ruleset computed from `rules`.
pub fn apply(rules: &TenantRules) -> Result<(), NetError> {
    run(&rules.render())
}

/// Removes the tenant's tables.
pub fn remove(tenant: &str) -> Result<(), NetError> {
    run(&TenantRules::render_delete(tenant))
}

/// The transaction that adds one node's policy chain and bridge port.
pub fn node_added(table: &str, policy: Option<&NodePolicy>, port: Option<&BridgePort>) -> String {
    let mut s = String::new();
    if let Some(p) = policy {
        let chain = policy_chain(p.address);
        s += &format!("add chain inet {table} {chain}\n");
        let fmt = |v: &[crate::rules::Cidr]| {
            v.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !p.drop.is_empty() {
            s += &format!(
                "add rule inet {table} {chain} ip daddr {{ {} }} jump flow_node_drop\n",
                fmt(&p.drop)
            );
        }
        if !p.allow.is_empty() {
            s += &format!(
                "add rule inet {table} {chain} ip daddr != {{ {} }} jump flow_node_allow\n",
                fmt(&p.allow)
            );
        }
        s += &format!(
            "add element inet {table} node_policy {{ {} : jump {chain} }}\n",
            p.address
        );
    }
    if let Some(b) = port {
        s += &format!(
            "add element bridge {table} ports {{ \"{}\" . {} }}\n",
            b.port, b.address
        );
    }
    s
}

/// The transactions that remove one node's policy chain and bridge port (each may already be
/// gone, so each is its own transaction).
pub fn node_removed(
    table: &str,
    policy: Option<std::net::Ipv4Addr>,
    port: Option<&BridgePort>,
) -> Vec<String> {
    let mut v = vec![];
    if let Some(a) = policy {
        let chain = policy_chain(a);
        v.push(format!(
            "delete element inet {table} node_policy {{ {a} }}\nflush chain inet {table} {chain}\ndelete chain inet {table} {chain}\n"
        ));
    }
    if let Some(b) = port {
        v.push(format!(
            "delete element bridge {table} ports {{ \"{}\" . {} }}\n",
            b.port, b.address
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Cidr;

    #[test]
    fn node_transactions_name_their_objects() {
        let p = NodePolicy {
            node: "web-2".into(),
            address: "169.254.100.6".parse().unwrap(),
            drop: vec![Cidr("10.0.0.0".parse().unwrap(), 8)],
            allow: vec![],
        };
        let s = node_added("bulkhead_a", Some(&p), None);
        assert!(s.contains("add chain inet bulkhead_a node_169_254_100_6\n"));
        assert!(s.contains("ip daddr { 10.0.0.0/8 } jump flow_node_drop"));
        assert!(!s.contains("!="));
        assert!(s.ends_with(
            "add element inet bulkhead_a node_policy { 169.254.100.6 : jump node_169_254_100_6 }\n"
        ));
        let r = node_removed("bulkhead_a", Some(p.address), None);
        assert_eq!(r.len(), 1);
        assert!(r[0].starts_with("delete element"));
    }
}
