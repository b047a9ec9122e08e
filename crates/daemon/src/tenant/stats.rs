//! A node's figures for `GET /nodes/stats` and `GET /node/{node}/stats`, as Slicer's
//! `SlicerSnapshot`: memory, CPU time and processes from the tenant's driver
//! (`Driver::stats`, its cgroup; a microVM's disk), the rest from its cgroup and processes
//! (`bulkhead_sandbox::usage`), network bytes from the host side of its veth (which carries a
//! microVM's tap traffic too), read in the daemon's network namespace (`/proc/net/dev`).
//!
//! Load averages are the node's own: CPUs kept busy, from its CPU time between two reads,
//! decayed like the kernel's over 1, 5 and 15 minutes (`loads.rs`).

use super::{NodeRef, Tenant};
use crate::fsutil::now_rfc3339;
use bulkhead_api::stats::{NodeStat, Snapshot};
use bulkhead_core::NodeState;

impl Tenant {
    /// The figures of every node of the tenant (a node whose figures cannot be read has its
    /// `error` instead of a `snapshot`).
    pub async fn all_stats(&self) -> Vec<NodeStat> {
        let nodes: Vec<NodeRef> = self
            .list()
            .rows()
            .iter()
            .map(|r| NodeRef::checked(&self.name, r.clone()))
            .collect();
        self.loads.retain(
            &nodes
                .iter()
                .map(|n| n.row().id.to_string())
                .collect::<Vec<_>>(),
        );
        let mut out = Vec::with_capacity(nodes.len());
        for n in &nodes {
            out.push(self.node_stat(n).await);
        }
        out
    }

    /// One node's figures.
    pub async fn node_stat(&self, node: &NodeRef) -> NodeStat {
        let row = node.row();
        let (snapshot, error) = match self.snapshot(node).await {
            Ok(s) => (Some(s), String::new()),
            Err(e) => (None, e),
        };
        NodeStat {
            hostname: row.name.clone(),
            ip: row.ip.clone(),
            created_at: row.created_at.clone(),
            snapshot,
            error,
        }
    }

    async fn snapshot(&self, node: &NodeRef) -> Result<Snapshot, String> {
        let row = node.row();
        if !matches!(row.status, NodeState::Running | NodeState::Paused) {
            return Err(format!(
                "node {:?} is {}: it has no figures",
                row.name,
                row.status.as_str()
            ));
        }
        if row.cgroup.is_none() {
            return Err(format!("node {:?} has no cgroup yet", row.name));
        }
        let base = self.stats(node).await.map_err(|e| e.message)?;
        let cgroup = self
            .host
            .cgroups
            .node(&self.name, row.cgroup.as_deref().unwrap_or_default());
        let cpu = base.cpu_usage_usec;
        let usage = tokio::task::spawn_blocking(move || cgroup.usage(cpu))
            .await
            .map_err(|e| format!("stats task: {e}"))?;
        let (net_rx, net_tx) = crate::network::node_net_of(row)
            .and_then(|n| {
                host_if_bytes(&std::fs::read_to_string("/proc/net/dev").ok()?, &n.host_if)
            })
            .unwrap_or((0, 0));
        let uptime = uptime_secs(&row.created_at);
        let load = self
            .loads
            .update(&row.id.to_string(), usage.cpu_usage_usec, uptime as f64);
        let total = usage
            .memory_limit
            .map_or(row.ram_bytes, |l| l.min(row.ram_bytes.max(1)));
        let used = usage.memory_used.min(total);
        let disk = base.disk.or(usage.disk).unwrap_or_default();
        let disk_used = disk.total.saturating_sub(disk.free);
        Ok(Snapshot {
            hostname: row.name.clone(),
            arch: std::env::consts::ARCH.into(),
            timestamp: now_rfc3339(),
            uptime: go_duration(uptime),
            total_cpus: row.cpus,
            total_memory: total,
            memory_used: used,
            memory_available: total - used,
            memory_used_percent: percent(used, total),
            load_avg1: load[0],
            load_avg5: load[1],
            load_avg15: load[2],
            disk_read_total: usage.disk_read_bytes as f64,
            disk_write_total: usage.disk_write_bytes as f64,
            // The host side's transmit is what the node received.
            network_read_total: net_tx as f64,
            network_write_total: net_rx as f64,
            disk_io_inflight: 0,
            open_connections: usage.open_sockets as i64,
            open_files: usage.open_files as i64,
            entropy: std::fs::read_to_string("/proc/sys/kernel/random/entropy_avail")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            disk_space_total: disk.total,
            disk_space_used: disk_used,
            disk_space_free: disk.free,
            disk_space_used_percent: percent(disk_used, disk.total),
            cpu_usage_seconds: usage.cpu_usage_usec as f64 / 1e6,
            pids: base.pids,
            oom_kills: base.oom_kills,
        })
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// Received and sent bytes of interface `name` in a `/proc/net/dev` text.
pub fn host_if_bytes(dev: &str, name: &str) -> Option<(u64, u64)> {
    dev.lines().find_map(|l| {
        let (n, rest) = l.split_once(':')?;
        if n.trim() != name {
            return None;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        Some((*f.first()?, *f.get(8)?))
    })
}

/// Seconds since an RFC 3339 UTC time (`2026-11-30T01:48:04Z`, fractions ignored); 0 when
/// it does not parse.
pub fn uptime_secs(created_at: &str) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    epoch_secs(created_at).map_or(0, |t| now.saturating_sub(t))
}

fn epoch_secs(t: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Seconds as a Go duration (`1h2m3s`, `45s`).
pub fn go_duration(s: u64) -> String {
    let (h, m, s) = (s / 3600, s % 3600 / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_as_slicer_says_them() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(3723), "1h2m3s");
        assert_eq!(go_duration(62), "1m2s");
        assert_eq!(epoch_secs("1970-01-02T00:00:01Z"), Some(86401));
        assert_eq!(epoch_secs("2026-11-30T01:48:04Z"), Some(1_796_003_284));
        assert_eq!(epoch_secs("junk"), None);
        let dev = "Inter-|   Receive\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n  bh0a1: 100 2 0 0 0 0 0 0 300 4 0 0 0 0 0 0\n    lo: 1 1 0 0 0 0 0 0 1 1 0 0 0 0 0 0\n";
        assert_eq!(host_if_bytes(dev, "bh0a1"), Some((100, 300)));
        assert_eq!(host_if_bytes(dev, "bh0a"), None);
    }
}
