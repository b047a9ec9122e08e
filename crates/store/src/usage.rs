//! Usage accounting (#14, part E; ADR 0035): what each node used, per time bucket, and the
//! cumulative counters last read from each live node.
//!
//! The daemon's sampler reads a node's cumulative counters (CPU time, network bytes, OOM kills,
//! the memory peak) and its levels (memory, allocated storage) into a [`Reading`]; [`step`]
//! turns it and the node's [`UsageLast`] into the bucket's [`UsageDelta`] and the new last
//! values; [`Store::record_usage`] writes both in one transaction.
//!
//! Invariants:
//! - a counter is only ever added as a difference from the last value recorded for the same
//!   cgroup, and the last value is written in the same transaction as the delta: a daemon
//!   restart (which reads the last values back) neither counts a figure twice nor loses one;
//! - a counter below its last value, or a new cgroup id (a relaunched or restarted node), is a
//!   reset: its whole current value is the delta;
//! - a counter that cannot be read (`None`) adds nothing and keeps its last value, so a read
//!   that failed once is never followed by counting everything again;
//! - rows of deleted nodes stay: their figures are final (only `usage_last` rows go);
//! - the tenant's stored objects no node accounts for are one more row (`usage_stored.rs`).

use rusqlite::params;

use crate::error::StoreError;
use crate::store::Store;

/// Width of a usage bucket: the resolution of `GET /usage?from=&to=`.
pub const BUCKET_SECS: i64 = 60;

/// What the sampler read from one node now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub node_id: String,
    pub node: String,
    /// The node's cgroup id (a relaunched node gets a new one, with fresh counters).
    pub cgroup: String,
    /// UNIX milliseconds of the reading.
    pub at_ms: i64,
    /// UNIX milliseconds the node came to be: the start of the first interval it is counted
    /// for.
    pub since_ms: i64,
    /// Running or paused: counts node-seconds and memory.
    pub live: bool,
    // cumulative counters (`None`: could not be read)
    pub cpu_usec: Option<u64>,
    /// `cpu_usec` is summed over the node's processes (a v1 host without `cpuacct` beside
    /// `cpu`): it dips while an ended process is not yet reaped, so a lower value is not a
    /// reset but a wait (only a new cgroup resets it).
    pub cpu_may_dip: bool,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub oom_kills: Option<u64>,
    /// The cgroup's own memory high-water mark since it was made (v2 `memory.peak`, v1
    /// `memory.max_usage_in_bytes`).
    pub memory_peak: Option<u64>,
    // levels
    /// Memory charged to the node's cgroup now.
    pub memory: u64,
    /// Storage allocated to the node now (its layer and attached volumes).
    pub storage_bytes: u64,
    /// Execs started in the node since the last reading (already a delta).
    pub execs: u64,
}

/// The cumulative values last recorded for a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageLast {
    pub node_id: String,
    pub node: String,
    pub cgroup: String,
    pub at_ms: i64,
    pub cpu_usec: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub oom_kills: u64,
    pub memory_peak: u64,
}

/// What a node used in one bucket (or, summed, over a window: then `bucket` is the first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageDelta {
    pub node_id: String,
    pub node: String,
    /// UNIX seconds of the bucket's start.
    pub bucket: i64,
    pub node_ms: u64,
    pub cpu_usec: u64,
    pub memory_byte_seconds: f64,
    pub memory_peak: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub storage_byte_seconds: f64,
    pub execs: u64,
}

/// One reading accounted for.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub delta: UsageDelta,
    pub last: UsageLast,
    /// OOM kills since the last reading.
    pub new_oom_kills: u64,
}

/// The bucket a UNIX time in milliseconds falls in.
pub fn bucket_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(1000).div_euclid(BUCKET_SECS) * BUCKET_SECS
}

