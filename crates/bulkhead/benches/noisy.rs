//! `cargo bench -p bulkhead --bench noisy [-- --quick] [--nodes N] [--only NAME] [--timeline]
//! [--victim-cores N] [--client-nice N]` (as root): issue #12's P5 figures, noisy neighbours on
//! one shared daemon.
//! `--only` runs the idle rows and the loads whose name contains NAME (`fork`, `cpu`, ...);
//! `--timeline` prints each sample with its CLOCK_MONOTONIC start, for a kernel trace;
//! `--victim-cores N` gives the victim's group `dedicated_cores: N` (the host's other CPUs
//! are left to the aggressor, the daemon and everything else on the host); `--client-nice N`
//! runs the bench's own client at nice N (it shares the host's CPUs with the aggressor).
//!
//! One `bulkhead up` (its own network namespace and state directory) serves two tenants, a
//! victim and an aggressor, each on its own tenant socket (`api.tenant_sockets`). The victim's
//! exec of `true` (buffered, on one node kept for the whole run) and node create (`wait=agent`,
//! the node deleted afterwards, untimed) are sampled idle, then while the aggressor:
//!
//! - `cpu`: runs one busy loop per node, a node (vcpu 1) per host CPU (or `--nodes N`): all
//!   its nodes busy;
//! - `memory`: allocates past its node's RAM in a loop (a shell holding `head -c | tr` output;
//!   OOM-killed inside the node, started again), a node per host CPU;
//! - `forkbomb`: a classic `f(){ f|f& }; f` in a node per host CPU, started again every 0.1 s
//!   by `watch`, which holds the node at its `pids_max`;
//! - `disk`: `dd` into the node's writable layer and `rm`, in a loop, a node per host CPU (on
//!   the jail driver the layer is a tmpfs in the node's RAM: this is the write path a jail has);
//! - `flood`: sends 1,000 `GET /vm/{node}/health` per second on its own socket (a task per
//!   request, a fresh connection each, at most 256 in flight),
//!
//! then idle again. Each scenario's aggressor nodes are deleted before the next one starts.
//! It prints exec and create p50/p99 and their ratios to the idle samples before and after,
//! pooled (issue #12's goal: each ratio <= 2x), and what the load looked like (the host's busy
//! CPUs, the aggressor tenant's peak pids and memory) so that a quiet row can be told from a
//! load that failed to start.
//! Figures, not assertions (docs/benchmarks.md). The daemon is stopped (it deletes every node)
//! and the state directory removed when the run ends, also when it fails.

#[path = "noisy/cg.rs"]
mod cg;
#[path = "common.rs"]
mod common;

use cg::{host_busy_ticks, node_cg, tenant_num};

use bulkhead_api::client::{enc, full_body};
use bulkhead_api::{Client, Endpoint};
use http_body_util::BodyExt;
use hyper::Method;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The aggressor's node RAM; the memory hog asks for more than this.
const AGGRESSOR_RAM_MB: u64 = 256;
/// The aggressor's `pids_max` per node, where the fork bomb stops.
const AGGRESSOR_PIDS: u32 = 256;
/// API requests per second in the flood scenario.
const FLOOD_RPS: u64 = 1000;

/// Stops the daemon on every way out (it deletes every node: `graceful_shutdown: false`).
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        // SAFETY: signalling the daemon this benchmark started, by its pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("the daemon did not stop within 120 s; killing it");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Bench {
    rt: tokio::runtime::Runtime,
    victim: Client,
    aggressor: Client,
    /// Tenant names; each has one host group of the same name.
    v: String,
    a: String,
    /// The victim's node that every exec sample runs on.
    v_node: String,
    /// Aggressor nodes per scenario: one per host CPU, or `--nodes N`.
    nodes: usize,
    state: std::path::PathBuf,
    /// `--timeline`: print every sample with its CLOCK_MONOTONIC start (ms), to line samples up
    /// with a kernel trace (bpftrace's `nsecs`, perf's timestamps).
    timeline: bool,
}

/// CLOCK_MONOTONIC in ms, the clock kernel tracers stamp events with.
fn mono_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1000.0 + ts.tv_nsec as f64 / 1e6
}

