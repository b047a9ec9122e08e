//! A minimal QMP client: connect to a node's `vm/qmp.sock`, negotiate, run commands.
//! QMP is line-delimited JSON; asynchronous events may arrive between our request and its
//! answer and are skipped. A file is handed to QEMU as an fd (`getfd` with SCM_RIGHTS), so
//! QEMU's sandbox (no paths outside its jail, no new processes) still holds for suspend and
//! restore (ADR 0018).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// Longest a suspend or restore may take (a guest's whole memory, written or read once).
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(300);
/// The name QEMU knows the memory file's fd by.
const FD_NAME: &str = "bulkhead-state";

fn answer(r: &mut impl BufRead) -> Result<serde_json::Value, String> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)
            .map_err(|e| format!("reading QMP: {e}"))?
            == 0
        {
            return Err("QMP closed the connection".into());
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("QMP sent {line:?}: {e}"))?;
        if v.get("event").is_some() {
            continue;
        }
        if let Some(e) = v.get("error") {
            return Err(format!(
                "QMP error: {}",
                e["desc"].as_str().unwrap_or("unknown")
            ));
        }
        return Ok(v);
    }
}

/// The uid of the process at the other end of `s` (as it was when it connected or listened).
fn peer_uid(s: &UnixStream) -> std::io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred is a valid ucred of `len` bytes for getsockopt to fill; the fd is ours.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// One negotiated QMP connection.
struct Session {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Session {
    /// Connects to the node's QMP socket and checks who answers: `sock` sits in a directory
    /// QEMU owns, so a compromised QEMU could leave a symlink there to another node's socket;
    /// the peer must run as `owner` (the tenant's QEMU uid, `SO_PEERCRED`) or the session is
    /// refused before any command is sent.
    fn open(sock: &Path, owner: u32, patience: Duration) -> Result<Session, String> {
        // QEMU makes the socket as it starts: a node that just started may not have it yet.
        let until = Instant::now() + patience;
        let s = loop {
            match crate::unix_path::connect(sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= until => {
                    return Err(format!("connecting to {}: {e}", sock.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        match peer_uid(&s) {
            Ok(uid) if uid == owner => {}
            Ok(uid) => {
                return Err(format!(
                    "{} is served by uid {uid}, not this node's QEMU (uid {owner}): refused",
                    sock.display()
                ))
            }
            Err(e) => return Err(format!("reading the peer of {}: {e}", sock.display())),
        }
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let w = s.try_clone().map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let mut greeting = String::new();
        r.read_line(&mut greeting)
            .map_err(|e| format!("reading the QMP greeting: {e}"))?;
        if !greeting.contains("\"QMP\"") {
            return Err(format!("not a QMP greeting: {greeting:?}"));
        }
        let mut s = Session { w, r };
        s.run("qmp_capabilities", None)?;
        Ok(s)
    }

    /// Runs `command` with `args` and returns its `return` value.
    fn run(
        &mut self,
        command: &str,
        args: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        let mut req = serde_json::json!({ "execute": command });
        if let Some(a) = args {
            req["arguments"] = a;
        }
        writeln!(self.w, "{req}").map_err(|e| e.to_string())?;
        Ok(answer(&mut self.r)?
            .get("return")
            .cloned()
            .unwrap_or_default())
    }

    /// `getfd`: hands QEMU `fd` under [`FD_NAME`] (the fd rides on the command's bytes).
    fn give_fd(&mut self, fd: i32) -> Result<(), String> {
        let line = format!(
            "{}\n",
            serde_json::json!({"execute": "getfd", "arguments": {"fdname": FD_NAME}})
        );
        send_with_fd(&self.w, line.as_bytes(), fd).map_err(|e| format!("getfd: {e}"))?;
        answer(&mut self.r).map(|_| ())
    }

    /// Polls `query-migrate` until the migration completed (or failed).
    fn await_migration(&mut self) -> Result<(), String> {
        let until = Instant::now() + MIGRATE_TIMEOUT;
        loop {
            let st = self.run("query-migrate", None)?;
            match st["status"].as_str().unwrap_or("") {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    return Err(format!(
                        "QEMU's migration {}: {}",
                        st["status"].as_str().unwrap_or(""),
                        st["error-desc"].as_str().unwrap_or("no reason given")
                    ))
                }
                _ if Instant::now() >= until => {
                    return Err(format!(
                        "QEMU's migration did not end within {}s",
                        MIGRATE_TIMEOUT.as_secs()
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Sends `data` with `fd` attached (SCM_RIGHTS).
fn send_with_fd(sock: &UnixStream, data: &[u8], fd: i32) -> std::io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: msghdr is plain data; every pointer in it refers to a live local buffer (the
    // kernel only reads `data`), and the control message is written within `cbuf` through
    // the CMSG macros.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cm = libc::CMSG_FIRSTHDR(&msg);
        (*cm).cmsg_level = libc::SOL_SOCKET;
        (*cm).cmsg_type = libc::SCM_RIGHTS;
        (*cm).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<i32>(), fd);
        libc::sendmsg(sock.as_raw_fd(), &msg, 0)
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(std::io::Error::other("short write of a QMP command"));
    }
    Ok(())
}

/// Runs `command` (e.g. `stop`, `cont`, `query-status`) and returns its `return` value.
pub fn execute(sock: &Path, owner: u32, command: &str) -> Result<serde_json::Value, String> {
    Session::open(sock, owner, Duration::ZERO)?.run(command, None)
}

/// Stops the guest and writes its whole state to `file` (created 0600, root's); QEMU stays
/// stopped afterwards, ready to be ended. The guest's RAM is tenant data (#13): a partial file
/// of a failed save, or a stale one the new file would replace, is wiped, never just
/// unlinked or truncated.
pub fn save(sock: &Path, owner: u32, file: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    wipe(file)?;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| format!("creating {}: {e}", file.display()))?;
    let mut s = Session::open(sock, owner, Duration::from_secs(5))?;
    let was_running = s
        .run("query-status", None)
        .map(|v| v["running"].as_bool().unwrap_or(true))
        .unwrap_or(true);
    s.run("stop", None)?;
    let mut migrate = || -> Result<(), String> {
        s.give_fd(f.as_raw_fd())?;
        s.run(
            "migrate",
            Some(serde_json::json!({"uri": format!("fd:{FD_NAME}")})),
        )?;
        s.await_migration()?;
        f.sync_all()
            .map_err(|e| format!("flushing {}: {e}", file.display()))
    };
    let r = migrate();
    if r.is_err() {
        // The guest goes on as it was (running or paused), and no partial memory file stays.
        let _ = s.run("migrate_cancel", None);
        if was_running {
            let _ = s.run("cont", None);
        }
        drop(f);
        if let (Err(e), Err(w)) = (&r, wipe(file)) {
            return Err(format!("{e}; {w}"));
        }
    }
    r
}

/// Wipes `file` if it is there (`bulkhead_storage::wipe::wipe_file`).
fn wipe(file: &Path) -> Result<(), String> {
    match bulkhead_storage::wipe::wipe_file(file) {
        Err(e) if !e.is_not_found() => Err(format!("wiping {}: {e}", file.display())),
        _ => Ok(()),
    }
}

/// Loads `file` into a QEMU started with `-incoming defer` and waits until the guest runs.
pub fn load(sock: &Path, owner: u32, file: &Path) -> Result<(), String> {
    let f = std::fs::File::open(file).map_err(|e| format!("opening {}: {e}", file.display()))?;
    let mut s = Session::open(sock, owner, Duration::from_secs(30))?;
    s.give_fd(f.as_raw_fd())?;
    s.run(
        "migrate-incoming",
        Some(serde_json::json!({"uri": format!("fd:{FD_NAME}")})),
    )?;
    s.await_migration()?;
    // An incoming guest runs on by itself once loaded; make sure it does.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let st = s.run("query-status", None)?;
        if st["running"].as_bool() == Some(true) {
            return Ok(());
        }
        if st["status"].as_str() == Some("paused") || st["status"].as_str() == Some("postmigrate") {
            s.run("cont", None)?;
        }
        if Instant::now() >= until {
            return Err(format!("the restored guest does not run: {st}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A socket served by anyone but the node's QEMU uid is refused before a command is sent
    /// (a compromised QEMU's symlink to another node's socket); the right uid gets a session.
    #[test]
    fn a_socket_served_by_another_uid_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let serve = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut c, _) = l.accept().unwrap();
                let _ = c.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n");
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) > 0 {
                    let _ = c.write_all(b"{\"return\": {}}\n");
                }
            }
        });
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        let e = Session::open(&sock, me + 1, Duration::ZERO).err().unwrap();
        assert!(
            e.contains("refused") && e.contains(&format!("uid {me}")),
            "{e}"
        );
        Session::open(&sock, me, Duration::ZERO).unwrap();
        serve.join().unwrap();
    }
}
