//! Runs inside the node's init process after clone, before it execs the agent. Order matters:
//! mounts while we still see the host paths, pivot_root, then hostname and network, then
//! capabilities, no_new_privs, landlock and seccomp last so that the steps before them are
//! still allowed.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::ffi::CString;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::JailParams;
use bulkhead_driver::{files, NodeSpec};

/// One jail node as its init sets it up: the spec's common part and the jail's parameters.
pub(crate) struct Jail<'a> {
    pub spec: &'a NodeSpec,
    pub params: &'a JailParams,
    /// A persistent node's layer, a detached mount the supervisor opened (#13, persistent
    /// nodes: `crate::persist`); `None`: the layer is a tmpfs.
    pub layer: Option<&'a std::os::fd::OwnedFd>,
    /// The commit the node starts from, a detached read-only mount the supervisor opened
    /// (#13 commit and fork: `crate::persist::open_commit`); `None`: the image (`params.lower`).
    pub commit: Option<&'a std::os::fd::OwnedFd>,
}

type R = Result<(), String>;

fn m(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> R {
    mount(src, target, fstype, flags, data)
        .map_err(|e| format!("mount {} ({fstype:?}): {e}", target.display()))
}

fn mkdir(p: &Path) -> R {
    fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
}

fn touch(p: &Path) -> R {
    if !p.exists() {
        fs::write(p, b"").map_err(|e| format!("create {}: {e}", p.display()))?;
    }
    Ok(())
}

/// Bind-mounts `src` on `dst` and makes the bind read-only.
fn bind_ro(src: &Path, dst: &Path) -> R {
    m(
        Some(src.to_str().unwrap_or("")),
        dst,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    let flags = MsFlags::MS_BIND
        | MsFlags::MS_REMOUNT
        | MsFlags::MS_RDONLY
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV;
    m(None, dst, None, flags, None)
}

const MASKED_FILES: &[&str] = &[
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/sched_debug",
    "proc/kallsyms",
];
const MASKED_DIRS: &[&str] = &["proc/acpi", "proc/scsi", "sys/firmware"];
const READ_ONLY: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];
const HOST_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

pub(crate) fn mounts(jail: &Jail<'_>) -> R {
    let (spec, params) = (jail.spec, jail.params);
    m(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let scratch = spec.node_dir.join(files::SCRATCH);
    let rootfs = spec.node_dir.join(files::ROOTFS);
    // The writable layer is a tmpfs of the node's storage size, charged to the node's memory
    // cgroup, inside the node's mount namespace: nothing to unmount on the host. A persistent
    // node's is its encrypted layer image instead (#13, `crate::persist`).
    if let Some(layer) = jail.layer {
        crate::persist::attach(layer, &scratch)?;
    } else {
        let data = format!("size={},mode=0755", params.storage_bytes);
        m(
            Some("tmpfs"),
            &scratch,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&data),
        )?;
    }
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    mkdir(&upper)?;
    mkdir(&work)?;
    // A commit's tree (#13) is the lower instead of the image: moved in from its detached
    // mount, beside the upper and work directories (never inside them).
    let commit_lower = scratch.join("lower");
    let lower = match jail.commit {
        Some(tree) => {
            mkdir(&commit_lower)?;
            crate::persist::attach(tree, &commit_lower)?;
            &commit_lower
        }
        None => &params.lower,
    };
    let lower = lower.to_str().ok_or("lower path is not UTF-8")?;
    let ov = format!(
        "lowerdir={lower},upperdir={},workdir={},userxattr",
        upper.display(),
        work.display()
    );
    m(
        Some("overlay"),
        &rootfs,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&ov),
    )?;

    for d in ["proc", "sys", "dev", "tmp", ".bulkhead"] {
        mkdir(&rootfs.join(d))?;
    }
    fs::set_permissions(rootfs.join("tmp"), fs::Permissions::from_mode(0o1777))
        .map_err(|e| format!("chmod /tmp: {e}"))?;
    let agent = rootfs.join(".bulkhead/agent");
    touch(&agent)?;
    bind_ro(&params.agent_bin, &agent)?;

    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    m(
        Some("proc"),
        &rootfs.join("proc"),
        Some("proc"),
        nosuid,
        None,
    )?;
    m(
        Some("sysfs"),
        &rootfs.join("sys"),
        Some("sysfs"),
        nosuid | MsFlags::MS_RDONLY,
        None,
    )?;

    let dev = rootfs.join("dev");
    m(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755,size=65536k"),
    )?;
    for d in HOST_DEVICES {
        let p = dev.join(d);
        touch(&p)?;
        m(Some(&format!("/dev/{d}")), &p, None, MsFlags::MS_BIND, None)?;
    }
    mkdir(&dev.join("pts"))?;
    m(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mkdir(&dev.join("shm"))?;
    m(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        nosuid,
        Some("mode=1777,size=65536k"),
    )?;
    for (link, to) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(to, dev.join(link)).map_err(|e| format!("symlink /dev/{link}: {e}"))?;
    }

    for f in MASKED_FILES {
        let p = rootfs.join(f);
        if p.exists() {
            m(Some("/dev/null"), &p, None, MsFlags::MS_BIND, None)?;
        }
    }
    for d in MASKED_DIRS {
        let p = rootfs.join(d);
        if p.is_dir() {
            m(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY | nosuid,
                Some("size=0"),
            )?;
        }
    }
    for r in READ_ONLY {
        let p = rootfs.join(r);
        if p.exists() {
            bind_ro(&p, &p)?;
        }
    }
    Ok(())
}

