//! Cgroup limits for nodes on cgroup v1 and v2 hosts behind one type.
//!
//! Layout: `bulkhead/<tenant>/<node>` under each v1 controller we use (`cpu`, `memory`, `pids`,
//! `freezer`, and `cpuset` and `blkio` where the host offers them), or under the v2 root with
//! those controllers enabled down the path. A process must be written into each v1 tree
//! separately; v2 needs one write. The tenant level carries the tenant's equal CPU (and IO)
//! weight and `bulkhead/_daemon` the daemon and its supervisors (`fair.rs`, ADR 0027).

use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cgfs::{v1_blkio_weight_file, v1_cpuset_inherit, write};
pub use crate::cgfs::{CgroupError, Version};

const TOP: &str = "bulkhead";
/// The v1 hierarchies every host must have; `OPTIONAL_V1` are used where mounted (`blkio` only
/// where it offers a weight: without one it would only cost a cgroup move).
const V1_CONTROLLERS: [&str; 4] = ["cpu", "memory", "pids", "freezer"];
const OPTIONAL_V1: [&str; 2] = ["cpuset", "blkio"];
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: u64,
    /// CPU quota in thousandths of a CPU (2000 = two CPUs).
    pub millicpus: u64,
    pub pids_max: u64,
}

/// The host's cgroup hierarchy.
#[derive(Debug, Clone)]
pub struct Cgroups {
    pub(crate) version: Version,
    pub(crate) root: PathBuf,
    /// v1: the hierarchies in use (the four required first); v2: the controllers enabled
    /// down the path (`cpu memory pids`, plus `cpuset` and `io` where the root offers them).
    pub(crate) ctrls: Vec<&'static str>,
}

impl Cgroups {
    /// Detects the hierarchy: v2 when its root offers memory, cpu and pids; else v1.
    pub fn detect() -> Result<Self, CgroupError> {
        let root = PathBuf::from("/sys/fs/cgroup");
        if let Ok(c) = fs::read_to_string(root.join("cgroup.controllers")) {
            let have: Vec<&str> = c.split_whitespace().collect();
            if ["memory", "cpu", "pids"].iter().all(|x| have.contains(x)) {
                let extra: Vec<&'static str> = ["cpuset", "io"]
                    .into_iter()
                    .filter(|x| have.contains(x))
                    .collect();
                return Ok(Cgroups::at(root, Version::V2).with(extra));
            }
        }
        if V1_CONTROLLERS
            .iter()
            .all(|c| root.join(c).join("tasks").exists())
        {
            let extra: Vec<&'static str> = OPTIONAL_V1
                .into_iter()
                .filter(|c| {
                    let b = root.join(c);
                    b.join("tasks").exists()
                        && (*c != "blkio" || v1_blkio_weight_file(&b).is_some())
                })
                .collect();
            return Ok(Cgroups::at(root, Version::V1).with(extra));
        }
        Err(CgroupError::NotFound(root))
    }

    /// A hierarchy at `root` of the given version (tests point this at a scratch directory).
    /// Only the required controllers; see [`Cgroups::with`].
    pub fn at(root: PathBuf, version: Version) -> Self {
        let ctrls = match version {
            Version::V1 => V1_CONTROLLERS.to_vec(),
            Version::V2 => vec!["cpu", "memory", "pids"],
        };
        Cgroups {
            version,
            root,
            ctrls,
        }
    }

    /// Uses the optional controllers `extra` too (`cpuset`, `blkio` on v1; `cpuset`, `io` on v2).
    pub fn with(mut self, extra: impl IntoIterator<Item = &'static str>) -> Self {
        for c in extra {
            if !self.ctrls.contains(&c) {
                self.ctrls.push(c);
            }
        }
        self
    }

    /// Whether a controller is in use (`cpuset`, `blkio`/`io`, ...).
    pub fn uses(&self, controller: &str) -> bool {
        self.ctrls.contains(&controller)
    }

    pub fn version(&self) -> Version {
        self.version
    }

    pub fn describe(&self) -> &'static str {
        match self.version {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }

    /// The root of each hierarchy in use, with its controller (v2: one, named "").
    pub(crate) fn bases(&self) -> Vec<(&'static str, PathBuf)> {
        match self.version {
            Version::V1 => self.ctrls.iter().map(|c| (*c, self.root.join(c))).collect(),
            Version::V2 => vec![("", self.root.clone())],
        }
    }

