//! The per-node supervisor (`bulkhead-supervisor`), whatever the driver. It runs as root on
//! the host: reads the node's spec, creates the node's cgroup with its limits, binds the
//! agent socket, the control socket and opens the console log, hands those to the driver's
//! [`Launcher`] (which starts the node's init), reports `ready <pid>` (or `error <message>`)
//! on stdout, and then serves its control channel until the daemon deletes the node
//! ([`serve`]). SIGTERM kills the node; when the init exits the supervisor records how,
//! removes the node's cgroups and agent socket, and keeps answering `state` with the exit
//! status until SIGTERM ends it.
//!
//! A node starts only from a spec the daemon wrote: the daemon's instruction on stdin names
//! the digest of the spec's bytes and carries its volumes' keys ([`crate::instruction`]).
//!
//! Invariants: a start that fails removes only what it made (the node's cgroup, its sockets;
//! its mounts were in the node's own namespaces) and leaves the node's directory to the
//! daemon, which destroys a node whose create failed and keeps one whose relaunch or restore
//! failed (#13). The supervisor is single-threaded until the launcher's last clone (a jail's
//! init runs Rust code without exec); signals are blocked before anything else, so every
//! thread a launcher starts afterwards leaves them to the control loop's signalfd.

mod serve;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use crate::instruction::VolumeKeys;
use crate::spec::files;
use crate::{DriverError, Launcher, Launchers, NodeSpec, NodeStart};
use bulkhead_sandbox::{Cgroups, NodeCgroup};

/// Sockets a standby bound in its own directory before it moved into the node's cgroup, so
/// that starting the node only renames them (no new directory blocks charged to the node).
struct Prebound {
    agent: (UnixListener, PathBuf),
    control: (UnixListener, PathBuf),
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, then sigprocmask for this (only) thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGCHLD, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Lines from our stdin (the daemon's): a standby's spec path, then the daemon's instruction
/// ([`crate::instruction`]); a fresh supervisor's instruction alone. Read without
/// `std::io::stdin`, whose buffer would stay on the heap of every idle node's supervisor;
/// whatever was read is zeroed when dropped (an instruction carries keys).
#[derive(Default)]
struct StdinLines {
    buf: Vec<u8>,
    eof: bool,
}

impl StdinLines {
    /// The next line without its newline; `None` at EOF with nothing left.
    fn next_line(&mut self) -> Option<Vec<u8>> {
        let mut chunk = [0u8; 512];
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                return Some(line);
            }
            if self.eof || self.buf.len() > 64 * 1024 {
                return (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf));
            }
            // SAFETY: reading into a stack buffer of its length from our own stdin.
            let n = unsafe { libc::read(0, chunk.as_mut_ptr().cast(), chunk.len()) };
            match n {
                n if n > 0 => {
                    self.buf.extend_from_slice(&chunk[..n as usize]);
                    crate::instruction::wipe(&mut chunk[..n as usize]);
                }
                n if n < 0
                    && std::io::Error::last_os_error().kind()
                        == std::io::ErrorKind::Interrupted => {}
                _ => self.eof = true,
            }
        }
    }
}

impl Drop for StdinLines {
    fn drop(&mut self) {
        // The whole allocation: bytes a drained line left behind sit beyond `len`.
        let cap = self.buf.capacity();
        self.buf.resize(cap, 0);
        crate::instruction::wipe(&mut self.buf);
    }
}

/// Whether our stdin can carry an instruction: a pipe or a file, not a terminal (a
/// supervisor started by hand from a shell must not wait for a line nobody sends).
fn stdin_carries_instruction() -> bool {
    // SAFETY: isatty on our own stdin.
    unsafe { libc::isatty(0) == 0 }
}

