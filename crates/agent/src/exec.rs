//! Runs one command for an exec request: fork, drop to the requested uid/gid in a new session,
//! exec, and stream its output as frames. Closing the connection kills the process group.
//!
//! Threads per exec (each counts against the node's pids limit, so all are started before
//! `started` is sent): one pump per output stream (two with pipes, one with a tty) and one
//! that reads the client's frames: stdin, and from protocol version 2 `Resize` (the tty's size)
//! and `Signal` (sent to the command's process group, which is its session: the command's
//! own children get it too, as with a terminal's ^C). Frames are taken in order, so a
//! command that does not read its stdin holds the frames behind an unwritten stdin frame.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use crate::error_event::resource_error;
use crate::exec_prepare::{prepare, Prepared, RLIMIT_STEP};
use crate::proto::{self, Event, ExecRequest, Kind, UnknownKind, WinSize};
use crate::{pty, reaper};

type Writer = Arc<Mutex<UnixStream>>;

fn send(w: &Writer, kind: Kind, payload: &[u8]) -> std::io::Result<()> {
    let mut s = w.lock().unwrap();
    proto::write_frame(&mut *s, kind, payload)
}

fn send_event(w: &Writer, e: &Event) -> std::io::Result<()> {
    let mut s = w.lock().unwrap();
    proto::write_json(&mut *s, Kind::Event, e)
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh fds that we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks and execs. Between fork and exec the child only makes async-signal-safe calls; all
/// allocation happened in `prepare`.
fn spawn(
    p: &Prepared,
    req: &ExecRequest,
    stdin: &OwnedFd,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
    ctty: bool,
) -> Result<i32, Event> {
    let (err_r, err_w) = pipe().map_err(|e| resource_error("cannot create a pipe", &e))?;
    let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = p.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let (fd0, fd1, fd2, errfd) = (
        stdin.as_raw_fd(),
        stdout.as_raw_fd(),
        stderr.as_raw_fd(),
        err_w.as_raw_fd(),
    );
    let (uid, gid) = (req.uid, req.gid);
    let pid = reaper::spawn_watched(|| {
        // SAFETY: the child below only calls async-signal-safe functions before execve/_exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: we are in the freshly forked child; every pointer was prepared before fork.
            unsafe {
                let fail = |step: i32| -> ! {
                    let e = *libc::__errno_location();
                    let msg = [step, e];
                    libc::write(errfd, msg.as_ptr().cast(), 8);
                    libc::_exit(127)
                };
                let empty: libc::sigset_t = std::mem::zeroed();
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                libc::setsid();
                // Commands are always preferred OOM victims over the agent (PID 1), inside the
                // node's memory limit and under host-wide pressure alike. Raising needs no
                // privilege.
                let adj = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY);
                if adj >= 0 {
                    libc::write(adj, b"500".as_ptr().cast(), 3);
                    libc::close(adj);
                }
                if libc::dup2(fd0, 0) < 0 || libc::dup2(fd1, 1) < 0 || libc::dup2(fd2, 2) < 0 {
                    fail(1);
                }
                // A tty becomes the controlling terminal of the command's new session.
                if ctty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    fail(7);
                }
                // #16: limits first (raising one may need privilege the uid drop takes), then
                // the container's root, then the identity.
                for (i, (res, soft, hard)) in p.rlimits.iter().enumerate() {
                    let l = libc::rlimit {
                        rlim_cur: *soft,
                        rlim_max: *hard,
                    };
                    if libc::setrlimit(*res, &l) < 0 {
                        fail(RLIMIT_STEP + i as i32);
                    }
                }
                if let Some(root) = &p.root {
                    if libc::chroot(root.as_ptr()) < 0 {
                        fail(8);
                    }
                    if libc::chdir(c"/".as_ptr()) < 0 {
                        fail(8);
                    }
                }
                if libc::setgroups(p.groups.len(), p.groups.as_ptr()) < 0 {
                    fail(2);
                }
                if libc::setresgid(gid, gid, gid) < 0 {
                    fail(3);
                }
                if libc::setresuid(uid, uid, uid) < 0 {
                    fail(4);
                }
                if libc::chdir(p.cwd.as_ptr()) < 0 {
                    fail(5);
                }
                // Nothing of the agent's beyond stdio reaches the command, whatever flags
                // its descriptors carry.
                libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                if p.candidates.is_empty() {
                    libc::execve(p.path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    fail(6);
                }
                // In a container: the first candidate that exists (as execvp searches).
                let mut step = 9;
                for c in &p.candidates {
                    libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr());
                    let e = *libc::__errno_location();
                    if e != libc::ENOENT && e != libc::ENOTDIR {
                        step = 6;
                        break;
                    }
                }
                fail(step);
            }
        }
        Ok(pid)
    })
    .map_err(|e| match e.raw_os_error() {
        // The node's memory (or its writable layer, which it holds) is full.
        Some(libc::ENOMEM) => Event::error(
            "no_memory",
            format!("cannot start the command: the node's memory is full ({e}); files in its writable layer count against it"),
        ),
        _ => resource_error("cannot start the command (fork)", &e),
    })?;
    drop(err_w);
    let mut buf = [0u8; 8];
    let mut f = File::from(err_r);
    if f.read_exact(&mut buf).is_ok() {
        let step = i32::from_ne_bytes(buf[..4].try_into().unwrap());
        let errno =
            std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf[4..].try_into().unwrap()));
        reaper::wait(pid, Some(Duration::from_secs(5)));
        let (code, what) = match step {
            2..=4 => (
                "invalid_argument",
                format!("cannot switch to uid {uid} gid {gid}"),
            ),
            5 => (
                "invalid_argument",
                format!("cannot change to directory {:?}", p.cwd),
            ),
            6 => ("exec_failed", format!("cannot execute {:?}", p.path)),
            7 => ("internal", "cannot give the command its terminal".into()),
            8 => (
                "invalid_argument",
                format!(
                    "cannot change root to {:?} (it must be a directory of the node)",
                    req.root.as_deref().unwrap_or_default()
                ),
            ),
            9 => (
                "command_not_found",
                format!("command {:?} not found in the container's PATH", p.path),
            ),
            s if s >= RLIMIT_STEP => {
                let l = req.rlimits.get((s - RLIMIT_STEP) as usize);
                (
                    "invalid_argument",
                    format!(
                        "cannot set rlimit {} to soft {} hard {} (raising a hard limit needs privilege the node does not have)",
                        l.map_or("?", |l| l.name.as_str()),
                        l.map_or(0, |l| l.soft),
                        l.map_or(0, |l| l.hard)
                    ),
                )
            }
            _ => ("internal", "cannot set up the command's stdio".into()),
        };
        return Err(Event::error(code, format!("{what}: {errno}")));
    }
    Ok(pid)
}