#[derive(Default)]
struct Figures {
    exec: Vec<f64>,
    create: Vec<f64>,
}

/// What the load looked like while the victim was sampled: the host's busy CPUs
/// (`/proc/stat`) and the aggressor's tenant cgroup (pids, memory).
#[derive(Default)]
struct Used {
    cores: Option<f64>,
    pids: Option<u64>,
    mem_mib: Option<u64>,
    note: String,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

impl Bench {
    fn create(&self, c: &Client, group: &str) -> String {
        let v: serde_json::Value = self
            .rt
            .block_on(c.json(
                Method::POST,
                &format!("/hostgroup/{group}/nodes?wait=agent"),
                None,
            ))
            .unwrap_or_else(|e| panic!("create in {group}: {e}"));
        v["hostname"].as_str().unwrap().to_string()
    }

    fn delete(&self, c: &Client, group: &str, node: &str) {
        self.rt
            .block_on(c.json::<serde_json::Value>(
                Method::DELETE,
                &format!("/hostgroup/{group}/nodes/{node}"),
                None,
            ))
            .unwrap_or_else(|e| panic!("delete {node}: {e}"));
    }

    fn exec_true(&self) {
        let r = self
            .rt
            .block_on(self.victim.send_ok(
                Method::POST,
                &format!("/vm/{}/exec?cmd=true&buffered=true", self.v_node),
                full_body(""),
                None,
            ))
            .unwrap_or_else(|e| panic!("victim exec: {e}"));
        self.rt.block_on(r.into_body().collect()).unwrap();
    }

    /// Starts `script` (sh -c) as a background exec of the aggressor's `node`.
    fn background(&self, node: &str, script: &str) {
        let path = format!(
            "/vm/{node}/exec?cmd=sh&args=-c&args={}&background=true",
            enc(script)
        );
        let r = self
            .rt
            .block_on(
                self.aggressor
                    .send_ok(Method::POST, &path, full_body(""), None),
            )
            .unwrap_or_else(|e| panic!("aggressor background exec on {node}: {e}"));
        self.rt.block_on(r.into_body().collect()).unwrap();
    }

    /// The victim's samples: `n_exec` execs, `n_create` creates (each deleted, untimed),
    /// interleaved so that both see the same phases of the load. Also what the aggressor used.
    /// `tick` runs between samples (the fork bomb's keeper).
    fn sample(&self, n_exec: usize, n_create: usize, tick: &mut dyn FnMut()) -> (Figures, Used) {
        let mut f = Figures::default();
        let cpu0 = host_busy_ticks();
        let t0 = Instant::now();
        let (mut pids, mut mem) = (None::<u64>, None::<u64>);
        for i in 0..n_exec.max(n_create) {
            if i < n_exec {
                let (t, m) = (Instant::now(), mono_ms());
                self.exec_true();
                f.exec.push(ms(t.elapsed()));
                if self.timeline {
                    println!("timeline exec {m:.1} {:.2} ms", ms(t.elapsed()));
                }
            }
            if i < n_create {
                let (t, m) = (Instant::now(), mono_ms());
                let n = self.create(&self.victim, &self.v);
                f.create.push(ms(t.elapsed()));
                if self.timeline {
                    println!("timeline create {m:.1} {:.2} ms", ms(t.elapsed()));
                }
                self.delete(&self.victim, &self.v, &n);
            }
            tick();
            // Peaks of the aggressor's pids and memory.
            if let Some(p) = tenant_num(&self.a, "pids", "pids.current", "pids.current") {
                pids = Some(pids.unwrap_or(0).max(p));
            }
            if let Some(m) =
                tenant_num(&self.a, "memory", "memory.usage_in_bytes", "memory.current")
            {
                mem = Some(mem.unwrap_or(0).max(m >> 20));
            }
        }
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let cores = match (cpu0, host_busy_ticks()) {
            (Some(a), Some(b)) => Some((b - a) as f64 / hz / t0.elapsed().as_secs_f64()),
            _ => None,
        };
        let used = Used {
            cores,
            pids,
            mem_mib: mem,
            note: String::new(),
        };
        (f, used)
    }

