//! What a node uses beyond its cgroup's basic figures, as the host sees it, for
//! `GET /nodes/stats`: memory without reclaimable page cache, its limit, storage I/O, CPU
//! time where the host's cgroups do not count it, descriptors and sockets, and the space of
//! the node's root file system.
//!
//! Each figure comes from the node's cgroup where the host's cgroups have it (v2: `io.stat`,
//! `memory.stat`, `cpu.stat`; v1: `memory.stat`, and `cpuacct.usage` when mounted with `cpu`),
//! otherwise from the node's processes (the pids in its cgroup): `/proc/PID/io`, and
//! `/proc/PID/stat`'s own and reaped children's CPU time (the node's init reaps every orphan,
//! so time of processes that ended stays counted). Per-process figures count live
//! processes only. Reads never fail: a figure that cannot be read is 0 (or `None`).

use std::fs;
use std::path::Path;

use crate::cgroup::{NodeCgroup, Version};

/// The space of a file system (or of a node's disk).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiskSpace {
    pub total: u64,
    pub free: u64,
}

/// A node's figures beyond [`NodeCgroup::memory_current`] and friends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Memory in use without the page cache the kernel may reclaim (`inactive_file`).
    pub memory_used: u64,
    /// The cgroup's memory limit; `None` when unlimited or unreadable.
    pub memory_limit: Option<u64>,
    /// CPU time in microseconds: the cgroup's, else summed over the node's processes.
    pub cpu_usage_usec: u64,
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub open_files: u64,
    pub open_sockets: u64,
    /// The root file system of the node's init, as it sees it.
    pub disk: Option<DiskSpace>,
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_default()
}

/// `key value` lines (memory.stat, cpu.stat).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Sums `rbytes=` and `wbytes=` over the devices of a v2 `io.stat`.
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            r += v.parse::<u64>().unwrap_or(0);
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            w += v.parse::<u64>().unwrap_or(0);
        }
    }
    (r, w)
}

/// Own plus reaped children's CPU time of `/proc/PID/stat`, in clock ticks.
pub fn parse_stat_ticks(stat: &str) -> u64 {
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3; utime, stime, cutime, cstime are 14 to 17.
    (11..15)
        .filter_map(|i| f.get(i).and_then(|v| v.parse::<i64>().ok()))
        .map(|v| v.max(0) as u64)
        .sum()
}

/// `read_bytes` and `write_bytes` of `/proc/PID/io` (what reached storage).
pub fn parse_proc_io(text: &str) -> (u64, u64) {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("read_bytes:"), get("write_bytes:"))
}

impl NodeCgroup {
    /// The cgroup's memory high-water mark since it was made (#14 usage): v2 `memory.peak`
    /// (Linux 5.19 and later), v1 `memory.max_usage_in_bytes`; `None` where there is none.
    pub fn memory_peak(&self) -> Option<u64> {
        let file = match self.version() {
            Version::V1 => "memory.max_usage_in_bytes",
            Version::V2 => "memory.peak",
        };
        read(&self.dir_of("memory").join(file)).trim().parse().ok()
    }

    /// Reads the node's figures (blocking: a few small files per process).
    pub fn usage(&self, cpu_from_cgroup: Option<u64>) -> Usage {
        let procs = self.procs();
        let mut u = Usage::default();
        let (mem_dir, stat_key, limit_file) = match self.version() {
            Version::V1 => (
                self.dir_of("memory"),
                "total_inactive_file",
                "memory.limit_in_bytes",
            ),
            Version::V2 => (self.dir_of("memory"), "inactive_file", "memory.max"),
        };
        let inactive = keyed(&read(&mem_dir.join("memory.stat")), stat_key).unwrap_or(0);
        u.memory_used = self.memory_current().saturating_sub(inactive);
        // v1 says "unlimited" with a huge number, v2 with "max".
        u.memory_limit = read(&mem_dir.join(limit_file))
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|l| *l < 1 << 60);
        let io_v2 = (self.version() == Version::V2)
            .then(|| parse_io_stat(&read(&self.dir_of("io").join("io.stat"))));
        let tick_usec = 1_000_000 / clock_ticks();
        let mut ticks = 0;
        let mut init = None;
        for pid in &procs {
            let dir = Path::new("/proc").join(pid.to_string());
            ticks += parse_stat_ticks(&read(&dir.join("stat")));
            if io_v2.is_none() {
                let (r, w) = parse_proc_io(&read(&dir.join("io")));
                u.disk_read_bytes += r;
                u.disk_write_bytes += w;
            }
            if let Ok(fds) = fs::read_dir(dir.join("fd")) {
                for fd in fds.flatten() {
                    u.open_files += 1;
                    if fs::read_link(fd.path())
                        .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
                    {
                        u.open_sockets += 1;
                    }
                }
            }
            if init.is_none() && is_ns_init(&read(&dir.join("status"))) {
                init = Some(*pid);
            }
        }
        if let Some((r, w)) = io_v2 {
            (u.disk_read_bytes, u.disk_write_bytes) = (r, w);
        }
        u.cpu_usage_usec = cpu_from_cgroup.unwrap_or(ticks * tick_usec);
        u.disk = init.and_then(|p| statfs(&Path::new("/proc").join(p.to_string()).join("root")));
        u
    }
}

/// Whether a `/proc/PID/status` is of the init of a pid namespace below the host's.
fn is_ns_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|v| {
            let ids: Vec<&str> = v.split_whitespace().collect();
            ids.len() > 1 && ids.last() == Some(&"1")
        })
        .unwrap_or(false)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant of the system; no pointers involved.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn statfs(p: &Path) -> Option<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).ok()?;
    // SAFETY: `st` is a plain struct statfs fills in; `c` is a valid NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the result is checked before `st` is read.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let bs = st.f_bsize as u64;
    Some(DiskSpace {
        total: st.f_blocks as u64 * bs,
        free: st.f_bavail as u64 * bs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_parsed_from_the_kernels_formats() {
        assert_eq!(
            parse_io_stat("8:0 rbytes=100 wbytes=20 rios=1 wios=2\n8:16 rbytes=5 wbytes=1 rios=0"),
            (105, 21)
        );
        let stat = "42 (a (weird) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 11 2 20 0 1 0";
        assert_eq!(parse_stat_ticks(stat), 7 + 3 + 11 + 2);
        assert_eq!(parse_stat_ticks("garbage"), 0);
        assert_eq!(
            parse_proc_io("rchar: 9\nwchar: 9\nread_bytes: 4096\nwrite_bytes: 8192\n"),
            (4096, 8192)
        );
        assert!(is_ns_init("Name:\tx\nNSpid:\t4242\t1\n"));
        assert!(!is_ns_init("NSpid:\t1\n"));
        assert!(!is_ns_init("NSpid:\t4242\t7\n"));
        assert_eq!(
            keyed("cache 1\ninactive_file 300\n", "inactive_file"),
            Some(300)
        );
    }

    #[test]
    fn the_root_of_this_process_has_space() {
        let d = statfs(Path::new("/proc/self/root")).unwrap();
        assert!(d.total > 0 && d.free <= d.total);
    }
}
