//! Usage (#14, part E; ADR 0035, docs/detection.md "Usage"): the per-tenant state of usage
//! accounting and its Prometheus figures. The sampler itself (reading nodes, writing rounds)
//! is `tenant/usage.rs`; the accounting rules are `bulkhead_store::usage`; `GET /usage` is
//! `http/usage.rs`.
//!
//! Invariants:
//! - one round at a time per tenant (the periodic one, a node's final one before delete, the
//!   one at stop): [`UsageState::round`] is held from reading the last values to recording
//!   the new ones, so two rounds never count the same interval;
//! - a node whose final round ran is never counted again (`finished`), even while its record
//!   is still there;
//! - the totals the metrics show are what the store holds (loaded at start, then added to
//!   after each round that was written); so is the memory peak (read at start, then read back
//!   for the buckets of each round written).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bulkhead_store::usage::{UsageDelta, UsageLast};

/// What a round needs from the rounds before it.
#[derive(Default)]
pub struct Round {
    /// The last values recorded, by node id (loaded from the store at the first round).
    pub lasts: HashMap<String, UsageLast>,
    pub loaded: bool,
    /// Node ids whose final round ran (deleted, or being deleted).
    pub finished: HashSet<String>,
}

/// One tenant's usage accounting.
#[derive(Default)]
pub struct UsageState {
    pub round: tokio::sync::Mutex<Round>,
    /// Execs started per node name since its last round.
    execs: Mutex<HashMap<String, u64>>,
    /// Everything recorded for the tenant (metrics).
    totals: Mutex<UsageDelta>,
    /// OOM kills the sampler saw in the tenant's nodes since the daemon started.
    pub oom_kills: std::sync::atomic::AtomicU64,
    /// The tenant's memory peak since its first record (`GET /usage`'s `memory_peak_bytes`
    /// without a window: the highest per-minute sum of its nodes' peaks).
    memory_peak: std::sync::atomic::AtomicU64,
}

impl UsageState {
    /// Counts an exec started in `node` (foreground or background).
    pub fn exec(&self, node: &str) {
        let mut m = self.execs.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(node.to_string()).or_default() += 1;
    }

    /// Takes the execs counted for `node` since the last round.
    pub fn take_execs(&self, node: &str) -> u64 {
        let mut m = self.execs.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(node).unwrap_or(0)
    }

    /// Gives execs back (a round that could not be written).
    pub fn return_execs(&self, node: &str, n: u64) {
        if n > 0 {
            let mut m = self.execs.lock().unwrap_or_else(|p| p.into_inner());
            *m.entry(node.to_string()).or_default() += n;
        }
    }

    /// Adds a written round's deltas (or the store's sums at start) to the totals.
    pub fn add_totals<'a>(&self, deltas: impl IntoIterator<Item = &'a UsageDelta>) {
        let mut t = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        for d in deltas {
            let peak = t.memory_peak;
            t.add(d);
            t.memory_peak = peak; // not a total: the metrics do not show it
        }
    }

    /// Raises the tenant's memory peak to `bytes` (the store's figure for some buckets).
    pub fn note_peak(&self, bytes: u64) {
        (self.memory_peak).fetch_max(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn peak(&self) -> u64 {
        (self.memory_peak).load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn totals(&self) -> UsageDelta {
        self.totals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// The usage metrics of `tenants` (name, state; Prometheus text): per tenant, everything
/// recorded.
pub fn metrics(tenants: &[(&str, &UsageState)]) -> String {
    if tenants.is_empty() {
        return String::new();
    }
    let totals: Vec<(&str, UsageDelta)> = tenants.iter().map(|(t, u)| (*t, u.totals())).collect();
    type Fig = fn(&UsageDelta) -> f64;
    let figs: [(&str, &str, Fig); 7] = [
        (
            "bulkhead_usage_node_seconds_total",
            "Seconds the tenant's nodes ran (running or paused).",
            |d| d.node_ms as f64 / 1000.0,
        ),
        (
            "bulkhead_usage_cpu_seconds_total",
            "CPU time of the tenant's nodes, in seconds.",
            |d| d.cpu_usec as f64 / 1e6,
        ),
        (
            "bulkhead_usage_memory_byte_seconds_total",
            "Memory charged to the tenant's nodes, sampled, times seconds.",
            |d| d.memory_byte_seconds,
        ),
        (
            "bulkhead_usage_network_rx_bytes_total",
            "Bytes the tenant's nodes received.",
            |d| d.rx_bytes as f64,
        ),
        (
            "bulkhead_usage_network_tx_bytes_total",
            "Bytes the tenant's nodes sent.",
            |d| d.tx_bytes as f64,
        ),
        (
            "bulkhead_usage_storage_byte_seconds_total",
            "Storage the tenant holds (nodes' layers, volumes, snapshots, commits) times seconds.",
            |d| d.storage_byte_seconds,
        ),
        (
            "bulkhead_usage_execs_total",
            "Execs started in the tenant's nodes.",
            |d| d.execs as f64,
        ),
    ];
    let mut out = String::new();
    let oom = "bulkhead_node_oom_kills_total";
    out.push_str(&format!("# HELP {oom} OOM kills in the tenant's nodes seen since the daemon started (each also an event node.oom_kill).\n# TYPE {oom} counter\n"));
    for (t, u) in tenants {
        let n = u.oom_kills.load(std::sync::atomic::Ordering::Relaxed);
        out.push_str(&format!("{oom}{{tenant=\"{t}\"}} {n}\n"));
    }
    for (name, help, f) in figs {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (t, d) in &totals {
            out.push_str(&format!("{name}{{tenant=\"{t}\"}} {}\n", f(d)));
        }
    }
    let peak = "bulkhead_usage_memory_peak_bytes";
    out.push_str(&format!("# HELP {peak} The tenant's memory peak since its first record: the highest per-minute sum of its nodes' peaks (GET /usage's memory_peak_bytes).\n# TYPE {peak} gauge\n"));
    for (t, u) in tenants {
        out.push_str(&format!("{peak}{{tenant=\"{t}\"}} {}\n", u.peak()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execs_are_taken_once_and_totals_add_up() {
        let u = UsageState::default();
        u.exec("g-1");
        u.exec("g-1");
        u.exec("g-2");
        assert_eq!(u.take_execs("g-1"), 2);
        assert_eq!(u.take_execs("g-1"), 0);
        u.return_execs("g-1", 3);
        assert_eq!(u.take_execs("g-1"), 3);
        let d = UsageDelta {
            cpu_usec: 1_500_000,
            execs: 2,
            memory_peak: 9,
            ..Default::default()
        };
        u.add_totals([&d, &d]);
        let t = u.totals();
        assert_eq!((t.cpu_usec, t.execs, t.memory_peak), (3_000_000, 4, 0));
    }

    #[test]
    fn the_peak_only_rises_and_is_a_gauge_per_tenant() {
        let (a, b) = (UsageState::default(), UsageState::default());
        a.note_peak(64 << 20);
        a.note_peak(1 << 20);
        b.note_peak(5);
        let m = metrics(&[("a", &a), ("b", &b)]);
        assert!(
            m.contains("# TYPE bulkhead_usage_memory_peak_bytes gauge\n"),
            "{m}"
        );
        assert!(
            m.contains("bulkhead_usage_memory_peak_bytes{tenant=\"a\"} 67108864\n"),
            "{m}"
        );
        assert!(
            m.contains("bulkhead_usage_memory_peak_bytes{tenant=\"b\"} 5\n"),
            "{m}"
        );
    }
}
