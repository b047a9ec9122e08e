//! A process moving itself into a cgroup without stalling the host's forks.
//!
//! Writing a pid to `cgroup.procs` (or to a v1 `tasks` file) takes the kernel's host-wide
//! `cgroup_threadgroup_rwsem` for writing: the writer first waits out an RCU grace period
//! (8-20 ms measured here when the lock is cold), then blocks every new fork, thread creation
//! and exit on the host until the forks and exits already in flight have finished, once per
//! v1 hierarchy. Under a neighbour's fork bomb, that wait is long and every other tenant's
//! exec waits with it (docs/benchmarks.md, P5: `percpu_rwsem_wait` stacks in the victim's
//! agent). A thread that writes `0` to a v1 `tasks` file moves itself without that lock (the
//! kernel needs no threadgroup stability for the calling thread alone, see
//! `cgroup_procs_write_start`), ~0.1 ms measured here (6.18). For a single-threaded process that
//! is the whole process. A kernel without that path takes the lock as before: no worse.
//!
//! Invariant: `add_self` moves every thread of the calling process: by `tasks` only when the
//! process has one thread, by pid (`cgroup.procs`) otherwise and on cgroup v2 (whose
//! `cgroup.threads` moves only within a threaded subtree).

use crate::cgfs::{write, CgroupError, Version};
use crate::cgroup::NodeCgroup;

/// Whether the calling process has exactly one thread.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count() == 1)
        .unwrap_or(false)
}

impl NodeCgroup {
    /// Moves the calling process into the cgroup(s), on v1 without taking the host-wide lock
    /// when it can (module doc).
    pub fn add_self(&self) -> Result<(), CgroupError> {
        self.add_self_as(single_threaded())
    }

    fn add_self_as(&self, single_threaded: bool) -> Result<(), CgroupError> {
        if self.version == Version::V1 && single_threaded {
            for (_, d) in &self.dirs {
                write(&d.join("tasks"), "0")?;
            }
            return Ok(());
        }
        // SAFETY: getpid has no preconditions.
        self.add(unsafe { libc::getpid() })
    }
}

#[cfg(test)]
mod tests {
    use crate::cgroup::{Cgroups, Version};
    use std::fs;

    #[test]
    fn v1_single_thread_writes_zero_to_tasks_else_the_pid_to_procs() {
        let d = tempfile::tempdir().unwrap();
        let cg = Cgroups::at(d.path().to_path_buf(), Version::V1);
        let n = cg.node("t", "c1");
        n.create_dirs().unwrap();
        n.add_self_as(true).unwrap();
        for (c, dir) in &n.dirs {
            assert_eq!(fs::read_to_string(dir.join("tasks")).unwrap(), "0", "{c}");
            assert!(!dir.join("cgroup.procs").exists(), "{c}");
        }
        let m = cg.node("t", "c2");
        m.create_dirs().unwrap();
        m.add_self_as(false).unwrap();
        for (c, dir) in &m.dirs {
            let pid = std::process::id().to_string();
            assert_eq!(
                fs::read_to_string(dir.join("cgroup.procs")).unwrap(),
                pid,
                "{c}"
            );
            assert!(!dir.join("tasks").exists(), "{c}");
        }
    }

    #[test]
    fn v2_always_moves_by_pid() {
        let d = tempfile::tempdir().unwrap();
        let cg = Cgroups::at(d.path().to_path_buf(), Version::V2);
        let n = cg.node("t", "c1");
        fs::create_dir_all(&n.dirs[0].1).unwrap();
        n.add_self_as(true).unwrap();
        let dir = &n.dirs[0].1;
        let pid = std::process::id().to_string();
        assert_eq!(fs::read_to_string(dir.join("cgroup.procs")).unwrap(), pid);
        assert!(!dir.join("cgroup.threads").exists());
    }

    #[test]
    fn a_test_thread_is_not_alone() {
        // The test harness runs tests on threads of their own: never single-threaded here.
        let t = std::thread::spawn(super::single_threaded);
        assert!(!t.join().unwrap());
    }
}
