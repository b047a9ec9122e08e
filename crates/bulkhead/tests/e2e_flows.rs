//! Unexpected flows (#14, D), end to end: a shared daemon with two networked tenants, in a
//! network namespace of its own (with an uplink that leads nowhere, so routed packets reach
//! the forward hook). A node of tenant A sends packets towards tenant B's node, the host,
//! the metadata address and a drop-listed address: they are still dropped, and A's counters
//! for that node and those categories grow (metrics and the daemon's `flow.dropped` events,
//! on `GET /events` and in its log), while B's stay, and B's inbound check never sees them. Nothing here
//! runs in, or sends traffic out of, the machine's root network namespace.

mod common;

use bulkhead_api::client::full_body;
use common::netlab::{self, sh_in};
use common::shared::Shared;
use common::*;
use http_body_util::BodyExt;
use hyper::Method;
use std::time::{Duration, Instant};

const UPLINK: &str = "198.51.100.1";
const METADATA: &str = "169.254.169.254";
const DROPPED: &str = "203.0.113.200";
/// Outside the bridge tenant's allow list.
const OUTSIDE: &str = "198.18.0.1";

fn get(c: &bulkhead_api::Client, path: &str) -> String {
    rt().block_on(async {
        let r = c
            .send(Method::GET, path, full_body(Vec::new()), None)
            .await
            .unwrap();
        String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()).into_owned()
    })
}

/// `bulkhead_flow_dropped_packets_total` by (tenant, node, category).
fn flows(metrics: &str) -> Vec<(String, String, String, u64)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("bulkhead_flow_dropped_packets_total{"))
        .filter_map(|l| {
            let (labels, v) = l.split_once("} ")?;
            let get = |k: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
            };
            Some((
                get("tenant")?,
                get("node")?,
                get("category")?,
                v.parse().ok()?,
            ))
        })
        .collect()
}

