//! Fair shares between tenants and a protected place for the daemon (ADR 0027).
//!
//! - Each tenant's level (`bulkhead/<tenant>`) gets the same CPU weight (v1 `cpu.shares`, v2
//!   `cpu.weight`) and, where the host has one, the same IO weight (v1 `blkio.weight` or
//!   `blkio.bfq.weight`, v2 `io.weight`): a tenant with many busy nodes gets its share, no more.
//! - The daemon and every node's supervisor sit in `bulkhead/_daemon` (a name no tenant can have:
//!   tenant names are labels without `_`) with a higher weight, so a busy tenant cannot starve
//!   the process that serves every tenant's API.
//! - CPU sets: a node's cgroup can be pinned to a CPU list (`dedicated_cores`); the daemon's
//!   cgroup gets the CPUs no group reserved.
//!
//! Invariant: a tenant's level carries its weights before any node of it exists
//! ([`Cgroups::prepare_tenant`] is the only way the supervisor and standbys make it).

use std::fs;
use std::path::{Path, PathBuf};

use crate::cgfs::{
    read_trim, v1_blkio_weight_file, v1_cpuset_inherit, write, CgroupError, Version,
};
use crate::cgroup::{Cgroups, NodeCgroup};

/// A tenant level's weight, on v2's scale (default 100); v1 `cpu.shares` is 10.24× this.
pub const TENANT_WEIGHT: u64 = 100;
/// The daemon's cgroup: four tenants' worth, so it is served first when CPU is short but
/// cannot take the host from the tenants.
pub const DAEMON_WEIGHT: u64 = 400;
/// The daemon's cgroup under `bulkhead/`.
pub const DAEMON_CGROUP: &str = "_daemon";

impl Cgroups {
    /// Prepares the parents of a tenant's node cgroups, with the tenant's weights.
    pub fn prepare_tenant(&self, tenant: &str) -> Result<(), CgroupError> {
        self.prepare_tenant_dirs(tenant)?;
        self.set_weights(&Path::new("bulkhead").join(tenant), TENANT_WEIGHT)
    }

    /// Writes the CPU (and IO, where there is a weight) weight of the cgroup at `rel` (from the
    /// hierarchy's root, e.g. `bulkhead/<tenant>`).
    pub(crate) fn set_weights(&self, rel: &Path, weight: u64) -> Result<(), CgroupError> {
        match self.version {
            Version::V1 => {
                let cpu = self.root.join("cpu").join(rel);
                write(&cpu.join("cpu.shares"), &(weight * 1024 / 100).to_string())?;
                if self.uses("blkio") {
                    let b = self.root.join("blkio");
                    if let Some(f) = v1_blkio_weight_file(&b) {
                        write(&b.join(rel).join(f), &weight.to_string())?;
                    }
                }
            }
            Version::V2 => {
                let d = self.root.join(rel);
                write(&d.join("cpu.weight"), &weight.to_string())?;
                if self.uses("io") && d.join("io.weight").exists() {
                    write(&d.join("io.weight"), &format!("default {weight}"))?;
                }
            }
        }
        Ok(())
    }

    /// The daemon's cgroup: `bulkhead/_daemon` in the cpu, cpuset and blkio hierarchies (v1;
    /// memory, pids and freezer stay where the daemon was started) or the one v2 directory.
    pub fn daemon_group(&self) -> NodeCgroup {
        let mut g = self.group_at(Path::new(DAEMON_CGROUP));
        if self.version == Version::V1 {
            g.dirs
                .retain(|(c, _)| ["cpu", "cpuset", "blkio"].contains(c));
        }
        g
    }

