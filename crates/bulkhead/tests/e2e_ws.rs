//! End to end: the `shell` and `forward` WebSockets and node stats (issue #10, ADR 0019),
//! through a real daemon in a network namespace of its own, with Slicer's framing and
//! headers: a shell runs a command, sees its resize in `stty size` and hands back its exit
//! status (over the API and through `bulkhead vm shell`); a forward reaches a port served
//! inside the node (one listening on the node's loopback only too: the agent connects from
//! inside the node), a closed port answers 502 `port_closed`, other targets are refused; stats
//! figures move when a node burns CPU and fills memory; bad input gets a 4xx. The same over
//! a microVM, and over TCP with the bearer token (401 without).

mod common;

use bulkhead_api::shell::Frame;
use bulkhead_api::stats::NodeStat;
use bulkhead_api::{Client, ClientError};
use common::lab_nodes::{add, config, serve_in_node};
use common::netlab::{sh_in, Netns};
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// What a shell session printed, its exit status (session close frame) and its close frame.
async fn session(c: &Client, path: &str, frames: Vec<Frame>) -> (String, Option<i32>, String) {
    let mut ws = c.websocket(path, &[]).await.expect("shell upgrade");
    for f in frames {
        ws.send(Message::Binary(f.encode().into())).await.unwrap();
    }
    let (mut out, mut status, mut close) = (Vec::new(), None, String::new());
    let read = async {
        while let Some(m) = ws.next().await {
            match m.expect("shell message") {
                Message::Binary(b) => match Frame::decode(&b).expect("frame") {
                    Frame::Data(d) => out.extend_from_slice(&d),
                    Frame::SessionClose(c) => status = c,
                    f => panic!("unexpected frame {f:?}"),
                },
                Message::Close(Some(c)) => {
                    close = format!("{} {}", u16::from(c.code), c.reason);
                    break;
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("shell session ended in time");
    (String::from_utf8_lossy(&out).into_owned(), status, close)
}

fn refused(r: Result<bulkhead_api::ws::Socket, ClientError>) -> (u16, String, String) {
    match r {
        Ok(_) => panic!("upgrade was accepted"),
        Err(ClientError::Api { status, body }) => (status.as_u16(), body.code, body.error),
        Err(e) => panic!("not an API answer: {e}"),
    }
}

async fn stat(c: &Client, node: &str) -> bulkhead_api::stats::Snapshot {
    let v: Vec<NodeStat> = c.get(&format!("/node/{node}/stats")).await.unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].hostname, node);
    assert!(v[0].error.is_empty(), "{}", v[0].error);
    v[0].snapshot.clone().expect("snapshot")
}

#[test]
fn shell_forward_and_stats_over_a_real_daemon() {
    if !privileged() {
        return;
    }
    let ns = Netns::new();
    assert!(sh_in(&ns.path(), "ip link set lo up").0);
    let d = Daemon::start_in(
        &ns.path(),
        "ws",
        &config("isolated", "10.219.0.0/24", "", ""),
    );
    let n = add(&d, "{}"); // serves its own name on netlab::PORT
    let node = n.name.clone();
    let c = d.client();
    let rt = rt();

    // --- shell ---
    let path = format!("/vm/{node}/shell");
    let (out, status, close) = rt.block_on(session(
        &c,
        &path,
        vec![
            Frame::WindowSize {
                cols: 101,
                rows: 37,
            },
            Frame::Heartbeat,
            Frame::Data(b"stty size; exit 3\n".to_vec()),
        ],
    ));
    assert!(out.contains("37 101"), "stty size after resize: {out:?}");
    assert_eq!(status, Some(3), "{out}");
    assert_eq!(close, "1000 exit status 3");

    // The SDKs' query: shell, cwd, uid, gid.
    let (out, status, _) = rt.block_on(session(
        &c,
        &format!("{path}?shell=%2Fbin%2Fsh&cwd=%2Ftmp&uid=1000&gid=1000"),
        vec![Frame::Data(
            b"echo \"at $(pwd) as $(id -u)\"; exit\n".to_vec(),
        )],
    ));
    assert!(out.contains("at /tmp as 1000"), "{out:?}");
    assert_eq!(status, Some(0));

    // A client that sends shutdown ends the session (and its shell).
    let (_, status, close) = rt.block_on(session(
        &c,
        &path,
        vec![Frame::Data(b"sleep 600\n".to_vec()), Frame::Shutdown],
    ));
    assert_eq!(status, None);
    assert!(close.starts_with("1000 "), "{close}");

    // The CLI: stdin typed into the shell, its exit status as the command's.
    let mut cli = Command::new(BIN)
        .args(["vm", "shell", "--socket", d.sock(), &node])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cli.stdin
        .take()
        .unwrap()
        .write_all(b"echo from-cli; exit 7\n")
        .unwrap();
    let o = cli.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("from-cli"));

    // Bad input: 4xx before any upgrade.
    let (st, code, msg) = refused(rt.block_on(c.websocket(&format!("{path}?cmd=ls"), &[])));
    assert_eq!((st, code.as_str()), (400, "invalid_request"), "{msg}");
    assert!(msg.contains("unknown query parameter \"cmd\""), "{msg}");
    let (st, _, _) = refused(rt.block_on(c.websocket("/vm/nope-1/shell", &[])));
    assert_eq!(st, 404);
    let plain = rt.block_on(c.send(
        hyper::Method::GET,
        &path,
        bulkhead_api::client::full_body(""),
        None,
    ));
    assert_eq!(
        plain.unwrap().status().as_u16(),
        400,
        "a GET that is no upgrade"
    );

    // --- forward ---
    let port = common::netlab::PORT.to_string();
    for target in ["127.0.0.1", "localhost", n.ip.as_str()] {
        let t = format!("{target}:{port}");
        assert_eq!(
            rt.block_on(forward_read(&c, &node, &t)),
            node,
            "through {t}"
        );
    }
    // Bytes go in too: a node-side echo.
    serve_in_node(&d, &node, 7001, "/bin/cat");
    let echoed = rt.block_on(async {
        let mut ws = c
            .websocket(
                &format!("/vm/{node}/forward"),
                &[("X-Inlets-Upstream", "127.0.0.1:7001")],
            )
            .await
            .unwrap();
        ws.send(Message::Binary(b"ping over ws\n".to_vec().into()))
            .await
            .unwrap();
        let mut got = Vec::new();
        while !got.ends_with(b"\n") {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Binary(b)))) => got.extend_from_slice(&b),
                other => panic!("echo: {other:?}"),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    assert_eq!(echoed, "ping over ws\n");

    let fwd =
        |h: &[(&str, &str)]| refused(rt.block_on(c.websocket(&format!("/vm/{node}/forward"), h)));
    let (st, code, msg) = fwd(&[("X-Inlets-Upstream", "127.0.0.1:7999")]);
    assert_eq!((st, code.as_str()), (502, "port_closed"), "{msg}");
    assert!(msg.contains("port 7999"), "{msg}");
    // A service on the node's loopback only: reached from inside the node (the agent), and
    // not on the node's address, where nothing listens.
    serve_loopback(&d, &node, 7002);
    let page = rt.block_on(forward_http(&c, &node, "127.0.0.1:7002"));
    assert!(page.contains("loopback-only"), "{page:?}");
    let page = rt.block_on(forward_http(&c, &node, "localhost:7002"));
    assert!(page.contains("loopback-only"), "{page:?}");
    let (st, code, msg) = fwd(&[("X-Inlets-Upstream", &format!("{}:7002", n.ip))]);
    assert_eq!((st, code.as_str()), (502, "port_closed"), "{msg}");
    let (st, _, msg) = fwd(&[("X-Inlets-Upstream", "10.219.0.250:80")]);
    assert_eq!(st, 400);
    assert!(msg.contains("only the node itself"), "{msg}");
    let (st, _, msg) = fwd(&[]);
    assert!(st == 400 && msg.contains("X-Inlets-Upstream"), "{msg}");
    let (st, code, _) = fwd(&[("X-Inlets-Upstream", "unix:/run/docker.sock")]);
    assert_eq!((st, code.as_str()), (400, "unsupported"));

    // The CLI's `-L`: listens (in the daemon's namespace here) and tunnels each connection.
    let mut fw = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .args([
            "--",
            BIN,
            "vm",
            "forward",
            "--socket",
            d.sock(),
            &node,
            "-L",
        ])
        .arg(format!("0:127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(fw.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let local: u16 = line
        .split(" -> ")
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("forward said {line:?}"));
    let got = common::netlab::tcp_probe_port(&ns.path(), "127.0.0.1", local);
    let _ = fw.kill();
    let _ = fw.wait();
    assert_eq!(got.as_deref(), Some(node.as_str()), "through vm forward -L");

    // --- stats ---
    // Traffic on the node's interface (the forwards above stayed inside the node).
    let probe = common::netlab::tcp_probe_port(&ns.path(), &n.ip, common::netlab::PORT);
    assert_eq!(probe.as_deref(), Some(node.as_str()));
    let before = rt.block_on(stat(&c, &node));
    assert_eq!(before.total_memory, 128 << 20);
    assert!(before.total_cpus >= 1);
    assert!(before.pids > 0 && before.open_files > 0);
    assert!(before.memory_used > 0 && before.memory_used < before.total_memory);
    assert!(before.disk_space_total > 0, "{before:?}");
    assert!(
        before.network_read_total > 0.0,
        "the probe's bytes reached the node"
    );
    assert!(before.network_write_total > 0.0);
    // A fixed amount of work, then what the shell says it used (`times`: its own user and
    // system time): the node's CPU time must account for it however busy the host is.
    let (code, out, err) = d.sh(
        &node,
        "head -c 48m /dev/zero > /tmp/fill; i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; times",
    );
    assert_eq!(code, 0, "{err}");
    let secs = |t: &str| -> f64 {
        let (m, s) = t.trim_end_matches('s').split_once('m').unwrap();
        m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
    };
    let used: f64 = out
        .lines()
        .next()
        .unwrap_or_else(|| panic!("times said {out:?}"))
        .split_whitespace()
        .map(secs)
        .sum();
    assert!(used > 0.2, "the loop used {used}s");
    let after = rt.block_on(stat(&c, &node));
    assert!(
        after.cpu_usage_seconds >= before.cpu_usage_seconds + 0.9 * used,
        "cpu {} -> {} for {used}s of work",
        before.cpu_usage_seconds,
        after.cpu_usage_seconds
    );
    assert!(
        after.load_avg1 > before.load_avg1,
        "{} -> {}",
        before.load_avg1,
        after.load_avg1
    );
    assert!(
        after.memory_used >= before.memory_used + (40 << 20),
        "memory {} -> {}",
        before.memory_used,
        after.memory_used
    );
    assert!(after.disk_space_used >= before.disk_space_used + (40 << 20));
    let all: Vec<NodeStat> = rt.block_on(c.get("/nodes/stats")).unwrap();
    assert!(all
        .iter()
        .any(|s| s.hostname == node && s.snapshot.is_some()));
    // The wire names Slicer's SDKs decode.
    let raw: serde_json::Value = rt.block_on(c.get(&format!("/node/{node}/stats"))).unwrap();
    for k in [
        "totalCpus",
        "memoryUsedPercent",
        "loadAvg1",
        "diskIOInflight",
        "networkReadTotal",
    ] {
        assert!(raw[0]["snapshot"].get(k).is_some(), "{k} missing: {raw}");
    }
    assert!(raw[0]["created_at"].is_string());
    // A paused node still has figures; a stopped one has an error instead of a snapshot.
    d.vm_ok(&["pause", &node]);
    let paused = rt.block_on(stat(&c, &node));
    assert!(paused.memory_used > 0);
    d.vm_ok(&["resume", &node]);
    let init = d.supervisor_state(&node)["init_pid"].as_i64().unwrap() as i32;
    // SAFETY: killing the init of a node this test created (from outside its pid namespace).
    unsafe { libc::kill(init, libc::SIGKILL) };
    let mut stopped = None;
    for _ in 0..100 {
        let v: Vec<NodeStat> = rt.block_on(c.get(&format!("/node/{node}/stats"))).unwrap();
        if v[0].snapshot.is_none() {
            stopped = Some(v[0].error.clone());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let why = stopped.expect("a stopped node's stats say why");
    assert!(why.contains("is Stopped"), "{why}");
    d.vm_ok(&["delete", &node]);
    let e = rt
        .block_on(c.get::<serde_json::Value>("/node/nope-1/stats"))
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(404));
    let e = rt
        .block_on(c.get::<serde_json::Value>("/nodes/stats?x=1"))
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(400));

    d.stop_and_assert_clean();
}

/// Starts busybox `httpd` on the node's loopback only, serving a page saying so.
fn serve_loopback(d: &common::Daemon, node: &str, port: u16) {
    let script = format!(
        "mkdir -p /tmp/www && echo loopback-only > /tmp/www/index.html && \
         setsid httpd -p 127.0.0.1:{port} -h /tmp/www </dev/null >/dev/null 2>&1; \
         for i in $(seq 100); do grep -q '0100007F:{port:04X} 00000000:0000 0A' /proc/net/tcp && exit 0; sleep 0.05; done; exit 1"
    );
    let (code, out, err) = d.sh(node, &script);
    assert_eq!(
        code, 0,
        "loopback listener in {node} did not start: {out}{err}"
    );
}

/// An HTTP/1.0 GET of `/` through a `forward` WebSocket to `target`: the whole answer.
async fn forward_http(c: &Client, node: &str, target: &str) -> String {
    let mut ws = c
        .websocket(
            &format!("/vm/{node}/forward"),
            &[("X-Inlets-Upstream", target)],
        )
        .await
        .expect("forward upgrade");
    ws.send(Message::Binary(b"GET / HTTP/1.0\r\n\r\n".to_vec().into()))
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        match m {
            Message::Binary(b) => got.extend_from_slice(&b),
            Message::Close(_) => break,
            _ => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads what a `forward` WebSocket to `target` in `node` carries until it closes.
async fn forward_read(c: &Client, node: &str, target: &str) -> String {
    let mut ws = c
        .websocket(
            &format!("/vm/{node}/forward"),
            &[("X-Inlets-Upstream", target)],
        )
        .await
        .expect("forward upgrade");
    let mut got = Vec::new();
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(20), ws.next()).await {
        match m {
            Message::Binary(b) => got.extend_from_slice(&b),
            Message::Close(_) => break,
            _ => {}
        }
    }
    String::from_utf8_lossy(&got).trim().to_string()
}

#[test]
fn shell_forward_and_stats_on_a_microvm() {
    if !privileged() {
        return;
    }
    let ns = Netns::new();
    assert!(sh_in(&ns.path(), "ip link set lo up").0);
    let d = Daemon::start_in(
        &ns.path(),
        "wv",
        &config("isolated", "10.219.1.0/24", "", "")
            .replace(
                "  graceful_shutdown",
                "  hypervisor: qemu\n  graceful_shutdown",
            )
            .replace("ram_mb: 128", "ram_mb: 192\n      storage_size: 128M"),
    );
    let n = add(&d, "{}");
    let node = n.name.clone();
    let c = d.client();
    let rt = rt();

    // The guest's agent runs the shell on a terminal, as a jail's does.
    let (out, status, close) = rt.block_on(session(
        &c,
        &format!("/vm/{node}/shell"),
        vec![
            Frame::WindowSize { cols: 77, rows: 22 },
            Frame::Data(b"stty size; exit 4\n".to_vec()),
        ],
    ));
    assert!(out.contains("22 77"), "{out:?}");
    assert_eq!((status, close.as_str()), (Some(4), "1000 exit status 4"));

    // The guest owns the node's address; the tunnel reaches it through QEMU's tap.
    let port = common::netlab::PORT;
    assert_eq!(
        rt.block_on(forward_read(&c, &node, &format!("127.0.0.1:{port}"))),
        node
    );
    let (st, code, _) = refused(rt.block_on(c.websocket(
        &format!("/vm/{node}/forward"),
        &[("X-Inlets-Upstream", "127.0.0.1:7999")],
    )));
    assert_eq!((st, code.as_str()), (502, "port_closed"));
    // The guest's agent connects inside the guest: its loopback-only service is reached.
    serve_loopback(&d, &node, 7002);
    let page = rt.block_on(forward_http(&c, &node, "127.0.0.1:7002"));
    assert!(page.contains("loopback-only"), "{page:?}");

    // Stats: the node's figures as the host sees them (QEMU in its cgroup), after traffic
    // through its tap (the forwards above stayed inside the guest).
    let probe = common::netlab::tcp_probe_port(&ns.path(), &n.ip, port);
    assert_eq!(probe.as_deref(), Some(node.as_str()));
    let s = rt.block_on(stat(&c, &node));
    assert_eq!(s.total_memory, 192 << 20);
    assert!(s.cpu_usage_seconds > 0.0 && s.pids > 0, "{s:?}");
    assert!(s.network_read_total > 0.0, "{s:?}");
    // The guest's disk, from its driver: storage_size, partly written.
    assert_eq!(s.disk_space_total, 128 << 20);
    assert!(
        s.disk_space_used > 0 && s.disk_space_used < s.disk_space_total,
        "{s:?}"
    );
    d.stop_and_assert_clean();
}

#[test]
fn websockets_over_tcp_need_the_token() {
    if !privileged() {
        return;
    }
    let dir = test_dir();
    let token = "0123456789abcdef0123456789abcdef";
    std::fs::write(dir.path().join("token"), token).unwrap();
    let tenant = unique_tenant("wt");
    let addr = "127.0.0.1:18219";
    let yaml = cli_ok(&["new", &tenant, "--api-bind", addr]).replace(
        "  api:\n",
        &format!(
            "  api:\n    token_file: {}\n",
            dir.path().join("token").display()
        ),
    );
    let cfg = dir.path().join("tenant.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    let state = shared_state();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    /// Stops the daemon this test started (by its pid) even when an assertion fails.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            // SAFETY: SIGTERM to the daemon this test started, by its pid.
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
    let netns = Netns::new();
    assert!(sh_in(&netns.path(), "ip link set lo up").0);
    let ns = netns.path();
    let daemon = Stop(
        Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(["--", BIN, "up"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&state)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let group = tenant.clone();
    common::netlab::in_ns(&ns, move || {
        let tcp = |t: Option<&str>| {
            Client::new(bulkhead_api::Endpoint::Tcp {
                addr: addr.into(),
                token: t.map(str::to_string),
            })
        };
        let (c, anon) = (tcp(Some(token)), tcp(None));
        let rt = rt();
        rt.block_on(async {
            for _ in 0..300 {
                if c.get::<serde_json::Value>("/healthz").await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let n: bulkhead_api::CreatedNode = c
                .json(
                    hyper::Method::POST,
                    &format!("/hostgroup/{group}/nodes?wait=agent"),
                    Some(&serde_json::json!({})),
                )
                .await
                .expect("create over TCP");
            let path = format!("/vm/{}/shell", n.hostname);
            let (out, status, _) = session(
                &c,
                &path,
                vec![Frame::Data(b"echo over-tcp; exit 2\n".to_vec())],
            )
            .await;
            assert!(out.contains("over-tcp"), "{out:?}");
            assert_eq!(status, Some(2));
            let (st, code, _) = refused(anon.websocket(&path, &[]).await);
            assert_eq!((st, code.as_str()), (401, "unauthorized"));
            let (st, _, _) = refused(
                anon.websocket(
                    &format!("/vm/{}/forward", n.hostname),
                    &[("X-Inlets-Upstream", "127.0.0.1:80")],
                )
                .await,
            );
            assert_eq!(st, 401);
            let _: serde_json::Value = c
                .json(
                    hyper::Method::DELETE,
                    &format!("/hostgroup/{group}/nodes/{}", n.hostname),
                    None,
                )
                .await
                .unwrap();
        });
    });
    drop(daemon);
    assert_clean(&tenant, &state.join("tenants").join(&tenant));
    let _ = std::fs::remove_dir_all(state.join("tenants").join(&tenant));
}
