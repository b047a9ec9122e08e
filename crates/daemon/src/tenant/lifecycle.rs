//! A node's power operations after create (ADR 0018): shutdown (its init is asked to end; the
//! node is Stopped and keeps its record), relaunch (a Stopped or Suspended node starts again
//! with its name, address, tags and, for a microVM, its disk), suspend (a microVM's memory
//! goes to a file in the node's directory and its QEMU ends) and restore (a fresh QEMU loads
//! that file and the guest runs on). Which of them a driver can do is the driver's answer.
//!
//! Invariants:
//! - one power operation per node at a time (a second answers 409 `power_operation_in_progress`);
//! - a node is Suspended before its QEMU ends, so its init's exit leaves it Suspended;
//! - a relaunch or restore that fails leaves the node as it was before (Stopped, Suspended)
//!   with nothing of it running;
//! - each runs to its end in a task of its own (`to_completion`): a client that disconnects
//!   never leaves a node halfway (`Creating` after a dropped relaunch, say).

use bulkhead_core::{Code, DomainError, NodeState};
use bulkhead_driver::control::{client, Request};
use bulkhead_driver::{files, DriverError, Start};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::power::{drop_memory, to_completion, Wait, MEMORY_FILE};
use super::restarting::Restarting;
use super::{NodeRef, Tenant};

/// How long a shutdown waits for the node's init to end after SIGTERM, before SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

impl Tenant {
    /// Stops a Running or Paused node: its processes are synced and asked to end (SIGTERM to
    /// its init, SIGKILL after a grace period). `reboot` is Slicer's default action and
    /// also stops the node, as on Slicer's Firecracker hosts: relaunch starts it again.
    pub async fn shutdown(self: &Arc<Self>, node: &NodeRef) -> Result<(), DomainError> {
        let (t, node) = (self.clone(), node.clone());
        to_completion(async move { t.shutdown_now(&node).await }).await
    }

    async fn shutdown_now(&self, node: &NodeRef) -> Result<(), DomainError> {
        let name = node.name();
        let _op = self.power.begin(name)?;
        let st = self.fresh_state(name)?;
        st.shutdown(name)?;
        if st == NodeState::Paused {
            // A frozen node cannot act on a signal: thaw it first.
            self.set_paused(node, false).await?;
        } else {
            self.sync_node(node).await;
        }
        self.end_init(name).await?;
        self.mark_stopped(name).await;
        tracing::info!(node = %name, "node shut down");
        Ok(())
    }

    /// Writes a Running or Paused microVM's memory to disk and ends its QEMU.
    pub async fn suspend(self: &Arc<Self>, node: &NodeRef) -> Result<(), DomainError> {
        let (t, node) = (self.clone(), node.clone());
        to_completion(async move { t.suspend_now(&node).await }).await
    }

    async fn suspend_now(&self, node: &NodeRef) -> Result<(), DomainError> {
        let name = node.name();
        let _op = self.power.begin(name)?;
        let st = self.fresh_state(name)?;
        st.suspend(name)?;
        let file = self.node_dir(name).join(MEMORY_FILE);
        let f = file.clone();
        self.driver_op(node, move |d, n| d.suspend(n, &f))
            .await
            .map_err(|e| self.driver_refusal(name, "suspend", e))?;
        let n = name.to_string();
        self.store
            .transition(name, move |s| s.suspend(&n))
            .await?
            .ok_or_else(|| DomainError::no_node(name))?;
        self.end_init(name).await?;
        tracing::info!(node = %name, file = %file.display(), "node suspended to disk");
        Ok(())
    }

    /// Starts a Stopped or Suspended node again (a suspended node's memory is dropped).
    pub async fn relaunch(
        self: &Arc<Self>,
        node: &NodeRef,
        wait: Wait,
        timeout: Duration,
    ) -> Result<bulkhead_api::CreatedNode, DomainError> {
        let (t, node) = (self.clone(), node.clone());
        to_completion(async move { t.relaunch_now(&node, wait, timeout).await }).await
    }

    async fn relaunch_now(
        self: &Arc<Self>,
        node: &NodeRef,
        wait: Wait,
        timeout: Duration,
    ) -> Result<bulkhead_api::CreatedNode, DomainError> {
        let name = node.name();
        let _op = self.power.begin(name)?;
        let _slot = self.enqueue()?;
        let before = self.fresh_state(name)?;
        before.relaunch(name)?;
        // #13: a daemon that dies while the node is Creating keeps it (`restarting`).
        let _mark = Restarting::begin(&self.node_dir(name))?;
        let n = name.to_string();
        self.store
            .transition(name, move |s| s.relaunch(&n))
            .await?
            .ok_or_else(|| DomainError::no_node(name))?;
        let r = self.start_again(name, Start::Relaunch, wait, timeout).await;
        if let Err(e) = r {
            // A relaunch drops a suspended node's memory by design, and a guest that booted
            // from the disk made that memory stale anyway: a failed one leaves it Stopped.
            if before == NodeState::Suspended {
                drop_memory(self.node_dir(name)).await; // #13: wiped, not just unlinked
            }
            self.undo_start(name, NodeState::Stopped).await;
            return Err(e);
        }
        drop_memory(self.node_dir(name)).await; // #13: wiped, not just unlinked
        let row = self.node(name)?.row().clone();
        tracing::info!(node = %name, "node relaunched");
        Ok(bulkhead_api::CreatedNode {
            hostname: row.name.clone(),
            hostgroup: row.hostgroup.clone(),
            ip: row.ip.clone(),
            created_at: row.created_at.clone(),
            arch: std::env::consts::ARCH.into(),
        })
    }

