//! Stats (#16): the node's figures (`GET /node/{node}/stats`) as containerd's cgroups v1
//! `Metrics` (what `ctr task metrics` and CRI's stats decode). The figures are the node's: a
//! pod's containers share it, so each reports the pod's.

use bulkhead_api::stats::NodeStat;
use containerd_shim::protos::cgroups::metrics::{
    CPUStat, CPUUsage, MemoryEntry, MemoryOomControl, MemoryStat, Metrics, PidsStat,
};

/// The node's stat as cgroups v1 metrics (empty when the daemon could not read them).
pub fn metrics(stat: &NodeStat) -> Metrics {
    let mut m = Metrics::new();
    let Some(s) = &stat.snapshot else { return m };
    m.memory = Some(MemoryStat {
        usage: Some(MemoryEntry {
            usage: s.memory_used,
            limit: s.total_memory,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
    .into();
    m.cpu = Some(CPUStat {
        usage: Some(CPUUsage {
            total: (s.cpu_usage_seconds * 1e9) as u64,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
    .into();
    m.pids = Some(PidsStat {
        current: s.pids,
        ..Default::default()
    })
    .into();
    m.memory_oom_control = Some(MemoryOomControl {
        oom_kill: s.oom_kills,
        ..Default::default()
    })
    .into();
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_api::stats::Snapshot;

    #[test]
    fn the_nodes_figures_land_in_v1_fields() {
        let mut stat = NodeStat {
            hostname: "n".into(),
            ip: String::new(),
            created_at: String::new(),
            snapshot: None,
            error: "cannot read".into(),
        };
        assert_eq!(metrics(&stat), Metrics::new());
        stat.snapshot = Some(Snapshot {
            memory_used: 5 << 20,
            total_memory: 256 << 20,
            cpu_usage_seconds: 1.5,
            pids: 4,
            oom_kills: 1,
            ..Default::default()
        });
        let m = metrics(&stat);
        assert_eq!(m.memory.usage.usage, 5 << 20);
        assert_eq!(m.memory.usage.limit, 256 << 20);
        assert_eq!(m.cpu.usage.total, 1_500_000_000);
        assert_eq!(m.pids.current, 4);
        assert_eq!(m.memory_oom_control.oom_kill, 1);
    }
}