    /// `count` aggressor nodes, each running `script` in the background.
    fn start_nodes(&self, count: usize, script: Option<&str>) -> Vec<String> {
        let nodes: Vec<String> = (0..count)
            .map(|_| self.create(&self.aggressor, &self.a))
            .collect();
        if let Some(s) = script {
            for n in &nodes {
                self.background(n, s);
            }
        }
        nodes
    }

    /// Deletes the aggressor's nodes; how long that took.
    fn stop_nodes(&self, nodes: &[String]) -> Duration {
        let t = Instant::now();
        for n in nodes {
            self.delete(&self.aggressor, &self.a, n);
        }
        t.elapsed()
    }
}

/// The flood: `FLOOD_RPS` requests per second of `path` on `c` until `stop`; (sent, ok, failed).
fn flood(
    c: Client,
    path: String,
    stop: Arc<AtomicBool>,
    counts: Arc<[AtomicU64; 4]>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let sem = Arc::new(tokio::sync::Semaphore::new(256));
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / FLOOD_RPS));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let Ok(permit) = sem.clone().try_acquire_owned() else {
                    counts[3].fetch_add(1, Ordering::Relaxed); // skipped: 256 in flight
                    continue;
                };
                counts[0].fetch_add(1, Ordering::Relaxed);
                let (c, path, counts) = (c.clone(), path.clone(), counts.clone());
                tokio::spawn(async move {
                    let ok = match c.send(Method::GET, &path, full_body(""), None).await {
                        Ok(r) => {
                            let good = r.status().is_success();
                            good && r.into_body().collect().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    counts[if ok { 1 } else { 2 }].fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
            // Let the requests in flight finish (bounded).
            let _ = tokio::time::timeout(Duration::from_secs(10), sem.acquire_many(256)).await;
        });
    })
}

const SPIN: &str = "while :; do :; done";
/// A shell holding more than the node's RAM (OOM-killed inside the node), again and again.
fn hog() -> String {
    format!(
        "while :; do sh -c 'x=$(head -c {} /dev/zero | tr \"\\0\" a)'; done",
        (AGGRESSOR_RAM_MB + 64) << 20
    )
}
/// The classic fork bomb, started again every 0.1 s by `watch` (busybox sh gives up at its
/// first failed fork, so a lone bomb dies out within seconds; watch survives failed forks).
/// It waits a second first: a bomb that fills the node before the agent has the threads to
/// answer the exec is ended with it (429 pids_limit).
const FORKBOMB: &str = "sleep 1; exec watch -n 0.1 -t 'f(){ f | f & }; f' >/dev/null 2>&1";
const DISK: &str =
    "while :; do dd if=/dev/zero of=/fill bs=1M count=128 2>/dev/null; rm -f /fill; done";

fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("the noisy-neighbour benchmark needs root (it starts a daemon)");
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let (n_exec, n_create) = if quick { (15, 10) } else { (50, 30) };
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let only = opt("--only");
    let victim_cores: u32 = opt("--victim-cores")
        .map(|n| n.parse().expect("--victim-cores takes a number"))
        .unwrap_or(0);
    let client_nice: Option<i32> =
        opt("--client-nice").map(|n| n.parse().expect("--client-nice takes a number"));
    let ncpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let dir = common::bench_dir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711)).unwrap();
    let admin = dir.path().join("admin.sock");
    let socks = dir.path().join("tenants");
    let pid = std::process::id();
    let (v, a) = (format!("p5v{pid}"), format!("p5a{pid}"));
    let yaml = format!(
        "config:\n  graceful_shutdown: false\n  tenants:\n\
         \x20   - name: {v}\n      host_groups:\n        - name: {v}\n          ram_mb: 128\n{cores}\
         \x20   - name: {a}\n      host_groups:\n        - name: {a}\n          vcpu: 1\n          ram_mb: {AGGRESSOR_RAM_MB}\n          pids_max: {AGGRESSOR_PIDS}\n\
         \x20 api:\n    bind_address: {}\n    tenant_sockets: {}\n",
        admin.display(),
        socks.display(),
        cores = if victim_cores > 0 {
            format!("          dedicated_cores: {victim_cores}\n")
        } else {
            String::new()
        }
    );
    let _stop = Stop(common::start_daemon(dir.path(), &yaml, &state, &admin));
    // The client (this thread, and the flood's thread it spawns; not the daemon, started
    // before) at another nice level: on a shared machine it competes for the same CPUs as
    // the aggressor, which a tenant's real client (on another machine) does not
    // (docs/benchmarks.md, P5 traced).
    if let Some(n) = client_nice {
        // SAFETY: setpriority on the calling thread (who 0); no memory is passed.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } != 0 {
            panic!("--client-nice {n}: {}", std::io::Error::last_os_error());
        }
    }
    let (vs, as_) = (
        socks.join(format!("{v}.sock")),
        socks.join(format!("{a}.sock")),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::os::unix::net::UnixStream::connect(&vs).is_err()
        || std::os::unix::net::UnixStream::connect(&as_).is_err()
    {
        assert!(Instant::now() < deadline, "no tenant sockets in {socks:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut b = Bench {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        victim: Client::new(Endpoint::Unix(vs)),
        aggressor: Client::new(Endpoint::Unix(as_)),
        v: v.clone(),
        a: a.clone(),
        v_node: String::new(),
        nodes: opt("--nodes")
            .map(|n| n.parse().expect("--nodes takes a number"))
            .unwrap_or(ncpu),
        state: state.clone(),
        timeline: args.iter().any(|a| a == "--timeline"),
    };
    b.v_node = b.create(&b.victim, &v);

    println!(
        "bulkhead noisy-neighbour benchmark (P5): {ncpu} CPUs, kernel {}, cgroup {}, load average {}",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "v2"
        } else {
            "v1"
        },
        loadavg()
    );
    println!(
        "shared daemon, jail driver; victim: exec `true` (buffered) n={n_exec}, create wait=agent n={n_create} per scenario"
    );
    if victim_cores > 0 {
        println!("victim's group: dedicated_cores {victim_cores}");
    }
    if let Some(n) = client_nice {
        println!("the bench's client runs at nice {n}");
    }
    println!(
        "aggressor: {} nodes of vcpu 1, {AGGRESSOR_RAM_MB} MiB, pids_max {AGGRESSOR_PIDS} (API flood: one node, {FLOOD_RPS} req/s)",
        b.nodes
    );
    println!();

    let mut rows: Vec<(String, Figures, Used)> = Vec::new();
    // Warm-up (first creates and execs are slower), not recorded.
    let _ = b.sample(5, 3, &mut || {});
    let (f, u) = b.sample(n_exec, n_create, &mut || {});
    rows.push(("idle (before)".into(), f, u));

    let hog = hog();
    let loads: [(&str, &str); 4] = [
        ("cpu spinners", SPIN),
        ("memory hog", &hog),
        ("fork bomb", FORKBOMB),
        ("disk writer", DISK),
    ];
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    for (name, script) in loads {
        if !wanted(name) {
            continue;
        }
        let nodes = b.start_nodes(b.nodes, Some(script));
        std::thread::sleep(Duration::from_secs(2)); // the load reaches its steady state
                                                    // The fork bomb's nodes: their highest pids.current while the victim is sampled.
        let mut peak = vec![None::<u32>; nodes.len()];
        let mut keeper = || {
            if script != FORKBOMB {
                return;
            }
            for (i, n) in nodes.iter().enumerate() {
                if let Some(p) = node_cg(&b.state, &b.a, n, "pids", "pids.current")
                    .and_then(|p| p.trim().parse::<u32>().ok())
                {
                    peak[i] = Some(peak[i].unwrap_or(0).max(p));
                }
            }
        };
        let (f, mut u) = b.sample(n_exec, n_create, &mut keeper);
        let took = b.stop_nodes(&nodes);
        u.note = format!("aggressor nodes deleted in {:.0} ms", ms(took));
        if script == FORKBOMB {
            u.note += &format!("; peak pids per bomb node {peak:?} (pids_max {AGGRESSOR_PIDS})");
        }
        rows.push((name.into(), f, u));
    }

    // The API flood, from its own thread (its own runtime), on the aggressor's socket.
    if wanted("API flood") {
        flood_row(&b, n_exec, n_create, &mut rows);
    }

    std::thread::sleep(Duration::from_secs(1));
    let (f, u) = b.sample(n_exec, n_create, &mut || {});
    rows.push(("idle (after)".into(), f, u));

    print_table(&rows);
    println!();
    println!("load average at the end: {}", loadavg());
    b.delete(&b.victim, &v, &b.v_node);
    // _stop stops the daemon, then `dir` (config, sockets, state) is removed.
}

