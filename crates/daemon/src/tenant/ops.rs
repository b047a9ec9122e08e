//! Node operations beyond create and delete: pause/resume and stats (the tenant's driver's),
//! and port forwards. Each takes a tenant-checked [`NodeRef`]; state
//! changes go through `NodeState`'s transitions.

use bulkhead_core::{DomainError, NodeState};

use super::{NodeRef, Tenant};

impl Tenant {
    /// Pauses (`true`) or resumes a node through its driver. A paused node keeps its memory;
    /// exec and copy answer 409 until it resumes. A power operation under way on the node
    /// answers 409 `power_operation_in_progress`.
    pub async fn set_paused(&self, node: &NodeRef, pause: bool) -> Result<NodeState, DomainError> {
        let name = node.name();
        // One power operation per node at a time: a pause or resume never interleaves with a
        // suspend, restore, shutdown or relaunch (a `cont` landing mid-migration, or a status
        // written over Suspended). The state is read again once the node is ours.
        let _op = self.power.begin(name)?;
        let st = self.node(name)?.row().status;
        let to = if pause {
            st.pause(name)?
        } else {
            st.resume(name)?
        };
        self.with_driver(node, move |d, n| d.set_paused(n, pause))
            .await
            .map_err(|e| {
                DomainError::internal(format!(
                    "cannot {} node {name:?}: {e}",
                    if pause { "pause" } else { "resume" }
                ))
            })?;
        self.store.set_status(name, to).await?;
        tracing::info!(node = %name, status = to.as_str(), "node {}", if pause { "paused" } else { "resumed" });
        Ok(to)
    }

    /// What a node uses now (memory, CPU time, processes, OOM kills), from its driver.
    pub async fn stats(&self, node: &NodeRef) -> Result<bulkhead_driver::NodeStats, DomainError> {
        self.with_driver(node, |d, n| d.stats(n))
            .await
            .map_err(|e| DomainError::internal(format!("stats of node {:?}: {e}", node.name())))
    }

    /// Runs a blocking driver operation on an existing node, off the async workers.
    async fn with_driver<T: Send + 'static>(
        &self,
        node: &NodeRef,
        op: impl FnOnce(
                &dyn bulkhead_driver::Driver,
                bulkhead_driver::NodeRef<'_>,
            ) -> Result<T, bulkhead_driver::DriverError>
            + Send
            + 'static,
    ) -> Result<T, String> {
        let dir = self.node_dir(node.name());
        let name = node.name().to_string();
        let cgroup = node.row().cgroup.clone();
        let (cgroups, tenant, driver) = (
            self.host.cgroups.clone(),
            self.name.clone(),
            self.driver_for(node.group()).clone(),
        );
        tokio::task::spawn_blocking(move || {
            let id = cgroup.ok_or("the node has no cgroup")?;
            let cgroup = cgroups.node(&tenant, &id);
            let n = bulkhead_driver::NodeRef {
                node: &name,
                node_dir: &dir,
                cgroup: &cgroup,
            };
            op(driver.as_ref(), n).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("driver task: {e}"))?
    }

    /// Opens a port forward to a running, networked node.
    pub async fn open_forward(
        &self,
        node: &NodeRef,
        req: &bulkhead_api::ForwardRequest,
    ) -> Result<bulkhead_api::Forward, DomainError> {
        let name = node.name();
        let n = self.running_node(name)?;
        let ip = n.row().ip.parse().map_err(|_| {
            DomainError::invalid(format!(
                "node {name:?} has no network (its host group has network mode none): forwards need mode isolated or bridge"
            ))
        })?;
        let (lo, hi) = self.cfg.forward_ports;
        if req.host_port != 0 && (lo, hi) == bulkhead_core::daemon_config::NO_FORWARD_PORTS {
            return Err(DomainError::invalid(format!(
                "host_port {} is not allowed: this tenant has no fixed forward ports (config.tenants[].forward_ports in a shared daemon); use 0 for any free port",
                req.host_port
            )));
        }
        if req.host_port != 0 && !(lo..=hi).contains(&req.host_port) {
            return Err(DomainError::invalid(format!(
                "host_port {} is outside this tenant's forward ports {lo}-{hi} (config.forward_ports); use one inside, or 0 for any free port",
                req.host_port
            )));
        }
        let spec = crate::forward::Forwards::validate(name, ip, req)?;
        let f = self.forwards.open(spec).await?;
        if let Err(e) = self
            .store
            .set_forwards(name, self.forwards.record(name))
            .await
        {
            tracing::error!(node = %name, error = %e, "cannot record forwards; they will not survive a restart");
        }
        tracing::info!(node = %name, listen = %f.listen, node_port = f.node_port, "forward opened");
        Ok(f)
    }

    pub async fn close_forward(&self, node: &NodeRef, host_port: u16) -> Result<(), DomainError> {
        let name = node.name();
        if !self.forwards.close(name, host_port) {
            return Err(DomainError::not_found(format!(
                "node {name:?} has no forward on host port {host_port}: `GET /vm/{name}/forwards` lists them"
            )));
        }
        let _ = self
            .store
            .set_forwards(name, self.forwards.record(name))
            .await;
        Ok(())
    }

    /// Reopens the recorded forwards of the nodes that were re-adopted.
    pub async fn reopen_forwards(&self) {
        for r in self.list().rows() {
            for spec in crate::forward::parse_record(&r.forwards) {
                let listen = spec.listen;
                if let Err(e) = self.forwards.open(spec).await {
                    tracing::error!(node = %r.name, %listen, error = %e, "cannot reopen forward");
                }
            }
        }
    }
}
