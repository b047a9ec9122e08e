//! End to end: a hostile API client's connections. A flood of idle and slowloris connections is
//! closed on time while the daemon keeps serving, its memory stays bounded, the connection cap
//! answers 503, and request bodies are bounded in size and time.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_CONNECTIONS: usize = 2100;
const IDLE: usize = 1500;
const SLOW: usize = 500;
/// How much later than the header timeout a flood connection may be seen closed: the client's
/// poll interval and the time between its connect and the daemon's accept.
const SLACK: Duration = Duration::from_millis(1500);

fn rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

struct Conn {
    s: UnixStream,
    opened: Instant,
    slow: bool,
    last_byte: Instant,
    got: Vec<u8>,
}

impl Conn {
    fn open(sock: &Path, slow: bool) -> Conn {
        let mut s = UnixStream::connect(sock).expect("connect to the daemon");
        if slow {
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
                .unwrap();
        }
        s.set_nonblocking(true).unwrap();
        let now = Instant::now();
        Conn {
            s,
            opened: now,
            slow,
            last_byte: now,
            got: Vec::new(),
        }
    }

    /// Reads what is there; true when the daemon closed the connection.
    fn closed(&mut self) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            match self.s.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => self.got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }
}

#[derive(Default, Debug)]
struct FloodReport {
    opened: usize,
    closed_idle: usize,
    closed_slow: usize,
    slow_answered_408: usize,
    max_lifetime: Duration,
    /// Connections seen open longer than the header timeout plus slack.
    overdue: usize,
    /// The daemon's highest VmRSS seen during the flood, KiB.
    rss_peak: u64,
}