fn pump(mut from: File, kind: Kind, w: Writer, go: mpsc::Receiver<bool>, done: mpsc::Sender<()>) {
    // Nothing is sent before `started`, nor for a command that could not be served.
    if go.recv() != Ok(true) {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if send(&w, kind, &buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = done.send(());
}

pub(crate) fn run(req: ExecRequest, mut conn: UnixStream) {
    let writer: Writer = Arc::new(Mutex::new(match conn.try_clone() {
        Ok(c) => c,
        Err(e) => {
            let e = resource_error("cannot serve the exec", &e);
            let _ = proto::write_json(&mut conn, Kind::Event, &e);
            return;
        }
    }));
    if let Err(e) = run_inner(&req, conn, &writer) {
        let _ = send_event(&writer, &e);
    }
}

/// The command's stdio as the agent holds it: the ends the command gets, and ours.
struct Stdio {
    /// The command's stdin, stdout and stderr.
    child: [OwnedFd; 3],
    /// What the pumps read, and the frame kind each sends.
    outputs: Vec<(File, Kind)>,
    /// Where stdin frames go (`None`: the command's stdin is /dev/null).
    input: Option<File>,
    /// The terminal's master end, for `Resize` and end of input.
    tty: Option<File>,
}

fn stdio(req: &ExecRequest) -> Result<Stdio, Event> {
    let io_err = |e: std::io::Error| resource_error("cannot create a pipe", &e);
    if let Some(size) = req.tty {
        return tty_stdio(req, size);
    }
    let (out_r, out_w) = pipe().map_err(io_err)?;
    let (err_r, err_w) = pipe().map_err(io_err)?;
    let (in_r, in_w) = if req.stdin {
        let (r, w) = pipe().map_err(io_err)?;
        (r, Some(File::from(w)))
    } else {
        let f = File::open("/dev/null").map_err(|e| resource_error("cannot open /dev/null", &e))?;
        (OwnedFd::from(f), None)
    };
    Ok(Stdio {
        child: [in_r, out_w, err_w],
        outputs: vec![
            (File::from(out_r), Kind::Stdout),
            (File::from(err_r), Kind::Stderr),
        ],
        input: in_w,
        tty: None,
    })
}

fn tty_stdio(req: &ExecRequest, size: WinSize) -> Result<Stdio, Event> {
    let p = pty::open(size).map_err(|e| match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EMFILE) | Some(libc::ENFILE) => {
            resource_error("cannot open a pseudo-terminal", &e)
        }
        _ => Event::error(
            "internal",
            format!("cannot open a pseudo-terminal (/dev/ptmx): {e}"),
        ),
    })?;
    // The command owns its terminal, as after a login. Best effort: the terminal works for
    // the command whoever owns the device node.
    let _ = std::os::unix::fs::fchown(&p.terminal, Some(req.uid), Some(req.gid));
    let dup = |f: &File| {
        f.try_clone()
            .map_err(|e| resource_error("cannot serve the terminal", &e))
    };
    let t = |fd: &OwnedFd| {
        fd.try_clone()
            .map_err(|e| resource_error("cannot serve the terminal", &e))
    };
    Ok(Stdio {
        child: [t(&p.terminal)?, t(&p.terminal)?, p.terminal],
        outputs: vec![(dup(&p.master)?, Kind::Stdout)],
        input: Some(dup(&p.master)?),
        tty: Some(p.master),
    })
}

