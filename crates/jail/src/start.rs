//! The jail's supervisor side: clones the node's init into its namespaces
//! (`bulkhead_sandbox::ns`), writes its id maps, places it in its cgroup and network, and lets
//! it set itself up (`setup.rs`) and exec the agent.
//!
//! Runs in the single-threaded supervisor: the init runs Rust code between clone and exec.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use bulkhead_driver::{DriverError, Launcher, NodeStart};

use crate::setup::{self, Jail};
use crate::{JailError, JailParams};
use bulkhead_driver::files;

/// The jail's [`Launcher`].
pub struct JailLauncher;

impl Launcher for JailLauncher {
    fn start(&self, node: NodeStart<'_>) -> Result<i32, DriverError> {
        let params: JailParams = node.spec.params()?;
        Ok(start(node, &params)?)
    }

    /// #16: made by a forked child in the node's user and mount namespaces.
    fn container_mounts(
        &self,
        init_pid: i32,
        root: &str,
        mounts: Option<(&[bulkhead_agent::containers::ContainerMount], bool)>,
    ) -> Result<(), DriverError> {
        crate::containers::run(init_pid, root, mounts)
    }
}

fn start(node: NodeStart<'_>, params: &JailParams) -> Result<i32, JailError> {
    let NodeStart {
        spec,
        cgroup: cg,
        inside,
        agent_listener: listener,
        console,
        volume_keys,
    } = node;
    // A persistent node's layer (#13): a detached mount, opened before the clone copies it.
    let layer = crate::persist::open(spec, volume_keys)?;
    // A commit's tree (#13 commit and fork): likewise, read-only.
    let commit = crate::persist::open_commit(spec, volume_keys)?;
    let jail = Jail {
        spec,
        params,
        layer: layer.as_ref(),
        commit: commit.as_ref(),
    };
    let filters = if params.seccomp.is_empty() {
        crate::seccomp::compile()?
    } else {
        params
            .seccomp
            .iter()
            .map(|p| crate::seccomp::decode(p))
            .collect()
    };
    // The daemon created the node directory, its mount points and console log from outside
    // the node's cgroup; here they only have to exist.
    for p in [files::ROOTFS, files::SCRATCH].map(|d| spec.node_dir.join(d)) {
        fs::create_dir_all(&p).map_err(crate::io_err(format!("creating {}", p.display())))?;
    }

    // The OOM killer must pick the workload, never the agent: a node whose PID 1 dies is gone.
    // Lowering a score needs CAP_SYS_RESOURCE on the host, which not every host grants to
    // root (containers, some VMs): best effort here. The agent raises its commands' scores
    // to +500 in any case (no privilege needed), which is what protects it everywhere.
    let _ = fs::write("/proc/self/oom_score_adj", "-998");
    // Two starts: `go` once the id maps exist (the child may then set itself up), `placed`
    // once it is in its cgroups (only then may it enter its cgroup namespace and exec the
    // agent). Moving a task between cgroup v1 hierarchies waits out an RCU grace period
    // (~7 ms here), so the child's mounts overlap with that wait instead of following it.
    let pipe = || bulkhead_sandbox::ns::cloexec_pipe().map_err(|e| JailError::Setup(e.to_string()));
    let (mut go_r, mut go_w) = pipe()?;
    let (mut placed_r, mut placed_w) = pipe()?;
    let (mut err_r, mut err_w) = pipe()?;
    // The node's volumes (#13, attach): detached mounts made here, in the host's mount
    // namespace but attached to none; the clone copies them into the init.
    let mut volumes = crate::volumes::open(spec, volume_keys)?;
    let (listen_fd, console_fd) = (listener.as_raw_fd(), console.as_raw_fd());
    let jail_ref = &jail;
    let filters_ref = &filters;

    let child = move || -> isize {
        let mut b = [0u8; 1];
        if go_r.read_exact(&mut b).is_err() {
            return 1;
        }
        if let Err(e) = bulkhead_sandbox::restore_in_child() {
            let _ = err_w.write_all(e.as_bytes());
            return 1;
        }
        let msg = match child_prepare(jail_ref, &mut volumes).and_then(|_| {
            let mut b = [0u8; 1];
            placed_r.read_exact(&mut b).map_err(|_| {
                "the supervisor stopped before placing the node in its cgroups".to_string()
            })?;
            child_lock_down(filters_ref)
        }) {
            Ok(()) => setup::exec_agent(listen_fd, console_fd),
            Err(e) => e,
        };
        let _ = err_w.write_all(msg.as_bytes());
        1
    };
    // The node's user namespace is owned by the tenant's host uid, not root: the kernel's
    // per-user counts of everything the node does are then the tenant's (bulkhead_sandbox).
    // SAFETY: the supervisor is single-threaded (it starts no thread for a jail); the child
    // has its own copy of memory and either execs the agent or exits.
    let pid = unsafe { bulkhead_sandbox::ns::clone_confined(spec.uid_base, 1024 * 1024, child) }
        .map_err(|e| JailError::Setup(e.to_string()))?;

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
        bulkhead_sandbox::ns::write_id_maps(pid, spec.uid_base, spec.uid_count)
            .map_err(|e| JailError::Setup(e.to_string()))?;
        go_w.write_all(b"g")
            .map_err(crate::io_err("starting the node"))?;
        drop(go_w);
        if !inside {
            // Born outside: move it in (a standby's child is born inside already).
            cg.add(pid).map_err(|e| JailError::Setup(e.to_string()))?;
        }
        // The node's network, while its init does its mounts: done before `placed`, so the
        // agent (and so any workload) only ever starts on a wired, filtered network.
        bulkhead_net::host::apply_host(&spec.network, pid)
            .map_err(|e| JailError::Setup(format!("node network: {e}")))?;
        placed_w
            .write_all(b"p")
            .map_err(crate::io_err("starting the node"))?;
        drop(placed_w);
        Ok::<(), JailError>(())
    })();
    if let Err(e) = res {
        bulkhead_sandbox::ns::kill_and_reap(pid);
        return Err(e);
    }
    // The error pipe is close-on-exec (and our copy of its write end went with the closure):
    // EOF means the agent was exec'd.
    let mut msg = String::new();
    let _ = err_r.read_to_string(&mut msg);
    if !msg.is_empty() {
        bulkhead_sandbox::ns::kill_and_reap(pid);
        return Err(JailError::Setup(msg));
    }
    drop(listener);
    drop(console);
    Ok(pid)
}

/// Runs in the node's init once the supervisor wrote the id maps: credentials, mounts,
/// pivot_root, hostname, network. Still our own code only; no workload runs yet.
fn child_prepare(
    jail: &Jail<'_>,
    volumes: &mut Vec<crate::volumes::OpenVolume>,
) -> Result<(), String> {
    // Become uid/gid 0 of the new user namespace (an unprivileged range on the host).
    bulkhead_sandbox::ns::become_ns_root(true)?;
    // The node's per-user kernel limits, through the host's /proc while it is still visible
    // (the node's own /proc/sys is read-only).
    bulkhead_sandbox::write_user_sysctls(&jail.params.user_sysctls)?;
    setup::mounts(jail)?;
    // Volumes (#13, attach): on the overlay, before pivot_root.
    crate::volumes::attach(&jail.spec.node_dir.join(files::ROOTFS), volumes)?;
    setup::pivot(jail)
}

/// Runs once the node is in its cgroups: a cgroup namespace rooted there, then capabilities,
/// no_new_privs and seccomp.
fn child_lock_down(filters: &[seccompiler::BpfProgram]) -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| format!("cgroup namespace: {e}"))?;
    setup::lock_down(filters)
}
