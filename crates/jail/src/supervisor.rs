//! The per-node supervisor (`bulkhead supervise SPEC`). It runs as root on the host, creates the
//! node's cgroups and agent socket, clones the node's init into new namespaces, reports
//! `ready <pid>` (or `error <message>`) on stdout, and then waits. SIGTERM kills the node; when
//! the node's init exits the supervisor removes the node's cgroups and socket and exits.
//!
//! The supervisor is single-threaded, which makes clone() without exec in the child safe.

use nix::sched::{clone, CloneFlags};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use crate::cgroup::NodeCgroup;
use crate::{files, io_err, setup, Cgroups, JailError, JailSpec};

pub(crate) fn pipe() -> Result<(File, File), JailError> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io_err("pipe")(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two fresh fds that we now own.
    Ok(unsafe {
        (
            File::from(OwnedFd::from_raw_fd(fds[0])),
            File::from(OwnedFd::from_raw_fd(fds[1])),
        )
    })
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

fn read_spec(spec_path: &Path) -> Result<JailSpec, String> {
    fs::read(spec_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("reading spec {}: {e}", spec_path.display()))
}

/// `bulkhead-supervisor SPEC`: starts the node at once. Returns the process exit code.
pub fn run(spec_path: &Path) -> i32 {
    let mut out = std::io::stdout();
    let (spec, cgroups) = match read_spec(spec_path)
        .and_then(|s| Cgroups::detect().map(|c| (s, c)).map_err(|e| e.to_string()))
    {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(out, "error {e}");
            return 2;
        }
    };
    let sigs = block_signals();
    supervise(&spec, &cgroups, &sigs, None)
}

/// `bulkhead-supervisor --standby TENANT CGROUP`: creates the cgroup, moves itself into it,
/// says `standby`, and waits for a spec path on stdin. Moving a task into a cgroup v1 hierarchy
/// waits out an RCU grace period (7-20 ms here when the lock is cold); a standby pays it before
/// any request, so the node's init is then born inside its cgroup and nothing is moved on the
/// create path. EOF on stdin (the daemon stopped or shrank its pool) removes the slot.
pub fn run_standby(tenant: &str, id: &str, sock_dir: &Path) -> i32 {
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
    let sock = sock_dir.join(format!("{id}.sock"));
    let _ = fs::remove_file(&sock);
    let listener = match UnixListener::bind(&sock)
        .and_then(|l| fs::set_permissions(&sock, fs::Permissions::from_mode(0o600)).map(|_| l))
    {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(out, "error binding {}: {e}", sock.display());
            return 1;
        }
    };
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    if let Err(e) = cgroups
        .prepare_tenant(tenant)
        .and_then(|_| cg.create_dirs())
        .and_then(|_| cg.add(me))
    {
        let _ = origin.add(me);
        let _ = cg.remove();
        let _ = fs::remove_file(&sock);
        let _ = writeln!(out, "error {e}");
        return 1;
    }
    let _ = writeln!(out, "standby");
    let _ = out.flush();
    let mut line = String::new();
    let got = std::io::stdin().read_line(&mut line).unwrap_or(0);
    let spec = match (got, read_spec(Path::new(line.trim()))) {
        (0, _) => None,
        (_, Ok(s)) if s.tenant == tenant && s.cgroup == id => Some(s),
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
    let Some(spec) = spec else {
        let _ = origin.add(me);
        let _ = cg.remove();
        let _ = fs::remove_file(&sock);
        return if got == 0 { 0 } else { 1 };
    };
    let sigs = block_signals();
    supervise(&spec, &cgroups, &sigs, Some((&origin, listener, sock)))
}

