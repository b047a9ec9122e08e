//! The tenant's usage sampler (#14, part E; ADR 0035): every `usage.sample_interval` a round
//! reads each node's cgroup (CPU time, memory and its peak, OOM kills), the host side of its
//! veth (`/proc/net/dev` in the daemon's network namespace; it carries a microVM's tap traffic
//! too), its allocated storage (its layer's size plus its attached volumes' sizes) and the
//! execs counted since, accounts for them (`bulkhead_store::usage::step`) and writes the round
//! in one transaction. A node's delete runs its final round first; its figures stay.
//!
//! Every round (a node's final one too) also reads what the tenant stores outside its counted
//! nodes — volumes no counted node holds, snapshots, commits, by their recorded sizes — into
//! the row `bulkhead_store::usage_stored::STORED_ID`: a volume is counted by a node or there, never
//! both, and a detach or a node's delete moves it at that round.
//!
//! A grown OOM kill count is a lifecycle change the daemon saw: `Tenant::by_daemon`
//! (`oom_kill`, event `node.oom_kill`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bulkhead_api::usage::{UsageFigures, UsageRow};
use bulkhead_core::{DomainError, NodeState};
use bulkhead_store::usage::{step, Reading, UsageDelta};
use bulkhead_store::usage_stored::{stored_bytes, stored_reading, STORED_ID};
use bulkhead_store::NodeRow;

use super::Tenant;

/// `group_by` of `GET /usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Tenant,
    Node,
}

/// What a round reads of one node on a blocking thread.
struct Probe {
    cgroup: Option<String>,
    live: bool,
    host_if: Option<String>,
}

