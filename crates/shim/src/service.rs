//! The task service containerd calls over ttrpc (#16): Create ... Shutdown, each a few calls to
//! the daemon (`client.rs`), state in `task.rs`, stdio in `io.rs`, events in `events.rs`.
//!
//! Mapping (DESIGN-16, docs/fleet.md): a pod's sandbox task is its node (no process: it
//! "runs" from Start until killed); a pod container is a container in that node; a `ctr run`
//! container gets a node of its own. Every process is a background exec of the daemon. The
//! pid containerd sees is the shim's own (as Kata's): processes live in the node, whose pids
//! mean nothing on the host; Pids lists the in-node pids.
//!
//! Invariants: errors go back as ttrpc statuses with the daemon's or the spec check's
//! message; nothing here panics on input; TaskExit goes out once per process, after its
//! TaskStart/TaskExecStarted.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bulkhead_api::containers::{validate_container_id, CreateContainerRequest};
use bulkhead_api::CreateNodeRequest;
use containerd_shim::api::{
    CreateTaskRequest, CreateTaskResponse, DeleteRequest, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest, StartResponse,
    StateRequest, StateResponse, Status, WaitRequest, WaitResponse,
};
use containerd_shim::asynchronous::io::Stdio;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, DeleteResponse, PidsRequest, PidsResponse,
    StatsRequest, StatsResponse,
};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc::{self, r#async::TtrpcContext, Code};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::TtrpcResult;
use log::{info, warn};

use crate::client::{Daemon, DaemonError};
use crate::config::{self, ShimConfig};
use crate::events::{follow_oom, Events};
use crate::spec::{self, Kind};
use crate::task::{node_name, Body, Container, Proc, Record, Role};
use crate::{io, rootfs};

/// The containerd environment variable naming the daemon (when options name no file).
pub const BULKHEAD_URL: &str = "BULKHEAD_URL";

pub fn status(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

fn daemon_status(e: DaemonError) -> ttrpc::Error {
    let code = match &e {
        DaemonError::Api { status, .. } => match status.as_u16() {
            400 | 413 | 422 => Code::INVALID_ARGUMENT,
            403 => Code::PERMISSION_DENIED,
            404 => Code::NOT_FOUND,
            409 => Code::FAILED_PRECONDITION,
            429 => Code::RESOURCE_EXHAUSTED,
            503 => Code::UNAVAILABLE,
            _ => Code::UNKNOWN,
        },
        DaemonError::Other(_) => Code::UNAVAILABLE,
    };
    status(code, e.to_string())
}

/// A node this shim owns and follows for OOM kills.
struct NodeTask {
    oom: tokio::task::JoinHandle<()>,
    ram_bytes: u64,
    cpus: u32,
}

pub struct Service {
    /// containerd's namespace of this shim.
    ns: String,
    exit: Arc<ExitSignal>,
    events: Events,
    containers: Arc<Mutex<HashMap<String, Arc<Container>>>>,
    /// The daemon (from the first Create's config).
    daemon: Mutex<Option<Daemon>>,
    nodes: Mutex<HashMap<String, NodeTask>>,
    paused: Mutex<HashSet<String>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Service {
    pub fn new(ns: &str, exit: Arc<ExitSignal>, events: Events) -> Self {
        Service {
            ns: ns.into(),
            exit,
            events,
            containers: Arc::default(),
            daemon: Mutex::new(None),
            nodes: Mutex::default(),
            paused: Mutex::default(),
        }
    }

    fn container(&self, id: &str) -> TtrpcResult<Arc<Container>> {
        locked(&self.containers)
            .get(id)
            .cloned()
            .ok_or_else(|| status(Code::NOT_FOUND, format!("container {id} not found")))
    }

    fn proc(&self, id: &str, exec_id: &str) -> TtrpcResult<(Arc<Container>, Arc<Proc>)> {
        let c = self.container(id)?;
        let p = c.proc(exec_id).ok_or_else(|| {
            status(
                Code::NOT_FOUND,
                format!("process {exec_id} of container {id} not found"),
            )
        })?;
        Ok((c, p))
    }

    fn daemon(&self) -> TtrpcResult<Daemon> {
        locked(&self.daemon)
            .clone()
            .ok_or_else(|| status(Code::FAILED_PRECONDITION, "no task was created yet"))
    }

    fn config(&self, req: &CreateTaskRequest) -> TtrpcResult<ShimConfig> {
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
    async fn make(
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
                let prefix = if role == Role::Sandbox { "pod" } else { "ctr" };
                let record = Record {
                    node: node_name(prefix, id),
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
    async fn unmake(&self, daemon: &Daemon, record: &Record) -> Result<(), DaemonError> {
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
    async fn run(&self, c: &Arc<Container>, p: &Arc<Proc>) -> TtrpcResult<i32> {
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

/// Records `p`'s exit and publishes TaskExit (once); an init's exit ends its container's
/// other processes, as a private pid namespace's would.
async fn exited(events: &Events, daemon: &Daemon, c: &Container, p: &Proc, code: u32) {
    if !p.set_exited(code) {
        return;
    }
    info!("process {:?} of {} exited with {code}", p.exec_id, c.id);
    let at = p.lock().exited_at.clone();
    events.send(TaskExit {
        container_id: c.id.clone(),
        id: if p.exec_id.is_empty() {
            c.id.clone()
        } else {
            p.exec_id.clone()
        },
        pid: std::process::id(),
        exit_status: code,
        exited_at: at.into(),
        ..Default::default()
    });
    if p.exec_id.is_empty() {
        for e in c.all_execs() {
            if let Some(bg) = e.bg().filter(|_| e.status() == Status::RUNNING) {
                let _ = daemon.kill(c.node(), &bg, 9).await;
            }
        }
    }
}

#[async_trait]
impl Task for Service {
    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        let (c, p) = self.proc(&req.id, &req.exec_id)?;
        let s = p.lock();
        let mut st = s.status;
        if st == Status::RUNNING && locked(&self.paused).contains(c.node()) {
            st = Status::PAUSED;
        }
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: c.bundle.display().to_string(),
            pid: std::process::id(),
            status: st.into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: s.exit_status,
            exited_at: s.exited_at.clone().into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        info!("create {} (bundle {})", req.id, req.bundle);
        validate_container_id(&req.id).map_err(|m| status(Code::INVALID_ARGUMENT, m))?;
        if locked(&self.containers).contains_key(&req.id) {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("container {} exists", req.id),
            ));
        }
        let cfg = self.config(&req)?;
        let bundle = PathBuf::from(&req.bundle);
        let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).map_err(|e| {
            status(
                Code::INVALID_ARGUMENT,
                format!("the bundle's config.json: {e}"),
            )
        })?;
        let plan =
            spec::plan(&spec, &cfg).map_err(|r| status(Code::INVALID_ARGUMENT, r.to_string()))?;
        let daemon = Daemon::at(cfg.socket_path());
        locked(&self.daemon).get_or_insert_with(|| daemon.clone());
        let (role, record) = match self.make(&req, &daemon, &cfg, &plan).await {
            Ok(r) => r,
            Err(e) => {
                // Undo what was made; the record goes only once nothing is left.
                if let Ok(Some(r)) = Record::read(&bundle) {
                    match self.unmake(&daemon, &r).await {
                        Ok(()) => Record::remove(&bundle),
                        Err(u) => warn!("cleaning up after a failed create of {}: {u}", req.id),
                    }
                }
                return Err(e);
            }
        };
        let body = match role {
            Role::Sandbox => Body::Sandbox,
            _ => Body::Process(plan.process.clone()),
        };
        let stdio = Stdio::new(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        let c = Arc::new(Container {
            id: req.id.clone(),
            bundle,
            role,
            record,
            init: Proc::new(&req.id, "", body, stdio),
            execs: Mutex::default(),
        });
        locked(&self.containers).insert(req.id.clone(), c);
        self.events.send(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: Some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            })
            .into(),
            checkpoint: req.checkpoint.clone(),
            pid: std::process::id(),
            ..Default::default()
        });
        Ok(CreateTaskResponse {
            pid: std::process::id(),
            ..Default::default()
        })
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        info!("start {} {:?}", req.id, req.exec_id);
        let (c, p) = self.proc(&req.id, &req.exec_id)?;
        if p.status() != Status::CREATED {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!(
                    "process {:?} of {} was started already",
                    req.exec_id, req.id
                ),
            ));
        }
        if !req.exec_id.is_empty() && c.init.status() != Status::RUNNING {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is not running", req.id),
            ));
        }
        self.run(&c, &p).await?;
        Ok(StartResponse {
            pid: std::process::id(),
            ..Default::default()
        })
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        info!("delete {} {:?}", req.id, req.exec_id);
        let (c, p) = self.proc(&req.id, &req.exec_id)?;
        if p.status() == Status::RUNNING {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!(
                    "process {:?} of {} is running: kill it first",
                    req.exec_id, req.id
                ),
            ));
        }
        let daemon = self.daemon()?;
        if !req.exec_id.is_empty() {
            if let Some(bg) = p.bg() {
                daemon
                    .delete_exec(c.node(), &bg)
                    .await
                    .map_err(daemon_status)?;
            }
            locked(&c.execs).remove(&req.exec_id);
        } else {
            for e in c.all_execs() {
                if let Some(bg) = e.bg() {
                    let _ = daemon.kill(c.node(), &bg, 9).await;
                    let _ = daemon.delete_exec(c.node(), &bg).await;
                }
                e.io.abort().await;
            }
            if let Some(bg) = p.bg() {
                let _ = daemon.delete_exec(c.node(), &bg).await;
            }
            self.unmake(&daemon, &c.record)
                .await
                .map_err(daemon_status)?;
            Record::remove(&c.bundle);
            locked(&self.containers).remove(&req.id);
            locked(&self.paused).remove(c.node());
        }
        p.io.shutdown().await;
        // A task deleted before it ran never exits by itself.
        p.set_exited(0);
        let s = p.lock();
        let at = s.exited_at.clone().unwrap_or_default();
        if req.exec_id.is_empty() {
            self.events.send(TaskDelete {
                container_id: req.id.clone(),
                pid: std::process::id(),
                exit_status: s.exit_status,
                exited_at: Some(at.clone()).into(),
                ..Default::default()
            });
        }
        Ok(DeleteResponse {
            pid: std::process::id(),
            exit_status: s.exit_status,
            exited_at: Some(at).into(),
            ..Default::default()
        })
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let c = self.container(&req.id)?;
        let processes = std::iter::once(c.init.clone())
            .chain(c.all_execs())
            .filter(|p| p.status() == Status::RUNNING && p.lock().node_pid > 0)
            .map(|p| ProcessInfo {
                pid: p.lock().node_pid as u32,
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        let c = self.container(&req.id)?;
        let daemon = self.daemon()?;
        daemon
            .set_paused(c.node(), true)
            .await
            .map_err(daemon_status)?;
        locked(&self.paused).insert(c.node().into());
        self.events.send(TaskPaused {
            container_id: req.id.clone(),
            ..Default::default()
        });
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        let c = self.container(&req.id)?;
        let daemon = self.daemon()?;
        daemon
            .set_paused(c.node(), false)
            .await
            .map_err(daemon_status)?;
        locked(&self.paused).remove(c.node());
        self.events.send(TaskResumed {
            container_id: req.id.clone(),
            ..Default::default()
        });
        Ok(Empty::new())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        info!(
            "kill {} {:?} signal {} all {}",
            req.id, req.exec_id, req.signal, req.all
        );
        let (c, p) = self.proc(&req.id, &req.exec_id)?;
        let daemon = self.daemon()?;
        if req.all && req.exec_id.is_empty() {
            for e in c.all_execs() {
                if let Some(bg) = e.bg().filter(|_| e.status() == Status::RUNNING) {
                    let _ = daemon.kill(c.node(), &bg, req.signal).await;
                }
            }
        }
        match (p.status(), &p.body) {
            (Status::STOPPED, _) if req.all => Ok(Empty::new()),
            (Status::STOPPED, _) => Err(status(Code::NOT_FOUND, "process already finished")),
            // Never started, or the sandbox (the node itself, no process): a terminating
            // signal ends it.
            (Status::CREATED, _) | (_, Body::Sandbox) => {
                if req.signal != 0
                    && !matches!(
                        req.signal as i32,
                        libc::SIGCHLD | libc::SIGCONT | libc::SIGWINCH | libc::SIGURG
                    )
                {
                    exited(&self.events, &daemon, &c, &p, 128 + req.signal).await;
                }
                Ok(Empty::new())
            }
            _ => {
                let bg = p.bg().unwrap_or_default();
                match daemon.kill(c.node(), &bg, req.signal).await {
                    Ok(()) => Ok(Empty::new()),
                    Err(e) if e.is_not_found() => {
                        Err(status(Code::NOT_FOUND, "process already finished"))
                    }
                    Err(e) => Err(daemon_status(e)),
                }
            }
        }
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        info!("exec {} in {}", req.exec_id, req.id);
        let c = self.container(&req.id)?;
        if c.role == Role::Sandbox {
            return Err(status(
                Code::FAILED_PRECONDITION,
                "a pod's sandbox has no processes to exec beside: exec in one of its containers",
            ));
        }
        if c.init.status() != Status::RUNNING {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is not running", req.id),
            ));
        }
        let value = req
            .spec
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or_default();
        let process: oci_spec::runtime::Process = serde_json::from_slice(value).map_err(|e| {
            status(
                Code::INVALID_ARGUMENT,
                format!("the exec's process spec: {e}"),
            )
        })?;
        let plan = spec::process_plan(&process)
            .map_err(|r| status(Code::INVALID_ARGUMENT, r.to_string()))?;
        let stdio = Stdio::new(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        {
            let mut execs = locked(&c.execs);
            if execs.contains_key(&req.exec_id) {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("exec {} exists", req.exec_id),
                ));
            }
            execs.insert(
                req.exec_id.clone(),
                Proc::new(&req.id, &req.exec_id, Body::Process(plan), stdio),
            );
        }
        self.events.send(TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let (c, p) = self.proc(&req.id, &req.exec_id)?;
        let size = (req.width, req.height);
        // A console of no size (a client without a terminal of its own) changes nothing.
        if size.0 == 0 || size.1 == 0 {
            return Ok(Empty::new());
        }
        p.lock().size = size;
        if let Some(bg) = p.bg().filter(|_| p.status() == Status::RUNNING) {
            self.daemon()?
                .resize(c.node(), &bg, size)
                .await
                .map_err(daemon_status)?;
        }
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let (_, p) = self.proc(&req.id, &req.exec_id)?;
        p.io.close_input();
        Ok(Empty::new())
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let (_, p) = self.proc(&req.id, &req.exec_id)?;
        let (code, at) = p.wait().await;
        Ok(WaitResponse {
            exit_status: code,
            exited_at: Some(at).into(),
            ..Default::default()
        })
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let c = self.container(&req.id)?;
        let stat = self
            .daemon()?
            .stats(c.node())
            .await
            .map_err(daemon_status)?
            .ok_or_else(|| status(Code::NOT_FOUND, format!("no stats for node {}", c.node())))?;
        let any = containerd_shim::util::convert_to_any(Box::new(crate::stats::metrics(&stat)))
            .map_err(|e| status(Code::INTERNAL, e.to_string()))?;
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        if locked(&self.containers).is_empty() {
            info!("shutdown: no task left");
            self.exit.signal();
        }
        Ok(Empty::new())
    }
}
