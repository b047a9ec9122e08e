//! PID 1 duties. One thread owns `waitpid(-1)`: it reaps every child, including orphans that
//! the kernel reparents to us, and hands exit statuses to the threads that watch those pids.
//! The same thread takes SIGTERM/SIGINT and forwards them to every process in the node.
//!
//! Invariant: a pid is registered as watched while the reaper lock is held across `fork`, so
//! a child that dies at once is never reaped before someone waits for it.

use std::collections::{HashMap, HashSet};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

struct State {
    watched: HashSet<i32>,
    exited: HashMap<i32, i32>,
}

struct Reaper {
    state: Mutex<State>,
    cv: Condvar,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

fn reaper() -> &'static Reaper {
    REAPER.get_or_init(|| Reaper {
        state: Mutex::new(State {
            watched: HashSet::new(),
            exited: HashMap::new(),
        }),
        cv: Condvar::new(),
    })
}

/// The signals the reaper thread takes synchronously; every other thread keeps them blocked.
pub(crate) fn handled_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks the handled signals in the calling thread (and so in threads it spawns later).
pub(crate) fn block_signals() {
    let set = handled_signals();
    // SAFETY: set is initialised; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Starts the reaper thread. `pid1` makes SIGTERM end the whole node.
pub(crate) fn start(pid1: bool) {
    let _ = reaper();
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || run(pid1))
        .expect("spawn reaper thread");
}

fn run(pid1: bool) {
    let set = handled_signals();
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: set and info are valid for the duration of the call.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig < 0 {
            continue;
        }
        // SAFETY: sigwaitinfo filled `info` for a signal of the kill() family.
        let sender = unsafe { info.si_pid() };
        match sig {
            libc::SIGCHLD => reap_all(),
            // A sender the node's pid namespace can see (si_pid != 0) is a process of the node:
            // it may not end the node. The supervisor, outside, appears as pid 0.
            _ if pid1 && sender != 0 => note_ignored(sig, sender),
            _ if pid1 => terminate_node(sig),
            _ => std::process::exit(0),
        }
    }
}

/// Logs ignored signals to the console, which lives on the host's disk: only the first few,
/// so that a workload looping `kill 1` cannot fill the host's disk through the agent.
fn note_ignored(sig: i32, sender: i32) {
    static SEEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if n < 10 {
        eprintln!("bulkhead-agent: ignored signal {sig} from pid {sender} inside the node");
    } else if n == 10 {
        eprintln!("bulkhead-agent: ignoring further signals from inside the node silently");
    }
}

fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: plain syscall with a valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        let r = reaper();
        let mut st = r.state.lock().unwrap();
        if st.watched.remove(&pid) {
            st.exited.insert(pid, status);
            r.cv.notify_all();
        }
    }
}

/// Forwards the signal to every process in the node, gives them two seconds, then exits; the
/// kernel kills whatever is left when PID 1 of a pid namespace exits.
fn terminate_node(sig: i32) -> ! {
    // SAFETY: kill(-1) signals every process we may signal, which is the node's pid namespace.
    unsafe { libc::kill(-1, sig) };
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        reap_all();
        // SAFETY: probing for remaining children.
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if r < 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::exit(0);
}

/// Runs `fork_fn` (which forks and returns the child's pid) with the reaper lock held and
/// registers the pid as watched.
pub(crate) fn spawn_watched(
    fork_fn: impl FnOnce() -> std::io::Result<i32>,
) -> std::io::Result<i32> {
    let r = reaper();
    let mut st = r.state.lock().unwrap();
    let pid = fork_fn()?;
    st.watched.insert(pid);
    Ok(pid)
}

/// Waits for a watched pid's raw wait status, up to `timeout` (forever when `None`).
pub(crate) fn wait(pid: i32, timeout: Option<Duration>) -> Option<i32> {
    let r = reaper();
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut st = r.state.lock().unwrap();
    loop {
        if let Some(s) = st.exited.remove(&pid) {
            return Some(s);
        }
        match deadline {
            None => st = r.cv.wait(st).unwrap(),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                st = r.cv.wait_timeout(st, d - now).unwrap().0;
            }
        }
    }
}