    /// Moves the calling process (every thread) into `bulkhead/_daemon` with the daemon's
    /// weight and the CPUs `shared_cpus` (those no group reserved). Returns where it was, for
    /// [`Cgroups::leave_daemon_group`]. Processes it starts afterwards (supervisors, `nft`)
    /// are born there; a standby steps back there once its node runs.
    pub fn enter_daemon_group(&self, shared_cpus: Option<&str>) -> Result<NodeCgroup, CgroupError> {
        let origin = self.current();
        // Another daemon that stops at this moment may remove the (empty) group between our
        // mkdir and our move: make it again. The move then fails with ENOENT, or, on cgroup v1
        // when the directory is being removed under us, ENODEV.
        let mut tries = 0;
        loop {
            match self.try_enter_daemon_group(shared_cpus) {
                Err(CgroupError::Io { source, .. })
                    if (source.kind() == std::io::ErrorKind::NotFound
                        || source.raw_os_error() == Some(libc::ENODEV))
                        && tries < 5 =>
                {
                    tries += 1;
                }
                Err(e) => return Err(e),
                Ok(()) => return Ok(origin),
            }
        }
    }

    fn try_enter_daemon_group(&self, shared_cpus: Option<&str>) -> Result<(), CgroupError> {
        let g = self.daemon_group();
        if self.version == Version::V2 {
            // Controllers enabled at the root and on `bulkhead`, as for a tenant.
            let subtree = self
                .ctrls
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>();
            let top = self.root.join("bulkhead");
            write(
                &self.root.join("cgroup.subtree_control"),
                &subtree.join(" "),
            )?;
            mkdir(&top)?;
            write(&top.join("cgroup.subtree_control"), &subtree.join(" "))?;
        }
        for (c, d) in &g.dirs {
            mkdir(d)?;
            if self.version == Version::V1 && *c == "cpuset" {
                if let Some(top) = d.parent() {
                    v1_cpuset_inherit(top)?;
                }
                v1_cpuset_inherit(d)?;
            }
        }
        self.set_weights(&Path::new("bulkhead").join(DAEMON_CGROUP), DAEMON_WEIGHT)?;
        if let Some(c) = shared_cpus {
            g.set_cpus(c)?;
        }
        // SAFETY: getpid has no preconditions.
        g.add(unsafe { libc::getpid() })
    }

    /// Moves the calling process back to `origin` and removes `bulkhead/_daemon` (and
    /// `bulkhead`) if nothing else is in them: other daemons and the supervisors of nodes left
    /// running (`graceful_shutdown`) keep them.
    pub fn leave_daemon_group(&self, origin: &NodeCgroup) {
        // SAFETY: getpid has no preconditions.
        let _ = origin.add(unsafe { libc::getpid() });
        for (_, d) in &self.daemon_group().dirs {
            let _ = fs::remove_dir(d);
            if let Some(top) = d.parent() {
                let _ = fs::remove_dir(top);
            }
        }
    }

    /// The CPUs the host's cpuset offers (the root's), when the cpuset controller is in use.
    pub fn host_cpus(&self) -> Option<String> {
        let f = match self.version {
            Version::V1 => self.root.join("cpuset").join("cpuset.cpus"),
            Version::V2 => self.root.join("cpuset.cpus.effective"),
        };
        let v = self.uses("cpuset").then(|| read_trim(&f))?;
        (!v.is_empty()).then_some(v)
    }

    /// Every node's (and the daemon's) cpuset directory under `bulkhead/`, of every tenant on
    /// this host: the ones a change of the reserved cores may have to move.
    pub fn all_cpusets(&self) -> Vec<PathBuf> {
        if !self.uses("cpuset") {
            return Vec::new();
        }
        let top = match self.version {
            Version::V1 => self.root.join("cpuset").join("bulkhead"),
            Version::V2 => self.root.join("bulkhead"),
        };
        let mut out = vec![top.join(DAEMON_CGROUP)];
        for t in fs::read_dir(&top).into_iter().flatten().flatten() {
            if t.file_name() == DAEMON_CGROUP || !t.path().is_dir() {
                continue;
            }
            for n in fs::read_dir(t.path()).into_iter().flatten().flatten() {
                if n.path().is_dir() {
                    out.push(n.path());
                }
            }
        }
        out.retain(|d| d.join("cpuset.cpus").exists());
        out
    }
}