    /// The cgroup `bulkhead/<sub>/<id>` (a node's) in every hierarchy in use.
    pub(crate) fn group_at(&self, rel: &Path) -> NodeCgroup {
        NodeCgroup {
            version: self.version,
            dirs: self
                .bases()
                .into_iter()
                .map(|(c, b)| (c, b.join(TOP).join(rel)))
                .collect(),
        }
    }

    pub fn node(&self, tenant: &str, id: &str) -> NodeCgroup {
        self.group_at(&Path::new(tenant).join(id))
    }

    /// The cgroup(s) the calling process is in now, as a place it can return to.
    pub fn current(&self) -> NodeCgroup {
        let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let find = |ctrl: Option<&str>| -> String {
            own.lines()
                .filter_map(|l| {
                    let mut p = l.splitn(3, ':');
                    let (_, ctrls, path) = (p.next()?, p.next()?, p.next()?);
                    let hit = match ctrl {
                        Some(c) => ctrls.split(',').any(|x| x == c),
                        None => ctrls.is_empty(),
                    };
                    hit.then(|| path.trim_start_matches('/').to_string())
                })
                .next()
                .unwrap_or_default()
        };
        let dirs = match self.version {
            Version::V1 => self
                .ctrls
                .iter()
                .map(|c| (*c, self.root.join(c).join(find(Some(c)))))
                .collect(),
            Version::V2 => vec![("", self.root.join(find(None)))],
        };
        NodeCgroup {
            version: self.version,
            dirs,
        }
    }

