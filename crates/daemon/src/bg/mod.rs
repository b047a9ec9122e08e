//! Background execs (`POST /vm/{node}/exec?background=true`): commands the daemon runs on
//! behalf of a client that does not stay connected. The daemon holds each one's agent
//! session (`bulkhead_agent::client`): a task of its own reads the command's output into a
//! bounded ring (`ring.rs`) that readers replay and follow; kills go to the command's process
//! group as `Signal` frames.
//!
//! Invariants:
//! - An exec is reachable only through its node's registry: an id of another node (or of a
//!   node of another tenant, which has another registry) is not found. Ids carry 128 random
//!   bits.
//! - Bounded: at most [`Limits::per_node`] execs per node and [`Limits::per_tenant`] per
//!   tenant, exited ones included until deleted (their rings hold memory), and at most
//!   [`Limits::ring_total`] bytes of rings per tenant; beyond, 429
//!   `too_many_background_execs`.
//! - The daemon's memory is their only home (ADR 0016): when the daemon stops, its sessions
//!   close and the agent kills every background command; a restarted daemon lists none. A
//!   deleted node's execs are dropped with it.

pub mod control; // #15 C: stdin, terminal, signals and lookups by pid or tag (E2B's processes)
pub mod options; // #15 C
pub mod ring;

use bulkhead_agent::client::{AgentError, ExecEvent, ExecInput, ExecOutput, ExecSession};
use bulkhead_api::{signals, BgExecInfo};
use bulkhead_core::{Code, DomainError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::UnixStream;
use tokio::sync::watch;

use crate::fsutil::now_rfc3339;
use ring::{End, Entry, Gap, Ring};

type Input = ExecInput<WriteHalf<UnixStream>>;
type Output = ExecOutput<ReadHalf<UnixStream>>;
/// A background exec's agent session.
pub type Session = ExecSession<ReadHalf<UnixStream>, WriteHalf<UnixStream>>;

/// How many background execs may exist, and how much ring they may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_node: usize,
    pub per_tenant: usize,
    pub ring_total: u64,
}

/// The limits every tenant gets (ADR 0016).
pub const LIMITS: Limits = Limits {
    per_node: 16,
    per_tenant: 128,
    ring_total: 256 << 20,
};

/// Ids of deleted execs remembered per node, so that they answer 410 rather than 404.
const REMEMBERED_REMOVALS: usize = 256;

/// What a background exec runs, as the client asked for it.
#[derive(Debug, Clone)]
pub struct Launch {
    pub command: String,
    pub args: Vec<String>,
    pub cwd: Option<String>,
    pub uid: u32,
    pub ring_bytes: u64,
    /// Output is read back as base64 (`stdio=base64`).
    pub base64: bool,
    /// What E2B's processes add (#15; Slicer's execs take the defaults).
    pub opts: options::Options,
}

/// One tenant's background execs, by node.
pub struct BgExecs {
    limits: Limits,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    nodes: HashMap<String, NodeExecs>,
    /// Reservations not yet launched: (node, ring bytes).
    pending: Vec<(u64, String, u64)>,
    next_seq: u64,
}

#[derive(Default)]
struct NodeExecs {
    execs: HashMap<String, Arc<BgExec>>,
    removed: VecDeque<String>,
}

impl Inner {
    fn count(&self, node: Option<&str>) -> usize {
        let live: usize = match node {
            Some(n) => self.nodes.get(n).map_or(0, |x| x.execs.len()),
            None => self.nodes.values().map(|x| x.execs.len()).sum(),
        };
        live + self
            .pending
            .iter()
            .filter(|p| node.is_none_or(|n| p.1 == n))
            .count()
    }
    fn ring_total(&self) -> u64 {
        let live: u64 = self
            .nodes
            .values()
            .flat_map(|x| x.execs.values())
            .map(|e| e.launch.ring_bytes)
            .sum();
        live + self.pending.iter().map(|p| p.2).sum::<u64>()
    }
}

impl Default for BgExecs {
    fn default() -> Self {
        Self::new(LIMITS)
    }
}

fn too_many(what: String) -> DomainError {
    DomainError::new(
        Code::TooManyExecs,
        format!("{what}: delete exited ones (DELETE /vm/{{node}}/exec/{{exec_id}}) first"),
    )
    .retry_after(1)
}