fn mkdir(d: &Path) -> Result<(), CgroupError> {
    match fs::create_dir_all(d) {
        Ok(()) => Ok(()),
        Err(source) => Err(CgroupError::Io {
            path: d.to_path_buf(),
            source,
        }),
    }
}

/// The CPU list a cpuset directory holds now (`""` when unset).
pub fn read_cpus(dir: &Path) -> String {
    read_trim(&dir.join("cpuset.cpus"))
}

/// Sets a cpuset directory's CPUs.
pub fn write_cpus(dir: &Path, cpus: &str) -> Result<(), CgroupError> {
    write(&dir.join("cpuset.cpus"), cpus)
}

impl NodeCgroup {
    /// Pins the cgroup to `cpus` (a CPU list, `1` or `0,2-3`); its tasks' affinity follows.
    /// Nothing to do where the cpuset controller is not in use.
    pub fn set_cpus(&self, cpus: &str) -> Result<(), CgroupError> {
        let dir = match self.version {
            Version::V1 => self.dirs.iter().find(|(c, _)| *c == "cpuset").map(|x| &x.1),
            Version::V2 => Some(&self.dirs[0].1).filter(|d| d.join("cpuset.cpus").exists()),
        };
        match dir {
            Some(d) => write_cpus(d, cpus),
            None => Ok(()),
        }
    }

    /// The cgroup's CPU list, where the cpuset controller is in use.
    pub fn cpus(&self) -> Option<String> {
        match self.version {
            Version::V1 => self
                .dirs
                .iter()
                .find(|(c, _)| *c == "cpuset")
                .map(|(_, d)| read_cpus(d)),
            Version::V2 => Some(&self.dirs[0].1)
                .filter(|d| d.join("cpuset.cpus").exists())
                .map(|d| read_cpus(d)),
        }
    }
}

#[cfg(test)]
mod tests {
    //! What bulkhead writes for fairness on both hierarchies, against a scratch directory
    //! laid out like the kernel's; the kernel enforcing it is the end-to-end suite's
    //! (`e2e_noisy.rs`, on this v1 host).
    use super::*;

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// A fake v1 tree: every hierarchy's root with the files the kernel would have.
    fn v1_tree(d: &Path, blkio_weight: bool) -> Cgroups {
        for c in ["cpu", "memory", "pids", "freezer", "cpuset", "blkio"] {
            fs::create_dir_all(d.join(c)).unwrap();
            fs::write(d.join(c).join("tasks"), "").unwrap();
        }
        fs::write(d.join("cpuset/cpuset.cpus"), "0-3\n").unwrap();
        fs::write(d.join("cpuset/cpuset.mems"), "0\n").unwrap();
        if blkio_weight {
            fs::write(d.join("blkio/blkio.bfq.weight"), "100").unwrap();
        }
        let extra = ["cpuset", "blkio"]
            .into_iter()
            .filter(|c| *c != "blkio" || v1_blkio_weight_file(&d.join("blkio")).is_some());
        Cgroups::at(d.to_path_buf(), Version::V1).with(extra)
    }

