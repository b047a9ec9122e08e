//! What the task service does in the daemon (#16): the shim config of a Create, a task's
//! node or container made (`make`, with the rootfs upload) and removed (`unmake`), a process
//! run as a background exec with its stdio and exit watcher (`run`).
//!
//! Invariants: `<bundle>/bulkhead.json` is written before the daemon makes anything; a node
//! owned by a task (sandbox, `ctr run` container) is followed for OOM kills until removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bulkhead_api::containers::CreateContainerRequest;
use bulkhead_api::CreateNodeRequest;
use containerd_shim::api::CreateTaskRequest;
use containerd_shim::protos::events::task::{TaskExecStarted, TaskStart};
use containerd_shim::protos::ttrpc::Code;
use containerd_shim::TtrpcResult;
use log::info;

use crate::client::{Daemon, DaemonError};
use crate::config::{self, ShimConfig};
use crate::events::follow_oom;
use crate::service::{daemon_status, locked, status, NodeTask, Service, BULKHEAD_URL};
use crate::spec::{self, Kind};
use crate::task::{exited, node_name, Body, Container, Proc, Record, Role};
use crate::{io, rootfs};

impl Service {
    pub(crate) fn config(&self, req: &CreateTaskRequest) -> TtrpcResult<ShimConfig> {
        let (value, type_url) = match req.options.as_ref() {
            Some(a) => (Some(a.value.as_slice()), a.type_url.as_str()),
            None => (None, ""),
        };
        let env = std::env::var(BULKHEAD_URL).ok();
        let mut cfg = config::load(value, type_url, env.as_deref())
            .map_err(|e| status(Code::INVALID_ARGUMENT, e.to_string()))?;
        // containerd's own state dir (the bundle is <state>/io.containerd.runtime.v2.task/NS/ID):
        // CRI's /etc/hosts and friends live under it.
        if let Some(state) = Path::new(&req.bundle).ancestors().nth(3) {
            if !state.as_os_str().is_empty() && state != Path::new("/") {
                cfg.host_paths.push(state.to_path_buf());
            }
        }
        Ok(cfg)
    }

    /// Makes the task's node or container in the daemon; answers its record and role.
    pub(crate) async fn make(
        &self,
        req: &CreateTaskRequest,
        daemon: &Daemon,
        cfg: &ShimConfig,
        plan: &spec::Plan,
    ) -> TtrpcResult<(Role, Record)> {
        let bundle = Path::new(&req.bundle);
        let id = req.id.as_str();
        let (role, record) = match &plan.kind {
            Kind::Container { sandbox_id, .. } => {
                let sb = self.container(sandbox_id).map_err(|_| {
                    status(
                        Code::NOT_FOUND,
                        format!("the pod sandbox {sandbox_id} of container {id} is not in this shim: create the sandbox first"),
                    )
                })?;
                if let Some(n) = locked(&self.nodes).get(sb.node()) {
                    spec::check_fits(plan, n.ram_bytes, n.cpus)
                        .map_err(|r| status(Code::INVALID_ARGUMENT, r.to_string()))?;
                }
                let record = Record {
                    container: id.into(),
                    standalone: false,
                    ..sb.record.clone()
                };
                (Role::PodContainer, record)
            }
            kind => {
                let (role, ns, mut tags) = match kind {
                    Kind::Sandbox { namespace, pod, .. } => {
                        let ns = if namespace.is_empty() {
                            &self.ns
                        } else {
                            namespace
                        };
                        let tags = vec![format!("k8s-ns={ns}"), format!("k8s-pod={pod}")];
                        (Role::Sandbox, ns.clone(), tags)
                    }
                    _ => (Role::Standalone, self.ns.clone(), Vec::new()),
                };
                tags.push(format!("containerd-id={id}"));
                tags.push(format!("containerd-ns={}", self.ns));
                tags.iter_mut().for_each(|t| t.truncate(128));
                let place = daemon
                    .placement(&ns, &cfg.driver)
                    .await
                    .map_err(daemon_status)?;
                // `<group>-<id or 12 hex>`: short, since a node's sockets live under its name
                // (the kind is in the tags).
                let prefix = place.hostgroup.as_str();
                let record = Record {
                    // A `ctr run` container of another containerd namespace than `default`
                    // may share its id with one of `default`: its name carries the namespace.
                    node: if role == Role::Standalone && self.ns != "default" {
                        node_name(prefix, &format!("{}/{id}", self.ns))
                    } else {
                        node_name(prefix, id)
                    },
                    container: id.into(),
                    tenant: place.tenant,
                    hostgroup: place.hostgroup,
                    standalone: true,
                    socket: cfg.socket.clone(),
                };
                record.write(bundle).map_err(|e| {
                    status(
                        Code::INTERNAL,
                        format!("write {}: {e}", Record::path(bundle).display()),
                    )
                })?;
                let node_req = CreateNodeRequest {
                    hostname: Some(record.node.clone()),
                    ram_bytes: plan.ram_bytes,
                    cpus: plan.cpus,
                    tags,
                    ..Default::default()
                };
                info!(
                    "creating node {} in {}/{}",
                    record.node, record.tenant, record.hostgroup
                );
                daemon
                    .create_node(&record.hostgroup, &node_req)
                    .await
                    .map_err(daemon_status)?;
                let size = daemon
                    .node(&record.hostgroup, &record.node)
                    .await
                    .ok()
                    .flatten();
                let (oom_daemon, events, containers) =
                    (daemon.clone(), self.events.clone(), self.containers.clone());
                let (tenant, node) = (record.tenant.clone(), record.node.clone());
                let node2 = node.clone();
                let oom = tokio::spawn(async move {
                    let of_node = move || {
                        locked(&containers)
                            .values()
                            .filter(|c| c.node() == node2)
                            .map(|c| c.id.clone())
                            .collect()
                    };
                    follow_oom(oom_daemon, tenant, node, of_node, events).await
                });
                locked(&self.nodes).insert(
                    record.node.clone(),
                    NodeTask {
                        oom,
                        ram_bytes: size.as_ref().map_or(u64::MAX, |n| n.ram_bytes),
                        cpus: size.as_ref().map_or(u32::MAX, |n| n.cpus),
                    },
                );
                (role, record)
            }
        };
        if role != Role::Sandbox {
            record.write(bundle).map_err(|e| {
                status(
                    Code::INTERNAL,
                    format!("write {}: {e}", Record::path(bundle).display()),
                )
            })?;
            self.upload(req, daemon, &record, plan).await?;
        }
        Ok((role, record))
    }

