//! The supervisor's life after the node started: one poll loop over a signalfd (SIGCHLD,
//! SIGTERM, SIGINT; SIGHUP is swallowed so a closing terminal never ends nodes), the control
//! socket and its connections ([`crate::control`]).
//!
//! Invariants: the init is reaped here and only here, and its status recorded once; `wait`
//! requests are parked until then and answered together. SIGTERM (the daemon deleting the
//! node) kills a running init (SIGKILL: a pid namespace's init takes every process of the
//! namespace with it) and ends the loop once it is reaped; after the init exited on its own
//! it ends the loop at once. The loop is single-threaded, and so is everything it calls.

use crate::control::{self, ExitStatus, Phase, Reply, Request, State, MAX_LINE};
use crate::Launcher;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;

struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Sent `wait` while the init ran: answered when it exits.
    waiting: bool,
}

/// What the loop knows about the init.
struct Init {
    pid: i32,
    supervisor: i32,
    exit: Option<(ExitStatus, u64)>,
}

impl Init {
    fn state(&self) -> State {
        State {
            init_pid: self.pid,
            supervisor_pid: self.supervisor,
            phase: match self.exit {
                None => Phase::Running,
                Some((exit, at_unix_ms)) => Phase::Exited { exit, at_unix_ms },
            },
        }
    }

    /// Answers one request; `None` parks a `wait`.
    fn answer(
        &self,
        req: Result<Request, String>,
        launcher: Option<&dyn Launcher>,
    ) -> Option<Reply> {
        match req {
            Err(error) => Some(Reply::Error { error }),
            Ok(Request::State) => Some(Reply::State(self.state())),
            Ok(Request::Wait) if self.exit.is_none() => None,
            Ok(Request::Wait) => Some(Reply::State(self.state())),
            Ok(Request::Kill { .. }) if self.exit.is_some() => Some(Reply::Error {
                error: "the node's init has exited: there is nothing to signal".into(),
            }),
            Ok(Request::Kill { signal }) => {
                // SAFETY: kill(2) of our own child, which we have not reaped (so its pid is
                // still ours).
                if unsafe { libc::kill(self.pid, signal) } < 0 {
                    return Some(Reply::Error {
                        error: format!(
                            "signal {signal} to the init: {}",
                            std::io::Error::last_os_error()
                        ),
                    });
                }
                Some(Reply::State(self.state()))
            }
            Ok(Request::ContainerMounts { .. } | Request::ContainerUnmount { .. })
                if self.exit.is_some() =>
            {
                Some(Reply::Error {
                    error: "the node's init has exited: there is nothing to mount in".into(),
                })
            }
            // #16: the driver's launcher makes them (a child of ours in the node's namespaces).
            Ok(Request::ContainerMounts {
                root,
                mounts,
                readonly,
            }) => Some(self.container_op(launcher, &root, Some((&mounts, readonly)))),
            Ok(Request::ContainerUnmount { root }) => {
                Some(self.container_op(launcher, &root, None))
            }
        }
    }

