//! Unexpected flows (#14, D; ADR 0034): packets the tenant's nft rules dropped, per sending
//! node and category (`tenant`, `node`, `host`, `metadata`, `drop_list`, `allow_list`; see
//! `bulkhead_net::flows`), as the metric `bulkhead_flow_dropped_{packets,bytes}_total` and as
//! `flow.dropped` events. The same listing gives the tenant-wide counts by rule,
//! `bulkhead_network_denied_packets_total{tenant,rule}`.
//!
//! Invariants:
//! - one `nft -j list table` per scrape and per sampler tick, in the daemon's own network
//!   namespace (where the tenant's table lives); nothing here writes a rule;
//! - a count is attributed by its set element's address to the live node that holds that
//!   address; an element no live node explains is not reported;
//! - at most one `flow.dropped` event per node and category per [`INTERVAL`], carrying the
//!   growth since the last one; counts restart from zero when the table is rebuilt (daemon
//!   start) or a node is deleted (its elements go with it), and a count below the last one
//!   seen is growth from zero.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bulkhead_net::flows::FlowCount;

use crate::app::App;
use crate::events::kind;
use crate::network::NodeNet;
use crate::tenant::Tenant;

/// How often the sampler reads the tenant's flow counts.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// One node's count in one category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub node: String,
    pub category: String,
    pub address: std::net::Ipv4Addr,
    pub packets: u64,
    pub bytes: u64,
}

