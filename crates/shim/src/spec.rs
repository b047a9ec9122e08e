//! An OCI runtime spec, translated into what bulkhead does with it (#16): pure, no I/O.
//!
//! [`plan`] either gives a [`Plan`] (node kind from the CRI annotations, the process, the
//! container's mounts as node-made [`ContainerMount`]s, host files to copy, size) or a
//! [`Refusal`] whose Display is the whole message containerd shows, naming the field and what to
//! do. Rules (docs/fleet.md repeats them):
//! - refused: host namespaces (no new `network`/`pid`/`ipc`/`uts` namespace, or a `path` under
//!   `/proc/1/ns/` or `/proc/self/ns/`; other paths, such as CRI's pod netns or the sandbox's
//!   `/proc/<pid>/ns/*`, are ignored: the node has its own), capabilities outside the node's kept set [`KEPT_CAPS`]
//!   (`CAP_NET_RAW` and `CAP_MKNOD` of containerd's default set are dropped silently),
//!   `linux.devices` other than the standard ones the node's /dev already has, sysctls other than
//!   CRI's own unprivileged-port/ping defaults (ignored: the node has its own netns), shared
//!   `rootfsPropagation`, hooks (they run host programs), mount types other than
//!   proc/sysfs/tmpfs/devpts/mqueue/cgroup/bind, binds of host paths outside `host_paths`;
//! - honoured: args/env/cwd/user (uid, gid, additionalGids)/rlimits/terminal, `root.readonly`,
//!   hostname, memory limit → `ram_bytes`, cpu quota/period → `cpus` (rounded up), pids limit;
//! - mounts: `proc` → the node's /proc, `sysfs` → its /sys (read-only), a tmpfs on `/dev` → the
//!   node's /dev, `devpts`, `mqueue`, other tmpfs with their `size=`/`mode=`, a bind on
//!   `/dev/shm` → a fresh tmpfs (not shared between a pod's containers), `cgroup`/`cgroup2`
//!   skipped (the node's limits are the pod's), binds from under `host_paths` → [`HostFile`]s
//!   copied into the rootfs stream (a directory — a kubelet volume — is copied as a tree: a
//!   snapshot taken at Create, not a live mount: what the container writes there, such as
//!   `/dev/termination-log`, stays in the node); kubelet's subPath binds (`volume-subpaths`)
//!   are refused, since they may carry a hostPath volume;
//! - ignored: apparmor/selinux labels, the spec's seccomp profile (the node's own filter
//!   applies), masked/readonly paths (the node's /proc and /sys carry their own masks),
//!   cgroupsPath, oomScoreAdj, uid/gid mappings, device cgroup rules.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bulkhead_api::containers::{ContainerMount, MountKind};
use oci_spec::runtime::{Capability, LinuxDeviceType, LinuxNamespaceType, Mount, Process, Spec};

use crate::config::{clean_absolute, ShimConfig};

pub const ANN_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const ANN_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const ANN_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
pub const ANN_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
/// The pod's size, when CRI passes it (containerd 1.7+; kubelet's pod-level resources).
pub const ANN_SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
pub const ANN_SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
pub const ANN_SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";

/// The capability names a node keeps (`bulkhead_jail::caps::KEPT`; a unit test reads the jail's
/// source to keep them equal).
pub const KEPT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "AUDIT_WRITE",
    "SETFCAP",
];
/// In containerd's default set but not in a node's: dropped without a word.
pub const DROPPED_CAPS: &[&str] = &["NET_RAW", "MKNOD"];
/// Sysctls CRI itself sets on sandboxes (`enable_unprivileged_ports`/`_icmp`): ignored.
const IGNORED_SYSCTLS: &[&str] = &[
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ping_group_range",
];
/// (path, major, minor) of the character devices every container gets (the node's /dev has them).
const STANDARD_DEVICES: &[(&str, i64, i64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
    ("/dev/console", 5, 1),
    ("/dev/ptmx", 5, 2),
];

/// What the shim makes of a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub kind: Kind,
    pub process: ProcessPlan,
    pub mounts: Vec<ContainerMount>,
    pub host_files: Vec<HostFile>,
    pub readonly: bool,
    pub hostname: Option<String>,
    pub ram_bytes: Option<u64>,
    pub cpus: Option<u32>,
    /// `linux.resources.pids.limit` when positive (the caller decides where it applies).
    pub pids: Option<u64>,
}