fn run_inner(req: &ExecRequest, conn: UnixStream, writer: &Writer) -> Result<(), Event> {
    let prepared = prepare(req)?;
    let Stdio {
        child,
        outputs,
        input,
        tty,
    } = stdio(req)?;
    let pid = spawn(
        &prepared,
        req,
        &child[0],
        &child[1],
        &child[2],
        req.tty.is_some(),
    )?;
    drop(child);
    // Every thread the exec needs is started before the client hears `started`: threads count
    // against the node's pids limit, and a command we cannot serve is killed and reported.
    let give_up = |e: std::io::Error| {
        // SAFETY: signalling the process group the command leads (setsid).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        reaper::wait(pid, Some(Duration::from_secs(5)));
        resource_error("cannot serve the command's output", &e)
    };

    let (done_tx, done_rx) = mpsc::channel();
    let mut go = Vec::new();
    let pumps = outputs.len();
    for (from, kind) in outputs {
        let (w, d) = (writer.clone(), done_tx.clone());
        let (go_tx, go_rx) = mpsc::channel();
        std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || pump(from, kind, w, go_rx, d))
            .map_err(give_up)?;
        go.push(go_tx);
    }
    drop(done_tx);

    // Reads the client's frames; when the client goes away, the command's process group is
    // killed.
    let exited = Arc::new(AtomicBool::new(false));
    let (go_tx, go_rx) = mpsc::channel();
    let control = Control {
        pid,
        stdin: input,
        tty,
        writer: writer.clone(),
        exited: exited.clone(),
    };
    std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || control.run(conn, go_rx))
        .map_err(give_up)?;
    go.push(go_tx);
    let _ = send_event(
        writer,
        &Event::Started {
            pid,
            version: proto::VERSION,
        },
    );
    for g in go {
        let _ = g.send(true);
    }

    let timeout = req.timeout_ms.map(Duration::from_millis);
    let mut timed_out = false;
    let status = match reaper::wait(pid, timeout) {
        Some(s) => s,
        None => {
            timed_out = true;
            // SAFETY: signalling the command's own process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            reaper::wait(pid, None).unwrap_or(libc::SIGKILL)
        }
    };
    exited.store(true, Ordering::SeqCst);
    // Give the output pumps a moment to drain what the command wrote before it exited; a
    // background child that keeps the pipes open must not hold the exec open forever.
    for _ in 0..pumps {
        if done_rx.recv_timeout(Duration::from_secs(2)).is_err() {
            break;
        }
    }
    let (code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else {
        (None, Some(libc::WTERMSIG(status)))
    };
    let _ = send_event(
        writer,
        &Event::Exit {
            code,
            signal,
            timed_out,
        },
    );
    let _ = writer.lock().unwrap().shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// What the client sends during an exec, applied in order.
struct Control {
    pid: i32,
    /// `None` once stdin is closed (or when the command's stdin is /dev/null).
    stdin: Option<File>,
    tty: Option<File>,
    writer: Writer,
    /// Set once the command is reaped: its pid (and so its group id) may be reused.
    exited: Arc<AtomicBool>,
}

impl Control {
    fn run(mut self, mut conn: UnixStream, go: mpsc::Receiver<bool>) {
        // Nothing (not even an error event) is sent before `started`.
        let _ = go.recv();
        loop {
            match proto::read_frame(&mut conn) {
                Ok(Some((Kind::Stdin, data))) => self.stdin(&data),
                Ok(Some((Kind::Resize, p))) => self.resize(&p),
                Ok(Some((Kind::Signal, p))) => self.signal(&p),
                Ok(Some(_)) => {}
                Err(e) if UnknownKind::of(&e).is_some() => {
                    let k = UnknownKind::of(&e).unwrap_or(UnknownKind(0));
                    self.refuse(
                        proto::UNSUPPORTED_FRAME,
                        format!("{k}: frame ignored, the command goes on"),
                    );
                }
                Ok(None) | Err(_) => {
                    // SAFETY: signalling the process group we created with setsid.
                    unsafe { libc::kill(-self.pid, libc::SIGKILL) };
                    return;
                }
            }
        }
    }

    fn stdin(&mut self, data: &[u8]) {
        if data.is_empty() {
            // A terminal has no end of its own: what ends input there is its EOF character.
            if let (Some(t), Some(s)) = (&self.tty, self.stdin.as_mut()) {
                if let Some(eof) = pty::eof_char(t) {
                    let _ = s.write_all(&[eof]);
                }
            }
            self.stdin = None;
        } else if let Some(s) = self.stdin.as_mut() {
            if s.write_all(data).is_err() {
                self.stdin = None;
            }
        }
    }

    fn resize(&self, p: &[u8]) {
        let Some(size) = WinSize::decode(p) else {
            return self.refuse("invalid_argument", "a resize frame carries 4 bytes".into());
        };
        // Without a terminal there is nothing to resize.
        if let Some(t) = &self.tty {
            if let Err(e) = pty::set_size(t, size) {
                self.refuse("internal", format!("cannot resize the terminal: {e}"));
            }
        }
    }

    fn signal(&self, p: &[u8]) {
        match proto::decode_signal(p) {
            Some(sig) if (1..=libc::SIGRTMAX()).contains(&sig) => {
                if !self.exited.load(Ordering::SeqCst) {
                    // SAFETY: signalling the process group the command leads (setsid).
                    unsafe { libc::kill(-self.pid, sig) };
                }
            }
            other => self.refuse(
                "invalid_argument",
                format!(
                    "signal {other:?} is not a signal number: send 1 to {}",
                    libc::SIGRTMAX()
                ),
            ),
        }
    }

    fn refuse(&self, code: &str, message: String) {
        let _ = send_event(&self.writer, &Event::error(code, message));
    }
}