    /// Ids of the node cgroups that exist for a tenant (for reconciliation).
    pub fn tenant_cgroups(&self, tenant: &str) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (_, b) in self.bases() {
            if let Ok(rd) = fs::read_dir(b.join(TOP).join(tenant)) {
                for e in rd.flatten() {
                    if e.path().is_dir() {
                        let n = e.file_name().to_string_lossy().into_owned();
                        if !names.contains(&n) {
                            names.push(n);
                        }
                    }
                }
            }
        }
        names
    }

    /// Removes the tenant's (and bulkhead's) parent cgroups when they are empty.
    pub fn remove_tenant_if_empty(&self, tenant: &str) {
        for (_, b) in self.bases() {
            let _ = fs::remove_dir(b.join(TOP).join(tenant));
            let _ = fs::remove_dir(b.join(TOP));
        }
    }

    /// `+cpu +memory +pids` and the optional controllers in use.
    fn subtree(&self) -> String {
        let on: Vec<String> = self.ctrls.iter().map(|c| format!("+{c}")).collect();
        on.join(" ")
    }

    pub(crate) fn enable_v2_controllers(&self, tenant: &str) -> Result<(), CgroupError> {
        let mut dir = self.root.clone();
        let subtree = self.subtree();
        for part in [TOP, tenant] {
            write(&dir.join("cgroup.subtree_control"), &subtree)?;
            dir = dir.join(part);
            // Standbys prepare the same parents at once: one of them creates each directory.
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(CgroupError::Io {
                        path: dir.clone(),
                        source,
                    })
                }
            }
        }
        write(&dir.join("cgroup.subtree_control"), &subtree)
    }

    /// Creates the parents of a tenant's node cgroups (`fair.rs`'s `prepare_tenant` adds
    /// the tenant's weights).
    pub(crate) fn prepare_tenant_dirs(&self, tenant: &str) -> Result<(), CgroupError> {
        match self.version {
            Version::V2 => self.enable_v2_controllers(tenant)?,
            Version::V1 => {
                for (c, b) in self.bases() {
                    let d = b.join(TOP).join(tenant);
                    fs::create_dir_all(&d).map_err(|source| CgroupError::Io {
                        path: d.clone(),
                        source,
                    })?;
                    if c == "cpuset" {
                        v1_cpuset_inherit(&b.join(TOP))?;
                        v1_cpuset_inherit(&d)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One node's cgroup(s): one directory per v1 hierarchy (with its controller), or one on v2.
#[derive(Debug, Clone)]
pub struct NodeCgroup {
    pub(crate) version: Version,
    pub(crate) dirs: Vec<(&'static str, PathBuf)>,
}

impl NodeCgroup {
    /// The cgroup version of this host.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The directory of `controller`'s hierarchy (v2: the one directory). A v1 controller not
    /// in use answers a path that does not exist, so reads find nothing and writes fail.
    pub(crate) fn dir_of(&self, controller: &str) -> &Path {
        match self.version {
            Version::V2 => &self.dirs[0].1,
            Version::V1 => self
                .dirs
                .iter()
                .find(|(c, _)| *c == controller)
                .map(|(_, d)| d.as_path())
                .unwrap_or(Path::new("/nonexistent-cgroup-controller")),
        }
    }

    /// Creates the cgroup(s) without limits (a standby's slot). A v1 cpuset gets its parent's
    /// CPUs and memory nodes, without which no task may join it.
    pub fn create_dirs(&self) -> Result<(), CgroupError> {
        for (c, d) in &self.dirs {
            fs::create_dir_all(d).map_err(|source| CgroupError::Io {
                path: d.clone(),
                source,
            })?;
            if self.version == Version::V1 && *c == "cpuset" {
                v1_cpuset_inherit(d)?;
            }
        }
        Ok(())
    }

    /// Creates the cgroup(s) if needed and writes the limits.
    pub fn create(&self, limits: &Limits) -> Result<(), CgroupError> {
        self.create_dirs()?;
        let quota = limits.millicpus * CPU_PERIOD_US / 1000;
        match self.version {
            Version::V1 => {
                let cpu = self.dir_of("cpu");
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&cpu.join("cpu.cfs_quota_us"), &quota.to_string())?;
                let mem = self.dir_of("memory");
                write(
                    &mem.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
                // Swap would let a node exceed its memory limit on hosts that have it.
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &limits.memory_bytes.to_string())?;
                }
                write(
                    &self.dir_of("pids").join("pids.max"),
                    &limits.pids_max.to_string(),
                )?;
            }
            Version::V2 => {
                let d = &self.dirs[0].1;
                write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?;
                write(&d.join("memory.max"), &limits.memory_bytes.to_string())?;
                if d.join("memory.swap.max").exists() {
                    write(&d.join("memory.swap.max"), "0")?;
                }
                write(&d.join("pids.max"), &limits.pids_max.to_string())?;
            }
        }
        Ok(())
    }

    /// Moves a process into the node's cgroup(s).
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        for (_, d) in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    pub fn procs(&self) -> Vec<i32> {
        let mut all = Vec::new();
        for (_, d) in &self.dirs {
            if let Ok(s) = fs::read_to_string(d.join("cgroup.procs")) {
                all.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        all.sort_unstable();
        all.dedup();
        all
    }

    /// How many times the kernel's OOM killer fired in this node.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = match self.version {
            Version::V1 => (
                self.dir_of("memory").join("memory.oom_control"),
                "oom_kill ",
            ),
            Version::V2 => (self.dirs[0].1.join("memory.events"), "oom_kill "),
        };
        fs::read_to_string(file)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse().ok()))
            })
            .unwrap_or(0)
    }

    /// Freezes (or thaws) every process of the node and waits until the kernel says so.
    pub fn freeze(&self, frozen: bool) -> Result<(), CgroupError> {
        let (file, value, done_file, done): (PathBuf, &str, PathBuf, &str) = match self.version {
            Version::V1 => {
                let f = self.dir_of("freezer").join("freezer.state");
                let v = if frozen { "FROZEN" } else { "THAWED" };
                (f.clone(), v, f, v)
            }
            Version::V2 => (
                self.dirs[0].1.join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
                self.dirs[0].1.join("cgroup.events"),
                if frozen { "frozen 1" } else { "frozen 0" },
            ),
        };
        write(&file, value)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = fs::read_to_string(&done_file).unwrap_or_default();
            if now.lines().any(|l| l.trim() == done) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Busy(file));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Current memory use in bytes.
    pub fn memory_current(&self) -> u64 {
        let file = match self.version {
            Version::V1 => self.dir_of("memory").join("memory.usage_in_bytes"),
            Version::V2 => self.dirs[0].1.join("memory.current"),
        };
        fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// CPU time the node's processes used, in microseconds: `cpu.stat` on v2; on v1 only where
    /// `cpuacct` is mounted together with `cpu` (its own hierarchy holds no node cgroups).
    pub fn cpu_usage_usec(&self) -> Option<u64> {
        match self.version {
            Version::V2 => fs::read_to_string(self.dirs[0].1.join("cpu.stat"))
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok()),
            Version::V1 => fs::read_to_string(self.dir_of("cpu").join("cpuacct.usage"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|ns| ns / 1000),
        }
    }

    /// Processes and threads in the node now (`pids.current`).
    pub fn pids_current(&self) -> u64 {
        fs::read_to_string(self.dir_of("pids").join("pids.current"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Kills every process in the cgroup(s), waits until they are gone, removes the cgroup(s).
    /// A cgroup that does not exist counts as removed.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let procs = self.procs();
            if procs.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Busy(self.dirs[0].1.clone()));
            }
            if self.version == Version::V2 && self.dirs[0].1.join("cgroup.kill").exists() {
                let _ = fs::write(self.dirs[0].1.join("cgroup.kill"), "1");
            } else {
                // A frozen v1 cgroup would hold SIGKILL back: thaw it first.
                let _ = fs::write(self.dir_of("freezer").join("freezer.state"), "THAWED");
                for p in procs {
                    // SAFETY: plain kill(2) of a pid that is in this node's cgroup.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Pages the node left in the page cache (its image files, say) stay charged to its
        // memory cgroup, which then lingers after rmdir as a "dying" cgroup; hundreds of those
        // slow every later cgroup operation down (node creation took twice as long here after
        // a few hundred nodes). Reclaim the charges first.
        match self.version {
            Version::V1 => {
                let _ = fs::write(self.dir_of("memory").join("memory.force_empty"), "0");
            }
            Version::V2 => {
                let _ = fs::write(self.dirs[0].1.join("memory.reclaim"), "1G");
            }
        }
        for (_, d) in &self.dirs {
            // rmdir can race with the exit of the last task for a moment: retry briefly.
            for attempt in 0..50 {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if attempt == 49 => {
                        return Err(CgroupError::Io {
                            path: d.clone(),
                            source: e,
                        })
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! What bulkhead writes where, on both hierarchies, against a scratch directory. The kernel
    //! enforcing those values is proven by the end-to-end tests (on v1 hosts: this machine).
    use super::*;

    const LIMITS: Limits = Limits {
        memory_bytes: 256 << 20,
        millicpus: 1500,
        pids_max: 64,
    };

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn v2_writes_limits_controllers_and_procs() {
        let d = tempfile::tempdir().unwrap();
        let cg = Cgroups::at(d.path().to_path_buf(), Version::V2);
        cg.prepare_tenant("t").unwrap();
        assert_eq!(
            read(&d.path().join("cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        assert_eq!(
            read(&d.path().join("bulkhead/t/cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        let n = cg.node("t", "c1");
        fs::create_dir_all(d.path().join("bulkhead/t/c1")).unwrap();
        fs::write(d.path().join("bulkhead/t/c1/memory.swap.max"), "max").unwrap();
        n.create(&LIMITS).unwrap();
        let dir = d.path().join("bulkhead/t/c1");
        assert_eq!(read(&dir.join("cpu.max")), "150000 100000");
        assert_eq!(read(&dir.join("memory.max")), (256u64 << 20).to_string());
        assert_eq!(read(&dir.join("memory.swap.max")), "0");
        assert_eq!(read(&dir.join("pids.max")), "64");
        n.add(4242).unwrap();
        assert_eq!(read(&dir.join("cgroup.procs")), "4242");
        assert_eq!(cg.tenant_cgroups("t"), vec!["c1".to_string()]);
    }

    #[test]
    fn v1_writes_every_controller() {
        let d = tempfile::tempdir().unwrap();
        let cg = Cgroups::at(d.path().to_path_buf(), Version::V1);
        cg.prepare_tenant("t").unwrap();
        let n = cg.node("t", "c1");
        n.create(&LIMITS).unwrap();
        let at = |c: &str, f: &str| read(&d.path().join(c).join("bulkhead/t/c1").join(f));
        assert_eq!(at("cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(at("cpu", "cpu.cfs_quota_us"), "150000");
        assert_eq!(
            at("memory", "memory.limit_in_bytes"),
            (256u64 << 20).to_string()
        );
        assert_eq!(at("pids", "pids.max"), "64");
        n.add(4242).unwrap();
        for c in V1_CONTROLLERS {
            assert_eq!(at(c, "cgroup.procs"), "4242", "{c}");
        }
    }

    #[test]
    fn current_cgroup_is_read_from_proc() {
        let cg = Cgroups::at(PathBuf::from("/sys/fs/cgroup"), Version::V1);
        // Whatever this process's cgroups are, each path lies under its controller's root.
        for (c, d) in cg.current().dirs.iter() {
            assert!(
                d.starts_with(format!("/sys/fs/cgroup/{c}")),
                "{}",
                d.display()
            );
        }
    }
}
