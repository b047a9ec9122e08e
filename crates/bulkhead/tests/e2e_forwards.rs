//! Port forwards and the tenant network's host-side limits, end to end, on a network lab's
//! host: a forward reached from the lab's internet, host ports taken or not the tenant's, PROXY
//! protocol v2 from trusted and untrusted upstreams, the egress rate limit, a range that
//! overlaps another tenant's, and the network and forwards surviving kill -9 of the daemon.
//! Nothing here runs in, or sends traffic out of, the machine's root network namespace.

mod common;

use common::lab_nodes::{add, config, serve_in_node};
use common::netlab::{self, NetLab, DROPPED, HOST_UPLINK, INTERNET};
use common::{privileged, Daemon};
use std::path::Path;

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