/// The API flood's row: `FLOOD_RPS` health requests per second on one aggressor node.
fn flood_row(b: &Bench, n_exec: usize, n_create: usize, rows: &mut Vec<(String, Figures, Used)>) {
    let nodes = b.start_nodes(1, None);
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let t = Instant::now();
    let th = flood(
        b.aggressor.clone(),
        format!("/vm/{}/health", nodes[0]),
        stop.clone(),
        counts.clone(),
    );
    std::thread::sleep(Duration::from_secs(2));
    let (f, mut u) = b.sample(n_exec, n_create, &mut || {});
    stop.store(true, Ordering::Relaxed);
    th.join().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let [sent, ok, failed, skipped] = [0, 1, 2, 3].map(|i| counts[i].load(Ordering::Relaxed));
    u.note = format!(
        "flood: {:.0} req/s sent for {secs:.1} s, {ok} ok, {failed} failed, {skipped} ticks skipped (256 in flight)",
        sent as f64 / secs
    );
    b.stop_nodes(&nodes);
    rows.push(("API flood".into(), f, u));
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Ratios are to the idle samples before and after, pooled (drift on a shared machine hits
/// both ends).
fn print_table(rows: &[(String, Figures, Used)]) {
    let (before, after) = (&rows[0].1, &rows[rows.len() - 1].1);
    let idle = &Figures {
        exec: [before.exec.clone(), after.exec.clone()].concat(),
        create: [before.create.clone(), after.create.clone()].concat(),
    };
    let (ie50, ie99, ic50, ic99) = (
        pct(&idle.exec, 0.5),
        pct(&idle.exec, 0.99),
        pct(&idle.create, 0.5),
        pct(&idle.create, 0.99),
    );
    println!(
        "{:<20} {:>9} {:>9} {:>6} {:>6}   {:>9} {:>9} {:>6} {:>6}   host busy CPUs; aggressor's peak pids, MiB",
        "scenario", "exec p50", "exec p99", "x p50", "x p99", "crt p50", "crt p99", "x p50", "x p99"
    );
    for (name, f, u) in rows {
        let (e50, e99, c50, c99) = (
            pct(&f.exec, 0.5),
            pct(&f.exec, 0.99),
            pct(&f.create, 0.5),
            pct(&f.create, 0.99),
        );
        let opt = |v: Option<String>| v.unwrap_or_else(|| "n/a".into());
        println!(
            "{name:<20} {e50:>6.2} ms {e99:>6.2} ms {:>5.2}x {:>5.2}x   {c50:>6.1} ms {c99:>6.1} ms {:>5.2}x {:>5.2}x   {} CPUs; {} pids, {} MiB",
            e50 / ie50,
            e99 / ie99,
            c50 / ic50,
            c99 / ic99,
            opt(u.cores.map(|c| format!("{c:.2}"))),
            opt(u.pids.map(|p| p.to_string())),
            opt(u.mem_mib.map(|m| m.to_string())),
        );
        if !u.note.is_empty() {
            println!("{:<20} ({})", "", u.note);
        }
    }
    println!();
    let (e, c) = (&rows[1].1.exec, &rows[1].1.create);
    println!(
        "ratios to idle before and after pooled (exec p50 {:.2} ms p99 {:.2} ms, create p50 {:.1} ms p99 {:.1} ms)",
        pct(&idle.exec, 0.5),
        pct(&idle.exec, 0.99),
        pct(&idle.create, 0.5),
        pct(&idle.create, 0.99)
    );
    println!(
        "goal: every ratio <= 2x (issue #12); a p99 of {} / {} samples is their maximum or next to it",
        e.len(),
        c.len()
    );
}
