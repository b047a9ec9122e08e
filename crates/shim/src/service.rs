//! The task service containerd calls over ttrpc (#16): Create ... Shutdown, each a few calls to
//! the daemon (`client.rs`; making and removing nodes and containers, running processes:
//! `ops.rs`), state in `task.rs`, stdio in `io.rs`, events in `events.rs`.
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
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bulkhead_api::containers::validate_container_id;
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
    TaskCreate, TaskDelete, TaskExecAdded, TaskIO, TaskPaused, TaskResumed,
};
use containerd_shim::protos::shim_async::Task;
use containerd_shim::protos::ttrpc::{self, r#async::TtrpcContext, Code};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::TtrpcResult;
use log::{info, warn};

use crate::client::{Daemon, DaemonError};
use crate::events::Events;
use crate::spec;
use crate::task::{exited, Body, Container, Proc, Record, Role};

/// The containerd environment variable naming the daemon (when options name no file).
pub const BULKHEAD_URL: &str = "BULKHEAD_URL";

pub fn status(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

pub(crate) fn daemon_status(e: DaemonError) -> ttrpc::Error {
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
pub(crate) struct NodeTask {
    pub(crate) oom: tokio::task::JoinHandle<()>,
    pub(crate) ram_bytes: u64,
    pub(crate) cpus: u32,
}

pub struct Service {
    /// containerd's namespace of this shim.
    pub(crate) ns: String,
    exit: Arc<ExitSignal>,
    pub(crate) events: Events,
    pub(crate) containers: Arc<Mutex<HashMap<String, Arc<Container>>>>,
    /// The daemon (from the first Create's config).
    daemon: Mutex<Option<Daemon>>,
    pub(crate) nodes: Mutex<HashMap<String, NodeTask>>,
    paused: Mutex<HashSet<String>>,
}

pub(crate) fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

    pub(crate) fn container(&self, id: &str) -> TtrpcResult<Arc<Container>> {
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

    pub(crate) fn daemon(&self) -> TtrpcResult<Daemon> {
        locked(&self.daemon)
            .clone()
            .ok_or_else(|| status(Code::FAILED_PRECONDITION, "no task was created yet"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    fn api(status: u16, code: &str) -> DaemonError {
        DaemonError::Api {
            status: StatusCode::from_u16(status).unwrap(),
            code: code.into(),
            message: "why".into(),
        }
    }

    fn code_of(e: ttrpc::Error) -> (Code, String) {
        match e {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn daemon_refusals_keep_their_kind_and_words() {
        for (status, want) in [
            (400, Code::INVALID_ARGUMENT),
            (403, Code::PERMISSION_DENIED),
            (404, Code::NOT_FOUND),
            (409, Code::FAILED_PRECONDITION),
            (507, Code::UNKNOWN),
        ] {
            let (code, msg) = code_of(daemon_status(api(status, "some_code")));
            assert_eq!(code, want, "{status}");
            assert_eq!(msg, "bulkhead daemon: why (some_code)");
        }
        let (code, msg) = code_of(daemon_status(DaemonError::Other("no socket".into())));
        assert_eq!(
            (code, msg.as_str()),
            (Code::UNAVAILABLE, "bulkhead daemon: no socket")
        );
    }
}