#[derive(Default)]
struct Read {
    cpu_usec: Option<u64>,
    cpu_may_dip: bool,
    memory: u64,
    memory_peak: Option<u64>,
    oom_kills: Option<u64>,
    rx: Option<u64>,
    tx: Option<u64>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Tenant {
    /// Starts the tenant's sampler; it ends with the tenant.
    pub fn start_usage(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = self.cfg.usage.sample_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(t) = weak.upgrade() else { return };
                t.usage_round(None).await;
            }
        });
    }

    /// The final round of a node about to be destroyed (its figures stay, final).
    pub(super) async fn usage_final(&self, name: &str) {
        if self.store.get(name).is_some() {
            self.usage_round(Some(name)).await;
        }
    }

    /// One round over every node (`only`: that node's final round).
    pub async fn usage_round(&self, only: Option<&str>) {
        let mut round = self.usage.round.lock().await;
        if !round.loaded {
            match (
                self.store.usage_last().await,
                self.store.usage_by_node(None, None).await,
                self.store.usage_tenant_peak(None, None).await,
            ) {
                (Ok(lasts), Ok(sums), Ok(peak)) => {
                    round.lasts = lasts.into_iter().map(|l| (l.node_id.clone(), l)).collect();
                    self.usage.add_totals(&sums);
                    self.usage.note_peak(peak);
                    round.loaded = true;
                }
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    tracing::error!(error = %e, "usage: cannot read the recorded usage; sampling later");
                    return;
                }
            }
        }
        let snap = self.list();
        let all: Vec<Arc<NodeRow>> = snap.rows().to_vec();
        let ids: std::collections::HashSet<String> = all.iter().map(|r| r.id.to_string()).collect();
        round.finished.retain(|id| ids.contains(id));
        // The nodes this round accounts for, whatever `only` (a volume one of them holds is
        // in its storage; any other is stored).
        let counted: std::collections::HashSet<String> = all
            .iter()
            .filter(|r| {
                r.status != NodeState::Creating && !round.finished.contains(&r.id.to_string())
            })
            .map(|r| r.name.clone())
            .collect();
        let rows: Vec<Arc<NodeRow>> = all
            .into_iter()
            // A node still being created has used nothing yet (a failed create's rollback
            // destroys it: no row for it).
            .filter(|r| r.status != NodeState::Creating && only.is_none_or(|n| r.name == n))
            .filter(|r| !round.finished.contains(&r.id.to_string()))
            .collect();
        let probes: Vec<Probe> = rows
            .iter()
            .map(|r| Probe {
                cgroup: r.cgroup.clone(),
                live: r.status.is_live() || (only.is_some() && r.status == NodeState::Deleting),
                host_if: crate::network::node_net_of(r).map(|n| n.host_if),
            })
            .collect();
        let (cgroups, tenant) = (self.host.cgroups.clone(), self.name.clone());
        let reads = tokio::task::spawn_blocking(move || {
            let dev = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
            probes
                .iter()
                .map(|p| {
                    let mut rd = Read::default();
                    if let Some(h) = &p.host_if {
                        // The host side sends what the node receives.
                        if let Some((host_rx, host_tx)) = super::stats::host_if_bytes(&dev, h) {
                            (rd.rx, rd.tx) = (Some(host_tx), Some(host_rx));
                        }
                    }
                    let Some(id) = p.cgroup.as_deref().filter(|_| p.live) else {
                        return rd;
                    };
                    let cg = cgroups.node(&tenant, id);
                    if cg.procs().is_empty() {
                        return rd; // gone (or empty): nothing to read
                    }
                    rd.cpu_usec = cg.cpu_usage_usec();
                    if rd.cpu_usec.is_none() {
                        rd.cpu_usec = Some(cg.usage(None).cpu_usage_usec);
                        rd.cpu_may_dip = true;
                    }
                    rd.memory = cg.memory_current();
                    rd.memory_peak = cg.memory_peak();
                    rd.oom_kills = Some(cg.oom_kills());
                    rd
                })
                .collect::<Vec<Read>>()
        })
        .await
        .unwrap_or_default();
        if reads.len() != rows.len() {
            return;
        }
        let at_ms = now_ms();
        let volumes = self.store.volumes();
        let mut steps = Vec::with_capacity(rows.len());
        for (r, rd) in rows.iter().zip(reads) {
            let layer = r
                .storage_bytes
                .or_else(|| self.cfg.group(&r.hostgroup).map(|g| g.storage_bytes))
                .unwrap_or(0);
            let attached: u64 = volumes
                .attached_to(&r.name)
                .filter_map(|a| volumes.volume(a.volume))
                .map(|v| v.size_bytes)
                .sum();
            let reading = Reading {
                node_id: r.id.to_string(),
                node: r.name.clone(),
                cgroup: r.cgroup.clone().unwrap_or_default(),
                at_ms,
                since_ms: at_ms - super::stats::uptime_secs(&r.created_at) as i64 * 1000,
                live: rd.cpu_usec.is_some(),
                cpu_usec: rd.cpu_usec,
                cpu_may_dip: rd.cpu_may_dip,
                rx_bytes: rd.rx,
                tx_bytes: rd.tx,
                oom_kills: rd.oom_kills,
                memory_peak: rd.memory_peak,
                memory: rd.memory,
                storage_bytes: layer.saturating_add(attached),
                execs: self.usage.take_execs(&r.name),
            };
            steps.push((step(round.lasts.get(&reading.node_id), &reading), r));
        }
        // What the tenant stores outside those nodes (a commit list that cannot be read skips
        // it: its last time stays, so the next round counts the interval).
        let stored = match self.store.commits().await {
            Ok(commits) => {
                let bytes = stored_bytes(
                    &volumes,
                    |n| counted.contains(n),
                    commits.iter().map(|c| c.size_bytes),
                );
                Some(step(
                    round.lasts.get(STORED_ID),
                    &stored_reading(at_ms, bytes),
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "usage: cannot list the commits; stored objects are counted next round");
                None
            }
        };
        // Last values of nodes that are gone without a final round (reconciliation removed
        // them) go too; their figures stay.
        let mut forget: Vec<String> = round
            .lasts
            .keys()
            .filter(|id| !ids.contains(*id) && id.as_str() != STORED_ID)
            .cloned()
            .collect();
        if only.is_some() {
            forget.extend(steps.iter().map(|(s, _)| s.last.node_id.clone()));
        }
        let deltas: Vec<UsageDelta> = (steps.iter().map(|(s, _)| &s.delta))
            .chain(stored.iter().map(|s| &s.delta))
            .cloned()
            .collect();
        let lasts = (steps.iter().map(|(s, _)| &s.last))
            .filter(|l| !forget.contains(&l.node_id))
            .chain(stored.iter().map(|s| &s.last))
            .cloned()
            .collect();
        if let Err(e) = (self.store)
            .record_usage(deltas.clone(), lasts, forget.clone())
            .await
        {
            tracing::error!(error = %e, "usage: cannot record a sampling round; the next one counts it");
            for (s, _) in &steps {
                self.usage.return_execs(&s.delta.node, s.delta.execs);
            }
            return;
        }
        self.usage.add_totals(&deltas);
        // The tenant's peak: its per-minute sums are the store's, read back for this round's
        // buckets (a bucket's sum grows with each node's round in it).
        if let Some(from) = deltas.iter().map(|d| d.bucket).min() {
            match self.store.usage_tenant_peak(Some(from), None).await {
                Ok(p) => self.usage.note_peak(p),
                Err(e) => tracing::warn!(error = %e, "usage: cannot read the tenant's memory peak"),
            }
        }
        for (s, r) in &steps {
            round.lasts.insert(s.last.node_id.clone(), s.last.clone());
            if s.new_oom_kills > 0 {
                (self.usage.oom_kills)
                    .fetch_add(s.new_oom_kills, std::sync::atomic::Ordering::Relaxed);
                // A node that outgrows its memory limit is the tenant's business, not a fault of
                // the daemon: INFO here; the event, the audit line and the metric carry it.
                tracing::info!(node = %r.name, kills = s.new_oom_kills, "the kernel's OOM killer killed processes of the node");
                self.by_daemon(
                    "oom_kill",
                    crate::events::kind::NODE_OOM_KILL,
                    &r.name,
                    &format!(
                        "the kernel's OOM killer killed {} process(es) in node {} (memory limit {} bytes)",
                        s.new_oom_kills, r.name, r.ram_bytes
                    ),
                );
            }
        }
        if let Some(s) = stored {
            round.lasts.insert(STORED_ID.to_string(), s.last);
        }
        for id in &forget {
            round.lasts.remove(id);
        }
        if only.is_some() {
            round.finished.extend(forget);
        }
    }

    /// What the tenant's nodes used in `[from, to)` (UNIX seconds), per node or in all.
    pub async fn usage_report(
        &self,
        from: Option<i64>,
        to: Option<i64>,
        group_by: GroupBy,
    ) -> Result<Vec<UsageRow>, DomainError> {
        let nodes = self.store.usage_by_node(from, to).await?;
        let figures = |d: &UsageDelta| UsageFigures {
            node_seconds: d.node_ms as f64 / 1000.0,
            cpu_seconds: d.cpu_usec as f64 / 1e6,
            memory_byte_seconds: d.memory_byte_seconds,
            memory_peak_bytes: d.memory_peak,
            network_rx_bytes: d.rx_bytes,
            network_tx_bytes: d.tx_bytes,
            storage_byte_seconds: d.storage_byte_seconds,
            execs: d.execs,
        };
        Ok(match group_by {
            GroupBy::Node => {
                let snap = self.list();
                nodes
                    .iter()
                    .map(|d| UsageRow {
                        tenant: self.name.clone(),
                        node: Some(d.node.clone()),
                        node_id: Some(d.node_id.clone()),
                        deleted: d.node_id != STORED_ID
                            && !snap.rows().iter().any(|r| r.id.to_string() == d.node_id),
                        figures: figures(d),
                    })
                    .collect()
            }
            GroupBy::Tenant => {
                let mut sum = UsageDelta::default();
                for d in &nodes {
                    sum.add(d);
                }
                sum.memory_peak = self.store.usage_tenant_peak(from, to).await?;
                vec![UsageRow {
                    tenant: self.name.clone(),
                    node: None,
                    node_id: None,
                    deleted: false,
                    figures: figures(&sum),
                }]
            }
        })
    }
}
