//! Removing nodes: destroy (stop the processes, remove what the node left on the host),
//! delete (the API's, through the state machine), reconciliation after a start or crash,
//! and delete-all at shutdown.

use bulkhead_core::{DomainError, NodeState};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{NodeRef, Tenant};

impl Tenant {
    /// Stops a node's processes and removes everything it left on the host. Idempotent.
    pub(super) async fn destroy(&self, name: &str) {
        self.forwards.close_node(name);
        self.gates.remove(name);
        let dir = self.node_dir(name);
        if let Some(st) = bulkhead_jail::read_supervisor_state(&dir) {
            if bulkhead_jail::supervisor_alive(&st) {
                // SAFETY: plain kill of the supervisor we recorded, verified by its start time.
                unsafe { libc::kill(st.supervisor_pid, libc::SIGTERM) };
                let until = Instant::now() + Duration::from_secs(5);
                while bulkhead_jail::supervisor_alive(&st) && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                if bulkhead_jail::supervisor_alive(&st) {
                    // SAFETY: as above.
                    unsafe { libc::kill(st.supervisor_pid, libc::SIGKILL) };
                }
            }
        }
        let (cg, tenant, net) = (
            self.host.cgroups.clone(),
            self.name.clone(),
            self.net.clone(),
        );
        let r = tokio::task::spawn_blocking(move || {
            if let (Some(n), Some(nn)) = (net, crate::network::read_node_net(&dir)) {
                n.detach(&nn);
            }
            bulkhead_jail::cleanup(&cg, &tenant, &dir)
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::error!(node = %name, error = %e, "cleanup failed; reconciliation will retry");
        }
    }

    /// Deletes a node through the state machine: only one of concurrent deletes wins the
    /// transition to Deleting; a node still being created is refused.
    pub async fn delete(&self, node: &NodeRef) -> Result<(), DomainError> {
        let name = node.name();
        let _slot = self.enqueue()?;
        node.row().status.delete(name)?;
        {
            let store = self.store();
            let current = store
                .get(&self.name, name)?
                .ok_or_else(|| DomainError::no_node(name))?;
            let next = current.status.delete(name)?;
            store.set_status(&self.name, name, next)?;
        }
        self.destroy(name).await;
        self.store().delete(&self.name, name)?;
        self.counters.deletes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Brings state and host into agreement after a start or crash: adopts nodes whose
    /// supervisor still runs, removes nodes whose supervisor is gone, and removes node
    /// directories and cgroups that state does not explain.
    pub async fn reconcile(&self) -> (usize, usize) {
        let rows = self.list().unwrap_or_default();
        let (mut adopted, mut removed) = (0, 0);
        for r in &rows {
            let dir = self.node_dir(&r.name);
            let alive = bulkhead_jail::read_supervisor_state(&dir)
                .map(|s| bulkhead_jail::supervisor_alive(&s))
                .unwrap_or(false);
            if alive && r.status.is_live() {
                adopted += 1;
                tracing::info!(node = %r.name, "re-adopted running node");
                continue;
            }
            tracing::warn!(node = %r.name, status = r.status.as_str(), alive, "node lost or half-made; removing it");
            self.destroy(&r.name).await;
            let _ = self.store().delete(&self.name, &r.name);
            removed += 1;
        }
        let known: Vec<String> = self
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect();
        let strays: Vec<String> = std::fs::read_dir(self.dir.join("nodes"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for s in strays.into_iter().filter(|s| !known.contains(s)) {
            tracing::warn!(node = %s, "removing leftovers of a node that state does not know");
            self.destroy(&s).await;
            removed += 1;
        }
        // Cgroups that no known node's spec names: slots of standbys from a daemon that died,
        // or nodes whose directory is already gone. Removing them kills what is inside.
        let live: Vec<String> = known
            .iter()
            .filter_map(|n| bulkhead_jail::spec_cgroup(&self.node_dir(n)))
            .collect();
        let pooled = self.pool.cgroups().await;
        for id in self.host.cgroups.tenant_cgroups(&self.name) {
            if !live.contains(&id) && !pooled.contains(&id) {
                tracing::warn!(cgroup = %id, "removing a cgroup that no node explains");
                if let Err(e) = self.host.cgroups.node(&self.name, &id).remove() {
                    tracing::error!(cgroup = %id, error = %e, "cannot remove stray cgroup");
                }
                removed += 1;
            }
        }
        (adopted, removed)
    }

    /// Deletes every node of the tenant (daemon stop with graceful_shutdown: false).
    pub async fn delete_all(&self) {
        self.pool.drain().await;
        for r in self.list().unwrap_or_default() {
            let _ = self
                .store()
                .set_status(&self.name, &r.name, NodeState::Deleting);
            self.destroy(&r.name).await;
            let _ = self.store().delete(&self.name, &r.name);
        }
        self.host.cgroups.remove_tenant_if_empty(&self.name);
    }

    /// The recorded networks of the nodes state knows (after reconciliation: the live ones).
    pub fn live_node_nets(&self) -> Vec<(String, crate::network::NodeNet)> {
        self.list()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| {
                crate::network::read_node_net(&self.node_dir(&r.name)).map(|n| (r.name, n))
            })
            .collect()
    }

    /// Whether the node's supervisor (and so the node) still runs.
    pub(super) fn node_alive(&self, name: &str) -> bool {
        bulkhead_jail::read_supervisor_state(&self.node_dir(name))
            .is_some_and(|s| bulkhead_jail::supervisor_alive(&s))
    }

    /// Records that a node's init exited on its own (Running or Paused → Stopped); delete
    /// still cleans it up.
    pub(super) fn mark_stopped(&self, name: &str) {
        let store = self.store();
        if let Ok(Some(r)) = store.get(&self.name, name) {
            let next = r.status.stopped();
            if next != r.status {
                let _ = store.set_status(&self.name, name, next);
            }
        }
    }
}
