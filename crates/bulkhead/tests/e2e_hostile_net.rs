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
    let b = Daemon::start_in(&host, "db", &config(&[group("TENANT", "10.72.0.0/24", "")]));
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
    assert_eq!(
        netlab::tcp_probe_port(&a1.ns, HOST_UPLINK, netlab::PORT),
        None
    );
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
    for (server, got) in [
        (DNS, &dns_udp),
        (HOST_UPLINK, &host_udp),
        ("other", &other_udp),
    ] {
        let got = got.lock().unwrap().clone();
        assert!(
            got.iter().all(|p| !p.starts_with("spoof-")),
            "{server} received spoofed datagrams: {got:?}"
        );
        assert!(
            got.iter()
                .all(|p| !p.starts_with(&n1.name) && !p.starts_with(&b1.name)),
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

/// Starts `nc -ll -p PORT -e PROG` in the node, in a session of its own, and waits until it
/// listens (`-l` alone: one connection, then nothing more is accepted).
fn serve_in_node(d: &Daemon, node: &str, flags: &str, port: u16, prog: &str) {
    let script = format!(
        "setsid nc {flags} -p {port} {prog} </dev/null >/dev/null 2>&1 & \
         for i in $(seq 100); do grep -q ':{port:04X} [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 && exit 0; sleep 0.05; done; exit 1"
    );
    let (code, out, err) = d.sh(node, &script);
    assert_eq!(code, 0, "listener in {node} did not start: {out}{err}");
}

fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|r| r.count())
        .unwrap_or(0)
}

#[test]
fn forwards_reach_only_their_node_floods_are_bounded_and_connections_end_with_the_node() {
    if !privileged() {
        return;
    }
    let lab = NetLab::new();
    let host = lab.host_ns();
    let mut a = Daemon::start_in(&host, "fa", &config(&[group("TENANT", "10.73.0.0/24", "")]));
    let b = Daemon::start_in(&host, "fb", &config(&[group("TENANT", "10.74.0.0/24", "")]));
    let a1 = add(&a, &a.tenant);
    let b1 = add(&b, &b.tenant);
    serve_in_node(&a, &a1.name, "-ll", 8080, "-e cat");

    // Another tenant cannot open, list or close a forward to this node: 404, exactly as for a
    // node that does not exist; and a request cannot name a target address of its own.
    let body = r#"{"host_port": 0, "node_port": 8080}"#;
    let missing = format!("{}-99", a.tenant);
    for (m, path, body) in [
        (Method::POST, "/vm/NODE/forwards", body),
        (Method::GET, "/vm/NODE/forwards", ""),
        (Method::DELETE, "/vm/NODE/forwards/18080", ""),
    ] {
        let (st, v) = call(&b, m.clone(), &path.replace("NODE", &a1.name), body);
        let (st2, v2) = call(&b, m.clone(), &path.replace("NODE", &missing), body);
        assert_eq!((st, &v["code"]), (404, &v2["code"]), "{m} {path}: {v}");
        assert_eq!(st2, 404);
    }
    for extra in [
        r#""node_ip": "10.74.0.2""#,
        r#""target": "198.51.100.1""#,
        r#""node": "x""#,
    ] {
        let (st, v) = call(
            &a,
            Method::POST,
            &format!("/vm/{}/forwards", a1.name),
            &format!(r#"{{"host_port": 0, "node_port": 8080, {extra}}}"#),
        );
        assert_eq!(st, 400, "{extra}: {v}");
    }
    // A forward relays to its own node's address and port, nothing else.
    let (st, v) = call(
        &a,
        Method::POST,
        &format!("/vm/{}/forwards", a1.name),
        r#"{"host_port": 18080, "node_port": 8080}"#,
    );
    assert_eq!(st, 201, "{v}");
    let echo = |port: u16, msg: &'static str| {
        netlab::in_ns(&host, move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
            s.write_all(msg.as_bytes()).ok()?;
            let mut b = vec![0u8; msg.len()];
            s.read_exact(&mut b).ok()?;
            Some(String::from_utf8_lossy(&b).into_owned())
        })
    };
    assert_eq!(echo(18080, "ping\n").as_deref(), Some("ping\n"));
    let _ = &b1;

    // A flood: the node's service is stopped (it listens but accepts nothing), so once its
    // backlog is full every further connection through the forward waits for the node. The
    // daemon holds a bounded number of them (the rest wait in the kernel's backlog of the
    // forward's port) and its API keeps answering.
    serve_in_node(&a, &a1.name, "-ll", 9090, "-e cat");
    let (code, out, err) = a.sh(&a1.name, "for p in $(pidof nc); do grep -q 9090 /proc/$p/cmdline && kill -STOP $p && echo $p; done; true");
    assert!(code == 0 && !out.trim().is_empty(), "{out}{err}");
    let (st, v) = call(
        &a,
        Method::POST,
        &format!("/vm/{}/forwards", a1.name),
        r#"{"host_port": 19090, "node_port": 9090}"#,
    );
    assert_eq!(st, 201, "{v}");
    let before = fds(a.pid());
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let h = host.clone();
    let flood = std::thread::spawn(move || {
        netlab::in_ns(&h, move || {
            let mut held = Vec::new();
            for _ in 0..700 {
                if let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", 19090)) {
                    held.push(s);
                }
            }
            opened_tx.send(held.len()).unwrap();
            let _ = stop_rx.recv();
        })
    });
    let opened = opened_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let (st, v) = call(&a, Method::GET, &format!("/vm/{}/forwards", a1.name), "");
    let api = t0.elapsed();
    let during = fds(a.pid());
    eprintln!(
        "flood: {opened} connections opened; daemon fds {before} -> {during}; API answered in {api:?}"
    );
    assert_eq!(st, 200, "{v}");
    assert!(api < Duration::from_secs(2), "API stalled: {api:?}");
    assert!(
        during < before + 2 * 256 + 32,
        "the daemon holds {during} fds (from {before}) for {opened} connections: unbounded"
    );
    stop_tx.send(()).unwrap();
    flood.join().unwrap();
    // The other forward kept working and works after the flood.
    assert_eq!(echo(18080, "after\n").as_deref(), Some("after\n"));

    // Delete the node while a connection through its forward is open: the connection ends
    // (it must not be relayed on to an address the node no longer holds), the port closes.
    let h = host.clone();
    let open = netlab::in_ns(&h, || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", 18080)).unwrap();
        s.write_all(b"x\n").unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).unwrap();
        s
    });
    a.vm_ok(&["delete", &a1.name]);
    let ended = netlab::in_ns(&host, move || {
        use std::io::Read;
        let mut s = open;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 16];
        !matches!(s.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock)
    });
    assert!(
        ended,
        "a connection through a deleted node's forward stayed open"
    );
    assert_eq!(echo(18080, "gone\n"), None, "the forward outlived its node");

    // After a crash: a node that died while the daemon was down does not get its forward back.
    let a2 = add(&a, &a.tenant);
    serve_in_node(&a, &a2.name, "-ll", 8080, "-e cat");
    a.vm_ok(&["forward", &a2.name, "18081:8080"]);
    assert_eq!(echo(18081, "two\n").as_deref(), Some("two\n"));
    a.crash();
    let sup = a.supervisor_state(&a2.name)["supervisor_pid"]
        .as_i64()
        .unwrap() as i32;
    // SAFETY: killing the supervisor this test's daemon started, by its recorded pid.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(200));
    a.spawn();
    assert_eq!(
        echo(18081, "two\n"),
        None,
        "a dead node's forward was reopened"
    );
    a.stop_and_assert_clean();
    b.stop_and_assert_clean();
}
