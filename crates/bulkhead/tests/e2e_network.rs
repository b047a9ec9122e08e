//! Network isolation, end to end: daemons of four tenants share one lab "host" namespace
//! (isolated, isolated with a narrow allow list and DNS, two bridge tenants), and every source x
//! destination pair is checked with real TCP connections and ICMP echoes. Nothing here runs
//! in, or sends traffic out of, the machine's root network namespace.

mod common;

use bulkhead_api::client::full_body;
use common::netlab::{self, NetLab, DNS, DROPPED, HOST_UPLINK, INTERNET, INTERNET2, METADATA};
use common::{privileged, Daemon};
use http_body_util::BodyExt;
use hyper::Method;
use std::path::{Path, PathBuf};

/// POSTs `body` and returns (status, JSON answer).
fn post(d: &Daemon, path: &str, body: &str) -> (u16, serde_json::Value) {
    let c = d.client();
    common::rt().block_on(async {
        let r = c
            .send(
                Method::POST,
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

fn config(mode: &str, range: &str, extra_net: &str, extra_group: &str) -> String {
    format!(
        "config:\n  tenant: TENANT\n  host_groups:\n    - name: TENANT\n      ram_mb: 128\n      network: {{ mode: {mode}, range: {range}{extra_net} }}\n{extra_group}  graceful_shutdown: false\n  api:\n    bind_address: SOCKET\n"
    )
}

struct N {
    name: String,
    ip: String,
    ns: PathBuf,
    /// microVM nodes are probed from inside the guest, through the agent (QEMU's namespace
    /// only bridges the guest's tap).
    vm_socket: Option<String>,
}

fn add(d: &Daemon, body: &str) -> N {
    let (st, v) = post(
        d,
        &format!("/hostgroup/{}/nodes?wait=agent", d.tenant),
        body,
    );
    assert!(st == 200 || st == 201, "create: {st} {v}");
    let name = v["hostname"].as_str().unwrap().to_string();
    let ip = v["ip"].as_str().unwrap().to_string();
    // A listener in the node, run by the node itself: answers with the node's name.
    serve_in_node(d, &name, netlab::PORT, &format!("echo {name}"));

    N {
        ns: d.node_netns(&name),
        vm_socket: d
            .config_text()
            .contains("hypervisor: qemu")
            .then(|| d.sock().to_string()),
        name,
        ip,
    }
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

/// Starts `nc -ll -p PORT -e PROG` in the node, in a session of its own (an exec's process
/// group is killed when the exec's client goes), and waits until it listens.
fn serve_in_node(d: &Daemon, node: &str, port: u16, prog: &str) {
    let script = format!(
        "setsid nc -ll -p {port} -e {prog} </dev/null >/dev/null 2>&1 & \
         for i in $(seq 100); do grep -q ':{port:04X} [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 && exit 0; sleep 0.05; done; exit 1"
    );
    let (code, out, err) = d.sh(node, &script);
    assert_eq!(code, 0, "listener in {node} did not start: {out}{err}");
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

fn send_from(ns: &Path, addr: &str, port: u16, data: Vec<u8>) {
    let addr = addr.to_string();
    netlab::in_ns(ns, move || {
        use std::io::Write;
        let mut s =
            std::net::TcpStream::connect((addr.as_str(), port)).expect("connect to forward");
        s.write_all(&data).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut b = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut b);
    });
}

fn proxy_v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[198, 51, 100, 1]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&18081u16.to_be_bytes());
    h
}

/// Waits until the node's sink file holds `want` (the relay is asynchronous).
fn sink_has(d: &Daemon, node: &str, want: &str) -> String {
    let mut got = String::new();
    for _ in 0..50 {
        got = d.sh(node, "cat /tmp/got 2>/dev/null").1;
        if got.contains(want) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    got
}

#[test]
fn forwards_proxy_protocol_rate_limit_overlap_and_crash_recovery() {
    if !privileged() {
        return;
    }
    let lab = NetLab::new();
    let host = lab.host_ns();
    let inet = lab.inet_ns();
    let mut a = Daemon::start_in(&host, "nf", &config("isolated", "10.64.0.0/24", "", ""));
    let a1 = add(&a, "{}");
    let (code, _, err) = a.sh(
        &a1.name,
        "printf '#!/bin/sh\\ncat >> /tmp/got\\n' > /bin/sink && chmod +x /bin/sink",
    );
    assert_eq!(code, 0, "{err}");
    serve_in_node(&a, &a1.name, 8080, "/bin/sink");

    // A plain forward, opened with the CLI, reachable from the internet namespace.
    let out = a.vm_ok(&["forward", &a1.name, "18080:8080", "--bind", "0.0.0.0"]);
    assert_eq!(out.trim(), format!("0.0.0.0:18080 -> {}:8080", a1.name));
    send_from(&inet, HOST_UPLINK, 18080, b"plain\n".to_vec());
    assert!(sink_has(&a, &a1.name, "plain").contains("plain"));
    // The same host port twice: 409, named.
    let o = a.vm(&["forward", &a1.name, "18080:8080", "--bind", "0.0.0.0"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("already in use"));

    // Privileged host ports are not the tenant's to open (config.forward_ports).
    let o = a.vm(&["forward", &a1.name, "80:8080"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("forward_ports"));

    // PROXY v2 from a trusted upstream: header removed, client recorded as information.
    a.vm_ok(&[
        "forward",
        &a1.name,
        "18081:8080",
        "--bind",
        "0.0.0.0",
        "--proxy-protocol",
        "--trusted-proxy",
        "198.51.100.2/32",
    ]);
    let mut msg = proxy_v2([192, 0, 2, 99], 5555);
    msg.extend_from_slice(b"viaproxy\n");
    send_from(&inet, HOST_UPLINK, 18081, msg);
    let got = sink_has(&a, &a1.name, "viaproxy");
    assert!(got.contains("viaproxy") && !got.contains("QUIT"), "{got:?}");
    let list = a.vm_ok(&["forwards", &a1.name, "--json"]);
    let fs: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    let f = fs.iter().find(|f| f["listen"] == "0.0.0.0:18081").unwrap();
    assert_eq!(f["last_client"], "192.0.2.99:5555");
    assert!(f["last_peer"]
        .as_str()
        .unwrap()
        .starts_with("198.51.100.2:"));

    // The same header from an upstream that is not trusted is data.
    a.vm_ok(&[
        "forward",
        &a1.name,
        "18082:8080",
        "--bind",
        "0.0.0.0",
        "--proxy-protocol",
        "--trusted-proxy",
        "10.0.0.0/8",
    ]);
    let mut msg = proxy_v2([192, 0, 2, 66], 6666);
    msg.extend_from_slice(b"untrusted\n");
    send_from(&inet, HOST_UPLINK, 18082, msg);
    let got = sink_has(&a, &a1.name, "untrusted");
    assert!(got.contains("QUIT") && got.contains("untrusted"), "{got:?}");
    let list = a.vm_ok(&["forwards", &a1.name, "--json"]);
    assert!(!list.contains("192.0.2.66"), "{list}");

    // Closing a forward closes its port.
    a.vm_ok(&["unforward", &a1.name, "18080"]);
    assert!(netlab::in_ns(&inet, || std::net::TcpStream::connect((
        HOST_UPLINK,
        18080
    ))
    .is_err()));

    // Egress limit: a node of a group with egress_mbps: 8 sends at about 1 MB/s.
    let r = Daemon::start_in(
        &host,
        "nr",
        &config("isolated", "10.65.0.0/24", ", egress_mbps: 8", ""),
    );
    let r1 = add(&r, "{}");
    let limited = netlab::upload(&r1.ns, INTERNET, 2 << 20);
    let free = netlab::upload(&a1.ns, INTERNET, 2 << 20);
    eprintln!("2 MiB upload: limited {limited:?}, unlimited {free:?}");
    assert!(
        limited.as_secs_f64() > 1.4,
        "8 Mbit/s limit not enforced: {limited:?}"
    );
    assert!(
        limited.as_secs_f64() > 4.0 * free.as_secs_f64(),
        "{limited:?} vs {free:?}"
    );
    r.stop_and_assert_clean();

    // A tenant whose range overlaps a running tenant's is refused, naming the holder.
    let dir = tempfile::tempdir().unwrap();
    let cfgp = dir.path().join("t.yaml");
    std::fs::write(
        &cfgp,
        config("isolated", "10.64.0.0/23", "", "")
            .replace("TENANT", &common::unique_tenant("no"))
            .replace("SOCKET", dir.path().join("s.sock").to_str().unwrap()),
    )
    .unwrap();
    let o = std::process::Command::new("nsenter")
        .arg(format!("--net={}", host.display()))
        .args(["--", common::BIN, "up"])
        .arg(&cfgp)
        .arg("--state-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("overlaps 10.64.0.0/24") && err.contains(&a.tenant),
        "{err}"
    );

    // kill -9 of the daemon: the node keeps its network; a stray link is removed at restart;
    // the recorded forwards come back.
    let tag = format!(
        "{:04x}",
        bulkhead_core::uid_base(&a.tenant) / bulkhead_core::UID_COUNT - 16
    );
    a.crash();
    assert_eq!(
        netlab::tcp_probe(&a1.ns, INTERNET).as_deref(),
        Some("internet")
    );
    let stray = format!("bv{tag}0ff0");
    let (ok, out) = lab.host_sh(&format!(
        "ip link add {stray} type veth peer name straypeer"
    ));
    assert!(ok, "{out}");
    a.spawn();
    let (_, links) = lab.host_sh("ip -br link");
    assert!(!links.contains(&stray), "stray link kept: {links}");
    assert_eq!(
        netlab::tcp_probe(&a1.ns, INTERNET).as_deref(),
        Some("internet")
    );
    assert_eq!(
        netlab::tcp_probe(&a1.ns, DROPPED).as_deref(),
        Some("dropped"),
        "no drop list in this tenant"
    );
    send_from(&inet, HOST_UPLINK, 18081, {
        let mut m = proxy_v2([192, 0, 2, 7], 7777);
        m.extend_from_slice(b"after-restart\n");
        m
    });
    assert!(sink_has(&a, &a1.name, "after-restart").contains("after-restart"));
    a.stop_and_assert_clean();
    let (_, links) = lab.host_sh("ip -br link");
    assert!(
        !links.lines().any(|l| l.starts_with("bv")),
        "links left: {links}"
    );
}