/// Which node a task is: a pod's sandbox (its node), a container in a pod's node, or a
/// standalone container (`ctr run`) with a node of its own. `namespace` is the CRI annotation's
/// (empty on a container whose spec lacks it: the caller takes the sandbox's); a standalone
/// container's namespace is containerd's, filled in by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Sandbox {
        namespace: String,
        pod: String,
        sandbox_id: String,
    },
    Container {
        namespace: String,
        sandbox_id: String,
    },
    Standalone,
}

/// A process to run in a container (the task's own, or an Exec's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPlan {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// (OCI name such as `RLIMIT_NOFILE`, soft, hard).
    pub rlimits: Vec<(String, u64, u64)>,
    pub terminal: bool,
}

/// A host file (or directory, copied as a tree) that lands at `dest` in the container's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    pub host: PathBuf,
    pub dest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the spec has no process: give the command to run")]
    NoProcess,
    #[error("process.args is empty: give the command to run")]
    NoArgs,
    #[error("process.cwd {0:?} is not an absolute path: give an absolute working directory")]
    Cwd(String),
    #[error("process.rlimits {name}: soft {soft} is above hard {hard}: lower the soft limit")]
    Rlimit { name: String, soft: u64, hard: u64 },
    #[error("process.capabilities {}: a bulkhead node keeps only {}; drop the rest (no privileged containers)", .0.join(", "), KEPT_CAPS.join(", "))]
    Capabilities(Vec<String>),
    #[error(
        "the spec has no linux section: bulkhead runs Linux containers with their own namespaces"
    )]
    NoLinux,
    #[error("linux.namespaces: {0}: host namespaces are refused (hostNetwork, hostPID, hostIPC); run the pod without them")]
    HostNamespace(String),
    #[error("linux.devices {}: host devices are refused; a container gets the node's standard /dev only", .0.join(", "))]
    Devices(Vec<String>),
    #[error("linux.sysctl {}: sysctls are refused; the node's kernel settings are its own", .0.join(", "))]
    Sysctls(Vec<String>),
    #[error("linux.rootfsPropagation {0:?}: shared propagation is refused; use private or slave")]
    Propagation(String),
    #[error("hooks: OCI hooks run programs on the host and are refused; remove them")]
    Hooks,
    #[error("mounts {destination}: type {typ:?} is refused; use proc, sysfs, tmpfs, devpts, mqueue, cgroup or a bind from under host_paths")]
    MountType { destination: String, typ: String },
    #[error("mounts {0:?}: the destination must be an absolute path without '..'")]
    MountDestination(String),
    #[error("mounts {destination}: bind of host path {host:?} is refused: only files under the shim config's host_paths ({allowed}) are copied in; add its directory to host_paths or drop the mount")]
    HostPath {
        destination: String,
        host: String,
        allowed: String,
    },
    #[error("mounts {destination}: subPath mount {host:?} is refused (kubelet makes subPaths as bind mounts that may carry a hostPath volume); mount the whole volume instead")]
    SubPath { destination: String, host: String },
    #[error("mounts {destination}: {msg}")]
    MountOption { destination: String, msg: String },
    #[error("annotation {key}: {msg}")]
    Annotation { key: String, msg: String },
    #[error("linux.resources {what}: the container asks for {asked} but its pod's node has {node}; raise the pod's size or lower the container's")]
    TooBig { what: String, asked: u64, node: u64 },
}

