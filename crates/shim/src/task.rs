//! What the shim knows of its tasks (#16): per container its node and record, per process
//! (the container's own, id `""`, and each Exec's) its state, background exec, stdio and exit.
//!
//! Invariants: a process's exit is recorded once ([`Proc::set_exited`] answers whether this
//! call was the one; [`exited`] records it and publishes TaskExit), so TaskExit is published
//! exactly once; Wait answers from the recorded exit. `<bundle>/bulkhead.json` ([`Record`]) is
//! written before anything is created in the daemon, so `containerd-shim-bulkhead-v2 delete`
//! after a crash can remove what exists.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_shim::asynchronous::io::{IoTasks, Stdio};
use containerd_shim::protos::api::Status;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::client::Daemon;
use crate::events::Events;
use crate::spec::ProcessPlan;
use containerd_shim::protos::events::task::TaskExit;
use log::info;

/// The file in the bundle naming what the daemon holds for the task.
pub const RECORD: &str = "bulkhead.json";

/// `<bundle>/bulkhead.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub node: String,
    pub container: String,
    pub tenant: String,
    pub hostgroup: String,
    /// The node is this task's own (a `ctr run` container or a pod's sandbox): deleting the
    /// task deletes the node. Otherwise only the container in the node goes.
    pub standalone: bool,
    /// The daemon's socket, for `delete` after a crash (no options then).
    #[serde(default)]
    pub socket: String,
}

impl Record {
    pub fn path(bundle: &Path) -> PathBuf {
        bundle.join(RECORD)
    }

