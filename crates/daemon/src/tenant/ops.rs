//! Node operations beyond create and delete: pause/resume (QMP for microVMs, the cgroup
//! freezer for jails) and port forwards. Each takes a tenant-checked [`NodeRef`]; state
//! changes go through `NodeState`'s transitions.

use bulkhead_core::{DomainError, NodeState};

use super::{NodeRef, Tenant};

impl Tenant {
    /// Pauses (`true`) or resumes a node: QMP `stop`/`cont` for a microVM, the cgroup freezer
    /// for a jail. A paused node keeps its memory; exec and copy answer 409 until it resumes.
    pub async fn set_paused(&self, node: &NodeRef, pause: bool) -> Result<NodeState, DomainError> {
        let name = node.name();
        let st = node.row().status;
        let to = if pause {
            st.pause(name)?
        } else {
            st.resume(name)?
        };
        let dir = self.node_dir(name);
        let (cg, tenant) = (self.host.cgroups.clone(), self.name.clone());
        let cgroup = node.row().cgroup.clone();
        let vm = self.host.vm.is_some();
        tokio::task::spawn_blocking(move || -> Result<(), String> {
            if vm {
                let cmd = if pause { "stop" } else { "cont" };
                bulkhead_vm::qmp::execute(&dir.join("vm/qmp.sock"), cmd).map(|_| ())
            } else {
                let id = cgroup.ok_or("the node has no cgroup")?;
                cg.node(&tenant, &id)
                    .freeze(pause)
                    .map_err(|e| e.to_string())
            }
        })
        .await
        .map_err(|e| DomainError::internal(format!("pause: {e}")))?
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