/// Reads the spec at `path` and checks it against the daemon's instruction: the node's spec
/// and its volumes' keys, or the `error` line's message. The spec is parsed from the very
/// bytes whose digest is checked.
fn admit_spec(
    path: &Path,
    instruction: Option<&mut Vec<u8>>,
) -> Result<(NodeSpec, VolumeKeys), String> {
    let bytes = fs::read(path).map_err(|e| {
        crate::SpecError::Read {
            path: path.into(),
            source: e,
        }
        .to_string()
    })?;
    let spec = match NodeSpec::parse(&bytes) {
        Ok(s) => s,
        Err(message) => {
            if let Some(i) = instruction {
                crate::instruction::wipe(i);
            }
            return Err(crate::SpecError::Invalid {
                path: path.into(),
                message,
            }
            .to_string());
        }
    };
    let keys = crate::instruction::check_spec(&bytes, instruction, &spec).map_err(|r| {
        // Also on our stderr (a supervisor run by hand; the daemon's is /dev/null and it
        // counts the refusal from the error line).
        eprintln!("bulkhead-supervisor: refused {}: {r}", path.display());
        r.to_string()
    })?;
    Ok((spec, keys))
}

/// A root-only listening socket at `path` (an older one there is replaced), also past
/// `sun_path`'s 108 bytes.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    let _ = fs::remove_file(path);
    let l = bulkhead_agent::unix_path::bind(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// `bulkhead-supervisor SPEC`: starts the node at once. Returns the process exit code.
pub fn run(spec_path: &Path, launchers: &Launchers) -> i32 {
    let mut out = std::io::stdout();
    let sigs = block_signals();
    // The daemon pipes its instruction (the spec's digest, the volumes' keys) on stdin.
    let mut stdin = StdinLines::default();
    let mut instruction = stdin_carries_instruction()
        .then(|| stdin.next_line())
        .flatten();
    drop(stdin);
    let (spec, keys, cgroups) =
        match admit_spec(spec_path, instruction.as_mut()).and_then(|(s, k)| {
            Cgroups::detect()
                .map(|c| (s, k, c))
                .map_err(|e| e.to_string())
        }) {
            Ok(x) => x,
            Err(e) => {
                let _ = writeln!(out, "error {e}");
                return 2;
            }
        };
    supervise(spec, keys, &cgroups, &sigs, None, launchers)
}

/// `bulkhead-supervisor --standby TENANT CGROUP SOCKDIR`: creates the cgroup, moves itself
/// into it, says `standby`, and waits for a spec path on stdin. The node's init is then born
/// inside its cgroup and nothing is moved on the create path but the supervisor itself, which
/// steps back out once the node runs. Both of its moves are self-moves (`add_self`): on cgroup
/// v1 they take no host-wide lock, where moving a task by pid waits out an RCU grace period
/// and stalls every fork and exit on the host meanwhile (P5 in docs/benchmarks.md). EOF on stdin (the daemon stopped or shrank its pool) removes the
/// slot. A standby serves every driver: it learns which from the spec.
pub fn run_standby(tenant: &str, id: &str, sock_dir: &Path, launchers: &Launchers) -> i32 {
    let mut out = std::io::stdout();
    let cgroups = match Cgroups::detect() {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "error {e}");
            return 1;
        }
    };
    let origin = cgroups.current();
    let cg = cgroups.node(tenant, id);
    // Everything that touches the host's filesystem happens before the move into the node's
    // cgroup: page cache a node's cgroup faults in (even a directory block) keeps that cgroup
    // alive in the kernel after the node is gone.
    let agent = sock_dir.join(format!("{id}.sock"));
    let control = sock_dir.join(format!("{id}.ctl"));
    let bound = bind_private(&agent).and_then(|a| bind_private(&control).map(|c| (a, c)));
    let (agent_l, control_l) = match bound {
        Ok(x) => x,
        Err(e) => {
            let _ = fs::remove_file(&agent);
            let _ = writeln!(out, "error binding in {}: {e}", sock_dir.display());
            return 1;
        }
    };
    let remove_socks = || {
        let _ = fs::remove_file(&agent);
        let _ = fs::remove_file(&control);
    };
    if let Err(e) = cgroups
        .prepare_tenant(tenant)
        .and_then(|_| cg.create_dirs())
        .and_then(|_| cg.add_self())
    {
        let _ = origin.add_self();
        let _ = cg.remove();
        remove_socks();
        let _ = writeln!(out, "error {e}");
        return 1;
    }
    let _ = writeln!(out, "standby");
    let _ = out.flush();
    // The spec's path, then the daemon's instruction (the spec's digest, the volumes' keys).
    let mut stdin = StdinLines::default();
    let line = stdin.next_line().unwrap_or_default();
    let got = line.len();
    let mut instruction = if got == 0 { None } else { stdin.next_line() };
    drop(stdin);
    let path = String::from_utf8_lossy(&line).into_owned();
    let admitted = match got {
        0 => Err(String::new()),
        _ => admit_spec(Path::new(path.trim()), instruction.as_mut()),
    };
    let spec = match (got, admitted) {
        (0, _) => None,
        (_, Ok((s, k))) if s.tenant == tenant && s.cgroup == id => Some((s, k)),
        (_, Ok(_)) => {
            let _ = writeln!(
                out,
                "error spec does not name this standby's tenant and cgroup"
            );
            None
        }
        (_, Err(e)) => {
            let _ = writeln!(out, "error {e}");
            None
        }
    };
    let Some((spec, keys)) = spec else {
        let _ = origin.add_self();
        let _ = cg.remove();
        remove_socks();
        return if got == 0 { 0 } else { 1 };
    };
    let sigs = block_signals();
    let prebound = Prebound {
        agent: (agent_l, agent.clone()),
        control: (control_l, control.clone()),
    };
    supervise(
        spec,
        keys,
        &cgroups,
        &sigs,
        Some((&origin, prebound)),
        launchers,
    )
}

