//! `scripts/bench-api.sh` (as root; it installs `oha` if missing), or
//! `cargo bench -p bulkhead --bench api -- [--quick] [--nodes N]`: the API under load, the
//! figures of issue #9's "an API that never stalls".
//!
//! One run starts a real daemon (its own network namespace, a host group with network `none`)
//! and, beside it, a trivial axum server on another UNIX socket that answers `GET /nodes` with
//! exactly the bytes the daemon answered (this same executable, started again with
//! `BULKHEAD_BENCH_TRIVIAL` set: `trivial.rs`). `oha` drives both over their sockets. It prints:
//!
//! 1. `GET /nodes` with 10 nodes: requests/s of the daemon and of the trivial server, rounds
//!    alternating between them, medians and their ratio (target >= 0.5x).
//! 2. With `--nodes` nodes (1,000 by default): `/healthz` p50/p99 and create p50 (create with
//!    `wait=agent`, then delete, through the API) idle, then while 64 connections list
//!    `GET /nodes` without pause; ratios loaded/idle (target <= 2x). For reference, the trivial
//!    server's `/healthz` p99 idle and under the same load on it: what the machine itself adds.
//! 3. `GET /nodes?limit=100` p99 at that many nodes (target <= 5 ms), or that the daemon does not
//!    support `limit` yet.
//!
//! Figures, not assertions (docs/benchmarks.md). Every node is deleted through the API and the
//! daemon stopped when the run ends, also when it fails (a guard does it on unwinding).

mod oha;
mod trivial;

use bulkhead_api::client::full_body;
use bulkhead_api::{Client, Endpoint};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::Method;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oha::{find_oha, Kill, Oha, Run};

#[path = "../common.rs"]
mod common;

/// Nodes are created this many at a time (the daemon sets up at most 8 at once).
const CREATE_PARALLEL: usize = 8;