/// Accounts for reading `r` after `last` (`None`: the node was never recorded).
pub fn step(last: Option<&UsageLast>, r: &Reading) -> Step {
    // Time counts on from the last reading of the node, whatever its cgroup; but another
    // cgroup is a fresh set of counters: none of the last ones carry over.
    let start = last.map_or(r.since_ms, |l| l.at_ms);
    let last = last.filter(|l| l.cgroup == r.cgroup || r.cgroup.is_empty());
    let fresh = UsageLast {
        node_id: r.node_id.clone(),
        node: r.node.clone(),
        cgroup: r.cgroup.clone(),
        ..Default::default()
    };
    let prev = last.cloned().unwrap_or(fresh);
    let dt_ms = (r.at_ms - start).max(0) as u64;
    // A counter below its last value was reset: all of it is new.
    let counter = |now: Option<u64>, was: u64| -> (u64, u64) {
        match now {
            None => (0, was),
            Some(n) if n >= was => (n - was, n),
            Some(n) => (n, n),
        }
    };
    let cpu_usec = match r.cpu_usec {
        Some(n) if r.cpu_may_dip && n < prev.cpu_usec => None,
        v => v,
    };
    let (cpu, cpu_now) = counter(cpu_usec, prev.cpu_usec);
    let (rx, rx_now) = counter(r.rx_bytes, prev.rx_bytes);
    let (tx, tx_now) = counter(r.tx_bytes, prev.tx_bytes);
    let (oom, oom_now) = counter(r.oom_kills, prev.oom_kills);
    let (peak_grew, peak_now) = counter(r.memory_peak, prev.memory_peak);
    let secs = dt_ms as f64 / 1000.0;
    let mut peak = if r.live { r.memory } else { 0 };
    if peak_grew > 0 {
        // The high-water mark rose since the last reading: it was reached in this interval.
        peak = peak.max(peak_now);
    }
    Step {
        delta: UsageDelta {
            node_id: r.node_id.clone(),
            node: r.node.clone(),
            bucket: bucket_of(r.at_ms),
            node_ms: if r.live { dt_ms } else { 0 },
            cpu_usec: cpu,
            memory_byte_seconds: if r.live { r.memory as f64 * secs } else { 0.0 },
            memory_peak: peak,
            rx_bytes: rx,
            tx_bytes: tx,
            storage_byte_seconds: r.storage_bytes as f64 * secs,
            execs: r.execs,
        },
        last: UsageLast {
            node_id: r.node_id.clone(),
            node: r.node.clone(),
            cgroup: r.cgroup.clone(),
            at_ms: r.at_ms.max(start),
            cpu_usec: cpu_now,
            rx_bytes: rx_now,
            tx_bytes: tx_now,
            oom_kills: oom_now,
            memory_peak: peak_now,
        },
        new_oom_kills: oom,
    }
}

impl UsageDelta {
    /// Whether it adds nothing (not worth a row).
    pub fn is_empty(&self) -> bool {
        self.node_ms == 0
            && self.cpu_usec == 0
            && self.memory_byte_seconds == 0.0
            && self.memory_peak == 0
            && self.rx_bytes == 0
            && self.tx_bytes == 0
            && self.storage_byte_seconds == 0.0
            && self.execs == 0
    }

    /// Adds another delta's figures (the peak is the higher).
    pub fn add(&mut self, o: &UsageDelta) {
        self.node_ms += o.node_ms;
        self.cpu_usec += o.cpu_usec;
        self.memory_byte_seconds += o.memory_byte_seconds;
        self.memory_peak = self.memory_peak.max(o.memory_peak);
        self.rx_bytes += o.rx_bytes;
        self.tx_bytes += o.tx_bytes;
        self.storage_byte_seconds += o.storage_byte_seconds;
        self.execs += o.execs;
    }
}

const SUMS: &str = "SUM(node_ms), SUM(cpu_usec), SUM(memory_byte_seconds), MAX(memory_peak), \
     SUM(rx_bytes), SUM(tx_bytes), SUM(storage_byte_seconds), SUM(execs)";

fn window(from: Option<i64>, to: Option<i64>) -> (i64, i64) {
    (from.unwrap_or(i64::MIN), to.unwrap_or(i64::MAX))
}