impl BgExecs {
    pub fn new(limits: Limits) -> Self {
        BgExecs {
            limits,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a place for a new exec on `node` with a ring of `ring` bytes, or answers 429.
    pub fn reserve(&self, node: &str, ring: u64) -> Result<Reservation<'_>, DomainError> {
        let mut g = self.lock();
        // #15 C: ended execs that forget on exit (E2B's processes) leave before counting.
        for n in g.nodes.values_mut() {
            n.execs
                .retain(|_, e| !(e.launch.opts.forget_on_exit && e.end().is_some()));
        }
        let l = self.limits;
        if g.count(Some(node)) >= l.per_node {
            return Err(too_many(format!(
                "node {node:?} already has {} background execs, its limit",
                l.per_node
            )));
        }
        if g.count(None) >= l.per_tenant {
            return Err(too_many(format!(
                "this tenant already has {} background execs, its limit",
                l.per_tenant
            )));
        }
        if g.ring_total() + ring > l.ring_total {
            return Err(too_many(format!(
                "this tenant's background execs already hold {} of their {} bytes of ring \
                 (ring_bytes {ring} asked)",
                g.ring_total(),
                l.ring_total
            )));
        }
        g.next_seq += 1;
        let seq = g.next_seq;
        g.pending.push((seq, node.to_string(), ring));
        Ok(Reservation {
            execs: self,
            seq,
            node: node.to_string(),
        })
    }

    /// The exec `id` of `node`: 404 when it never was (or is another node's), 410 once deleted.
    pub fn get(&self, node: &str, id: &str) -> Result<Arc<BgExec>, DomainError> {
        let g = self.lock();
        let n = g.nodes.get(node);
        if let Some(e) = n.and_then(|n| n.execs.get(id)) {
            return Ok(e.clone());
        }
        if n.is_some_and(|n| n.removed.iter().any(|r| r == id)) {
            return Err(DomainError::new(
                Code::ExecGone,
                format!("background exec {id:?} of node {node:?} was deleted"),
            ));
        }
        Err(DomainError::not_found(format!(
            "node {node:?} has no background exec {id:?}: GET /vm/{node}/exec lists them"
        )))
    }

    /// `node`'s execs, oldest first.
    pub fn list(&self, node: &str) -> Vec<Arc<BgExec>> {
        let g = self.lock();
        let mut v: Vec<_> = g
            .nodes
            .get(node)
            .map(|n| n.execs.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|e| e.seq);
        v
    }

    /// Deletes an exited exec and its ring; a running one is 409 `exec_running`.
    pub fn remove(&self, node: &str, id: &str) -> Result<(), DomainError> {
        let e = self.get(node, id)?;
        if e.end().is_none() {
            return Err(DomainError::new(
                Code::ExecRunning,
                format!(
                    "background exec {id:?} still runs: kill it (POST .../{id}/kill) and wait \
                     for it (GET .../{id}/wait-exit) before deleting it"
                ),
            ));
        }
        let mut g = self.lock();
        if let Some(n) = g.nodes.get_mut(node) {
            n.execs.remove(id);
            n.removed.push_back(id.to_string());
            if n.removed.len() > REMEMBERED_REMOVALS {
                n.removed.pop_front();
            }
        }
        Ok(())
    }

    /// Drops every exec of a node that is going away: their sessions close, and the agent
    /// (if still there) kills the commands.
    pub fn forget_node(&self, node: &str) {
        let gone = {
            let mut g = self.lock();
            // An exec being started on it will not be registered (`Reservation::register`).
            g.pending.retain(|p| p.1 != node);
            g.nodes.remove(node)
        };
        for e in gone.into_iter().flat_map(|n| n.execs.into_values()) {
            e.abort();
        }
    }
}

/// A place held for an exec being started; released unless launched.
pub struct Reservation<'a> {
    execs: &'a BgExecs,
    seq: u64,
    node: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.execs.lock().pending.retain(|p| p.0 != self.seq);
    }
}

