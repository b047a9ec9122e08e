//! Host-wide kernel limits that no per-user or per-cgroup share covers, checked at start.
//!
//! `fs.file-max` caps open files on the whole host. Every open file is charged to the memory
//! cgroup of the process that opened it (the `filp` cache is accounted), so a node can hold at
//! most its memory's worth of files; but Debian's default (a tenth of RAM in KiB) is reachable
//! with well under a GiB of node memory, and then every other tenant's nodes get ENFILE (root
//! is exempt). Raising the limit above what all of the host's memory could hold, as systemd
//! does at boot on most distributions, makes it unreachable: memory limits then bound files.

/// Bytes of kernel memory an open file costs at the least (`struct file`, rounded down).
const FILE_COST: u64 = 128;

/// The `fs.file-max` that no amount of node memory can reach on a host with `mem_total` bytes.
pub fn file_max_target(mem_total: u64) -> u64 {
    mem_total / FILE_COST
}

fn mem_total() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Raises `fs.file-max` when it is low enough for a node to exhaust; never lowers it. A host
/// where it cannot be written (a read-only /proc/sys) gets a warning naming the setting.
pub fn ensure_file_max() {
    const PATH: &str = "/proc/sys/fs/file-max";
    let (Some(total), Some(cur)) = (
        mem_total(),
        std::fs::read_to_string(PATH)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok()),
    ) else {
        tracing::warn!(
            "cannot read {PATH} or MemTotal: check that fs.file-max exceeds RAM/{FILE_COST}"
        );
        return;
    };
    let want = file_max_target(total);
    if cur >= want {
        return;
    }
    match std::fs::write(PATH, want.to_string()) {
        Ok(()) => tracing::info!(
            from = cur,
            to = want,
            "raised fs.file-max so that no node can exhaust the host's open files (memory limits bound them)"
        ),
        Err(e) => tracing::warn!(
            current = cur,
            wanted = want,
            "cannot raise fs.file-max ({e}): a node with enough memory could make other tenants' nodes fail with ENFILE; set fs.file-max to at least {want}"
        ),
    }
}

/// Descriptors the daemon may need at its limits: an API connection that execs or copies
/// holds two (its socket and the agent's), a relayed forward connection two, plus a margin
/// for the store, listeners, supervisors' pipes and logs.
pub fn fds_needed(max_connections: usize, forward_budget: usize) -> u64 {
    (2 * max_connections + 2 * forward_budget + 256) as u64
}

/// Raises the daemon's soft `RLIMIT_NOFILE` to its hard limit (the common soft default of 1024
/// is below what the connection caps allow), and the hard limit to `needed` where root may;
/// warns when the limit stays below `needed`: then a flood could exhaust descriptors before
/// the caps bite.
pub fn raise_nofile(needed: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return;
    }
    if r.rlim_max < needed {
        // Root with CAP_SYS_RESOURCE may raise the hard limit too (up to fs.nr_open).
        let raised = libc::rlimit {
            rlim_cur: needed,
            rlim_max: needed,
        };
        // SAFETY: valid rlimit; refused without CAP_SYS_RESOURCE, which is handled below.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            r = raised;
        }
    }
    if r.rlim_cur < r.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: valid rlimit; raising the soft limit up to the hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            r.rlim_cur = r.rlim_max;
        }
    }
    if r.rlim_cur < needed {
        tracing::warn!(
            limit = r.rlim_cur,
            needed,
            "the daemon may open {} files (RLIMIT_NOFILE), fewer than api.max_connections and the forward limits can take: raise LimitNOFILE (systemd) or ulimit -n, or lower api.max_connections",
            r.rlim_cur
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn target_is_beyond_what_memory_can_hold() {
        // 24 GiB: Debian's default would be ~2.4 M; memory could hold ~100 M files.
        let t = super::file_max_target(24 << 30);
        assert_eq!(t, (24u64 << 30) / 128);
        assert!(t > 2_466_177 * 10);
    }
}
