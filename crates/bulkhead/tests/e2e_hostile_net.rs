//! A hostile tenant against DNS and port forwards, end to end in a private lab (see
//! `common/netlab.rs`): nodes may reach their own group's DNS servers on port 53 and nothing
//! else on port 53, never with a borrowed source address, and never with another tenant's or
//! group's DNS allowance; a forward reaches only its own node, a flood through it is bounded,
//! and its connections end with the node.

mod common;

use bulkhead_api::client::full_body;
use common::netlab::{self, NetLab, DNS, HOST_UPLINK, INTERNET, INTERNET2};
use common::{privileged, Daemon};
use http_body_util::BodyExt;
use hyper::Method;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Sends a request; (status, JSON answer).
fn call(d: &Daemon, m: Method, path: &str, body: &str) -> (u16, serde_json::Value) {
    let c = d.client();
    common::rt().block_on(async {
        let r = c
            .send(
                m,
                path,
                full_body(body.as_bytes().to_vec()),
                Some("application/json"),
            )
            .await
            .unwrap();
        let st = r.status().as_u16();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (st, serde_json::from_slice(&b).unwrap_or_default())
    })
}

struct N {
    name: String,
    ip: String,
    ns: PathBuf,
}

fn add(d: &Daemon, group: &str) -> N {
    let (st, v) = call(
        d,
        Method::POST,
        &format!("/hostgroup/{group}/nodes?wait=agent"),
        "{}",
    );
    assert!(st == 200 || st == 201, "create: {st} {v}");
    let name = v["hostname"].as_str().unwrap().to_string();
    N {
        ns: d.node_netns(&name),
        ip: v["ip"].as_str().unwrap().to_string(),
        name,
    }
}

fn group(name: &str, range: &str, dns: &str) -> String {
    format!(
        "    - name: {name}\n      ram_mb: 128\n      network: {{ mode: isolated, range: {range}, allow: [\"{INTERNET}/32\"] }}\n{dns}"
    )
}

fn config(groups: &[String]) -> String {
    format!(
        "config:\n  tenant: TENANT\n  host_groups:\n{}  graceful_shutdown: false\n  api:\n    bind_address: SOCKET\n",
        groups.concat()
    )
}

#[test]
fn dns_reaches_only_the_groups_servers_and_never_with_a_borrowed_source() {
    if !privileged() {
        return;
    }
    let lab = NetLab::new();
    let (host, inet) = (lab.host_ns(), lab.inet_ns());
    // Port 53 everywhere a node might try it: the group's servers (one out in the lab's
    // internet, one on the host itself, like a local resolver), and another port-53 host.
    let dns_udp = netlab::udp_listen(&inet, DNS, 53, "dns53");
    let host_udp = netlab::udp_listen(&host, HOST_UPLINK, 53, "host53");
    netlab::listen_port(&host, HOST_UPLINK, 53, "host53");
    let other_udp = netlab::udp_listen(&inet, INTERNET2, 53, "other53");
    netlab::listen_port(&inet, INTERNET2, 53, "other53");

    let dns = format!("      dns_servers: [\"{DNS}\", \"{HOST_UPLINK}\"]\n");
    let a = Daemon::start_in(
        &host,
        "da",
        &config(&[
            group("TENANT", "10.71.0.0/24", &dns),
            group("nodns", "10.71.1.0/24", ""),
        ]),
    );
    let b = Daemon::start_in(
        &host,
        "db",
        &config(&[group("TENANT", "10.72.0.0/24", "")]),
    );
    let (a1, a2) = (add(&a, &a.tenant), add(&a, &a.tenant));
    let n1 = add(&a, "nodns");
    let b1 = add(&b, &b.tenant);

    // The group's servers answer on 53, over TCP and UDP, from a node of the group.
    for (server, name) in [(DNS, "dns53"), (HOST_UPLINK, "host53")] {
        assert_eq!(
            netlab::tcp_probe_port(&a1.ns, server, 53).as_deref(),
            Some(name),
            "tcp {server}:53"
        );
        assert_eq!(
            netlab::udp_probe_from(&a1.ns, None, server, 53, "a1-plain").as_deref(),
            Some(name),
            "udp {server}:53"
        );
    }
    // Not another port of those servers, not another port-53 destination.
    assert_eq!(netlab::tcp_probe_port(&a1.ns, DNS, netlab::PORT), None);
    assert_eq!(netlab::tcp_probe_port(&a1.ns, HOST_UPLINK, netlab::PORT), None);
    assert_eq!(netlab::tcp_probe_port(&a1.ns, INTERNET2, 53), None);
    assert_eq!(
        netlab::udp_probe_from(&a1.ns, None, INTERNET2, 53, "a1-other"),
        None
    );

    // Another group of the same tenant, and another tenant, have no DNS allowance: neither
    // server answers them, over either protocol.
    for (who, n) in [("group nodns", &n1), ("tenant b", &b1)] {
        for server in [DNS, HOST_UPLINK] {
            assert_eq!(
                netlab::tcp_probe_port(&n.ns, server, 53),
                None,
                "{who} reached {server}:53 over tcp"
            );
            let tag = format!("{}-{server}", n.name);
            assert_eq!(
                netlab::udp_probe_from(&n.ns, None, server, 53, &tag),
                None,
                "{who} reached {server}:53 over udp"
            );
        }
    }

    // Spoofing toward the DNS servers: a node sending as its neighbour, as a node of another
    // group, as its gateway or as an outside address reaches neither server (a reply would
    // go to the address it borrowed: a reflection onto other nodes).
    let gateway = {
        let mut o: Vec<u8> = a1.ip.split('.').map(|x| x.parse().unwrap()).collect();
        o[3] -= 1;
        format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3])
    };
    for fake in [&a2.ip, &n1.ip, &b1.ip, &gateway, &"10.71.0.9".to_string()] {
        for server in [DNS, HOST_UPLINK] {
            let tag = format!("spoof-{fake}-{server}");
            netlab::udp_probe_from(&a1.ns, Some(fake), server, 53, &tag);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for (server, got) in [(DNS, &dns_udp), (HOST_UPLINK, &host_udp), ("other", &other_udp)] {
        let got = got.lock().unwrap().clone();
        assert!(
            got.iter().all(|p| !p.starts_with("spoof-")),
            "{server} received spoofed datagrams: {got:?}"
        );
        assert!(
            got.iter().all(|p| !p.starts_with(&n1.name) && !p.starts_with(&b1.name)),
            "{server} received datagrams of nodes without a DNS allowance: {got:?}"
        );
    }
    assert!(
        host_udp.lock().unwrap().iter().any(|p| p == "a1-plain"),
        "the control datagram never arrived"
    );
    a.stop_and_assert_clean();
    b.stop_and_assert_clean();
}
