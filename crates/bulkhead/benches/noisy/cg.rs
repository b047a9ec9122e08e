//! What the noisy-neighbour benchmark reads from the host: bulkhead's cgroups (found by
//! name, at any nesting) and the host's busy CPU time.

use std::path::Path;

/// The cgroup directory named `name` below bulkhead's (`<controller>/bulkhead` on v1,
/// `bulkhead` on v2), at most four levels down, with `tenant` among its path's components
/// (searched, so that a change of nesting, e.g. a tenant-level cgroup, does not break it).
pub fn find_cg(controller: &str, tenant: &str, name: &str) -> Option<std::path::PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut level = vec![
        root.join(controller).join("bulkhead"),
        root.join("bulkhead"),
    ];
    for _ in 0..4 {
        let mut next = Vec::new();
        for d in level {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if !p.is_dir() {
                    continue;
                }
                if e.file_name() == name && p.components().any(|c| c.as_os_str() == tenant) {
                    return Some(p);
                }
                next.push(p);
            }
        }
        level = next;
    }
    None
}

/// A file of the tenant's cgroup, v1 or v2 name.
pub fn tenant_cg(tenant: &str, controller: &str, v1: &str, v2: &str) -> Option<String> {
    let d = find_cg(controller, tenant, tenant)?;
    std::fs::read_to_string(d.join(v1))
        .or_else(|_| std::fs::read_to_string(d.join(v2)))
        .ok()
}

/// The host's busy CPU time (everything but idle and iowait), in clock ticks.
pub fn host_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is within user).
    Some(cpu.iter().take(8).sum::<u64>() - cpu.get(3)? - cpu.get(4)?)
}

/// A file of one node's cgroup.
pub fn node_cg(
    state: &Path,
    tenant: &str,
    node: &str,
    controller: &str,
    file: &str,
) -> Option<String> {
    let id = bulkhead_driver::spec::spec_cgroup(
        &state.join("tenants").join(tenant).join("nodes").join(node),
    )?;
    std::fs::read_to_string(find_cg(controller, tenant, &id)?.join(file)).ok()
}

pub fn tenant_num(tenant: &str, controller: &str, v1: &str, v2: &str) -> Option<u64> {
    tenant_cg(tenant, controller, v1, v2).and_then(|s| s.trim().parse().ok())
}