/// The counts that belong to a live node, by its address, sorted by node then category.
pub fn attribute(counts: Vec<FlowCount>, nodes: &[(String, NodeNet)]) -> Vec<Sample> {
    let by_addr: HashMap<_, _> = nodes.iter().map(|(n, nn)| (nn.address, n)).collect();
    let mut out: Vec<Sample> = counts
        .into_iter()
        .filter(|c| c.packets > 0)
        .filter_map(|c| {
            Some(Sample {
                node: by_addr.get(&c.address)?.to_string(),
                category: c.category,
                address: c.address,
                packets: c.packets,
                bytes: c.bytes,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.node, &a.category).cmp(&(&b.node, &b.category)));
    out
}

/// What grew since the last tick: `(sample, packets, bytes)` of growth.
#[derive(Default)]
pub struct Tracker {
    last: HashMap<(String, String), (u64, u64)>,
}

impl Tracker {
    /// The samples that grew since the last call, with their growth; forgets what is gone.
    pub fn step(&mut self, now: &[Sample]) -> Vec<(Sample, u64, u64)> {
        let mut next = HashMap::new();
        let mut grown = vec![];
        for s in now {
            let key = (s.node.clone(), s.category.clone());
            let (p0, b0) = match self.last.get(&key) {
                Some(&(p, b)) if p <= s.packets => (p, b.min(s.bytes)),
                // Not seen, or below what we saw: the element was made anew (node deleted
                // and its name given again, table rebuilt): all of it is new.
                _ => (0, 0),
            };
            if s.packets > p0 {
                grown.push((s.clone(), s.packets - p0, s.bytes - b0));
            }
            next.insert(key, (s.packets, s.bytes));
        }
        self.last = next;
        grown
    }
}

/// Reads the tenant's named counters and attributed flow counts (blocking: runs `nft`).
/// Empty when the tenant has no network.
fn read(t: &Tenant) -> (Vec<(String, u64)>, Vec<Sample>) {
    let Some(net) = &t.net else {
        return Default::default();
    };
    match bulkhead_net::flows::read(&net.tenant) {
        Ok(l) => (l.counters, attribute(l.flows, &t.live_node_nets())),
        Err(e) => {
            tracing::debug!(tenant = %t.name, error = %e, "cannot read the tenant's nft counters");
            Default::default()
        }
    }
}

/// Starts the tenant's sampler: every [`INTERVAL`], one `flow.dropped` event per node and
/// category whose count grew. It ends with the tenant.
pub fn start(tenant: &Arc<Tenant>) {
    if tenant.net.is_none() {
        return;
    }
    let weak: Weak<Tenant> = Arc::downgrade(tenant);
    tokio::spawn(async move {
        let mut tracker = Tracker::default();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(t) = weak.upgrade() else { return };
            // No networked node, nothing to read (and no nft process every interval).
            if t.live_node_nets().is_empty() {
                tracker = Tracker::default();
                continue;
            }
            let t2 = t.clone();
            let Ok((_, now)) = tokio::task::spawn_blocking(move || read(&t2)).await else {
                continue;
            };
            for (s, packets, bytes) in tracker.step(&now) {
                tracing::info!(tenant = %t.name, node = %s.node, category = %s.category, packets, bytes, "flow.dropped: the node sent packets its rules dropped");
                t.events.emit(
                    kind::FLOW_DROPPED,
                    Some(&s.node),
                    serde_json::json!({
                        "category": s.category,
                        "address": s.address.to_string(),
                        "packets": packets,
                        "bytes": bytes,
                        "total_packets": s.packets,
                        "interval_seconds": INTERVAL.as_secs(),
                    }),
                );
            }
        }
    });
}

/// One networked tenant's counts: its name, its named counters, its attributed flows.
type Row = (String, Vec<(String, u64)>, Vec<Sample>);

/// Prometheus text of the tenants' counts by rule and flow counts (one `nft` call per
/// networked tenant).
pub async fn metrics(tenants: &[Arc<App>]) -> String {
    let mut rows = vec![];
    for app in tenants.iter().filter(|a| a.tenant.net.is_some()) {
        let t = app.tenant.clone();
        let name = t.name.clone();
        let (counters, samples) = tokio::task::spawn_blocking(move || read(&t))
            .await
            .unwrap_or_default();
        rows.push((name, counters, samples));
    }
    render(&rows)
}

fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    if rows.is_empty() {
        return out;
    }
    // One HELP and TYPE per metric, whatever the number of tenants (the text format refuses
    // a second).
    let name = "bulkhead_network_denied_packets_total";
    out.push_str(&format!("# HELP {name} Packets dropped by the tenant's network rules, by rule (see docs/networking.md).\n# TYPE {name} counter\n"));
    for (t, counters, _) in rows {
        for (rule, v) in counters {
            out.push_str(&format!("{name}{{tenant=\"{t}\",rule=\"{rule}\"}} {v}\n"));
        }
    }
    for (name, help, bytes) in [
        ("bulkhead_flow_dropped_packets_total", "Packets a node sent that the tenant's network rules dropped, by category (tenant, node, host, metadata, drop_list, allow_list; see docs/detection.md). Restarts from zero when the daemon starts.", false),
        ("bulkhead_flow_dropped_bytes_total", "Bytes of the packets counted by bulkhead_flow_dropped_packets_total.", true),
    ] {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (t, _, samples) in rows {
            for s in samples {
                out.push_str(&format!(
                    "{name}{{tenant=\"{t}\",node=\"{}\",category=\"{}\"}} {}\n",
                    s.node,
                    s.category,
                    if bytes { s.bytes } else { s.packets }
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nn(addr: &str) -> NodeNet {
        NodeNet {
            group: 0,
            slot: 0,
            address: addr.parse().unwrap(),
            host_if: "bv00010000".into(),
            bridge: None,
            policy: None,
        }
    }

    fn count(cat: &str, addr: &str, packets: u64) -> FlowCount {
        FlowCount {
            category: cat.into(),
            address: addr.parse().unwrap(),
            packets,
            bytes: packets * 60,
        }
    }

    #[test]
    fn counts_go_to_the_node_holding_the_address_and_nowhere_else() {
        let nodes = vec![
            ("a-1".to_string(), nn("10.0.0.2")),
            ("a-2".to_string(), nn("10.0.0.6")),
        ];
        let got = attribute(
            vec![
                count("tenant", "10.0.0.6", 3),
                count("host", "10.0.0.2", 1),
                count("metadata", "10.0.0.10", 5), // no live node: not reported
                count("node", "10.0.0.2", 0),      // an element that counted nothing
            ],
            &nodes,
        );
        let brief: Vec<_> = got
            .iter()
            .map(|s| (s.node.as_str(), s.category.as_str(), s.packets))
            .collect();
        assert_eq!(brief, vec![("a-1", "host", 1), ("a-2", "tenant", 3)]);
    }

    fn sample(node: &str, cat: &str, packets: u64) -> Sample {
        Sample {
            node: node.into(),
            category: cat.into(),
            address: "10.0.0.2".parse().unwrap(),
            packets,
            bytes: packets * 60,
        }
    }

    #[test]
    fn growth_is_reported_once_per_node_and_category_with_its_delta() {
        let mut t = Tracker::default();
        let g = t.step(&[sample("a-1", "tenant", 3), sample("a-1", "host", 1)]);
        let d: Vec<_> = g
            .iter()
            .map(|(s, p, b)| (s.category.as_str(), *p, *b))
            .collect();
        assert_eq!(d, vec![("tenant", 3, 180), ("host", 1, 60)]);
        // Nothing new: nothing reported.
        assert!(t
            .step(&[sample("a-1", "tenant", 3), sample("a-1", "host", 1)])
            .is_empty());
        // Grown by 4: one report carrying 4.
        let g = t.step(&[sample("a-1", "tenant", 7), sample("a-1", "host", 1)]);
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].1, g[0].2), (4, 240));
        // Gone (node deleted) then back lower (a new node of that name): all of it is new.
        assert!(t.step(&[]).is_empty());
        let g = t.step(&[sample("a-1", "tenant", 2)]);
        assert_eq!((g[0].1, g[0].2), (2, 120));
        // Lower than seen without going away (table rebuilt): all of it is new too.
        t.step(&[sample("a-1", "tenant", 9)]);
        let g = t.step(&[sample("a-1", "tenant", 1)]);
        assert_eq!(g[0].1, 1);
    }

    #[test]
    fn metrics_carry_tenant_node_and_category() {
        let text = render(&[
            (
                "ta".into(),
                vec![("deny_metadata".into(), 2)],
                vec![sample("ta-1", "metadata", 2)],
            ),
            ("tb".into(), vec![("deny_host".into(), 0)], vec![]),
        ]);
        assert!(text.contains(
            "bulkhead_network_denied_packets_total{tenant=\"ta\",rule=\"deny_metadata\"} 2\n"
        ));
        assert!(text.contains("# TYPE bulkhead_flow_dropped_packets_total counter\n"));
        assert!(text.contains(
            "bulkhead_flow_dropped_packets_total{tenant=\"ta\",node=\"ta-1\",category=\"metadata\"} 2\n"
        ));
        assert!(text.contains(
            "bulkhead_flow_dropped_bytes_total{tenant=\"ta\",node=\"ta-1\",category=\"metadata\"} 120\n"
        ));
        assert!(!text.contains("_total{tenant=\"tb\",node="));
        assert!(text.contains("{tenant=\"tb\",rule=\"deny_host\"} 0\n"));
        for m in [
            "bulkhead_network_denied_packets_total",
            "bulkhead_flow_dropped_packets_total",
        ] {
            assert_eq!(text.matches(&format!("# HELP {m} ")).count(), 1, "{text}");
        }
        assert!(render(&[]).is_empty());
    }
}