impl Reservation<'_> {
    /// Registers the exec and starts reading its session into its ring.
    pub fn launch(self, launch: Launch, session: Session) -> Arc<BgExec> {
        let pid = session.pid();
        let (input, output) = session.split();
        let e = self.register(launch, pid, Some(input));
        e.push(Entry::Started {
            pid,
            at: e.started_at.clone(),
        });
        let task = tokio::spawn(pump(e.clone(), output));
        *e.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        if !self
            .execs
            .lock()
            .nodes
            .get(&self.node)
            .is_some_and(|n| n.execs.contains_key(&e.id))
        {
            // The node went away while the command started: end it with the node.
            e.abort();
        }
        e
    }

    /// Registers an exec whose command could not start (not found: 127, not executable: 126),
    /// already ended, with the reason on its stderr, as a shell would.
    pub fn launch_failed(self, launch: Launch, exit_code: i32, message: &str) -> Arc<BgExec> {
        let e = self.register(launch, 0, None);
        e.push(Entry::Output {
            stderr: true,
            data: format!("{message}\n").into_bytes(),
        });
        e.finish(End {
            exit_code,
            signal: None,
            timed_out: false,
            ended_at: now_rfc3339(),
        });
        e
    }

    fn register(&self, launch: Launch, pid: i32, input: Option<Input>) -> Arc<BgExec> {
        let (tx, _) = watch::channel(0);
        let e = Arc::new(BgExec {
            id: new_id(),
            seq: self.seq,
            pid,
            started_at: now_rfc3339(),
            state: Mutex::new(State {
                ring: Ring::new(launch.ring_bytes),
                end: None,
            }),
            launch,
            changed: tx,
            input: tokio::sync::Mutex::new(input),
            task: Mutex::new(None),
            stdin_closed: std::sync::atomic::AtomicBool::new(false),
        });
        let mut g = self.execs.lock();
        // Registered only while the reservation stands: `forget_node` cancels it.
        if g.pending.iter().any(|p| p.0 == self.seq) {
            g.nodes
                .entry(self.node.clone())
                .or_default()
                .execs
                .insert(e.id.clone(), e.clone());
        }
        e
    }
}

/// `ex_` and 128 random bits in hex.
fn new_id() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the kernel's random source is unavailable");
    let mut s = String::from("ex_");
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

/// Reads the command's output into the ring until it exits or the session breaks.
async fn pump(e: Arc<BgExec>, mut out: Output) {
    loop {
        match out.next().await {
            Ok(Some(ExecEvent::Stdout(d))) => e.push(Entry::Output {
                stderr: false,
                data: d,
            }),
            Ok(Some(ExecEvent::Stderr(d))) => e.push(Entry::Output {
                stderr: true,
                data: d,
            }),
            Ok(Some(ExecEvent::Exit(st))) => {
                let (exit_code, signal) = exit_fields(st.code, st.signal);
                e.finish(End {
                    exit_code,
                    signal,
                    timed_out: st.timed_out,
                    ended_at: now_rfc3339(),
                });
                break;
            }
            Err(AgentError::Remote { code, message }) => e.push(Entry::Error { code, message }),
            Ok(None) | Err(_) => {
                e.push(Entry::Error {
                    code: Code::AgentLost.as_str().into(),
                    message: "the node's agent went away during the exec".into(),
                });
                e.finish(End {
                    exit_code: -1,
                    signal: None,
                    timed_out: false,
                    ended_at: now_rfc3339(),
                });
                break;
            }
        }
    }
    // The command has ended: close the session.
    e.input.lock().await.take();
}

/// A wire exit: the exit code, or 128 + the signal (as a shell's `$?`) with its name.
pub fn exit_fields(code: Option<i32>, signal: Option<i32>) -> (i32, Option<String>) {
    match (code, signal) {
        (Some(c), _) => (c, None),
        (None, Some(s)) => (128 + s, Some(signals::name(s))),
        (None, None) => (-1, None),
    }
}

struct State {
    ring: Ring,
    end: Option<End>,
}

/// One background exec.
pub struct BgExec {
    pub id: String,
    seq: u64,
    pub pid: i32,
    pub started_at: String,
    pub launch: Launch,
    state: Mutex<State>,
    /// Bumped (to the ring's next id) on every frame and at the end.
    changed: watch::Sender<u64>,
    /// The session's input half while the command runs (signals).
    input: tokio::sync::Mutex<Option<Input>>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
    /// #15 C: stdin was closed (`control.rs`).
    stdin_closed: std::sync::atomic::AtomicBool,
}

/// What a log reader gets at once.
pub struct Slice {
    pub gap: Option<Gap>,
    pub frames: Vec<(u64, Entry)>,
    pub next_id: u64,
    pub ended: bool,
}