    /// Brings a Suspended node back from its memory file.
    pub async fn restore(
        self: &Arc<Self>,
        node: &NodeRef,
        wait: Wait,
        timeout: Duration,
    ) -> Result<(), DomainError> {
        let (t, node) = (self.clone(), node.clone());
        to_completion(async move { t.restore_now(&node, wait, timeout).await }).await
    }

    async fn restore_now(
        self: &Arc<Self>,
        node: &NodeRef,
        wait: Wait,
        timeout: Duration,
    ) -> Result<(), DomainError> {
        let name = node.name();
        let _op = self.power.begin(name)?;
        let _slot = self.enqueue()?;
        let file = self.node_dir(name).join(MEMORY_FILE);
        let n = name.to_string();
        self.fresh_state(name)?.restore(name)?;
        if !file.exists() {
            return Err(DomainError::new(
                Code::NodeFailed,
                format!("node {name:?} has no memory file to restore from: relaunch it (a fresh start) or delete it"),
            ));
        }
        let _mark = Restarting::begin(&self.node_dir(name))?; // #13, as in a relaunch
        self.store
            .transition(name, move |s| s.restore(&n))
            .await?
            .ok_or_else(|| DomainError::no_node(name))?;
        let r = self.start_again(name, Start::Restore, wait, timeout).await;
        if let Err(e) = r {
            // Once the restored guest ran (the wait for its agent failed), it has written to
            // its disk: the memory file no longer matches it, and loading it again would
            // corrupt the guest's file system. Such a node goes back to Stopped (relaunch
            // boots it from the disk); one whose guest never ran stays Suspended.
            let ran = self
                .fresh_state(name)
                .is_ok_and(|s| s == NodeState::Running);
            let back = if ran {
                drop_memory(self.node_dir(name)).await; // #13
                NodeState::Stopped
            } else {
                NodeState::Suspended
            };
            self.undo_start(name, back).await;
            return Err(e);
        }
        drop_memory(self.node_dir(name)).await; // #13: the guest's RAM, wiped
        tracing::info!(node = %name, "node restored from disk");
        Ok(())
    }

    /// The node's state as last committed (the caller's `NodeRef` may be older).
    fn fresh_state(&self, name: &str) -> Result<NodeState, DomainError> {
        Ok(self.node(name)?.row().status)
    }

    /// A best-effort `sync` inside a running node, so that its files are on its disk before
    /// its processes end.
    pub(super) async fn sync_node(&self, node: &NodeRef) {
        let req = bulkhead_agent::proto::ExecRequest {
            cmd: "sync".into(),
            timeout_ms: Some(5_000),
            ..Default::default()
        };
        if let Ok(s) = self.exec(node, req).await {
            let _ = tokio::time::timeout(Duration::from_secs(6), s.collect()).await;
        }
    }