fn main() {
    if let Ok(sock) = std::env::var(trivial::SOCK_ENV) {
        return trivial::serve(&sock);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the API benchmark needs root (it starts a daemon): sudo scripts/bench-api.sh");
        return;
    }
    let Some(oha) = find_oha() else {
        eprintln!(
            "the API benchmark needs oha: cargo install oha --locked (scripts/bench-api.sh does it)"
        );
        return;
    };
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let nodes: usize = args
        .iter()
        .position(|a| a == "--nodes")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--nodes takes a number"))
        .unwrap_or(1000);
    let cfg = if quick {
        Settings {
            rounds: 3,
            secs: 2,
            pairs: 10,
            cycles: 1,
        }
    } else {
        Settings {
            rounds: 5,
            secs: 4,
            pairs: 20,
            cycles: 2,
        }
    };

    let dir = tempfile::Builder::new()
        .prefix("bulkhead-bench-api-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let sock = dir.path().join("api.sock");
    let group = format!("bencha{}", std::process::id());
    let yaml = format!(
        "config:\n  tenant: {group}\n  host_groups:\n    - name: {group}\n      ram_mb: 64\n  api:\n    bind_address: {}\n",
        sock.display()
    );
    let state = dir.path().join("state");
    let daemon = common::start_daemon(dir.path(), &yaml, &state, &sock);
    let b = Bench {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        c: Client::new(Endpoint::Unix(sock.clone())),
        daemon,
        group,
    };
    let oha = Oha { bin: oha };
    println!(
        "bulkhead API benchmark: {} cores, kernel {}, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        String::from_utf8_lossy(
            &Command::new(&oha.bin)
                .arg("--version")
                .output()
                .unwrap()
                .stdout
        )
        .trim()
    );
    println!("load at start: {}", load());
    println!();

    list_vs_trivial(&b, &oha, &sock, dir.path(), &cfg);
    println!();

    let t = Instant::now();
    let have = b.rt.block_on(b.c.nodes()).unwrap().len();
    b.create_many(nodes.saturating_sub(have));
    let count = b.rt.block_on(b.c.nodes()).unwrap().len();
    println!(
        "created {} more nodes ({count} in all) in {:.1} s",
        count - have,
        t.elapsed().as_secs_f64()
    );
    under_load(&b, &oha, &sock, dir.path(), count, &cfg);
    println!();
    paged(&b, &oha, &sock, count, &cfg);
    println!();

    let t = Instant::now();
    let deleted = b.delete_all();
    println!(
        "deleted {deleted} nodes through the API in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

struct Settings {
    /// Rounds of the requests/s comparison.
    rounds: usize,
    /// Seconds per oha run.
    secs: u64,
    /// Create+delete pairs per idle or loaded phase.
    pairs: usize,
    /// Idle, then loaded: this many times.
    cycles: usize,
}

/// Part 1: `GET /nodes` with 10 nodes against the trivial server returning the same bytes.
fn list_vs_trivial(b: &Bench, oha: &Oha, sock: &Path, dir: &Path, cfg: &Settings) {
    b.create_many(10);
    let body = b.get_bytes("/nodes");
    let (trivial, tsock) = start_trivial(b, dir, "trivial10", &body);
    assert_eq!(
        b.get_bytes("/nodes"),
        body,
        "the daemon's list changed while idle"
    );

    let conns = 16;
    println!(
        "1. GET /nodes, 10 nodes ({} bytes), oha -c {conns}, {} rounds of {} s each, alternating",
        body.len(),
        cfg.rounds,
        cfg.secs
    );
    // Warm both up once, outside the figures.
    oha.run(sock, "/nodes", conns, 1);
    oha.run(&tsock, "/nodes", conns, 1);
    let (mut d, mut t, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..cfg.rounds {
        let (dr, tr) = if r % 2 == 0 {
            let dr = oha.run(sock, "/nodes", conns, cfg.secs);
            (dr, oha.run(&tsock, "/nodes", conns, cfg.secs))
        } else {
            let tr = oha.run(&tsock, "/nodes", conns, cfg.secs);
            (oha.run(sock, "/nodes", conns, cfg.secs), tr)
        };
        dr.check("bulkhead GET /nodes");
        tr.check("trivial GET /nodes");
        println!(
            "   round {r}: bulkhead {:>9.0} req/s   trivial {:>9.0} req/s   ratio {:.2}x   load {}",
            dr.rps,
            tr.rps,
            dr.rps / tr.rps,
            load()
        );
        ratios.push(dr.rps / tr.rps);
        d.push(dr.rps);
        t.push(tr.rps);
    }
    let (dm, tm) = (median(&mut d), median(&mut t));
    println!(
        "   median: bulkhead {dm:.0} req/s, trivial {tm:.0} req/s: ratio {:.2}x (median of the rounds' ratios {:.2}x; target >= 0.5x)",
        dm / tm,
        median(&mut ratios)
    );
    drop(trivial);
}

/// Starts the trivial server on `dir/NAME.sock`, answering `body` to `GET /nodes`, and checks
/// that it does.
fn start_trivial(b: &Bench, dir: &Path, name: &str, body: &[u8]) -> (Kill, PathBuf) {
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, body).unwrap();
    let tsock = dir.join(format!("{name}.sock"));
    let trivial = Kill(
        Command::new(std::env::current_exe().unwrap())
            .env(trivial::SOCK_ENV, &tsock)
            .env(trivial::BODY_ENV, &file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&tsock).is_err() {
        assert!(
            Instant::now() < deadline,
            "the trivial server did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let tc = Client::new(Endpoint::Unix(tsock.clone()));
    assert_eq!(
        b.rt.block_on(get_bytes(&tc, "/nodes")),
        body,
        "the trivial server must answer the daemon's bytes"
    );
    (trivial, tsock)
}

/// Part 2: `/healthz` and create idle, then while 64 connections list every node.
fn under_load(b: &Bench, oha: &Oha, sock: &Path, dir: &Path, count: usize, cfg: &Settings) {
    let full = oha.run(sock, "/nodes", 1, cfg.secs);
    full.check("GET /nodes");
    let bytes = b.get_bytes("/nodes").len();
    println!(
        "2. {count} nodes: GET /nodes alone (oha -c 1) p50 {:.2} ms p99 {:.2} ms, {bytes} bytes ({} per node)   load {}",
        full.p50,
        full.p99,
        bytes / count.max(1),
        load()
    );
    let (mut idle, mut loaded) = (Phase::default(), Phase::default());
    for _ in 0..cfg.cycles {
        idle.measure(b, oha, sock, cfg, "idle");
        let bg = Kill(oha.spawn(sock, "/nodes", 64, 3600));
        std::thread::sleep(Duration::from_secs(1));
        loaded.measure(b, oha, sock, cfg, "64 connections listing");
        let out = bg.interrupt();
        match Run::parse(&out) {
            Some(r) => println!(
                "   background: GET /nodes with 64 connections: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, {} of {} answered 200",
                r.rps, r.p50, r.p99, r.ok, r.total
            ),
            None => println!("   background oha printed no summary"),
        }
    }
    // The same load on the trivial server (the same list's bytes): how much of /healthz's rise
    // the machine itself makes (2 cores shared by oha and the server).
    let (trivial, tsock) = start_trivial(b, dir, "trivial_full", &b.get_bytes("/nodes"));
    let (mut ti, mut tl) = (Vec::new(), Vec::new());
    for _ in 0..cfg.cycles {
        let h = oha.run(&tsock, "/healthz", 1, cfg.secs);
        h.check("trivial /healthz");
        ti.push(h.p99);
        let bg = Kill(oha.spawn(&tsock, "/nodes", 64, 3600));
        std::thread::sleep(Duration::from_secs(1));
        let h = oha.run(&tsock, "/healthz", 1, cfg.secs);
        h.check("trivial /healthz");
        tl.push(h.p99);
        drop(bg);
    }
    drop(trivial);
    let (i, l) = (idle.summary(), loaded.summary());
    println!(
        "   summary ({} cycles; medians of the phases' figures, create over all pairs):",
        cfg.cycles
    );
    println!(
        "   /healthz p50   idle {:>8.2} ms   loaded {:>8.2} ms   ratio {:.2}x",
        i.0,
        l.0,
        l.0 / i.0
    );
    println!(
        "   /healthz p99   idle {:>8.2} ms   loaded {:>8.2} ms   ratio {:.2}x   (target <= 2x)",
        i.1,
        l.1,
        l.1 / i.1
    );
    println!(
        "   create p50     idle {:>8.2} ms   loaded {:>8.2} ms   ratio {:.2}x   (target <= 2x)",
        i.2,
        l.2,
        l.2 / i.2
    );
    let (ti, tl) = (median(&mut ti), median(&mut tl));
    println!(
        "   reference, the trivial server under the same load: /healthz p99 idle {ti:>8.2} ms   loaded {tl:>8.2} ms   ratio {:.2}x   load {}",
        tl / ti,
        load()
    );
}

#[derive(Default)]
struct Phase {
    healthz_p50: Vec<f64>,
    healthz_p99: Vec<f64>,
    create: Vec<f64>,
}

impl Phase {
    fn measure(&mut self, b: &Bench, oha: &Oha, sock: &Path, cfg: &Settings, what: &str) {
        let h = oha.run(sock, "/healthz", 1, cfg.secs);
        h.check("/healthz");
        let mut create = b.create_delete_pairs(cfg.pairs);
        println!(
            "   {what:<24} /healthz (oha -c 1, {} s) p50 {:>7.2} ms p99 {:>7.2} ms ({} requests)   create p50 {:>7.2} ms p95 {:>7.2} ms (n={})   load {}",
            cfg.secs,
            h.p50,
            h.p99,
            h.total,
            pct(&mut create, 0.5),
            pct(&mut create, 0.95),
            create.len(),
            load()
        );
        self.healthz_p50.push(h.p50);
        self.healthz_p99.push(h.p99);
        self.create.extend(create);
    }

    /// Median /healthz p50, median /healthz p99, create p50 over all pairs.
    fn summary(&mut self) -> (f64, f64, f64) {
        (
            median(&mut self.healthz_p50),
            median(&mut self.healthz_p99),
            median(&mut self.create),
        )
    }
}

/// Part 3: one page of 100 nodes.
fn paged(b: &Bench, oha: &Oha, sock: &Path, count: usize, cfg: &Settings) {
    let resp = b.rt.block_on(async {
        let r =
            b.c.send(Method::GET, "/nodes?limit=100", full_body(""), None)
                .await
                .unwrap();
        let status = r.status();
        (status, r.into_body().collect().await.unwrap().to_bytes())
    });
    if !resp.0.is_success() {
        println!(
            "3. GET /nodes?limit=100: not supported yet (the daemon answers {}: {})",
            resp.0,
            String::from_utf8_lossy(&resp.1).trim()
        );
        return;
    }
    let v: serde_json::Value = serde_json::from_slice(&resp.1).unwrap();
    // A page is a list, or an object holding the list beside its cursor.
    let items = v.as_array().map(|a| a.len()).or_else(|| {
        v.as_object()
            .and_then(|o| o.values().find_map(|x| x.as_array().map(|a| a.len())))
    });
    assert!(
        items.is_some_and(|n| n <= 100),
        "a page of limit=100 holds at most 100 nodes: {}",
        String::from_utf8_lossy(&resp.1)
    );
    let r = oha.run(sock, "/nodes?limit=100", 1, cfg.secs);
    r.check("GET /nodes?limit=100");
    println!(
        "3. GET /nodes?limit=100 at {count} nodes ({} nodes, {} bytes per page), oha -c 1, {} s: p50 {:.2} ms p99 {:.2} ms (target p99 <= 5 ms)   load {}",
        items.unwrap_or(0),
        resp.1.len(),
        cfg.secs,
        r.p50,
        r.p99,
        load()
    );
}

/// The daemon and a client for it. Dropping it deletes every node through the API and stops
/// the daemon (which would delete what is left on SIGTERM as well).
struct Bench {
    rt: tokio::runtime::Runtime,
    c: Client,
    daemon: Child,
    group: String,
}

impl Bench {
    fn create_path(&self) -> String {
        format!("/hostgroup/{}/nodes?wait=agent", self.group)
    }

    fn create_many(&self, n: usize) {
        let path = self.create_path();
        self.rt.block_on(
            futures_util::stream::iter(0..n)
                .map(|_| async {
                    self.c
                        .json::<serde_json::Value>(Method::POST, &path, None)
                        .await
                        .unwrap()
                })
                .buffer_unordered(CREATE_PARALLEL)
                .collect::<Vec<_>>(),
        );
    }

    /// Milliseconds per create; each node is deleted right after, outside the timing.
    fn create_delete_pairs(&self, n: usize) -> Vec<f64> {
        let path = self.create_path();
        (0..n)
            .map(|_| {
                let t = Instant::now();
                let v: serde_json::Value = self
                    .rt
                    .block_on(self.c.json(Method::POST, &path, None))
                    .unwrap();
                let took = t.elapsed().as_secs_f64() * 1000.0;
                let name = v["hostname"].as_str().unwrap();
                self.rt
                    .block_on(self.c.json::<serde_json::Value>(
                        Method::DELETE,
                        &format!("/hostgroup/{}/nodes/{name}", self.group),
                        None,
                    ))
                    .unwrap();
                took
            })
            .collect()
    }

    fn get_bytes(&self, path: &str) -> Vec<u8> {
        self.rt.block_on(get_bytes(&self.c, path))
    }

    /// Deletes every node through the API; returns how many it deleted.
    fn delete_all(&self) -> usize {
        let Ok(nodes) = self.rt.block_on(self.c.nodes()) else {
            return 0;
        };
        self.rt
            .block_on(
                futures_util::stream::iter(nodes)
                    .map(|n| async move {
                        let path = format!("/hostgroup/{}/nodes/{}", n.hostgroup, n.hostname);
                        self.c
                            .json::<serde_json::Value>(Method::DELETE, &path, None)
                            .await
                    })
                    .buffer_unordered(CREATE_PARALLEL)
                    .collect::<Vec<_>>(),
            )
            .into_iter()
            .filter(|r| r.is_ok())
            .count()
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let left = self.delete_all();
        if left > 0 {
            eprintln!("deleted {left} nodes left behind");
        }
        // SAFETY: stopping the daemon this benchmark started, by its pid.
        unsafe { libc::kill(self.daemon.id() as i32, libc::SIGTERM) };
        let _ = self.daemon.wait();
    }
}

async fn get_bytes(c: &Client, path: &str) -> Vec<u8> {
    let r = c
        .send_ok(Method::GET, path, full_body(""), None)
        .await
        .unwrap();
    r.into_body().collect().await.unwrap().to_bytes().to_vec()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

/// The middle value; of an even count, the mean of the two middle ones.
fn median(v: &mut [f64]) -> f64 {
    let n = v.len();
    if n == 0 || n % 2 == 1 {
        return pct(v, 0.5);
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[n / 2 - 1] + v[n / 2]) / 2.0
}

/// The 1-minute load average, to judge each figure by.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}
