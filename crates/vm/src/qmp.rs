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

/// One negotiated QMP connection.
struct Session {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Session {
    fn open(sock: &Path, patience: Duration) -> Result<Session, String> {
        // QEMU makes the socket as it starts: a node that just started may not have it yet.
        let until = Instant::now() + patience;
        let s = loop {
            match UnixStream::connect(sock) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= until => {
                    return Err(format!("connecting to {}: {e}", sock.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
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
pub fn execute(sock: &Path, command: &str) -> Result<serde_json::Value, String> {
    Session::open(sock, Duration::ZERO)?.run(command, None)
}

/// Stops the guest and writes its whole state to `file` (created 0600, root's); QEMU stays
/// stopped afterwards, ready to be ended.
pub fn save(sock: &Path, file: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| format!("creating {}: {e}", file.display()))?;
    let mut s = Session::open(sock, Duration::from_secs(5))?;
    s.run("stop", None)?;
    s.give_fd(f.as_raw_fd())?;
    s.run(
        "migrate",
        Some(serde_json::json!({"uri": format!("fd:{FD_NAME}")})),
    )?;
    s.await_migration()?;
    f.sync_all()
        .map_err(|e| format!("flushing {}: {e}", file.display()))
}

/// Loads `file` into a QEMU started with `-incoming defer` and waits until the guest runs.
pub fn load(sock: &Path, file: &Path) -> Result<(), String> {
    let f = std::fs::File::open(file).map_err(|e| format!("opening {}: {e}", file.display()))?;
    let mut s = Session::open(sock, Duration::from_secs(30))?;
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