pub(crate) fn pivot(jail: &Jail<'_>) -> R {
    let spec = jail.spec;
    let rootfs = spec.node_dir.join(files::ROOTFS);
    std::env::set_current_dir(&rootfs).map_err(|e| format!("chdir rootfs: {e}"))?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves only the
    // node's tree, without needing a directory for the old root.
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| format!("detaching the old root: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    identity_tmpfs()?;
    secrets_tmpfs()?; // secrets (#13)
    nix::unistd::sethostname(&spec.hostname).map_err(|e| format!("sethostname: {e}"))?;
    bulkhead_net::apply_inside(&spec.network).map_err(|e| e.to_string())
}

/// Where the daemon writes the node's workload identity token (ADR 0020).
pub const IDENTITY_DIR: &str = "/run/bulkhead/identity";

/// A small tmpfs of its own for the workload identity token, so that the token is never on
/// a disk, whatever later becomes of the writable layer. Mounted after pivot_root, so that
/// the image's symlinks (a `/run` pointing elsewhere) resolve inside the node, never on the
/// host; while the init still holds its capabilities.
fn identity_tmpfs() -> R {
    let dir = Path::new(IDENTITY_DIR);
    mkdir(dir).map_err(|e| format!("{e}: the image must allow a directory {IDENTITY_DIR}"))?;
    m(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=0755"),
    )
}

// ---- secrets (#13) ----
/// Where the daemon writes the secrets a node was created with, one file each.
pub const SECRETS_DIR: &str = "/run/secrets";
/// The secrets tmpfs's bounds: 16 secrets of at most 32 KiB (and the temporary file of the
/// one being written) fit; nothing else grows it.
pub const SECRETS_TMPFS: &str = "size=1m,nr_inodes=64,mode=0755";

/// A tmpfs of its own for the node's secrets, so that a secret is never on a disk (nor in
/// the writable layer); mounted like the identity tmpfs, after pivot_root.
fn secrets_tmpfs() -> R {
    let dir = Path::new(SECRETS_DIR);
    mkdir(dir).map_err(|e| format!("{e}: the image must allow a directory {SECRETS_DIR}"))?;
    m(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(SECRETS_TMPFS),
    )
}
// ---- end secrets ----

pub(crate) fn lock_down(filters: &[seccompiler::BpfProgram]) -> R {
    bulkhead_sandbox::caps::limit_to(crate::caps::kept_mask())?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
    }
    crate::landlock::restrict_node()?;
    crate::seccomp::install(filters)
}

/// Puts the agent's listening socket at fd 3, stdio on the console, and execs the agent.
pub(crate) fn exec_agent(listen_fd: i32, console_fd: i32) -> String {
    // SAFETY: dup2/close_range on fds we own; execve with NUL-terminated arrays built here.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0
            || libc::dup2(null, 0) < 0
            || libc::dup2(console_fd, 1) < 0
            || libc::dup2(console_fd, 2) < 0
        {
            return format!("stdio: {}", std::io::Error::last_os_error());
        }
        // dup2(3, 3) would keep close-on-exec, so clear the flag explicitly either way.
        if (listen_fd != 3 && libc::dup2(listen_fd, 3) < 0) || libc::fcntl(3, libc::F_SETFD, 0) < 0
        {
            return format!("agent socket: {}", std::io::Error::last_os_error());
        }
        libc::syscall(
            libc::SYS_close_range,
            4u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        let path = CString::new("/.bulkhead/agent").unwrap();
        let argv = [c"bulkhead-agent".as_ptr(), std::ptr::null()];
        let envp = [
            c"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".as_ptr(),
            std::ptr::null(),
        ];
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
    }
    format!("exec agent: {}", std::io::Error::last_os_error())
}