/// (node, category) of each `flow.dropped` event kept for `tenant` (`GET /events`,
/// `follow=false`), as `c` sees them.
fn dropped_events(c: &bulkhead_api::Client, tenant: &str) -> Vec<(String, String)> {
    let body = get(c, &format!("/events?since=0&follow=false&tenant={tenant}"));
    body.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("GET /events: {e}: {body}"))
        })
        .filter(|e| e["kind"] == "flow.dropped")
        .map(|e| {
            assert_eq!(e["tenant"], tenant, "{e}");
            assert!(e["detail"]["packets"].as_u64() > Some(0), "{e}");
            (
                e["node"].as_str().unwrap_or_default().to_string(),
                e["detail"]["category"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

fn ip_of(s: &Shared, node: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&get(&s.admin_client(), "/nodes")).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|n| n["hostname"] == node)
        .and_then(|n| n["ip"].as_str())
        .unwrap_or_else(|| panic!("no ip for {node}: {v}"))
        .to_string()
}

/// Runs a shell snippet in a node; (exit code, stdout).
fn node_sh(s: &Shared, sock: &std::path::Path, node: &str, script: &str) -> (i32, String) {
    let o = s.vm(sock, &["exec", node, "--", "sh", "-c", script]);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn nft_counter(s: &Shared, tenant: &str, name: &str) -> u64 {
    let (_, out) = sh_in(
        &s.netns_path(),
        &format!(
            "nft -j list counter inet bulkhead_{} {name}",
            tenant.replace('-', "_")
        ),
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|o| o["counter"]["packets"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_nodes_blocked_packets_count_for_its_tenant_node_and_category() {
    if !privileged() {
        return;
    }
    let net = |range: &str| {
        format!(
            "          network: {{ mode: isolated, range: {range}, drop: [\"{DROPPED}/32\"] }}\n"
        )
    };
    let (ga, gb) = (net("10.81.0.0/24"), net("10.82.0.0/24"));
    // A third tenant in bridge mode: its packets reach the rules through its bridge.
    // It may only reach 203.0.113.0/28.
    let gc = net("10.83.0.0/24")
        .replace("isolated", "bridge")
        .replace(" }\n", ", allow: [\"203.0.113.0/28\"] }\n");
    let s = Shared::start_with_groups(&[&ga, &gb, &gc], "", "");
    // The sender is the tenant opened first: of two hooks of equal priority the kernel runs
    // the one registered last first, so only the priorities (every egress check before any
    // inbound check) make the sender's own table see the packets (checked: with equal
    // priorities B's inbound check drops them and A counts nothing).
    let (a, b) = (s.a.clone(), s.b.clone());
    let c = s.tenants[2].clone();
    let (sa, sb, sc) = (s.tenant_sock(&a), s.tenant_sock(&b), s.tenant_sock(&c));
    // An uplink in the daemon's namespace with a default route: routed packets (metadata,
    // drop list) reach the forward hook; the peer end leads nowhere.
    let ns = s.netns_path();
    let (ok, out) = sh_in(
        &ns,
        &format!(
            "ip link add up0 type veth peer name up1 && ip addr add {UPLINK}/24 dev up0 && \
             ip link set up0 up && ip link set up1 up && ip route add default via 198.51.100.2"
        ),
    );
    assert!(ok, "uplink: {out}");
    netlab::listen(&ns, "0.0.0.0", "host");

    let na = s.add(&sa, &a);
    let na2 = s.add(&sa, &a);
    let nb = s.add(&sb, &b);
    let nc = s.add(&sc, &c);
    let (ipa, ipa2, ipb) = (ip_of(&s, &na), ip_of(&s, &na2), ip_of(&s, &nb));
    // B's node listens; the host (root) reaches it, so what A cannot reach is dropped.
    let (code, out) = node_sh(
        &s,
        &sb,
        &nb,
        "setsid nc -ll -p 7000 -e echo nodeb </dev/null >/dev/null 2>&1 & \
         for i in $(seq 100); do grep -q ':1B58 [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 && exit 0; sleep 0.05; done; exit 1",
    );
    assert_eq!(code, 0, "listener in {nb}: {out}");
    assert_eq!(netlab::tcp_probe(&ns, &ipb).as_deref(), Some("nodeb"));
    assert_eq!(netlab::tcp_probe(&ns, UPLINK).as_deref(), Some("host"));
    let inbound_b = nft_counter(&s, &b, "deny_inbound");

    // A's node tries B's node, its neighbour, the host (its gateway and the uplink),
    // metadata, the drop list.
    let gw = {
        let mut o: Vec<u8> = ipa.split('.').map(|x| x.parse().unwrap()).collect();
        o[3] -= 1;
        format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])
    };
    // C's bridge-mode node tries B's node, metadata, and outside its allow list.
    let tries = [
        ipb.as_str(),
        ipa2.as_str(),
        UPLINK,
        gw.as_str(),
        METADATA,
        DROPPED,
    ]
    .map(|d| (&sa, &na, d))
    .into_iter()
    .chain([
        (&sc, &nc, ipb.as_str()),
        (&sc, &nc, METADATA),
        (&sc, &nc, OUTSIDE),
    ]);
    for (sock, node, dst) in tries {
        let (code, out) = node_sh(&s, sock, node, &format!("nc -w 2 {dst} 7000 </dev/null"));
        assert!(
            code != 0 || out.trim().is_empty(),
            "{node} reached {dst}: {out}"
        );
        let (code, _) = node_sh(&s, sock, node, &format!("ping -c 1 -W 1 {dst}"));
        assert_ne!(code, 0, "{node} pinged {dst}");
    }

    // A's counters for that node and those categories grow; B's stay.
    let want = ["tenant", "node", "host", "metadata", "drop_list"];
    let admin = s.admin_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let f = flows(&get(&admin, "/metrics"));
        let seen = |c: &str| {
            f.iter()
                .any(|(t, n, cat, v)| *t == a && *n == na && cat == c && *v > 0)
        };
        let seen_c = |cat: &str| {
            f.iter()
                .any(|(t, n, x, v)| *t == c && *n == nc && x == cat && *v > 0)
        };
        if (want.iter().all(|c| seen(c))
            && ["tenant", "metadata", "allow_list"]
                .iter()
                .all(|x| seen_c(x)))
            || Instant::now() > deadline
        {
            break f;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    for c in want {
        assert!(
            got.iter()
                .any(|(t, n, cat, v)| *t == a && *n == na && cat == c && *v > 0),
            "no {c} count for {na}: {got:?}"
        );
    }
    for cat in ["tenant", "metadata", "allow_list"] {
        assert!(
            got.iter()
                .any(|(t, n, x, v)| *t == c && *n == nc && x == cat && *v > 0),
            "no {cat} count for bridge-mode {nc}: {got:?}"
        );
    }
    assert!(
        got.iter()
            .all(|(t, n, _, _)| (*t == a && *n == na) || (*t == c && *n == nc)),
        "only {na} and {nc} sent anything, yet others have counts: {got:?}"
    );
    // Three networked tenants, one HELP per metric (the text format refuses a second), and
    // the tenant-wide counts by rule beside the per-node ones.
    let all = get(&admin, "/metrics");
    for m in [
        "bulkhead_network_denied_packets_total",
        "bulkhead_flow_dropped_packets_total",
        "bulkhead_flow_dropped_bytes_total",
    ] {
        assert_eq!(all.matches(&format!("# HELP {m} ")).count(), 1, "{all}");
    }
    assert!(all.contains(&format!(
        "bulkhead_network_denied_packets_total{{tenant=\"{a}\",rule=\"deny_metadata\"}}"
    )));
    // The sender's table judged every cross-tenant packet: B's inbound check saw none.
    assert_eq!(nft_counter(&s, &b, "deny_inbound"), inbound_b);
    // Each tenant sees its own counts only.
    let mb = get(&s.tenant_client(&b), "/metrics");
    assert!(!mb.contains(&format!("tenant=\"{a}\"")), "{mb}");
    assert!(flows(&get(&s.tenant_client(&a), "/metrics"))
        .iter()
        .any(|(_, n, c, _)| *n == na && c == "tenant"));

    // The sampler turns growth into flow.dropped events (one per node and category per
    // interval), on the tenant's event stream and in the daemon's log.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ev = dropped_events(&admin, &a);
        let has = |c: &str| ev.iter().any(|(n, cat)| *n == na && cat == c);
        if want.iter().all(|c| has(c)) {
            assert!(
                ev.iter().all(|(n, _)| *n == na),
                "flow.dropped for another node of {a} than {na}: {ev:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no flow.dropped events for {na} on GET /events: {ev:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The bridge-mode tenant's own events, as its own client reads them; B has none.
    let cc = s.tenant_client(&c);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let ev = dropped_events(&cc, &c);
        if ["tenant", "metadata", "allow_list"]
            .iter()
            .all(|cat| ev.iter().any(|(n, x)| *n == nc && x == cat))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no flow.dropped events for bridge-mode {nc} on GET /events: {ev:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(dropped_events(&admin, &b), vec![]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = s.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("flow.dropped")).collect();
        let has = |c: &str| {
            lines
                .iter()
                .any(|l| l.contains(&format!("node={na}")) && l.contains(&format!("category={c}")))
        };
        if want.iter().all(|c| has(c)) {
            assert!(
                !lines.iter().any(|l| l.contains(&format!("tenant={b}"))),
                "{lines:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no flow.dropped events:\n{log}");
        std::thread::sleep(Duration::from_millis(300));
    }

    // A deleted node's counts go with it: no element of its address is left in any set.
    let o = s.vm(&sa, &["delete", &na]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, table) = sh_in(
        &ns,
        &format!("nft list table inet bulkhead_{}", a.replace('-', "_")),
    );
    assert!(table.contains("set flows_tenant"), "{table}");
    assert!(!table.contains(&ipa), "elements of {ipa} left:\n{table}");
    assert!(!flows(&get(&admin, "/metrics"))
        .iter()
        .any(|(_, n, _, _)| *n == na));
    s.stop_and_assert_clean();
}

/// The elements of the tenant's flow sets, as `(set, address, packets)`.
fn elements(lab: &netlab::NetLab, tenant: &str) -> Vec<(String, String, u64)> {
    let (_, out) = lab.host_sh(&format!(
        "nft -j list table inet bulkhead_{}",
        tenant.replace('-', "_")
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let mut got = vec![];
    for o in v["nftables"].as_array().into_iter().flatten() {
        let Some(name) = o["set"]["name"]
            .as_str()
            .filter(|n| n.starts_with("flows_"))
        else {
            continue;
        };
        for e in o["set"]["elem"].as_array().into_iter().flatten() {
            got.push((
                name.to_string(),
                e["elem"]["val"].as_str().unwrap_or_default().to_string(),
                e["elem"]["counter"]["packets"].as_u64().unwrap_or(0),
            ));
        }
    }
    got
}

#[test]
fn a_crashed_daemon_starts_with_empty_counts_and_a_deleted_node_leaves_none() {
    if !privileged() {
        return;
    }
    let lab = netlab::NetLab::new();
    let mut d = Daemon::start_in(
        &lab.host_ns(),
        "fl",
        &common::lab_nodes::config("isolated", "10.84.0.0/24", "", ""),
    );
    let n1 = common::lab_nodes::add(&d, "{}");
    let n2 = common::lab_nodes::add(&d, "{}");
    for n in [&n1, &n2] {
        assert_eq!(netlab::tcp_probe(&n.ns, METADATA), None);
    }
    let before = elements(&lab, &d.tenant);
    for n in [&n1, &n2] {
        assert!(
            before
                .iter()
                .any(|(s, a, p)| s == "flows_metadata" && *a == n.ip && *p > 0),
            "{} not counted: {before:?}",
            n.ip
        );
    }
    // A crash leaves the table as it was; the next start rebuilds it with empty sets, and
    // counting goes on for the nodes it adopts.
    d.crash();
    d.spawn();
    assert_eq!(elements(&lab, &d.tenant), vec![]);
    assert_eq!(netlab::tcp_probe(&n1.ns, METADATA), None);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = flows(&get(&d.client(), "/metrics"));
        if f.iter()
            .any(|(_, n, c, v)| *n == n1.name && c == "metadata" && *v > 0)
        {
            assert!(f.iter().all(|(_, n, _, _)| *n == n1.name), "{f:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{n1:?} not counted after restart: {f:?}",
            n1 = n1.name
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Deleting the node removes its elements; stopping the daemon removes the table.
    d.vm_ok(&["delete", &n1.name]);
    assert!(
        !elements(&lab, &d.tenant)
            .iter()
            .any(|(_, a, _)| *a == n1.ip),
        "{:?}",
        elements(&lab, &d.tenant)
    );
    let table = format!("bulkhead_{}", d.tenant.replace('-', "_"));
    d.stop_and_assert_clean();
    let (_, tables) = lab.host_sh("nft list tables");
    assert!(!tables.contains(&table), "{tables}");
}
