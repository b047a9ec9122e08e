//! `cargo bench -p bulkhead --bench auth` (as root): what authentication and authorization add
//! to `GET /nodes` (issue #11's target: at most 50 µs at p50), in one run.
//!
//! Two daemons of the same build, each in a network namespace of its own: one on a UNIX socket
//! (peer credentials: no credential to check), one on TCP loopback with the legacy bearer token
//! (`api.token_file`, a constant-time compare) and API tokens (`bh_…`: a SHA-256 and a map
//! lookup). A daemon serves one transport today, so the socket figure also differs by
//! transport; the legacy token on the same TCP daemon is the baseline that isolates the API
//! token's own cost (same transport, same chain, one authenticator further). Each variant keeps
//! one connection alive and sends requests one after another (a hand-written HTTP/1.1 client,
//! so the client adds almost nothing); rounds alternate between the variants and the figure is
//! the median of the rounds' p50s. Figures, not assertions (docs/benchmarks.md).

#[path = "common.rs"]
#[allow(dead_code)] // start_daemon waits for a socket; these daemons' TCP one is in a netns
mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LEGACY: &str = "bench-auth-legacy-token-0123456789abcdef";
const ADDR: &str = "127.0.0.1:18282";

struct Daemons(Vec<Child>);

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SAFETY: signalling a daemon this benchmark started, by its pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

fn start(dir: &Path, name: &str, yaml: &str, state: &Path) -> Child {
    let cfg = dir.join(format!("{name}.yaml"));
    std::fs::write(&cfg, yaml).unwrap();
    let log_path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut c = Command::new("unshare")
        .args([
            "--net",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(common::BIN)
        .arg("up")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let l = std::fs::read_to_string(&log_path).unwrap_or_default();
        if l.contains("ready on") {
            return c;
        }
        assert!(Instant::now() < deadline, "{name} did not start:\n{l}");
        assert!(c.try_wait().unwrap().is_none(), "{name} exited:\n{l}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One kept-alive connection that sends `GET /nodes` and reads the whole answer.
struct Conn<S: Read + Write> {
    s: S,
    req: Vec<u8>,
    buf: Vec<u8>,
}

impl<S: Read + Write> Conn<S> {
    fn new(s: S, token: Option<&str>) -> Self {
        let auth = token
            .map(|t| format!("authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        Conn {
            s,
            req: format!("GET /nodes HTTP/1.1\r\nhost: localhost\r\n{auth}\r\n").into_bytes(),
            buf: vec![0; 64 * 1024],
        }
    }

    /// One request; its latency. Panics on anything but 200.
    fn get(&mut self) -> Duration {
        let t = Instant::now();
        self.s.write_all(&self.req).unwrap();
        let mut have = 0;
        loop {
            let n = self.s.read(&mut self.buf[have..]).unwrap();
            assert!(n > 0, "connection closed");
            have += n;
            let head = &self.buf[..have];
            let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
            assert!(text.starts_with("http/1.1 200"), "{text}");
            let len: usize = text
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .expect("content-length");
            if have >= end + 4 + len {
                return t.elapsed();
            }
        }
    }
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the auth benchmark needs root (it starts daemons)");
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, per_round) = if quick { (5, 500) } else { (9, 2000) };
    let dir = common::bench_dir();
    let state = dir.path().join("state");
    let pid = std::process::id();
    let sock = dir.path().join("api.sock");
    std::fs::write(dir.path().join("legacy"), LEGACY).unwrap();
    let group = |t: &str| {
        format!(
            "  host_groups:\n    - name: {t}\n      ram_mb: 64\n      network: {{ mode: none }}\n"
        )
    };
    let (tu, tt) = (format!("benchau{pid}"), format!("benchat{pid}"));
    let unix = start(
        dir.path(),
        "unix",
        &format!(
            "config:\n  tenant: {tu}\n{}  api:\n    bind_address: {}\n",
            group(&tu),
            sock.display()
        ),
        &state,
    );
    let tcp = start(
        dir.path(),
        "tcp",
        &format!(
            "config:\n  tenant: {tt}\n{}  api:\n    bind_address: {ADDR}\n    token_file: {}\n",
            group(&tt),
            dir.path().join("legacy").display()
        ),
        &state,
    );
    let tcp_pid = tcp.id();
    let _daemons = Daemons(vec![unix, tcp]);
    // Into the TCP daemon's namespace (this thread only; the UNIX socket is a path, reachable
    // from any namespace).
    let ns = std::fs::File::open(format!("/proc/{tcp_pid}/ns/net")).unwrap();
    // SAFETY: moves the calling thread into the namespace of a daemon we started.
    assert_eq!(
        unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
        0
    );

    // An API token, made with the legacy one.
    let mut s = std::net::TcpStream::connect(ADDR).unwrap();
    let body = format!(r#"{{"name":"bench","tenant":"{tt}","role":"developer","ttl":"1h"}}"#);
    write!(
        s,
        "POST /tokens HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {LEGACY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    let api_token = resp
        .split("\"token\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();

    let tcp_conn = |t: Option<&str>| {
        let s = std::net::TcpStream::connect(ADDR).unwrap();
        s.set_nodelay(true).unwrap();
        Conn::new(s, t)
    };
    let mut u = Conn::new(
        std::os::unix::net::UnixStream::connect(&sock).unwrap(),
        None,
    );
    let mut l = tcp_conn(Some(LEGACY));
    let mut a = tcp_conn(Some(&api_token));
    // Warm up.
    for _ in 0..200 {
        u.get();
        l.get();
        a.get();
    }
    println!(
        "GET /nodes (0 nodes), one kept-alive connection each, {rounds} rounds x {per_round} requests, p50 in µs; load {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    println!("round   unix-socket   tcp+legacy   tcp+api-token");
    let (mut pu, mut pl, mut pa) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        // Interleave request by request, so drift hits all three alike.
        let (mut vu, mut vl, mut va) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..per_round {
            match (i + r) % 3 {
                0 => {
                    vu.push(u.get());
                    vl.push(l.get());
                    va.push(a.get());
                }
                1 => {
                    vl.push(l.get());
                    va.push(a.get());
                    vu.push(u.get());
                }
                _ => {
                    va.push(a.get());
                    vu.push(u.get());
                    vl.push(l.get());
                }
            }
        }
        let (x, y, z) = (p50(vu), p50(vl), p50(va));
        println!(
            "{r:>5}   {:>11.1}   {:>10.1}   {:>13.1}",
            us(x),
            us(y),
            us(z)
        );
        pu.push(x);
        pl.push(y);
        pa.push(z);
    }
    let (mu, ml, ma) = (p50(pu), p50(pl), p50(pa));
    println!(
        "median  {:>11.1}   {:>10.1}   {:>13.1}",
        us(mu),
        us(ml),
        us(ma)
    );
    println!(
        "API token vs legacy token (same TCP daemon): {:+.1} µs; API token vs UNIX socket (transport differs too): {:+.1} µs; target: at most +50 µs",
        us(ma) - us(ml),
        us(ma) - us(mu)
    );
}