    /// Ends the node's init through its supervisor (SIGTERM, then SIGKILL after [`GRACE`])
    /// and waits for it to be gone. The supervisor stays, answering with the exit status.
    async fn end_init(&self, name: &str) -> Result<(), DomainError> {
        let dir = self.node_dir(name);
        for (signal, patience) in [
            (libc::SIGTERM, GRACE),
            (libc::SIGKILL, Duration::from_secs(5)),
        ] {
            if !self.node_alive(name).await {
                return Ok(());
            }
            let _ = client::request_async(&dir, Request::Kill { signal }, None).await;
            let until = Instant::now() + patience;
            while Instant::now() < until {
                if !self.node_alive(name).await {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(DomainError::internal(format!(
            "node {name:?}'s init did not end after SIGKILL"
        )))
    }

    /// Starts a node whose record exists (and is `Creating`) again: the old supervisor and
    /// cgroup go, its network rules are made afresh, a new supervisor starts it, the driver
    /// restores its memory if asked, and the node is Running.
    async fn start_again(
        self: &Arc<Self>,
        name: &str,
        start: Start,
        wait: Wait,
        timeout: Duration,
    ) -> Result<(), DomainError> {
        let deadline = Instant::now() + timeout;
        let row = self.node(name)?.row().clone();
        let g = self.group(&row.hostgroup)?.clone();
        self.clear_processes(name).await;
        let node_net = crate::network::node_net_of(&row);
        // A host-work slot for the start, the memory's restore and the boot, not for the
        // node's userdata (#12, rate: `crate::fair`); the boot keeps it for
        // `fair::BOOT_SLOT_BUDGET` at most.
        let permit = self.host_work(deadline).await?;
        // #13, attach: the volumes the store records for the node, as at its create.
        let volumes = self.recorded_volumes(name, &g.name)?;
        self.start_supervisor(&row, &g, node_net.as_ref(), start, &volumes)
            .await?;
        if start == Start::Restore {
            let file = self.node_dir(name).join(MEMORY_FILE);
            let node = self.node(name)?;
            self.driver_op(&node, move |d, n| d.restore(n, &file))
                .await
                .map_err(|e| self.driver_refusal(name, "restore", e))?;
        }
        let n = name.to_string();
        self.store.transition(name, move |s| s.started(&n)).await?;
        self.watch(name);
        let wait = if start == Start::Restore && wait == Wait::Userdata {
            Wait::Agent // a restored node is past its userdata
        } else {
            wait
        };
        let boot = async {
            if wait != Wait::None {
                self.wait_agent(name, deadline).await?;
            }
            Ok::<(), DomainError>(())
        };
        (permit.hold_while(crate::fair::BOOT_SLOT_BUDGET, boot)).await?;
        if start != Start::Restore {
            // #13, attach: a microVM's volumes (a restored guest kept its mounts).
            self.mount_in_guest(name, &g.name, &volumes, deadline)
                .await?;
        }
        self.after_start(name, wait, deadline).await
    }

    /// After a failed relaunch or restore: nothing of the node runs, and it is `back` again.
    async fn undo_start(&self, name: &str, back: NodeState) {
        self.clear_processes(name).await;
        let _ = self.store.set_status(name, back).await;
    }

    /// Ends the node's supervisor (and so anything it still runs), removes its cgroup, its
    /// sockets and its network rules; keeps its directory (console, disk, memory file).
    pub(super) async fn clear_processes(&self, name: &str) {
        self.watches.stop(name);
        self.gates.remove(name);
        let dir = self.node_dir(name);
        self.end_supervisor(&dir).await;
        let row = self.store.get(name);
        let node_net = row.as_deref().and_then(crate::network::node_net_of);
        let cgroup = row.and_then(|r| r.cgroup.clone());
        let (cg, tenant, net) = (
            self.host.cgroups.clone(),
            self.name.clone(),
            self.net.clone(),
        );
        let _ = tokio::task::spawn_blocking(move || {
            if let (Some(n), Some(nn)) = (net, node_net) {
                n.detach(&nn);
            }
            if let Some(id) = cgroup {
                if let Err(e) = cg.node(&tenant, &id).remove() {
                    tracing::warn!(cgroup = %id, error = %e, "cannot remove the node's old cgroup");
                }
            }
            for f in [
                files::AGENT_SOCKET,
                files::CONTROL_SOCKET,
                files::SUPERVISOR,
            ] {
                let _ = std::fs::remove_file(dir.join(f));
            }
        })
        .await;
    }

    /// A driver failure as the client sees it: a driver that cannot do it is a 400
    /// `unsupported` in its own words; anything else a 500 naming the operation.
    fn driver_refusal(&self, name: &str, op: &str, e: DriverError) -> DomainError {
        match e {
            DriverError::Refused(why) => DomainError::new(Code::Unsupported, why),
            e @ DriverError::Unsupported { .. } => {
                DomainError::new(Code::Unsupported, format!("cannot {op} node {name:?}: {e}"))
            }
            e => DomainError::internal(format!("cannot {op} node {name:?}: {e}")),
        }
    }

    /// Runs a blocking driver operation on an existing node, off the async workers.
    async fn driver_op<T: Send + 'static>(
        &self,
        node: &NodeRef,
        op: impl FnOnce(
                &dyn bulkhead_driver::Driver,
                bulkhead_driver::NodeRef<'_>,
            ) -> Result<T, DriverError>
            + Send
            + 'static,
    ) -> Result<T, DriverError> {
        let dir: PathBuf = self.node_dir(node.name());
        let name = node.name().to_string();
        let cgroup = self.node(&name).ok().and_then(|n| n.row().cgroup.clone());
        let (cgroups, tenant, driver) = (
            self.host.cgroups.clone(),
            self.name.clone(),
            self.driver_for(node.group()).clone(),
        );
        tokio::task::spawn_blocking(move || {
            let id = cgroup.ok_or_else(|| DriverError::Failed("the node has no cgroup".into()))?;
            let cgroup = cgroups.node(&tenant, &id);
            let n = bulkhead_driver::NodeRef {
                node: &name,
                node_dir: &dir,
                cgroup: &cgroup,
            };
            op(driver.as_ref(), n)
        })
        .await
        .map_err(|e| DriverError::Failed(format!("driver task: {e}")))?
    }
}