impl Store {
    /// Writes one sampling round in one transaction: the deltas added to their buckets, the
    /// new last values, and the last values of nodes `forget` (deleted, their final reading
    /// among `deltas`) removed.
    pub async fn record_usage(
        &self,
        deltas: Vec<UsageDelta>,
        lasts: Vec<UsageLast>,
        forget: Vec<String>,
    ) -> Result<(), StoreError> {
        self.call(move |w| {
            let tx = w.conn.transaction()?;
            {
                let mut add = tx.prepare_cached(
                    "INSERT INTO usage (node_id, node, bucket, node_ms, cpu_usec,
                        memory_byte_seconds, memory_peak, rx_bytes, tx_bytes,
                        storage_byte_seconds, execs)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (node_id, bucket) DO UPDATE SET
                        node_ms = node_ms + excluded.node_ms,
                        cpu_usec = cpu_usec + excluded.cpu_usec,
                        memory_byte_seconds = memory_byte_seconds + excluded.memory_byte_seconds,
                        memory_peak = max(memory_peak, excluded.memory_peak),
                        rx_bytes = rx_bytes + excluded.rx_bytes,
                        tx_bytes = tx_bytes + excluded.tx_bytes,
                        storage_byte_seconds = storage_byte_seconds + excluded.storage_byte_seconds,
                        execs = execs + excluded.execs",
                )?;
                for d in deltas.iter().filter(|d| !d.is_empty()) {
                    add.execute(params![
                        d.node_id,
                        d.node,
                        d.bucket,
                        d.node_ms as i64,
                        d.cpu_usec as i64,
                        d.memory_byte_seconds,
                        d.memory_peak as i64,
                        d.rx_bytes as i64,
                        d.tx_bytes as i64,
                        d.storage_byte_seconds,
                        d.execs as i64,
                    ])?;
                }
                let mut put = tx.prepare_cached(
                    "INSERT OR REPLACE INTO usage_last (node_id, node, cgroup, at_ms, cpu_usec,
                        rx_bytes, tx_bytes, oom_kills, memory_peak)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )?;
                for l in &lasts {
                    put.execute(params![
                        l.node_id,
                        l.node,
                        l.cgroup,
                        l.at_ms,
                        l.cpu_usec as i64,
                        l.rx_bytes as i64,
                        l.tx_bytes as i64,
                        l.oom_kills as i64,
                        l.memory_peak as i64,
                    ])?;
                }
                let mut del = tx.prepare_cached("DELETE FROM usage_last WHERE node_id = ?1")?;
                for id in &forget {
                    del.execute(params![id])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await?
    }

    /// The last values recorded per node.
    pub async fn usage_last(&self) -> Result<Vec<UsageLast>, StoreError> {
        self.call(|w| {
            let mut st = w.conn.prepare(
                "SELECT node_id, node, cgroup, at_ms, cpu_usec, rx_bytes, tx_bytes, oom_kills,
                    memory_peak FROM usage_last ORDER BY node_id",
            )?;
            let rows = st
                .query_map([], |r| {
                    Ok(UsageLast {
                        node_id: r.get(0)?,
                        node: r.get(1)?,
                        cgroup: r.get(2)?,
                        at_ms: r.get(3)?,
                        cpu_usec: r.get::<_, i64>(4)? as u64,
                        rx_bytes: r.get::<_, i64>(5)? as u64,
                        tx_bytes: r.get::<_, i64>(6)? as u64,
                        oom_kills: r.get::<_, i64>(7)? as u64,
                        memory_peak: r.get::<_, i64>(8)? as u64,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?
    }

    /// Each node's figures summed over the buckets starting in `[from, to)` (UNIX seconds;
    /// `None`: open), first used first; `bucket` is the node's first bucket in the window.
    pub async fn usage_by_node(
        &self,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<Vec<UsageDelta>, StoreError> {
        let (from, to) = window(from, to);
        self.call(move |w| {
            let mut st = w.conn.prepare(&format!(
                "SELECT node_id, MAX(node), MIN(bucket), {SUMS} FROM usage
                 WHERE bucket >= ?1 AND bucket < ?2 GROUP BY node_id ORDER BY MIN(bucket), node_id"
            ))?;
            let rows = st
                .query_map(params![from, to], |r| {
                    let u = |i| r.get::<_, i64>(i).map(|v| v as u64);
                    Ok(UsageDelta {
                        node_id: r.get(0)?,
                        node: r.get(1)?,
                        bucket: r.get(2)?,
                        node_ms: u(3)?,
                        cpu_usec: u(4)?,
                        memory_byte_seconds: r.get(5)?,
                        memory_peak: u(6)?,
                        rx_bytes: u(7)?,
                        tx_bytes: u(8)?,
                        storage_byte_seconds: r.get(9)?,
                        execs: u(10)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?
    }

    /// The highest per-bucket sum of the nodes' memory peaks in `[from, to)`: an upper bound of
    /// the memory the tenant held at once.
    pub async fn usage_tenant_peak(
        &self,
        from: Option<i64>,
        to: Option<i64>,
    ) -> Result<u64, StoreError> {
        let (from, to) = window(from, to);
        self.call(move |w| {
            let v: i64 = w.conn.query_row(
                "SELECT COALESCE(MAX(s), 0) FROM (SELECT SUM(memory_peak) AS s FROM usage
                 WHERE bucket >= ?1 AND bucket < ?2 GROUP BY bucket)",
                params![from, to],
                |r| r.get(0),
            )?;
            Ok(v as u64)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000_000; // ms; a bucket boundary (divisible by 60 s)

    fn reading(at_s: i64) -> Reading {
        Reading {
            node_id: "n1".into(),
            node: "g-1".into(),
            cgroup: "c1".into(),
            at_ms: T0 + at_s * 1000,
            since_ms: T0,
            live: true,
            cpu_usec: Some(0),
            cpu_may_dip: false,
            rx_bytes: Some(0),
            tx_bytes: Some(0),
            oom_kills: Some(0),
            memory_peak: Some(0),
            memory: 1000,
            storage_bytes: 10,
            execs: 0,
        }
    }

    #[test]
    fn deltas_count_counters_once_and_levels_over_time() {
        let mut r = reading(10);
        r.cpu_usec = Some(3_000_000);
        r.rx_bytes = Some(500);
        r.memory_peak = Some(4000);
        r.execs = 2;
        let s1 = step(None, &r);
        // First sight: from the node's start.
        assert_eq!(s1.delta.node_ms, 10_000);
        assert_eq!(s1.delta.cpu_usec, 3_000_000);
        assert_eq!(s1.delta.rx_bytes, 500);
        assert_eq!(s1.delta.memory_byte_seconds, 10_000.0);
        assert_eq!(s1.delta.storage_byte_seconds, 100.0);
        assert_eq!(s1.delta.memory_peak, 4000, "the peak rose in this interval");
        assert_eq!(s1.delta.execs, 2);
        assert_eq!(s1.delta.bucket, T0 / 1000);
        let mut r2 = reading(20);
        r2.cpu_usec = Some(3_500_000);
        r2.rx_bytes = Some(700);
        r2.memory_peak = Some(4000);
        let s2 = step(Some(&s1.last), &r2);
        assert_eq!(s2.delta.node_ms, 10_000);
        assert_eq!(s2.delta.cpu_usec, 500_000);
        assert_eq!(s2.delta.rx_bytes, 200);
        assert_eq!(
            s2.delta.memory_peak, 1000,
            "no new high-water mark: the level seen"
        );
        assert_eq!(s2.delta.execs, 0);
        // The same reading again adds nothing but time.
        let s3 = step(Some(&s2.last), &r2);
        assert_eq!((s3.delta.node_ms, s3.delta.cpu_usec), (0, 0));
    }

    #[test]
    fn resets_and_unreadable_counters_never_count_twice() {
        let mut r = reading(10);
        r.cpu_usec = Some(5_000_000);
        r.oom_kills = Some(1);
        let s1 = step(None, &r);
        assert_eq!(s1.new_oom_kills, 1);
        // A read that failed adds nothing and keeps the last value...
        let mut r2 = reading(20);
        r2.cpu_usec = None;
        r2.oom_kills = None;
        let s2 = step(Some(&s1.last), &r2);
        assert_eq!((s2.delta.cpu_usec, s2.new_oom_kills), (0, 0));
        assert_eq!(s2.last.cpu_usec, 5_000_000);
        // ...so the next good read counts only what is new.
        let mut r3 = reading(30);
        r3.cpu_usec = Some(6_000_000);
        r3.oom_kills = Some(3);
        let s3 = step(Some(&s2.last), &r3);
        assert_eq!((s3.delta.cpu_usec, s3.new_oom_kills), (1_000_000, 2));
        // A counter below its last value restarted: all of it is new.
        let mut r4 = reading(40);
        r4.cpu_usec = Some(200);
        let s4 = step(Some(&s3.last), &r4);
        assert_eq!(s4.delta.cpu_usec, 200);
        // Summed over processes, a dip is a process not yet reaped: it waits, never recounts.
        let mut d = reading(45);
        d.cpu_may_dip = true;
        d.cpu_usec = Some(100);
        let sd = step(Some(&s4.last), &d);
        assert_eq!((sd.delta.cpu_usec, sd.last.cpu_usec), (0, 200));
        d.cpu_usec = Some(250);
        assert_eq!(step(Some(&sd.last), &d).delta.cpu_usec, 50);
        // A relaunched node (another cgroup) starts its counters afresh, even above the last.
        let mut r5 = reading(50);
        r5.cgroup = "c2".into();
        r5.cpu_usec = Some(7_000_000);
        r5.oom_kills = Some(1);
        let s5 = step(Some(&s4.last), &r5);
        assert_eq!((s5.delta.cpu_usec, s5.new_oom_kills), (7_000_000, 1));
        assert_eq!(s5.delta.node_ms, 10_000);
    }

    #[test]
    fn a_stopped_node_counts_storage_only_and_buckets_are_minutes() {
        let mut r = reading(70);
        r.live = false;
        r.cpu_usec = None;
        let s = step(None, &r);
        assert_eq!((s.delta.node_ms, s.delta.memory_byte_seconds), (0, 0.0));
        assert_eq!(s.delta.storage_byte_seconds, 700.0);
        assert_eq!(s.delta.bucket, T0 / 1000 + 60);
        assert_eq!(bucket_of(-1), -60);
        assert!(UsageDelta::default().is_empty());
    }

    #[tokio::test]
    async fn rounds_are_summed_per_bucket_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let s = Store::open(&path, "t").unwrap();
        let mut r = reading(10);
        r.cpu_usec = Some(1_000_000);
        let a = step(None, &r);
        s.record_usage(vec![a.delta.clone()], vec![a.last.clone()], vec![])
            .await
            .unwrap();
        let mut r = reading(20);
        r.cpu_usec = Some(3_000_000);
        r.memory = 5000;
        let b = step(Some(&a.last), &r);
        // Another node, in the next minute.
        let mut o = reading(70);
        o.node_id = "n2".into();
        o.node = "g-2".into();
        o.since_ms = T0 + 60_000;
        o.memory = 3000;
        let c = step(None, &o);
        s.record_usage(
            vec![b.delta.clone(), c.delta.clone()],
            vec![b.last.clone(), c.last.clone()],
            vec![],
        )
        .await
        .unwrap();
        drop(s);
        let s = Store::open(&path, "t").unwrap();
        assert_eq!(s.usage_last().await.unwrap(), vec![b.last.clone(), c.last]);
        let all = s.usage_by_node(None, None).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!((all[0].node.as_str(), all[0].cpu_usec), ("g-1", 3_000_000));
        assert_eq!(all[0].node_ms, 20_000);
        assert_eq!(all[0].memory_peak, 5000);
        assert_eq!(all[1].node_ms, 10_000);
        // Windows are by bucket start: the first minute has only g-1.
        let m0 = T0 / 1000;
        let first = s.usage_by_node(Some(m0), Some(m0 + 60)).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(s
            .usage_by_node(Some(m0 + 120), None)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(s.usage_tenant_peak(None, None).await.unwrap(), 5000);
        // A deleted node's last values go; its figures stay.
        s.record_usage(vec![], vec![], vec!["n1".into()])
            .await
            .unwrap();
        assert_eq!(s.usage_last().await.unwrap().len(), 1);
        assert_eq!(s.usage_by_node(None, None).await.unwrap().len(), 2);
    }
}