/// Starts the node, reports, serves the control channel, and cleans up. `standby` is set when
/// the supervisor already sits in the node's cgroup: it steps back to `origin` once the node
/// runs, so the node's limits, freezer and process count cover the node alone.
fn supervise(
    spec: NodeSpec,
    keys: VolumeKeys,
    cgroups: &Cgroups,
    sigs: &libc::sigset_t,
    standby: Option<(&NodeCgroup, Prebound)>,
    launchers: &Launchers,
) -> i32 {
    let mut out = std::io::stdout();
    let (origin, prebound) = match standby {
        Some((o, p)) => (Some(o), Some(p)),
        None => (None, None),
    };
    // seccomp violations (#14, C): the node's own audit session, named in its audit records.
    let _ = crate::audit_session::begin(spec.uid_base);
    // What this start makes on the host besides the cgroup: the node's sockets, and a
    // standby's pre-bound ones until they are moved into the node's directory.
    let mut made = vec![
        spec.node_dir.join(files::AGENT_SOCKET),
        spec.node_dir.join(files::CONTROL_SOCKET),
    ];
    if let Some(p) = &prebound {
        made.extend([p.agent.1.clone(), p.control.1.clone()]);
    }
    let started = launchers
        .get(&spec.driver)
        .map_err(|e| e.to_string())
        .and_then(|launcher| {
            start(&spec, &keys, cgroups, prebound, launcher).map_err(|e| e.to_string())
        });
    // The node's volumes are open (or failed): their keys are no longer needed here.
    drop(keys);
    let (init, control) = match started {
        Ok(x) => x,
        Err(e) => {
            if let Some(o) = origin {
                let _ = o.add_self();
            }
            // #13: only what this start made goes. The directory is the daemon's: a create
            // that fails destroys the node, a relaunch or restore that fails keeps it (a
            // persistent node's layer, a microVM's disk, a suspended node's memory file).
            let _ = cgroups.node(&spec.tenant, &spec.cgroup).remove();
            remove_sockets(&made);
            let _ = writeln!(out, "error {e}");
            return 1;
        }
    };
    let _ = writeln!(out, "ready {init}");
    let _ = out.flush();
    if let Some(o) = origin {
        let _ = o.add_self();
    }
    // Detach from the daemon's pipes so the daemon can come and go.
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        // SAFETY: replacing our own stdio with /dev/null.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
    let node_cg = cgroups.node(&spec.tenant, &spec.cgroup);
    let launcher = launchers.get(&spec.driver).ok(); // #16: container mounts

    let agent_sock = spec.node_dir.join(files::AGENT_SOCKET);
    let control_sock = spec.node_dir.join(files::CONTROL_SOCKET);
    drop(spec);
    // The node is gone once its init is: remove its socket and cgroups at once; the
    // directory belongs to the daemon, which removes it when it deletes the node (or at
    // reconciliation).
    let on_exit = || {
        let _ = fs::remove_file(&agent_sock);
        let _ = node_cg.remove();
    };
    // The node runs: give back the heap that starting it used (the spec, dropped above, its
    // driver parameters, the launcher's buffers), so an idle node costs the host only what
    // serving it needs (docs/benchmarks.md, host memory per idle node).
    // SAFETY: malloc_trim has no preconditions; the process is single-threaded here.
    unsafe { libc::malloc_trim(0) };
    serve::serve(init, control, sigs, on_exit, launcher);
    let _ = fs::remove_file(&control_sock);
    0
}