    fn container_op(
        &self,
        launcher: Option<&dyn Launcher>,
        root: &str,
        mounts: Option<(&[bulkhead_agent::containers::ContainerMount], bool)>,
    ) -> Reply {
        let Some(l) = launcher else {
            return Reply::Error {
                error: "this supervisor has no driver to make container mounts with".into(),
            };
        };
        match l.container_mounts(self.pid, root, mounts) {
            Ok(()) => Reply::State(self.state()),
            Err(e) => Reply::Error {
                error: e.to_string(),
            },
        }
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn signalfd(sigs: &libc::sigset_t) -> Option<OwnedFd> {
    // SAFETY: a new signalfd for a valid, blocked set.
    let fd = unsafe { libc::signalfd(-1, sigs, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    // SAFETY: signalfd returned a fresh fd that we now own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads every pending signal: (child exited?, terminate asked?).
fn drain_signals(fd: &OwnedFd) -> (bool, bool) {
    let (mut chld, mut term) = (false, false);
    loop {
        // SAFETY: signalfd_siginfo is plain data; read fills at most its size.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reading into the local struct, bounded by its size.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n != size as isize {
            return (chld, term);
        }
        match info.ssi_signo as i32 {
            libc::SIGCHLD => chld = true,
            libc::SIGTERM | libc::SIGINT => term = true,
            _ => {}
        }
    }
}

/// Reaps every exited child; returns the init's status if it was among them.
fn reap(init: i32) -> Option<i32> {
    let mut found = None;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on our own children, without blocking.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return found;
        }
        if pid == init {
            found = Some(status);
        }
    }
}

fn send(c: &mut Conn, reply: &Reply) -> bool {
    c.stream.write_all(&control::render(reply)).is_ok()
}

/// Reads what a connection sent and answers its complete lines. `false`: close it.
fn serve_conn(c: &mut Conn, init: &Init, launcher: Option<&dyn Launcher>) -> bool {
    let mut chunk = [0u8; 512];
    match c.stream.read(&mut chunk) {
        Ok(0) => return false,
        Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
        Err(_) => return false,
    }
    while let Some(end) = c.buf.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = c.buf.drain(..=end).collect();
        match init.answer(control::parse_request(&line[..line.len() - 1]), launcher) {
            Some(r) => {
                if !send(c, &r) {
                    return false;
                }
            }
            None => c.waiting = true,
        }
    }
    c.buf.len() <= MAX_LINE
}

/// Serves until the daemon ends the supervisor (SIGTERM) or nothing can be served any more.
/// `on_exit` runs once, right after the init is reaped.
pub(super) fn serve(
    init_pid: i32,
    control: UnixListener,
    sigs: &libc::sigset_t,
    mut on_exit: impl FnMut(),
    launcher: Option<&dyn Launcher>,
) {
    let Some(sigfd) = signalfd(sigs) else {
        // Cannot happen short of fd exhaustion; still never leave the node unsupervised.
        return legacy_wait(init_pid, sigs, on_exit);
    };
    let _ = control.set_nonblocking(true);
    let mut init = Init {
        pid: init_pid,
        // SAFETY: getpid has no preconditions.
        supervisor: unsafe { libc::getpid() },
        exit: None,
    };
    let mut conns: Vec<Conn> = Vec::new();
    let mut terminating = false;
    loop {
        let mut fds: Vec<libc::pollfd> = [sigfd.as_raw_fd(), control.as_raw_fd()]
            .into_iter()
            .chain(conns.iter().map(|c| c.stream.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: fds is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue; // EINTR
        }
        if fds[0].revents != 0 {
            let (chld, term) = drain_signals(&sigfd);
            if term && init.exit.is_none() {
                // SAFETY: our own, not yet reaped child.
                unsafe { libc::kill(init.pid, libc::SIGKILL) };
            }
            terminating |= term;
            if chld && init.exit.is_none() {
                if let Some(status) = reap(init.pid) {
                    init.exit = Some((ExitStatus::from_wait(status), now_unix_ms()));
                    on_exit();
                    let reply = Reply::State(init.state());
                    for c in conns.iter_mut().filter(|c| c.waiting) {
                        c.waiting = false;
                        let _ = send(c, &reply);
                    }
                }
            } else if chld {
                reap(init.pid);
            }
            if terminating && init.exit.is_some() {
                return;
            }
        }
        // Connections first (their indexes match `fds`), then new ones.
        let mut i = 0;
        conns.retain_mut(|c| {
            let revents = fds[2 + i].revents;
            i += 1;
            revents == 0 || serve_conn(c, &init, launcher)
        });
        if fds[1].revents != 0 {
            while conns.len() < MAX_CONNECTIONS {
                match control.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(true);
                        conns.push(Conn {
                            stream,
                            buf: Vec::new(),
                            waiting: false,
                        });
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// Without a signalfd: wait for the init the way the supervisor did before it had a control
/// channel (sigwaitinfo), so the node is still supervised and cleaned up.
fn legacy_wait(init: i32, sigs: &libc::sigset_t, mut on_exit: impl FnMut()) {
    loop {
        // SAFETY: siginfo_t is plain data, filled by sigwaitinfo for a valid blocked set.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        match unsafe { libc::sigwaitinfo(sigs, &mut info) } {
            libc::SIGCHLD if reap(init).is_some() => {
                on_exit();
                return;
            }
            // SAFETY: our own child.
            libc::SIGTERM | libc::SIGINT => unsafe {
                libc::kill(init, libc::SIGKILL);
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn init(exit: Option<(ExitStatus, u64)>) -> Init {
        Init {
            pid: 41,
            supervisor: 40,
            exit,
        }
    }

    #[test]
    fn wait_parks_until_the_init_exits_then_answers_with_the_status() {
        let running = init(None);
        assert_eq!(running.answer(Ok(Request::Wait), None), None);
        let Some(Reply::State(s)) = running.answer(Ok(Request::State), None) else {
            panic!("state answers at once");
        };
        assert_eq!(s.phase, Phase::Running);
        let exited = init(Some((ExitStatus::Code(3), 7)));
        for req in [Request::Wait, Request::State] {
            assert_eq!(
                exited.answer(Ok(req.clone()), None),
                Some(Reply::State(State {
                    init_pid: 41,
                    supervisor_pid: 40,
                    phase: Phase::Exited {
                        exit: ExitStatus::Code(3),
                        at_unix_ms: 7
                    }
                }))
            );
        }
    }

    #[test]
    fn kill_after_exit_is_refused_and_bad_requests_get_their_error() {
        let exited = init(Some((ExitStatus::Signal(9), 7)));
        let Some(Reply::Error { error }) = exited.answer(Ok(Request::Kill { signal: 15 }), None)
        else {
            panic!("kill of an exited init must be refused");
        };
        assert!(error.contains("exited"), "{error}");
        assert_eq!(
            exited.answer(Err("bad".into()), None),
            Some(Reply::Error {
                error: "bad".into()
            })
        );
    }
}