    /// The bundle's rootfs into the node, then the container's mounts.
    async fn upload(
        &self,
        req: &CreateTaskRequest,
        daemon: &Daemon,
        record: &Record,
        plan: &spec::Plan,
    ) -> TtrpcResult<()> {
        let target = PathBuf::from(&req.bundle).join("rootfs");
        let mounts = req.rootfs.clone();
        let mounted = !mounts.is_empty();
        let t = target.clone();
        tokio::task::spawn_blocking(move || rootfs::mount_rootfs(&mounts, &t))
            .await
            .map_err(|e| status(Code::INTERNAL, e.to_string()))?
            .map_err(|e| status(Code::INVALID_ARGUMENT, e.to_string()))?;
        let tar = rootfs::tar_body(&target, plan.host_files.clone());
        let up = daemon.upload_rootfs(&record.node, &req.id, tar).await;
        if mounted {
            let t = target.clone();
            let _ = tokio::task::spawn_blocking(move || rootfs::unmount_rootfs(&t)).await;
        }
        up.map_err(daemon_status)?;
        let creq = CreateContainerRequest {
            id: req.id.clone(),
            mounts: plan.mounts.clone(),
            readonly: plan.readonly,
        };
        daemon
            .create_container(&record.node, &creq)
            .await
            .map_err(daemon_status)
    }

    /// Removes what a task holds in the daemon: its node when it owns one, else its container.
    pub(crate) async fn unmake(&self, daemon: &Daemon, record: &Record) -> Result<(), DaemonError> {
        if record.standalone {
            if let Some(n) = locked(&self.nodes).remove(&record.node) {
                n.oom.abort();
            }
            daemon.delete_node(&record.hostgroup, &record.node).await
        } else {
            daemon
                .delete_container(&record.node, &record.container)
                .await
        }
    }

    /// Starts `p` (a process of `c`): its background exec, its stdio, its exit watcher.
    pub(crate) async fn run(&self, c: &Arc<Container>, p: &Arc<Proc>) -> TtrpcResult<i32> {
        let Body::Process(plan) = &p.body else {
            p.set_running(None, 0);
            self.started(p);
            return Ok(0);
        };
        let daemon = self.daemon()?;
        let tty = p.stdio.terminal.then(|| p.lock().size);
        let started = daemon
            .start_exec(c.node(), &c.id, plan, !p.stdio.stdin.is_empty(), tty)
            .await
            .map_err(daemon_status)?;
        let pumps = match io::attach(p, daemon.clone(), c.node().into(), started.exec_id.clone()) {
            Ok(h) => h,
            Err(e) => {
                let _ = daemon.kill(c.node(), &started.exec_id, 9).await;
                return Err(status(Code::INTERNAL, e.to_string()));
            }
        };
        p.set_running(Some(started.exec_id.clone()), started.pid);
        self.started(p);
        let (events, p2, c2) = (self.events.clone(), p.clone(), c.clone());
        tokio::spawn(async move {
            let code = pumps.await.unwrap_or(255);
            p2.io.shutdown().await;
            exited(&events, &daemon, &c2, &p2, code).await;
        });
        Ok(started.pid)
    }

    fn started(&self, p: &Proc) {
        let pid = std::process::id();
        if p.exec_id.is_empty() {
            self.events.send(TaskStart {
                container_id: p.container.clone(),
                pid,
                ..Default::default()
            });
        } else {
            self.events.send(TaskExecStarted {
                container_id: p.container.clone(),
                exec_id: p.exec_id.clone(),
                pid,
                ..Default::default()
            });
        }
    }
}
