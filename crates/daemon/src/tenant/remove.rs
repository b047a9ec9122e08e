//! Removing nodes: destroy (stop the processes, remove what the node left on the host),
//! delete (the API's, through the state machine), reconciliation after a start or crash,
//! and delete-all at shutdown.

use bulkhead_core::{DomainError, NodeState};
use bulkhead_driver::control::client::{liveness, Liveness};
use bulkhead_driver::spec::{read_supervisor_state, supervisor_alive};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{NodeRef, Tenant};

impl Tenant {
    /// Stops a node's processes and removes everything it left on the host, its directory's
    /// files wiped (#13). Idempotent.
    pub(super) async fn destroy(&self, name: &str) {
        self.usage_final(name).await; // #14 usage: the node's final figures, kept
        self.forwards.close_node(name);
        self.gates.remove(name);
        self.bg.forget_node(name);
        self.containers.forget_node(name); // #16, B2
        self.watches.stop(name);
        let dir = self.node_dir(name);
        self.end_supervisor(&dir).await;
        let (cg, tenant, net) = (
            self.host.cgroups.clone(),
            self.name.clone(),
            self.net.clone(),
        );
        // What state records of the node (nothing, for a directory state does not explain:
        // reconciliation sweeps its cgroup, and the network's start its links and rules).
        let row = self.store.get(name);
        let node_net = row.as_deref().and_then(crate::network::node_net_of);
        let cgroup = row.and_then(|r| r.cgroup.clone());
        let r = tokio::task::spawn_blocking(move || {
            if let (Some(n), Some(nn)) = (net, node_net) {
                n.detach(&nn);
            }
            super::persist::release_layer(&dir); // #13, persistent nodes
                                                 // #13: every file of the node's directory (disks, memory file, layer) is
                                                 // overwritten with zeros before it is unlinked.
            bulkhead_driver::cleanup(&cg, &tenant, cgroup.as_deref(), &dir)
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::error!(node = %name, error = %e, "cleanup failed; reconciliation will retry");
        }
    }

    /// Ends the supervisor recorded in `dir`. SIGTERM ends a supervisor whatever its node is
    /// doing: it kills a running init and waits for it, or, the init having exited already,
    /// just stops answering.
    pub(super) async fn end_supervisor(&self, dir: &std::path::Path) {
        let Some(st) = read_supervisor_state(dir) else {
            return;
        };
        if supervisor_alive(&st) {
            // SAFETY: plain kill of the supervisor we recorded, verified by its start time.
            unsafe { libc::kill(st.supervisor_pid, libc::SIGTERM) };
            let until = Instant::now() + Duration::from_secs(5);
            while supervisor_alive(&st) && Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if supervisor_alive(&st) {
                // SAFETY: as above.
                unsafe { libc::kill(st.supervisor_pid, libc::SIGKILL) };
            }
        }
    }

    /// Deletes a node through the state machine: only one of concurrent deletes wins the
    /// transition to Deleting; a node still being created is refused.
    pub async fn delete(&self, node: &NodeRef) -> Result<(), DomainError> {
        let name = node.name();
        let _slot = self.enqueue()?;
        node.row().status.delete(name)?;
        let n = name.to_string();
        self.store
            .transition(name, move |s| s.delete(&n))
            .await?
            .ok_or_else(|| DomainError::no_node(name))?;
        self.destroy(name).await;
        self.store.delete(name).await?;
        self.counters.deletes.fetch_add(1, Ordering::Relaxed);
        self.ev_deleted(name); // #14, part B
        Ok(())
    }

    /// Brings state and host into agreement after a start or crash: adopts nodes whose
    /// supervisor still runs (a node whose init exited meanwhile becomes Stopped, as it would
    /// have with the daemon up), keeps Stopped a node whose relaunch or restore was cut short
    /// (`restarting`), removes nodes whose supervisor is gone, and removes node
    /// directories and cgroups that state does not explain.
    pub async fn reconcile(self: &Arc<Self>) -> (usize, usize) {
        let rows = self.list();
        let (mut adopted, mut removed) = (0, 0);
        for r in rows.rows() {
            let live = liveness(&self.node_dir(&r.name)).await;
            match live {
                // #13: a node whose relaunch or restore the daemon's end cut short had been
                // made (unlike a half-made create): it is kept, Stopped, with its directory.
                _ if r.status == NodeState::Creating && self.was_restarting(&r.name) => {
                    adopted += 1;
                    tracing::warn!(node = %r.name, "a relaunch or restore was cut short; the node is kept, Stopped");
                    self.keep_interrupted_start(&r.name).await;
                    continue;
                }
                Liveness::Running(_) if r.status.is_live() => {
                    adopted += 1;
                    tracing::info!(node = %r.name, "re-adopted running node");
                    self.watch(&r.name);
                    continue;
                }
                // A suspended node runs nothing: its directory (memory file, disk) is all of
                // it, whatever became of its supervisor.
                Liveness::Gone if r.status == NodeState::Suspended => {
                    adopted += 1;
                    continue;
                }
                Liveness::Exited(s)
                    if r.status.is_live()
                        || matches!(r.status, NodeState::Stopped | NodeState::Suspended) =>
                {
                    adopted += 1;
                    if let Some(exit) = s.exit() {
                        tracing::info!(node = %r.name, %exit, "re-adopted a node whose init exited; it is Stopped until deleted");
                    }
                    self.mark_stopped(&r.name).await;
                    continue;
                }
                // #13: a persistent node whose supervisor is gone (a stop, a crash, a reboot)
                // keeps its layer; one that ran is relaunched once the tenant is open.
                Liveness::Gone if self.keep_at_start(r) => {
                    adopted += 1;
                    tracing::info!(node = %r.name, status = r.status.as_str(), "kept a persistent node and its layer");
                    continue;
                }
                _ => {}
            }
            let alive = !matches!(live, Liveness::Gone);
            tracing::warn!(node = %r.name, status = r.status.as_str(), alive, "node lost or half-made; removing it");
            self.destroy(&r.name).await;
            let _ = self.store.delete(&r.name).await;
            self.ev_lost(r, alive); // #14, part B
            removed += 1;
        }
        let now = self.list();
        let known: Vec<String> = now.rows().iter().map(|r| r.name.clone()).collect();
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
        // Cgroups that no known node's record names: slots of standbys from a daemon that
        // died, or nodes whose directory is already gone. Removing them kills what is inside.
        let live: Vec<String> = now.rows().iter().filter_map(|r| r.cgroup.clone()).collect();
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

    /// Deletes every node of the tenant (daemon stop with graceful_shutdown: false), except
    /// persistent ones, which stop and stay (#13).
    pub async fn delete_all(&self) {
        self.pool.drain().await;
        for r in self.list().rows() {
            // #13: a persistent node's layer and record stay for the next start.
            if r.persistent && !matches!(r.status, NodeState::Creating | NodeState::Deleting) {
                self.keep_persistent(&r.name).await;
                continue;
            }
            let _ = self.store.set_status(&r.name, NodeState::Deleting).await;
            self.destroy(&r.name).await;
            let _ = self.store.delete(&r.name).await;
            self.ev_deleted_at_stop(&r.name); // #14, part B
        }
        self.host.cgroups.remove_tenant_if_empty(&self.name);
    }

    /// The recorded networks of the nodes state knows (after reconciliation: the live ones).
    pub fn live_node_nets(&self) -> Vec<(String, crate::network::NodeNet)> {
        self.list()
            .rows()
            .iter()
            .filter_map(|r| crate::network::node_net_of(r).map(|n| (r.name.clone(), n)))
            .collect()
    }

    /// Whether the node's init still runs, as its supervisor says on its control channel.
    pub(super) async fn node_alive(&self, name: &str) -> bool {
        liveness(&self.node_dir(name)).await.is_running()
    }

    /// Watches a node that runs (after its create, or when a restarted daemon adopts it): its
    /// init's exit makes it Stopped.
    pub(super) fn watch(self: &Arc<Self>, name: &str) {
        let tenant = Arc::downgrade(self);
        let node = name.to_string();
        self.watches
            .start(name, self.node_dir(name), move |state| async move {
                let Some(t) = tenant.upgrade() else { return };
                t.watches.done(&node);
                if let Some(exit) = state.exit() {
                    tracing::info!(node = %node, %exit, init_pid = state.init_pid, "the node's init exited; the node is Stopped until deleted");
                }
                t.mark_stopped(&node).await;
            });
    }

    /// Records that a node's init exited on its own (Running or Paused → Stopped); delete
    /// still cleans it up.
    pub(super) async fn mark_stopped(&self, name: &str) {
        let before = self.store.get(name).map(|r| r.status); // #14, part B
        let after = self
            .store
            .transition(name, |s| Ok::<_, bulkhead_store::StoreError>(s.stopped()))
            .await;
        self.ev_stopped(name, before, after.ok().flatten().map(|r| r.status)); // #14, part B
    }
}
