//! The agent's accept loop: one thread per connection, one operation per connection.

use std::os::fd::FromRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::Instant;

use crate::error_event::resource_error;
use crate::proto::{self, Event, Kind, Request, UnknownKind};
use crate::{copy, exec, fs, reaper, tcp, upload, volume, watch};

/// Serves on an inherited listening socket until the node ends. Never returns.
///
/// `pid1` is true inside a node: SIGTERM then ends every process of the node.
pub fn serve(listen_fd: i32, pid1: bool) -> ! {
    // Not dumpable: a workload running as root in the node then needs CAP_SYS_PTRACE (which
    // nodes never have) to open /proc/1/mem or attach to the agent. Commands get dumpable
    // back when they exec. Signals from inside the node cannot kill the agent either: PID 1 of
    // a pid namespace only receives signals it has handlers for, and the agent has none.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // The supervisor handed the socket over without close-on-exec; commands must not inherit
    // it (they could accept the host's requests in the agent's place).
    // SAFETY: fcntl on the fd we were given.
    unsafe { libc::fcntl(listen_fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    reaper::block_signals();
    reaper::start(pid1);
    // SAFETY: the supervisor passes a listening socket at this fd and nothing else owns it.
    let listener = unsafe { UnixListener::from_raw_fd(listen_fd) };
    let started = Instant::now();
    eprintln!("bulkhead-agent: ready (pid {})", std::process::id());
    loop {
        match listener.accept() {
            Ok((conn, _)) => spawn_handler(conn, started),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EBADF) | Some(libc::EINVAL) | Some(libc::ENOTSOCK)
                ) =>
            {
                eprintln!("bulkhead-agent: no usable listening socket at fd {listen_fd}: {e}");
                std::process::exit(1);
            }
            Err(e) => {
                // EMFILE and friends pass: back off instead of spinning.
                eprintln!("bulkhead-agent: accept: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Serves one connection on a thread of its own. When no thread can be had (the node's pids
/// limit counts threads too), the client is told so instead of seeing the connection drop,
/// which it could not tell from an agent that died.
pub(crate) fn spawn_handler(conn: UnixStream, started: Instant) {
    let spare = conn.try_clone();
    let r = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || handle(conn, started));
    if let (Err(e), Ok(mut c)) = (r, spare) {
        // A small frame fits the socket's buffer; never let one client stall the accept loop.
        let _ = c.set_write_timeout(Some(std::time::Duration::from_millis(200)));
        reply_error(
            &mut c,
            resource_error("cannot start a thread for the request", &e),
        );
    }
}

pub(crate) fn handle(mut conn: UnixStream, started: Instant) {
    let req = match proto::read_frame(&mut conn) {
        Ok(Some((Kind::Request, p))) => match serde_json::from_slice::<Request>(&p) {
            Ok(r) => r,
            Err(e) => {
                return reply_error(
                    &mut conn,
                    Event::error("invalid_request", format!("bad request: {e}")),
                )
            }
        },
        Ok(Some((k, _))) => {
            return reply_error(
                &mut conn,
                Event::error(
                    "invalid_request",
                    format!("expected a request frame, got {k:?}"),
                ),
            )
        }
        Err(e) if UnknownKind::of(&e).is_some() => {
            let k = UnknownKind::of(&e).unwrap_or(UnknownKind(0));
            return reply_error(
                &mut conn,
                Event::error(
                    proto::UNSUPPORTED_FRAME,
                    format!("{k}: the first frame must be a request"),
                ),
            );
        }
        Ok(None) | Err(_) => return,
    };
    let result = match req {
        Request::Ping => {
            let uptime_ms = started.elapsed().as_millis() as u64;
            let pong = Event::Pong {
                uptime_ms,
                agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
                system_uptime_ms: Some(system_uptime_ms().unwrap_or(uptime_ms)),
                version: proto::VERSION,
                caps: proto::own_caps(),
            };
            proto::write_json(&mut conn, Kind::Event, &pong).ok();
            Ok(())
        }
        // Slicer's chunked copy runs `slicer-agent upload ...`: answered here (upload.rs).
        Request::Exec(r) if upload::is_upload(&r) => {
            upload::run(r, conn);
            return;
        }
        Request::Exec(r) => {
            exec::run(r, conn);
            return;
        }
        Request::CopyOut { path, tar, exclude } => copy::copy_out(&mut conn, &path, tar, &exclude),
        Request::CopyIn {
            path,
            tar,
            uid,
            gid,
            mode,
            no_setid,
            owners,
            tmpfs_only,
        } => copy::copy_in(
            &mut conn,
            &path,
            tar,
            (uid, gid),
            mode,
            (no_setid, owners, tmpfs_only),
        ),
        Request::Stat { path } => fs::stat(&mut conn, &path),
        Request::ReadDir { path } => fs::read_dir(&mut conn, &path),
        Request::Mkdir {
            path,
            recursive,
            mode,
            uid,
            gid,
        } => fs::mkdir(&mut conn, &path, recursive, mode, uid, gid),
        Request::Remove { path, recursive } => fs::remove(&mut conn, &path, recursive),
        Request::Rename { from, to } => fs::rename(&mut conn, &from, &to),
        Request::Watch { paths, recursive } => watch::watch(&mut conn, &paths, recursive),
        Request::Connect { host, port } => {
            tcp::connect(conn, &host, port);
            return;
        }
        // #13, attach: a microVM guest's volumes.
        Request::MountVolume(m) => volume::mount(&m).map(|()| {
            let _ = proto::write_json(&mut conn, Kind::Event, &Event::Done { bytes: 0 });
        }),
        // #16: a container's mounts, made here only in a microVM guest.
        Request::ContainerMounts {
            root,
            mounts,
            readonly,
        } => container_op(|| crate::container_mounts::make(&root, &mounts, readonly)).map(|()| {
            let _ = proto::write_json(&mut conn, Kind::Event, &Event::Done { bytes: 0 });
        }),
        Request::ContainerUnmount { root } => {
            container_op(|| crate::container_mounts::unmount(&root)).map(|()| {
                let _ = proto::write_json(&mut conn, Kind::Event, &Event::Done { bytes: 0 });
            })
        }
    };
    if let Err(e) = result {
        reply_error(&mut conn, e);
    }
}

/// Container mounts are the guest agent's to make; in a jail the agent cannot mount (its
/// supervisor does it through the node's control channel).
fn container_op(
    f: impl FnOnce() -> Result<(), crate::containers::MountError>,
) -> Result<(), Event> {
    if !proto::IN_GUEST.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(Event::error(
            "unsupported",
            "this node's agent cannot mount: its supervisor makes container mounts",
        ));
    }
    f().map_err(|e| Event::error(proto::MOUNT_FAILED, e.to_string()))
}

fn reply_error(conn: &mut UnixStream, e: Event) {
    let _ = proto::write_json(conn, Kind::Event, &e);
}

/// The node's system uptime. In the host's (a microVM guest's) initial pid namespace that is
/// the kernel's (`/proc/uptime`); in a jail the kernel is the host's, so the node's system is
/// its pid namespace, whose init this agent is: `None`, and the caller uses its own uptime.
fn system_uptime_ms() -> Option<u64> {
    // The initial pid namespace's inode number is fixed (PROC_PID_INIT_INO).
    let ns = std::fs::read_link("/proc/self/ns/pid").ok()?;
    if ns.to_str() != Some("pid:[4026531836]") {
        return None;
    }
    let up = std::fs::read_to_string("/proc/uptime").ok()?;
    let secs: f64 = up.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}