/// Translates `spec` (containerd's config.json of a task) under the shim's config.
pub fn plan(spec: &Spec, cfg: &ShimConfig) -> Result<Plan, Refusal> {
    if spec.hooks().as_ref().is_some_and(|h| {
        let n = |v: &Option<Vec<_>>| v.as_ref().map_or(0, Vec::len);
        #[allow(deprecated)]
        let count = n(h.prestart())
            + n(h.create_runtime())
            + n(h.create_container())
            + n(h.start_container())
            + n(h.poststart())
            + n(h.poststop());
        count > 0
    }) {
        return Err(Refusal::Hooks);
    }
    let process = process_plan(spec.process().as_ref().ok_or(Refusal::NoProcess)?)?;
    let empty = HashMap::new();
    let ann = spec.annotations().as_ref().unwrap_or(&empty);
    let kind = kind(ann)?;
    let linux = spec.linux().as_ref().ok_or(Refusal::NoLinux)?;
    check_namespaces(linux.namespaces().as_deref().unwrap_or_default())?;
    if let Some(devs) = linux.devices() {
        let bad: Vec<String> = devs
            .iter()
            .filter(|d| {
                !STANDARD_DEVICES.iter().any(|(p, ma, mi)| {
                    d.path() == Path::new(p)
                        && d.typ() == LinuxDeviceType::C
                        && (d.major(), d.minor()) == (*ma, *mi)
                })
            })
            .map(|d| d.path().display().to_string())
            .collect();
        if !bad.is_empty() {
            return Err(Refusal::Devices(bad));
        }
    }
    if let Some(sysctl) = linux.sysctl() {
        let mut bad: Vec<String> = sysctl
            .keys()
            .filter(|k| !IGNORED_SYSCTLS.contains(&k.as_str()))
            .cloned()
            .collect();
        if !bad.is_empty() {
            bad.sort();
            return Err(Refusal::Sysctls(bad));
        }
    }
    if let Some(p) = linux.rootfs_propagation() {
        if matches!(p.as_str(), "shared" | "rshared") {
            return Err(Refusal::Propagation(p.clone()));
        }
    }
    let (mounts, host_files) = mounts(spec.mounts().as_deref().unwrap_or_default(), cfg)?;
    let res = linux.resources().as_ref();
    let mut ram_bytes = res
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .and_then(|l| u64::try_from(l).ok())
        .filter(|l| *l > 0);
    let mut cpus = res
        .and_then(|r| r.cpu().as_ref())
        .and_then(|c| cpus_of(c.quota(), c.period()));
    if matches!(kind, Kind::Sandbox { .. }) {
        // The pause container's own resources say nothing of the pod; kubelet's pod-level
        // figures come as annotations where containerd passes them.
        let num = |k: &str| -> Result<Option<i64>, Refusal> {
            ann.get(k)
                .map(|v| {
                    v.trim().parse::<i64>().map_err(|_| Refusal::Annotation {
                        key: k.into(),
                        msg: format!("{v:?} is not a number"),
                    })
                })
                .transpose()
        };
        if let Some(m) = num(ANN_SANDBOX_MEMORY)?.and_then(|m| u64::try_from(m).ok()) {
            ram_bytes = Some(m).filter(|m| *m > 0).or(ram_bytes);
        }
        let period = num(ANN_SANDBOX_CPU_PERIOD)?.and_then(|p| u64::try_from(p).ok());
        if let Some(c) = cpus_of(num(ANN_SANDBOX_CPU_QUOTA)?, period) {
            cpus = Some(c);
        }
    }
    let pids = res
        .and_then(|r| r.pids().as_ref())
        .and_then(|p| u64::try_from(p.limit()).ok())
        .filter(|l| *l > 0);
    Ok(Plan {
        kind,
        process,
        mounts,
        host_files,
        readonly: spec
            .root()
            .as_ref()
            .and_then(|r| r.readonly())
            .unwrap_or(false),
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        ram_bytes,
        cpus,
        pids,
    })
}

/// A pod container's size must fit its pod's node (`node_ram`, `node_cpus`).
pub fn check_fits(plan: &Plan, node_ram: u64, node_cpus: u32) -> Result<(), Refusal> {
    if let Some(r) = plan.ram_bytes.filter(|r| *r > node_ram) {
        return Err(Refusal::TooBig {
            what: "memory.limit".into(),
            asked: r,
            node: node_ram,
        });
    }
    if let Some(c) = plan.cpus.filter(|c| *c > node_cpus) {
        return Err(Refusal::TooBig {
            what: "cpu.quota/period".into(),
            asked: c.into(),
            node: node_cpus.into(),
        });
    }
    Ok(())
}