/// Starts the node, reports, waits for it, and cleans up. `origin` is set when the supervisor
/// already sits in the node's cgroup (a standby): it steps back there once the node runs, so
/// the node's limits, freezer and process count cover the node alone.
fn supervise(
    spec: &JailSpec,
    cgroups: &Cgroups,
    sigs: &libc::sigset_t,
    standby: Option<(&NodeCgroup, UnixListener, std::path::PathBuf)>,
) -> i32 {
    let mut out = std::io::stdout();
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let (origin, prebound) = match standby {
        Some((o, l, p)) => (Some(o), Some((l, p))),
        None => (None, None),
    };
    let init = match start(spec, cgroups, prebound) {
        Ok(pid) => pid,
        Err(e) => {
            if let Some(o) = origin {
                let _ = o.add(me);
            }
            let _ = crate::cleanup(cgroups, &spec.tenant, &spec.node_dir);
            let _ = writeln!(out, "error {e}");
            return 1;
        }
    };
    let _ = writeln!(out, "ready {init}");
    let _ = out.flush();
    if let Some(o) = origin {
        let _ = o.add(me);
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
    wait_for(init, sigs);
    // The node is gone. Remove the socket and cgroups; the directory belongs to the daemon,
    // which removes it when it deletes the node (or at reconciliation).
    let _ = fs::remove_file(spec.node_dir.join(files::AGENT_SOCKET));
    let _ = cgroups.node(&spec.tenant, &spec.cgroup).remove();
    0
}

fn wait_for(init: i32, sigs: &libc::sigset_t) {
    loop {
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid set and out pointer.
        let sig = unsafe { libc::sigwaitinfo(sigs, &mut info) };
        match sig {
            libc::SIGCHLD => {
                let mut status = 0;
                // SAFETY: reaping our own child.
                if unsafe { libc::waitpid(init, &mut status, libc::WNOHANG) } == init {
                    return;
                }
            }
            // SIGHUP (a closing terminal of the daemon's session) must not end nodes.
            libc::SIGTERM | libc::SIGINT => {
                // SIGKILL of a pid namespace's init kills every process in the namespace.
                // SAFETY: our own child.
                unsafe { libc::kill(init, libc::SIGKILL) };
            }
            _ => {}
        }
    }
}

/// Starts the node's init. `prebound` is a standby's agent socket, bound before it moved into
/// the node's cgroup (the supervisor then sits inside it, and the init is born there).
fn start(
    spec: &JailSpec,
    cgroups: &Cgroups,
    prebound: Option<(UnixListener, std::path::PathBuf)>,
) -> Result<i32, JailError> {
    if let Some(vm) = &spec.vm {
        return crate::vm_node::start(spec, vm, cgroups, prebound);
    }
    let inside = prebound.is_some();
    let filters = if spec.seccomp.is_empty() {
        crate::seccomp::compile()?
    } else {
        spec.seccomp
            .iter()
            .map(|p| crate::seccomp::decode(p))
            .collect()
    };
    let cg = cgroups.node(&spec.tenant, &spec.cgroup);
    cgroups.prepare_tenant(&spec.tenant)?;
    cg.create(&spec.limits)?;

    // The daemon created the node directory, its mount points and console log from outside
    // the node's cgroup; a standby only renames its socket into place (no new page cache).
    for d in [files::ROOTFS, files::SCRATCH] {
        let p = spec.node_dir.join(d);
        fs::create_dir_all(&p).map_err(io_err(format!("creating {}", p.display())))?;
    }
    let (listener, console) = node_files(spec, prebound)?;

    // The OOM killer must pick the workload, never the agent: a node whose PID 1 dies is gone.
    // Lowering a score needs CAP_SYS_RESOURCE on the host, which not every host grants to
    // root (containers, some VMs): best effort here. The agent raises its commands' scores
    // to +500 in any case (no privilege needed), which is what protects it everywhere.
    let _ = fs::write("/proc/self/oom_score_adj", "-998");
    // Two starts: `go` once the id maps exist (the child may then set itself up), `placed`
    // once it is in its cgroups (only then may it enter its cgroup namespace and exec the
    // agent). Moving a task between cgroup v1 hierarchies waits out an RCU grace period
    // (~7 ms here), so the child's mounts overlap with that wait instead of following it.
    let (mut go_r, mut go_w) = pipe()?;
    let (mut placed_r, mut placed_w) = pipe()?;
    let (mut err_r, mut err_w) = pipe()?;
    let (listen_fd, console_fd) = (listener.as_raw_fd(), console.as_raw_fd());

    let child = move || -> isize {
        let mut b = [0u8; 1];
        if go_r.read_exact(&mut b).is_err() {
            return 1;
        }
        if let Err(e) = bulkhead_sandbox::restore_in_child() {
            let _ = err_w.write_all(e.as_bytes());
            return 1;
        }
        let msg = match child_prepare(spec).and_then(|_| {
            let mut b = [0u8; 1];
            placed_r.read_exact(&mut b).map_err(|_| {
                "the supervisor stopped before placing the node in its cgroups".to_string()
            })?;
            child_lock_down(&filters)
        }) {
            Ok(()) => setup::exec_agent(listen_fd, console_fd),
            Err(e) => e,
        };
        let _ = err_w.write_all(msg.as_bytes());
        1
    };
    let mut stack = vec![0u8; 1024 * 1024];
    let flags = CloneFlags::CLONE_NEWUSER
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    // The node's user namespace is owned by the tenant's host uid, not root: the kernel's
    // per-user counts of everything the node does are then the tenant's (bulkhead_sandbox).
    let cloned = bulkhead_sandbox::as_owner(spec.uid_base, || {
        // SAFETY: the supervisor is single-threaded; the child gets its own copy of memory (no
        // CLONE_VM) and either execs the agent or exits.
        unsafe { clone(Box::new(child), &mut stack, flags, Some(libc::SIGCHLD)) }
    });
    let pid = cloned
        .map_err(|e| JailError::Setup(e.to_string()))?
        .map_err(|e| JailError::Setup(format!("clone: {e}")))?
        .as_raw();

    let map = format!("0 {} {}\n", spec.uid_base, spec.uid_count);
    // The agent (PID 1) is never the OOM killer's victim: a node whose init dies is gone, and
    // an upload's tmpfs pages belong to no process, so with only the agent in the node the
    // memory cgroup would pick it. At -1000 a charge the cgroup cannot satisfy fails with
    // ENOMEM instead (the upload answers 507). First the node's floor: it inherited ours
    // (-998, set by a privileged write), under which any process of the node could lower its
    // own score to -998 and be spared in a host-wide OOM at other tenants' expense. Writing 0
    // through `oom_score_adj` with CAP_SYS_RESOURCE sets the floor to 0; then -1000 through
    // the legacy `oom_adj` (-17), which leaves that floor alone: commands the agent raised to
    // +500 can come down to 0, never below. Best effort like our own score.
    let _ = fs::write(format!("/proc/{pid}/oom_score_adj"), "0");
    let _ = fs::write(format!("/proc/{pid}/oom_adj"), "-17");
    let res = (|| {
        fs::write(format!("/proc/{pid}/uid_map"), &map).map_err(io_err("writing uid_map"))?;
        fs::write(format!("/proc/{pid}/gid_map"), &map).map_err(io_err("writing gid_map"))?;
        go_w.write_all(b"g").map_err(io_err("starting the node"))?;
        drop(go_w);
        if !inside {
            // Born outside: move it in (a standby's child is born inside already).
            cg.add(pid)?;
        }
        // The node's network, while its init does its mounts: done before `placed`, so the
        // agent (and so any workload) only ever starts on a wired, filtered network.
        bulkhead_net::host::apply_host(&spec.network, pid)
            .map_err(|e| JailError::Setup(format!("node network: {e}")))?;
        placed_w
            .write_all(b"p")
            .map_err(io_err("starting the node"))?;
        drop(placed_w);
        Ok::<(), JailError>(())
    })();
    if let Err(e) = res {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        return Err(e);
    }
    // The error pipe is close-on-exec (and our copy of its write end went with the closure):
    // EOF means the agent was exec'd.
    let mut msg = String::new();
    let _ = err_r.read_to_string(&mut msg);
    if !msg.is_empty() {
        // SAFETY: our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(JailError::Setup(msg));
    }
    drop(listener);
    drop(console);
    Ok(pid)
}

/// The node's agent socket (a standby's pre-bound one, moved into place, or a new one) and
/// its console log (opened for appending, root-only).
pub(crate) fn node_files(
    spec: &JailSpec,
    prebound: Option<(UnixListener, std::path::PathBuf)>,
) -> Result<(UnixListener, File), JailError> {
    let sock = spec.node_dir.join(files::AGENT_SOCKET);
    let listener = match prebound {
        Some((l, path)) => {
            fs::rename(&path, &sock).map_err(io_err(format!(
                "moving the agent socket to {}",
                sock.display()
            )))?;
            l
        }
        None => {
            let _ = fs::remove_file(&sock);
            let l =
                UnixListener::bind(&sock).map_err(io_err(format!("binding {}", sock.display())))?;
            fs::set_permissions(&sock, fs::Permissions::from_mode(0o600))
                .map_err(io_err("chmod agent socket"))?;
            l
        }
    };
    let console = OpenOptions::new()
        .mode(0o600)
        .create(true)
        .append(true)
        .open(spec.node_dir.join(files::CONSOLE_LOG))
        .map_err(io_err("opening console log"))?;
    Ok((listener, console))
}

/// Runs in the node's init once the supervisor wrote the id maps: credentials, mounts,
/// pivot_root, hostname, network. Still our own code only; no workload runs yet.
fn child_prepare(spec: &JailSpec) -> Result<(), String> {
    // Become uid/gid 0 of the new user namespace (an unprivileged range on the host).
    // SAFETY: credential syscalls with integer arguments.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) < 0
            || libc::setresgid(0, 0, 0) < 0
            || libc::setresuid(0, 0, 0) < 0
        {
            return Err(format!(
                "switching to the node's root: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    // The node's per-user kernel limits, through the host's /proc while it is still visible
    // (the node's own /proc/sys is read-only).
    bulkhead_sandbox::write_user_sysctls(&spec.user_sysctls)?;
    setup::mounts(spec)?;
    setup::pivot(spec)
}

/// Runs once the node is in its cgroups: a cgroup namespace rooted there, then capabilities,
/// no_new_privs and seccomp.
fn child_lock_down(filters: &[seccompiler::BpfProgram]) -> Result<(), String> {
    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| format!("cgroup namespace: {e}"))?;
    setup::lock_down(filters)
}