impl BgExec {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, entry: Entry) {
        let next = {
            let mut s = self.lock();
            s.ring.push(entry);
            s.ring.next_id()
        };
        self.changed.send_replace(next);
    }

    fn finish(&self, end: End) {
        let next = {
            let mut s = self.lock();
            s.ring.push(Entry::Exit(end.clone()));
            s.end = Some(end);
            s.ring.next_id()
        };
        self.changed.send_replace(next);
    }

    /// Ends the exec with its node: the pump stops, the session closes (the agent kills the
    /// command), and, if it had not ended yet, it ends now as "agent lost", so that waiters,
    /// followers and a kill's grace task wake and let go of it.
    fn abort(&self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.abort();
        }
        if let Ok(mut i) = self.input.try_lock() {
            i.take();
        }
        if self.end().is_none() {
            self.finish(End {
                exit_code: -1,
                signal: None,
                timed_out: false,
                ended_at: now_rfc3339(),
            });
        }
    }

    /// How it ended, once it has.
    pub fn end(&self) -> Option<End> {
        self.lock().end.clone()
    }

    /// The frames from id `from` on.
    pub fn read(&self, from: u64) -> Slice {
        let s = self.lock();
        let (gap, frames) = s.ring.read(from);
        Slice {
            gap,
            frames,
            next_id: s.ring.next_id(),
            ended: s.end.is_some(),
        }
    }

    /// Resolves on the next frame or the end (for log followers and waiters).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Waits until the command has ended, at most `timeout`; its end, if it has.
    pub async fn wait(&self, timeout: Duration) -> Option<End> {
        let mut rx = self.subscribe();
        let _ = tokio::time::timeout(timeout, async {
            while self.end().is_none() {
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.end()
    }

    pub fn info(&self) -> BgExecInfo {
        let s = self.lock();
        let end = s.end.clone();
        BgExecInfo {
            exec_id: self.id.clone(),
            pid: self.pid,
            command: self.launch.command.clone(),
            args: self.launch.args.clone(),
            cwd: self.launch.cwd.clone(),
            uid: self.launch.uid,
            started_at: self.started_at.clone(),
            running: end.is_none(),
            exit_code: end.as_ref().map(|e| e.exit_code),
            signal: end.as_ref().and_then(|e| e.signal.clone()),
            ended_at: end.map(|e| e.ended_at),
            bytes_written: s.ring.written(),
            bytes_dropped: s.ring.dropped(),
            next_id: s.ring.next_id(),
            ring_bytes: s.ring.cap(),
        }
    }

    /// Sends `sig` to the command's process group; unless it is SIGKILL, SIGKILL follows
    /// after `grace` if the command still runs. Returns whether it still ran (false: nothing
    /// was sent) and the signal sent.
    pub async fn kill(
        self: &Arc<Self>,
        sig: i32,
        grace: Duration,
    ) -> Result<(bool, String), DomainError> {
        self.signal_then(sig, Some(grace)).await
    }

    /// Sends `sig` to the command's process group; unless it is SIGKILL and `grace` is given,
    /// follows it with SIGKILL once `grace` passed without an exit. `None`: the signal alone
    /// (a SIGHUP or SIGUSR1 that asks a server to reload must not end it later).
    pub async fn signal_then(
        self: &Arc<Self>,
        sig: i32,
        grace: Option<Duration>,
    ) -> Result<(bool, String), DomainError> {
        if self.end().is_some() {
            return Ok((false, String::new()));
        }
        let sent = {
            let mut g = self.input.lock().await;
            let Some(input) = g.as_mut() else {
                return Ok((false, String::new()));
            };
            match input.signal(sig).await {
                Ok(()) => signals::name(sig),
                // An agent of protocol version 1 takes no signals: closing the session is
                // how it is told to kill the command (SIGKILL to its process group).
                Err(AgentError::Unsupported { .. }) => {
                    let _ = input.shutdown().await;
                    signals::name(libc::SIGKILL)
                }
                Err(_) if self.end().is_some() => return Ok((false, String::new())),
                Err(e) => return Err(crate::tenant::agent_error(e)),
            }
        };
        if let (true, Some(grace)) = (sig != libc::SIGKILL, grace) {
            let me = self.clone();
            tokio::spawn(async move {
                if me.wait(grace).await.is_none() {
                    if let Some(i) = me.input.lock().await.as_mut() {
                        let _ = i.signal(libc::SIGKILL).await;
                    }
                }
            });
        }
        Ok((true, sent))
    }
}

#[cfg(test)]
mod tests;