/// A process (the task's, or Exec's process spec) as bulkhead runs it.
pub fn process_plan(p: &Process) -> Result<ProcessPlan, Refusal> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Refusal::NoArgs);
    }
    let cwd = p.cwd().to_string_lossy().into_owned();
    let cwd = if cwd.is_empty() { "/".to_string() } else { cwd };
    if !cwd.starts_with('/') {
        return Err(Refusal::Cwd(cwd));
    }
    if let Some(caps) = p.capabilities() {
        let mut bad: Vec<String> = [
            caps.bounding(),
            caps.effective(),
            caps.permitted(),
            caps.inheritable(),
            caps.ambient(),
        ]
        .into_iter()
        .flatten()
        .flatten()
        .map(cap_name)
        .filter(|n| !KEPT_CAPS.contains(&n.as_str()) && !DROPPED_CAPS.contains(&n.as_str()))
        .map(|n| format!("CAP_{n}"))
        .collect();
        if !bad.is_empty() {
            bad.sort();
            bad.dedup();
            return Err(Refusal::Capabilities(bad));
        }
    }
    let mut rlimits = Vec::new();
    for r in p.rlimits().as_deref().unwrap_or_default() {
        let name = r.typ().to_string();
        if r.soft() > r.hard() {
            return Err(Refusal::Rlimit {
                name,
                soft: r.soft(),
                hard: r.hard(),
            });
        }
        rlimits.push((name, r.soft(), r.hard()));
    }
    let user = p.user();
    Ok(ProcessPlan {
        args,
        env: p.env().clone().unwrap_or_default(),
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        rlimits,
        terminal: p.terminal().unwrap_or(false),
    })
}

/// `NET_RAW` for `Capability::NetRaw` (the jail's spelling, without `CAP_`).
fn cap_name(c: &Capability) -> String {
    c.to_string()
}

fn kind(ann: &HashMap<String, String>) -> Result<Kind, Refusal> {
    let get = |k: &str| ann.get(k).filter(|v| !v.is_empty()).cloned();
    let need = |k: &str| {
        get(k).ok_or_else(|| Refusal::Annotation {
            key: k.into(),
            msg: "missing on a CRI sandbox: containerd's CRI plugin sets it".into(),
        })
    };
    match ann.get(ANN_CONTAINER_TYPE).map(String::as_str) {
        Some("sandbox") => Ok(Kind::Sandbox {
            namespace: need(ANN_SANDBOX_NAMESPACE)?,
            pod: need(ANN_SANDBOX_NAME)?,
            sandbox_id: need(ANN_SANDBOX_ID)?,
        }),
        Some("container") | None if ann.contains_key(ANN_SANDBOX_ID) => Ok(Kind::Container {
            namespace: get(ANN_SANDBOX_NAMESPACE).unwrap_or_default(),
            sandbox_id: need(ANN_SANDBOX_ID)?,
        }),
        Some("container") => Err(Refusal::Annotation {
            key: ANN_SANDBOX_ID.into(),
            msg: "missing on a CRI container: containerd's CRI plugin sets it".into(),
        }),
        None => Ok(Kind::Standalone),
        Some(other) => Err(Refusal::Annotation {
            key: ANN_CONTAINER_TYPE.into(),
            msg: format!("{other:?} is neither \"sandbox\" nor \"container\""),
        }),
    }
}

fn check_namespaces(ns: &[oci_spec::runtime::LinuxNamespace]) -> Result<(), Refusal> {
    use LinuxNamespaceType as T;
    for (typ, what) in [
        (T::Network, "network (hostNetwork)"),
        (T::Pid, "pid (hostPID)"),
        (T::Ipc, "ipc (hostIPC)"),
        (T::Uts, "uts"),
    ] {
        if !ns.iter().any(|n| n.typ() == typ) {
            return Err(Refusal::HostNamespace(format!(
                "no new {what} namespace means the host's"
            )));
        }
    }
    for n in ns {
        if let Some(p) = n.path() {
            if is_host_ns(p) {
                return Err(Refusal::HostNamespace(format!(
                    "{} namespace path {} is the host's",
                    n.typ(),
                    p.display()
                )));
            }
        }
    }
    Ok(())
}