    #[test]
    fn v1_tenant_weights_cpuset_and_pinning() {
        let d = tempfile::tempdir().unwrap();
        let cg = v1_tree(d.path(), true);
        cg.prepare_tenant("t").unwrap();
        let at = |c: &str, f: &str| read(&d.path().join(c).join(f));
        assert_eq!(at("cpu", "bulkhead/t/cpu.shares"), "1024");
        assert_eq!(at("blkio", "bulkhead/t/blkio.bfq.weight"), "100");
        // Every cpuset level carries CPUs and memory nodes before a task can join.
        assert_eq!(at("cpuset", "bulkhead/cpuset.cpus"), "0-3");
        assert_eq!(at("cpuset", "bulkhead/t/cpuset.mems"), "0");
        let n = cg.node("t", "c1");
        n.create_dirs().unwrap();
        assert_eq!(at("cpuset", "bulkhead/t/c1/cpuset.cpus"), "0-3");
        n.set_cpus("3").unwrap();
        assert_eq!(n.cpus().as_deref(), Some("3"));
        n.add(42).unwrap();
        for c in ["cpu", "memory", "pids", "freezer", "cpuset", "blkio"] {
            assert_eq!(at(c, "bulkhead/t/c1/cgroup.procs"), "42", "{c}");
        }
        assert_eq!(cg.host_cpus().as_deref(), Some("0-3"));
        let all = cg.all_cpusets();
        assert!(
            all.contains(&d.path().join("cpuset/bulkhead/t/c1")),
            "{all:?}"
        );
    }

    #[test]
    fn v1_blkio_without_a_weight_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let cg = v1_tree(d.path(), false);
        assert!(!cg.uses("blkio"));
        cg.prepare_tenant("t").unwrap();
        assert!(!d.path().join("blkio/bulkhead").exists());
        // The node's dirs do not include blkio either: it is never joined.
        assert!(cg.node("t", "c1").dirs.iter().all(|(c, _)| *c != "blkio"));
    }

    #[test]
    fn v2_tenant_and_daemon_weights_and_cpuset() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::write(r.join("cpuset.cpus.effective"), "0-7").unwrap();
        let cg = Cgroups::at(r.to_path_buf(), Version::V2).with(["cpuset", "io"]);
        // The kernel makes these files once the controllers are enabled on the parent.
        for p in ["bulkhead/t", "bulkhead/_daemon", "bulkhead/t/c1"] {
            fs::create_dir_all(r.join(p)).unwrap();
            fs::write(r.join(p).join("io.weight"), "default 100").unwrap();
            fs::write(r.join(p).join("cpuset.cpus"), "").unwrap();
        }
        cg.prepare_tenant("t").unwrap();
        assert_eq!(
            read(&r.join("bulkhead/t/cgroup.subtree_control")),
            "+cpu +memory +pids +cpuset +io"
        );
        assert_eq!(read(&r.join("bulkhead/t/cpu.weight")), "100");
        assert_eq!(read(&r.join("bulkhead/t/io.weight")), "default 100");
        cg.node("t", "c1").set_cpus("7").unwrap();
        assert_eq!(read(&r.join("bulkhead/t/c1/cpuset.cpus")), "7");
        assert_eq!(cg.host_cpus().as_deref(), Some("0-7"));
        // The daemon's group: weight and the shared CPUs (the move itself needs a real tree).
        let g = cg.daemon_group();
        assert_eq!(g.dirs.len(), 1);
        cg.set_weights(&Path::new("bulkhead").join(DAEMON_CGROUP), DAEMON_WEIGHT)
            .unwrap();
        g.set_cpus("0-6").unwrap();
        assert_eq!(read(&r.join("bulkhead/_daemon/cpu.weight")), "400");
        assert_eq!(read(&r.join("bulkhead/_daemon/io.weight")), "default 400");
        assert_eq!(read(&r.join("bulkhead/_daemon/cpuset.cpus")), "0-6");
        let all = cg.all_cpusets();
        assert_eq!(
            all,
            vec![r.join("bulkhead/_daemon"), r.join("bulkhead/t/c1")]
        );
    }

    #[test]
    fn daemon_group_on_v1_is_cpu_cpuset_blkio_only() {
        let d = tempfile::tempdir().unwrap();
        let cg = v1_tree(d.path(), true);
        let names: Vec<_> = cg.daemon_group().dirs.iter().map(|(c, _)| *c).collect();
        assert_eq!(names, vec!["cpu", "cpuset", "blkio"]);
    }
}
