//! Network isolation, end to end: daemons of four tenants share one lab "host" namespace
//! (isolated, isolated with a narrow allow list and DNS, two bridge tenants), and every source x
//! destination pair is checked with real TCP connections and ICMP echoes. Nothing here runs
//! in, or sends traffic out of, the machine's root network namespace.

mod common;

use bulkhead_api::client::full_body;
use common::lab_nodes::{add, config, post, N};
use common::netlab::{self, NetLab, DNS, DROPPED, HOST_UPLINK, INTERNET, INTERNET2, METADATA};
use common::{privileged, Daemon};
use http_body_util::BodyExt;
use hyper::Method;

fn get_text(d: &Daemon, path: &str) -> String {
    let c = d.client();
    common::rt().block_on(async {
        let r = c
            .send(Method::GET, path, full_body(Vec::new()), None)
            .await
            .unwrap();
        String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes()).into_owned()
    })
}

/// Runs a shell snippet inside a node through the CLI; (exit code, stdout).
fn node_sh(sock: &str, node: &str, script: &str) -> (i32, String) {
    let o = common::cli(&[
        "vm", "exec", "--socket", sock, node, "--", "sh", "-c", script,
    ]);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn reach(from: &N, to: &str) -> (bool, bool) {
    if let Some(sock) = &from.vm_socket {
        let (c, out) = node_sh(
            sock,
            &from.name,
            &format!("nc -w 2 {to} {} </dev/null", netlab::PORT),
        );
        let (p, _) = node_sh(
            sock,
            &from.name,
            &format!("ping -c 1 -W 1 {to} >/dev/null 2>&1"),
        );
        return (c == 0 && !out.trim().is_empty(), p == 0);
    }
    (
        netlab::tcp_probe(&from.ns, to).is_some(),
        netlab::ping(&from.ns, to),
    )
}

fn counter(lab: &NetLab, tenant: &str, name: &str) -> u64 {
    let (_, out) = lab.host_sh(&format!(
        "nft -j list counter inet bulkhead_{} {name}",
        tenant.replace('-', "_")
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|o| o["counter"]["packets"].as_u64())
        .unwrap_or(0)
}

#[test]
fn reachability_matrix_spoofing_overrides_and_cleanup() {
    if !privileged() {
        return;
    }
    let lab = NetLab::new();
    let host = lab.host_ns();
    let a = Daemon::start_in(
        &host,
        "na",
        &config(
            "isolated",
            "10.61.0.0/24",
            ", drop: [\"203.0.113.128/25\"]",
            "",
        ),
    );
    let b = Daemon::start_in(
        &host,
        "nb",
        &config(
            "isolated",
            "10.62.0.0/24",
            ", allow: [\"203.0.113.0/28\"]",
            &format!("      dns_servers: [\"{DNS}\"]\n"),
        ),
    );
    let c = Daemon::start_in(
        &host,
        "nc",
        &config(
            "bridge",
            "10.63.0.0/24",
            ", drop: [\"203.0.113.128/25\"]",
            "",
        ),
    );
    let d = Daemon::start_in(
        &host,
        "nd",
        &config(
            "bridge",
            "10.66.0.0/24",
            ", drop: [\"203.0.113.128/25\"]",
            "",
        ),
    );
    let (a1, a2) = (add(&a, "{}"), add(&a, "{}"));
    let (b1, b2) = (add(&b, "{}"), add(&b, "{}"));
    let (c1, c2) = (add(&c, "{}"), add(&c, "{}"));
    let (d1, d2) = (add(&d, "{}"), add(&d, "{}"));
    // A microVM tenant: the same rules must hold for a guest behind QEMU's tap.
    let e = Daemon::start_in(
        &host,
        "ne",
        &config(
            "isolated",
            "10.67.0.0/24",
            ", drop: [\"203.0.113.128/25\"]",
            "",
        )
        .replace(
            "  graceful_shutdown",
            "  hypervisor: qemu\n  graceful_shutdown",
        )
        .replace("ram_mb: 128", "ram_mb: 192\n      storage_size: 128M"),
    );
    let (e1, e2) = (add(&e, "{}"), add(&e, "{}"));
    assert_eq!(a1.ip, "10.61.0.2");
    assert_eq!(a2.ip, "10.61.0.6");
    assert_eq!(c1.ip, "10.63.0.2");
    let gw = |n: &N| {
        let mut o: Vec<u8> = n.ip.split('.').map(|x| x.parse().unwrap()).collect();
        o[3] = if n.ip.starts_with("10.63.") || n.ip.starts_with("10.66.") {
            1
        } else {
            o[3] - 1
        };
        format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])
    };

    // (source, destination, expected tcp, expected icmp, why)
    let mut cases: Vec<(&N, String, bool, bool, &str)> = vec![];
    let rows: [(&N, &N, Vec<&N>, bool); 5] = [
        (&a1, &a2, vec![&b1, &c1, &e1], false),
        (&b1, &b2, vec![&a1, &c1], false),
        (&c1, &c2, vec![&a1, &d1, &e2], true),
        (&d1, &d2, vec![&b1, &c2], true),
        (&e1, &e2, vec![&a1, &c1], false),
    ];
    for (s, same, others, same_ok) in rows {
        cases.push((
            s,
            same.ip.clone(),
            same_ok,
            same_ok,
            "node of the same group",
        ));
        for o in others {
            cases.push((s, o.ip.clone(), false, false, "node of another tenant"));
        }
        cases.push((s, HOST_UPLINK.into(), false, false, "host address"));
        cases.push((s, gw(s), false, false, "the node's gateway (host)"));
        cases.push((s, METADATA.into(), false, false, "metadata address"));
        cases.push((
            s,
            DROPPED.into(),
            false,
            false,
            "drop-listed (or outside allow)",
        ));
        cases.push((s, INTERNET.into(), true, true, "internet"));
        cases.push((s, INTERNET2.into(), true, true, "internet"));
    }
    // b's allow list stops at 203.0.113.0/28: its DNS server is reachable on port 53 only.
    cases.push((&b1, DNS.into(), false, false, "outside allow list"));
    cases.push((&a1, DNS.into(), true, true, "allow 0.0.0.0/0"));
    // Probes are independent: run them at once (a denied probe waits out its timeout).
    let wrong: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(s, dst, tcp, icmp, why)| {
                sc.spawn(move || {
                    let got = reach(s, dst);
                    (got != (*tcp, *icmp)).then(|| {
                        format!(
                            "{} -> {dst} ({why}): want tcp={tcp} icmp={icmp}, got tcp={} icmp={}",
                            s.name, got.0, got.1
                        )
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(
        wrong.is_empty(),
        "reachability matrix:\n{}",
        wrong.join("\n")
    );

    // No ICMP redirects on a node's link, in either direction.
    let (_, v) = netlab::sh_in(&a1.ns, "cat /proc/sys/net/ipv4/conf/eth0/accept_redirects");
    assert_eq!(v.trim(), "0");
    // The workload itself (not just its namespace) sees the same, through the agent.
    let (code, out, _) = a.sh(&a1.name, &format!("nc -w 2 {INTERNET} 7000 </dev/null"));
    assert_eq!((code, out.trim()), (0, "internet"));
    let (code, _, _) = a.sh(&a1.name, &format!("nc -w 2 {} 7000 </dev/null", a2.ip));
    assert_ne!(code, 0, "a node reached another node of its tenant");
    // DNS: resolv.conf written, port 53 reachable although outside the allow list.
    let (_, resolv, _) = b.sh(&b1.name, "cat /etc/resolv.conf");
    assert_eq!(resolv.trim(), format!("nameserver {DNS}"));
    let (code, out, _) = b.sh(&b1.name, &format!("nc -w 2 {DNS} 53 </dev/null"));
    assert_eq!((code, out.trim()), (0, "dns53"));

    // The host (where port forwards connect from) reaches a node's listener.
    assert_eq!(
        netlab::tcp_probe(&host, &a1.ip).as_deref(),
        Some(a1.name.as_str())
    );
    // ...but a host user other than root cannot.
    let (ok, out) = netlab::sh_in(
        &host,
        &format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups busybox nc -w 2 {} {} </dev/null",
            a1.ip,
            netlab::PORT
        ),
    );
    assert!(
        !ok || out.trim().is_empty(),
        "a non-root host process reached a node: {out}"
    );
    assert!(counter(&lab, &a.tenant, "deny_host_user") > 0);
    // Inbound: the internet cannot open connections to nodes, even with a route to them.
    netlab::sh_in(&lab.inet_ns(), "ip route add 10.61.0.0/16 via 198.51.100.1");
    assert_eq!(netlab::tcp_probe(&lab.inet_ns(), &a1.ip), None);
    assert!(counter(&lab, &a.tenant, "deny_inbound") > 0);

    // Spoofing: another node's address, or any other, as source is dropped, in both modes.
    let before = counter(&lab, &a.tenant, "deny_spoof");
    for (n, fake) in [
        (&a1, &a2.ip),
        (&a1, &"10.61.0.1".to_string()),
        (&a1, &"198.51.100.77".to_string()),
    ] {
        assert_eq!(
            netlab::tcp_probe_from(&n.ns, Some(fake), INTERNET),
            None,
            "{} spoofing {fake}",
            n.name
        );
    }
    assert!(counter(&lab, &a.tenant, "deny_spoof") > before);
    assert_eq!(
        netlab::tcp_probe_from(&c1.ns, Some(&c2.ip), INTERNET),
        None,
        "bridge spoof to internet"
    );
    assert_eq!(
        netlab::tcp_probe_from(&c1.ns, Some(&c2.ip), &c2.ip),
        None,
        "bridge spoof to a peer"
    );
    assert_eq!(
        netlab::tcp_probe_from(&c1.ns, Some(&c1.ip), INTERNET).as_deref(),
        Some("internet")
    );

    // Deny counters are exported per tenant.
    let metrics = get_text(&a, "/metrics");
    assert!(
        metrics.contains(&format!(
            "bulkhead_network_denied_packets_total{{tenant=\"{}\",rule=\"deny_node\"}}",
            a.tenant
        )),
        "{metrics}"
    );

    // Per-node overrides narrow only.
    let a3 = add(
        &a,
        &format!("{{\"network\":{{\"drop\":[\"{INTERNET}/32\"]}}}}"),
    );
    assert_eq!(reach(&a3, INTERNET), (false, false));
    assert_eq!(reach(&a3, INTERNET2), (true, true));
    let a4 = add(
        &a,
        &format!("{{\"network\":{{\"allow\":[\"{INTERNET2}/32\"]}}}}"),
    );
    assert_eq!(reach(&a4, INTERNET2), (true, true));
    assert_eq!(
        reach(&a4, INTERNET),
        (false, false),
        "allow override did not narrow"
    );
    a.vm_ok(&["delete", &a4.name]);
    let (st, wide) = post(
        &b,
        &format!("/hostgroup/{}/nodes", b.tenant),
        r#"{"network":{"allow":["0.0.0.0/0"]}}"#,
    );
    assert_eq!(st, 400);
    assert!(
        wide["error"].as_str().unwrap().contains("only narrow"),
        "{wide}"
    );
    a.vm_ok(&["delete", &a3.name]);
    let (_, ruleset) = lab.host_sh(&format!("nft list table inet bulkhead_{}", a.tenant));
    assert!(
        !ruleset.contains("node_10_61_0_"),
        "policy chain left: {ruleset}"
    );

    // Teardown: every link and table of every tenant goes with its daemon.
    // The guest's own view: its address, its route, nothing of the host.
    let (_, addr) = node_sh(e.sock(), &e1.name, "ip -4 addr show eth0; ip route");
    assert!(
        addr.contains(&format!("{}/30", e1.ip)) && addr.contains("default via 10.67.0.1"),
        "{addr}"
    );
    // A guest spoofing its neighbour's address gets nowhere either.
    let before = counter(&lab, &e.tenant, "deny_spoof");
    let (code, _) = node_sh(
        e.sock(),
        &e1.name,
        &format!(
            "ip addr add {}/32 dev eth0 && ping -c 2 -W 1 -I {} {INTERNET}",
            e2.ip, e2.ip
        ),
    );
    assert_ne!(code, 0, "a spoofing guest reached the internet");
    assert!(counter(&lab, &e.tenant, "deny_spoof") > before);

    let tenants = [
        a.tenant.clone(),
        b.tenant.clone(),
        c.tenant.clone(),
        d.tenant.clone(),
        e.tenant.clone(),
    ];
    for x in [a, b, c, d, e] {
        x.stop_and_assert_clean();
    }
    let (_, links) = lab.host_sh("ip -br link");
    assert!(
        !links
            .lines()
            .any(|l| l.starts_with("bv") || l.starts_with("bb")),
        "links left: {links}"
    );
    let (_, tables) = lab.host_sh("nft list tables");
    for t in tenants {
        assert!(
            !tables.contains(&t.replace('-', "_")),
            "table left: {tables}"
        );
    }
}