/// `/proc/1/ns/*`, or the runtime's own (`/proc/self`, `/proc/thread-self`), also through
/// `//`, `.` or `..` spellings.
fn is_host_ns(p: &Path) -> bool {
    let parts: Vec<String> = p
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    parts.len() >= 2
        && parts[0] == "proc"
        && matches!(parts[1].as_str(), "1" | "self" | "thread-self")
        || p.to_string_lossy().contains("..")
}

/// `quota`/`period` µs rounded up to whole cpus; None when unlimited.
fn cpus_of(quota: Option<i64>, period: Option<u64>) -> Option<u32> {
    let q = u64::try_from(quota?).ok().filter(|q| *q > 0)?;
    let p = period.filter(|p| *p > 0).unwrap_or(100_000);
    u32::try_from(q.div_ceil(p)).ok()
}

fn mounts(
    list: &[Mount],
    cfg: &ShimConfig,
) -> Result<(Vec<ContainerMount>, Vec<HostFile>), Refusal> {
    let (mut out, mut files) = (Vec::new(), Vec::new());
    for m in list {
        let dest = m.destination().to_string_lossy().into_owned();
        if !clean_absolute(m.destination()) {
            return Err(Refusal::MountDestination(dest));
        }
        let opts = m.options().as_deref().unwrap_or_default();
        let typ = m.typ().clone().unwrap_or_default();
        let is_bind = typ == "bind" || opts.iter().any(|o| o == "bind" || o == "rbind");
        let read_only = opts.iter().any(|o| o == "ro");
        let simple = |kind| ContainerMount {
            destination: dest.clone(),
            kind,
            read_only,
            size_bytes: None,
            mode: None,
        };
        if is_bind {
            if dest == "/dev/shm" {
                out.push(ContainerMount {
                    mode: Some(0o1777),
                    ..simple(MountKind::Tmpfs)
                });
                continue;
            }
            let source = m.source().clone().unwrap_or_default();
            if source
                .components()
                .any(|c| c.as_os_str() == "volume-subpaths")
            {
                return Err(Refusal::SubPath {
                    destination: dest,
                    host: source.display().to_string(),
                });
            }
            if !cfg.host_path_allowed(&source) {
                return Err(Refusal::HostPath {
                    destination: dest,
                    host: source.display().to_string(),
                    allowed: cfg
                        .host_paths
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            files.push(HostFile { host: source, dest });
            continue;
        }
        match typ.as_str() {
            "proc" => out.push(simple(MountKind::Proc)),
            "sysfs" => out.push(ContainerMount {
                read_only: true,
                ..simple(MountKind::Sys)
            }),
            "tmpfs" if dest == "/dev" => out.push(simple(MountKind::Dev)),
            "devpts" => out.push(simple(MountKind::Devpts)),
            "mqueue" => out.push(simple(MountKind::Mqueue)),
            "cgroup" | "cgroup2" => {}
            "tmpfs" => {
                let mut t = simple(MountKind::Tmpfs);
                for o in opts {
                    let bad = |msg: String| Refusal::MountOption {
                        destination: dest.clone(),
                        msg,
                    };
                    if let Some(s) = o.strip_prefix("size=") {
                        t.size_bytes = Some(parse_size(s).ok_or_else(|| {
                            bad(format!("tmpfs size {s:?}: write bytes or a k/m/g size"))
                        })?);
                    } else if let Some(s) = o.strip_prefix("mode=") {
                        t.mode = Some(
                            u32::from_str_radix(s, 8)
                                .ok()
                                .filter(|m| *m <= 0o7777)
                                .ok_or_else(|| bad(format!("tmpfs mode {s:?}: write octal")))?,
                        );
                    }
                }
                out.push(t);
            }
            other => {
                return Err(Refusal::MountType {
                    destination: dest,
                    typ: other.into(),
                })
            }
        }
    }
    Ok((out, files))
}

/// tmpfs `size=`: bytes with an optional k/m/g suffix (percentages are refused).
fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()?
        .checked_mul(mult)
        .filter(|n| *n > 0)
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