/// Holds `IDLE` idle and `SLOW` slowloris connections (one header byte every 250ms, never
/// finishing) for `hold`, replacing each the daemon closes; then closes them all.
fn flood(sock: &Path, hold: Duration, pid: i32) -> FloodReport {
    let mut r = FloodReport::default();
    let mut conns: Vec<Conn> = (0..IDLE + SLOW)
        .map(|i| Conn::open(sock, i >= IDLE))
        .collect();
    r.opened = conns.len();
    let end = Instant::now() + hold;
    while Instant::now() < end {
        for c in conns.iter_mut() {
            if c.closed() {
                let life = c.opened.elapsed();
                r.max_lifetime = r.max_lifetime.max(life);
                if c.slow {
                    r.closed_slow += 1;
                    if c.got.starts_with(b"HTTP/1.1 408")
                        && String::from_utf8_lossy(&c.got).contains("request_timeout")
                    {
                        r.slow_answered_408 += 1;
                    }
                } else {
                    r.closed_idle += 1;
                }
                *c = Conn::open(sock, c.slow);
                r.opened += 1;
                continue;
            }
            if c.opened.elapsed() > HEADER_TIMEOUT + SLACK {
                r.overdue += 1;
                // Counted once: start its clock again.
                c.opened = Instant::now();
            }
            if c.slow && c.last_byte.elapsed() >= Duration::from_millis(250) {
                let _ = c.s.write_all(b"a");
                c.last_byte = Instant::now();
            }
        }
        r.rss_peak = r.rss_peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    r
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics:\n{text}"))
}

/// Sends raw bytes on a fresh connection and returns what the daemon answered before closing
/// (or within `wait`).
fn raw(sock: &Path, bytes: &[u8], wait: Duration) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn metrics(sock: &Path) -> String {
    raw(
        sock,
        b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
}

#[test]
fn idle_and_slowloris_floods_are_closed_on_time_and_memory_stays_bounded() {
    if !privileged() {
        return;
    }
    let d = Daemon::start_edited("conn", &["--ram-mb", "64"], |y| {
        y.replace(
            "  api:\n",
            &format!(
                "  api:\n    header_timeout: {}s\n    max_connections: {MAX_CONNECTIONS}\n",
                HEADER_TIMEOUT.as_secs()
            ),
        )
    });
    let sock = d.socket.clone();
    let pid = d.pid();
    let rt = rt();
    let c = d.client();

    // Warm up: a node and an exec, so the baseline holds what serving them costs.
    let warm = d.add();
    assert_eq!(d.sh(&warm, "echo warm").1.trim(), "warm");
    let rss_before = rss_kib(pid);

    // The flood, held for three header timeouts and more, while the daemon keeps serving.
    let hold = Duration::from_secs(9);
    let flooder = {
        let sock = sock.clone();
        std::thread::spawn(move || flood(&sock, hold, pid))
    };
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    rt.block_on(c.send_ok(
        hyper::Method::GET,
        "/healthz",
        bulkhead_api::client::full_body(bytes::Bytes::new()),
        None,
    ))
    .expect("/healthz during the flood");
    let healthz_ms = t.elapsed().as_millis();
    let t = Instant::now();
    let node = d.add();
    let create_ms = t.elapsed().as_millis();
    // An exec silent for longer than the header timeout is a request in progress, not idle.
    let t = Instant::now();
    let (code, out, err) = d.sh(&node, "sleep 3; echo done");
    assert_eq!(
        (code, out.trim()),
        (0, "done"),
        "silent exec during the flood: {err}"
    );
    assert!(t.elapsed() > Duration::from_secs(3));
    let r = flooder.join().unwrap();
    eprintln!(
        "flood: {r:?}; during it /healthz {healthz_ms}ms, create {create_ms}ms, silent exec ok"
    );
    assert_eq!(
        r.overdue, 0,
        "connections outlived the header timeout: {r:?}"
    );
    assert!(r.max_lifetime <= HEADER_TIMEOUT + SLACK, "{r:?}");
    assert!(
        r.closed_idle >= IDLE * 3,
        "idle connections were not closed: {r:?}"
    );
    assert!(
        r.closed_slow >= SLOW * 3,
        "slowloris connections were not closed: {r:?}"
    );
    assert_eq!(
        r.slow_answered_408, r.closed_slow,
        "slowloris not answered 408: {r:?}"
    );
    assert!(
        healthz_ms < 2000,
        "/healthz took {healthz_ms}ms during the flood"
    );

    // All of the flood is gone from the daemon: only this request's connection is open.
    std::thread::sleep(Duration::from_millis(300));
    let m = metrics(&sock);
    assert!(metric(&m, "bulkhead_api_connections") <= 1, "{m}");
    assert!(metric(&m, "bulkhead_api_header_timeouts_total") >= r.closed_slow as u64);
    assert!(metric(&m, "bulkhead_api_idle_closed_total") >= r.closed_idle as u64);
    let rss_after = rss_kib(pid);

    // The cap: with MAX_CONNECTIONS open, the next connection gets a fast 503 naming the key.
    let held: Vec<UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let t = Instant::now();
    let answer = raw(
        &sock,
        b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        answer.starts_with("HTTP/1.1 503")
            && answer.contains("too_many_connections")
            && answer.contains("config.api.max_connections")
            && answer
                .to_ascii_lowercase()
                .contains("\r\nretry-after: 1\r\n"),
        "{answer}"
    );
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let m = metrics(&sock);
    assert!(
        metric(&m, "bulkhead_api_connections_rejected_total") >= 1,
        "{m}"
    );

    // Two more floods: memory does not grow with the number of connections served.
    let r2 = flood(&sock, Duration::from_secs(5), pid);
    let r3 = flood(&sock, Duration::from_secs(5), pid);
    assert_eq!(r2.overdue + r3.overdue, 0, "{r2:?} {r3:?}");
    eprintln!(
        "VmRSS: before {rss_before} KiB; peak during the flood {} KiB (+{} KiB for {} connections); after it {rss_after} KiB; peaks of two more floods {} and {} KiB",
        r.rss_peak,
        r.rss_peak.saturating_sub(rss_before),
        IDLE + SLOW,
        r2.rss_peak,
        r3.rss_peak,
    );
    assert!(
        r.rss_peak < rss_before + 64 * 1024,
        "RSS grew from {rss_before} to {} KiB",
        r.rss_peak
    );
    // glibc's arenas fragment under this churn (a few MiB of creep per flood are seen); a leak
    // of even 1.5 KiB per connection would be 24 MiB over these two floods' ~16000.
    assert!(
        r3.rss_peak.max(r2.rss_peak) < r.rss_peak + 24 * 1024,
        "RSS kept growing flood after flood: {} {} {} KiB",
        r.rss_peak,
        r2.rss_peak,
        r3.rss_peak
    );
    rt.block_on(c.send_ok(
        hyper::Method::GET,
        "/healthz",
        bulkhead_api::client::full_body(bytes::Bytes::new()),
        None,
    ))
    .expect("/healthz after the floods");
    d.stop_and_assert_clean();
}

#[test]
fn request_bodies_are_bounded_in_size_and_time() {
    if !privileged() {
        return;
    }
    let tenant = unique_tenant("body");
    let dir = test_dir();
    let sock = dir.path().join("api.sock");
    let yaml = cli_ok(&["new", &tenant, "--socket", sock.to_str().unwrap()])
        .replace("  api:\n", "  api:\n    header_timeout: 1s\n");
    let d = Daemon::start_with_yaml(tenant.clone(), dir, &yaml);
    let path = format!("/hostgroup/{tenant}/nodes");
    let pid = d.pid();
    let rss_before = rss_kib(pid);

    // A body that claims 512 MiB is refused once 64 KiB are in, not buffered.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        512u64 << 20
    )
    .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..64 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("HTTP/1.1 413") && out.contains("body_too_large"),
        "{out}"
    );
    assert!(rss_kib(pid) < rss_before + 8 * 1024);

    // A body sent a byte at a time is cut off with 408 after the timeout.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.set_nonblocking(true).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
    )
    .unwrap();
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while t.elapsed() < Duration::from_secs(5) {
        let _ = s.write_all(b" ");
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 408") && got.contains("request_timeout"),
        "{got}"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(rt().block_on(d.client().nodes()).unwrap().is_empty());
    d.stop_and_assert_clean();
}