/// Removes the sockets at `paths` that are there; anything else at such a path (a directory,
/// a file) is not the supervisor's and stays.
fn remove_sockets(paths: &[PathBuf]) {
    use std::os::unix::fs::FileTypeExt;
    for p in paths {
        if fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = fs::remove_file(p);
        }
    }
}

/// Creates the node's cgroup, sockets and console, then has the driver start the node's init.
fn start(
    spec: &NodeSpec,
    volume_keys: &VolumeKeys,
    cgroups: &Cgroups,
    prebound: Option<Prebound>,
    launcher: &dyn Launcher,
) -> Result<(i32, UnixListener), DriverError> {
    let inside = prebound.is_some();
    let cg = cgroups.node(&spec.tenant, &spec.cgroup);
    cgroups.prepare_tenant(&spec.tenant)?;
    cg.create(&spec.limits)?;
    // Dedicated cores or the host's unreserved CPUs (ADR 0027): before the init exists.
    if let Some(cpus) = &spec.cpuset {
        cg.set_cpus(cpus)?;
    }
    let (agent, control) = match prebound {
        Some(p) => (Some(p.agent), Some(p.control)),
        None => (None, None),
    };
    let control = place_socket(spec, files::CONTROL_SOCKET, control)?;
    let (agent_listener, console) = node_files(spec, agent)?;
    let init = launcher.start(NodeStart {
        spec,
        cgroup: &cg,
        inside,
        agent_listener,
        console,
        volume_keys,
    })?;
    Ok((init, control))
}

/// A socket of the node's directory: a standby's pre-bound one moved into place, or a new one.
fn place_socket(
    spec: &NodeSpec,
    name: &str,
    prebound: Option<(UnixListener, PathBuf)>,
) -> Result<UnixListener, DriverError> {
    let sock = spec.node_dir.join(name);
    match prebound {
        Some((l, path)) => {
            fs::rename(&path, &sock).map_err(DriverError::io(format!(
                "moving {} to {}",
                path.display(),
                sock.display()
            )))?;
            Ok(l)
        }
        None => bind_private(&sock).map_err(DriverError::io(format!("binding {}", sock.display()))),
    }
}

/// The node's agent socket and its console log (opened for appending, root-only).
fn node_files(
    spec: &NodeSpec,
    prebound: Option<(UnixListener, PathBuf)>,
) -> Result<(UnixListener, File), DriverError> {
    let listener = place_socket(spec, files::AGENT_SOCKET, prebound)?;
    let console = OpenOptions::new()
        .mode(0o600)
        .create(true)
        .append(true)
        .open(spec.node_dir.join(files::CONSOLE_LOG))
        .map_err(DriverError::io("opening console log"))?;
    Ok((listener, console))
}