    pub fn write(&self, bundle: &Path) -> std::io::Result<()> {
        let tmp = bundle.join(".bulkhead.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).unwrap_or_default())?;
        std::fs::rename(tmp, Self::path(bundle))
    }

    pub fn read(bundle: &Path) -> std::io::Result<Option<Record>> {
        match std::fs::read(Self::path(bundle)) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn remove(bundle: &Path) {
        let _ = std::fs::remove_file(Self::path(bundle));
    }
}

/// How a task's process exists.
#[derive(Debug, Clone)]
pub enum Body {
    /// A pod's sandbox: the node itself, no process (the pause container's place). It "runs"
    /// from Start until it is killed or deleted.
    Sandbox,
    /// A process to run in container `ctr` of the node.
    Process(ProcessPlan),
}

/// A process's mutable state.
#[derive(Debug)]
pub struct ProcState {
    pub status: Status,
    /// The daemon's background exec id, once started.
    pub bg: Option<String>,
    /// The in-node pid the daemon reported.
    pub node_pid: i32,
    pub exit_status: u32,
    pub exited_at: Option<Timestamp>,
    /// The terminal's size: containerd may resize before Start.
    pub size: (u32, u32),
}

/// One process of a container: its init (exec id `""`) or an Exec.
pub struct Proc {
    pub container: String,
    pub exec_id: String,
    pub body: Body,
    pub stdio: Stdio,
    pub io: IoTasks,
    pub state: Mutex<ProcState>,
    exited: watch::Sender<bool>,
}

impl Proc {
    pub fn new(container: &str, exec_id: &str, body: Body, stdio: Stdio) -> Arc<Self> {
        Arc::new(Proc {
            container: container.into(),
            exec_id: exec_id.into(),
            body,
            stdio,
            io: IoTasks::default(),
            state: Mutex::new(ProcState {
                status: Status::CREATED,
                bg: None,
                node_pid: 0,
                exit_status: 0,
                exited_at: None,
                size: (80, 24),
            }),
            exited: watch::channel(false).0,
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, ProcState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> Status {
        self.lock().status
    }

    /// Marks it running with the daemon's exec `bg` (None: the sandbox).
    pub fn set_running(&self, bg: Option<String>, node_pid: i32) {
        let mut s = self.lock();
        if s.status == Status::CREATED {
            s.status = Status::RUNNING;
            s.bg = bg;
            s.node_pid = node_pid;
        }
    }

    /// Records the exit; true only for the first call (the one that publishes TaskExit).
    pub fn set_exited(&self, code: u32) -> bool {
        let mut s = self.lock();
        if s.status == Status::STOPPED {
            return false;
        }
        s.status = Status::STOPPED;
        s.exit_status = code;
        s.exited_at = Some(containerd_shim::util::timestamp().unwrap_or_default());
        drop(s);
        self.exited.send_replace(true);
        true
    }

    /// Waits for the exit; answers (status, time).
    pub async fn wait(&self) -> (u32, Timestamp) {
        let mut rx = self.exited.subscribe();
        let _ = rx.wait_for(|e| *e).await;
        let s = self.lock();
        (s.exit_status, s.exited_at.clone().unwrap_or_default())
    }

    pub fn bg(&self) -> Option<String> {
        self.lock().bg.clone()
    }
}

/// How a task relates to its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A pod's sandbox: owns the node.
    Sandbox,
    /// A container of a pod, in the sandbox's node.
    PodContainer,
    /// A `ctr run` container: owns its node.
    Standalone,
}

/// A container (containerd's task).
pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub role: Role,
    pub record: Record,
    pub init: Arc<Proc>,
    pub execs: Mutex<HashMap<String, Arc<Proc>>>,
}

impl Container {
    /// The process `exec_id` (`""`: the init).
    pub fn proc(&self, exec_id: &str) -> Option<Arc<Proc>> {
        if exec_id.is_empty() {
            return Some(self.init.clone());
        }
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(exec_id)
            .cloned()
    }

    pub fn all_execs(&self) -> Vec<Arc<Proc>> {
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn node(&self) -> &str {
        &self.record.node
    }
}

/// The node's name for a task: a hostname the daemon accepts (1–63 of `[a-z0-9-]`), unique per
/// task id: the id itself when it is one (and short), else a prefix and a hash of it. The
/// prefix is the host group's name: a shared daemon wants every hostname to begin with its
/// group's name and a dash. Kept short (12 hex for a hash or a containerd id): the node's
/// sockets live in a directory named after it, and a UNIX socket's path has 108 bytes.
pub fn node_name(prefix: &str, id: &str) -> String {
    let room = 63usize.saturating_sub(prefix.len() + 1).min(24);
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= room
            && !s.starts_with('-')
            && !s.ends_with('-')
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if ok(id) && !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return format!("{prefix}-{id}");
    }
    if id.len() >= 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return format!("{prefix}-{}", &id[..12].to_ascii_lowercase());
    }
    // FNV-1a, 64 bits: stable across runs and builds.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{prefix}-{:012x}", h >> 16)
}

/// Records `p`'s exit and publishes TaskExit (once); an init's exit ends its container's
/// other processes, as a private pid namespace's would.
pub async fn exited(events: &Events, daemon: &Daemon, c: &Container, p: &Proc, code: u32) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_hostnames() {
        assert_eq!(node_name("ctr", "web"), "ctr-web");
        assert_eq!(node_name("g1-ctr", "web"), "g1-ctr-web");
        // A long group leaves less room for the id: the hash form keeps it a hostname.
        let long = format!("{}-ctr", "g".repeat(40));
        let n = node_name(&long, &"w".repeat(30));
        assert_eq!(n.len(), long.len() + 13, "{n}");
        assert!(n.len() <= 63 && n.starts_with(&long), "{n}");
        assert_eq!(node_name("pod", &"ab".repeat(32)), "pod-abababababab");
        let n = node_name("ctr", "My_Ctr");
        assert!(n.starts_with("ctr-") && n.len() == 16, "{n}");
        assert_ne!(node_name("ctr", "a_b"), node_name("ctr", "a_c"));
        for id in ["web", "My_Ctr", &"f".repeat(64), "123"] {
            let n = node_name("ctr", id);
            bulkhead_api::names::validate_label("hostname", &n).unwrap();
        }
    }

    #[tokio::test]
    async fn an_exit_is_recorded_once_and_wakes_waiters() {
        let p = Proc::new("c", "", Body::Sandbox, Stdio::default());
        assert_eq!(p.status(), Status::CREATED);
        p.set_running(None, 0);
        assert_eq!(p.status(), Status::RUNNING);
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move { p.wait().await })
        };
        assert!(p.set_exited(137));
        assert!(!p.set_exited(0), "a second exit is not published");
        let (code, at) = waiter.await.unwrap();
        assert_eq!(code, 137);
        assert!(at.seconds > 0);
        assert_eq!(p.status(), Status::STOPPED);
        // Running after the exit does not resurrect it.
        p.set_running(Some("x".into()), 1);
        assert_eq!(p.status(), Status::STOPPED);
        assert_eq!(p.wait().await.0, 137);
    }

    #[test]
    fn the_record_round_trips() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(Record::read(d.path()).unwrap(), None);
        let r = Record {
            node: "ctr-web".into(),
            container: "web".into(),
            tenant: "t".into(),
            hostgroup: "g".into(),
            standalone: true,
            socket: "unix:///run/bulkhead/shim.sock".into(),
        };
        r.write(d.path()).unwrap();
        assert_eq!(Record::read(d.path()).unwrap(), Some(r));
        Record::remove(d.path());
        assert_eq!(Record::read(d.path()).unwrap(), None);
    }
}
