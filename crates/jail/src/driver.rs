//! The jail's daemon side: what it needs once per tenant (the image copy shifted onto the
//! tenant's uids, the seccomp filters compiled once rather than by every supervisor), each
//! node's [`JailParams`], pause through the cgroup freezer, and what a jail requires of a
//! config (its writable layer lives in the node's memory).

use bulkhead_core::config::key_err;
use bulkhead_core::host::mib;
use bulkhead_core::{ConfigError, HostFacts, HostGroup, TenantConfig};
use bulkhead_driver::{Driver, DriverEntry, DriverError, HostEnv, NodePrep, NodeRef};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::JailParams;

/// The jail in the registry.
pub const ENTRY: DriverEntry = DriverEntry {
    name: "jail",
    check,
    warnings,
    open,
    launcher: &crate::start::JailLauncher,
};

/// The jail, opened for one tenant.
pub struct JailDriver {
    lower: PathBuf,
    /// The tenant's uid range (image trees are shifted into it).
    uid_base: u32,
    uid_count: u32,
    agent_bin: PathBuf,
    seccomp: Vec<Vec<u64>>,
}

fn open(env: &HostEnv<'_>) -> Result<Arc<dyn Driver>, DriverError> {
    let lower = crate::image::shifted_copy(
        env.state_root,
        env.image,
        env.tenant_dir,
        env.uid_base,
        env.uid_count,
    )?;
    let seccomp = crate::seccomp::compile()?
        .iter()
        .map(crate::seccomp::encode)
        .collect();
    Ok(Arc::new(JailDriver {
        lower,
        uid_base: env.uid_base,
        uid_count: env.uid_count,
        agent_bin: env.agent_bin.to_path_buf(),
        seccomp,
    }))
}

/// A jail node's writable layer is a tmpfs charged to its memory: storage beyond the host's
/// memory could never be held.
fn check(cfg: &TenantConfig, host: &HostFacts) -> Result<(), ConfigError> {
    for (i, g) in cfg.groups.iter().enumerate() {
        if g.storage_bytes > host.mem_total_bytes {
            return Err(key_err(
                format!("config.host_groups[{i}].storage_size"),
                format!(
                    "storage_size {} is more than this host's memory ({}): a jail node's writable layer is a tmpfs charged to the node's memory, so it could never hold that; give at most storage_size: {}M",
                    mib(g.storage_bytes),
                    mib(host.mem_total_bytes),
                    host.mem_total_bytes >> 20
                ),
            ));
        }
    }
    Ok(())
}

/// A group whose storage_size its RAM cannot hold.
fn warnings(cfg: &TenantConfig) -> Vec<String> {
    let mib = |b: u64| b >> 20;
    cfg.groups
        .iter()
        .filter_map(|g| {
            let layer = bulkhead_core::jail_layer_bytes(g.storage_bytes, g.ram_bytes);
            (layer < g.storage_bytes).then(|| {
                format!(
                    "host group {:?}: storage_size is {} MiB, but a jail node's writable layer is held in its memory (ram {} MiB), so it holds at most {} MiB (ram less {} MiB kept for the agent and commands); writes beyond answer 507. Raise ram or lower storage_size to make them agree",
                    g.name,
                    mib(g.storage_bytes),
                    mib(g.ram_bytes),
                    mib(layer),
                    mib(bulkhead_core::layer_reserve(g.ram_bytes)),
                )
            })
        })
        .collect()
}

impl Driver for JailDriver {
    fn name(&self) -> &'static str {
        ENTRY.name
    }

    fn prepare_node(&self, node: NodePrep<'_>) -> Result<bulkhead_driver::Params, DriverError> {
        let params = JailParams {
            // A commit's tree (#13) replaces the tenant's image as the overlay's lower: it
            // comes as the spec's `commit_image` (the supervisor mounts it), never as a path
            // here, but a driver given one takes it.
            lower: node
                .image_tree
                .map_or_else(|| self.lower.clone(), Path::to_path_buf),
            agent_bin: self.agent_bin.clone(),
            storage_bytes: bulkhead_core::jail_layer_bytes(
                node.group.storage_bytes,
                node.ram_bytes,
            ),
            user_sysctls: node.group.kernel_limits.user_sysctls(),
            seccomp: self.seccomp.clone(),
        };
        bulkhead_driver::Params::of(&params).map_err(|e| DriverError::Failed(e.to_string()))
    }

    /// A jail's processes run on the host's kernel: writing them to disk and back would need
    /// checkpoint/restore (CRIU), which bulkhead does not use (ADR 0018).
    fn suspend(&self, node: NodeRef<'_>, _file: &std::path::Path) -> Result<(), DriverError> {
        Err(DriverError::Refused(format!(
            "node {:?} runs in a jail (hypervisor: jail), whose processes live in the host's kernel: \
             saving them to disk would need checkpoint/restore (CRIU), which bulkhead does not use. \
             Use pause (POST /vm/{}/pause) to freeze them in memory, or a microVM host group \
             (hypervisor: qemu) for suspend to disk",
            node.node, node.node
        )))
    }

    /// As the tenant's image copy: shifted into the tenant's range (#13 commit and fork).
    fn image_owner(&self, uid: u32, gid: u32) -> (u32, u32) {
        crate::image::shift(self.uid_base, self.uid_count)(uid, gid)
    }

    /// The cgroup freezer: every process of the node stops where it is.
    fn set_paused(&self, node: NodeRef<'_>, paused: bool) -> Result<(), DriverError> {
        Ok(node.cgroup.freeze(paused)?)
    }

    /// Volumes (#13, attach): the supervisor mounts them before the node runs (crate::volumes).
    fn volume_attach(&self) -> bulkhead_driver::VolumeAttach {
        bulkhead_driver::VolumeAttach::Supervisor
    }

    /// #16: the node's supervisor makes container mounts (`crate::containers`).
    fn container_mounts(&self) -> bulkhead_driver::ContainerMounts {
        bulkhead_driver::ContainerMounts::Supervisor
    }

    /// Persistent nodes (#13): an encrypted layer image instead of the tmpfs (crate::persist).
    fn persistence(&self) -> bulkhead_driver::Persistence {
        bulkhead_driver::Persistence::EncryptedLayer
    }

    /// Commits (#13): the supervisor opens the commit's encrypted image as the overlay's lower
    /// (crate::persist::open_commit), for as long as the node lives.
    fn commit_tree(&self) -> bulkhead_driver::CommitTree {
        bulkhead_driver::CommitTree::Supervisor
    }

    fn storage_limit(&self, g: &HostGroup, ram_bytes: u64) -> String {
        let mib = |b: u64| b >> 20;
        let layer = bulkhead_core::jail_layer_bytes(g.storage_bytes, ram_bytes);
        format!(
            "the node is full: its writable layer holds {} MiB (storage_size {} MiB of host group {:?}; the layer is kept in the node's memory, ram {} MiB, and holds at most ram less {} MiB kept for the agent and commands), and files written count against the node's ram",
            mib(layer),
            mib(g.storage_bytes),
            g.name,
            mib(ram_bytes),
            mib(bulkhead_core::layer_reserve(ram_bytes)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: HostFacts = HostFacts {
        mem_total_bytes: 8 << 30,
        cpus: 4,
        state_fs_bytes: Some(100 << 30),
    };

    fn cfg(group: &str) -> TenantConfig {
        TenantConfig::parse(&format!(
            "config:\n  hypervisor: jail\n  host_groups:\n    - name: t1\n{group}\n"
        ))
        .unwrap()
    }

    #[test]
    fn storage_beyond_memory_is_refused_naming_the_key() {
        check(&cfg("      storage_size: 8G"), &HOST).unwrap();
        let e = check(&cfg("      storage_size: 9G"), &HOST)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("host_groups[0].storage_size") && e.contains("tmpfs"),
            "{e}"
        );
    }

    #[test]
    fn warns_when_the_writable_layer_exceeds_ram() {
        let w = warnings(&cfg("      ram_gb: 4\n      storage_size: 25G"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("storage_size") && w[0].contains("3840 MiB"),
            "{w:?}"
        );
        assert!(warnings(&cfg("      ram_gb: 4\n      storage_size: 1G")).is_empty());
    }

    #[test]
    fn params_carry_the_layer_size_and_read_back() {
        let d = JailDriver {
            lower: "/lower".into(),
            uid_base: 100_000,
            uid_count: 65536,
            agent_bin: "/agent".into(),
            seccomp: vec![vec![1, 2]],
        };
        let c = cfg("      ram_mb: 512\n      storage_size: 1G");
        let mut net = bulkhead_net::NetworkPlan::Loopback;
        let v = d
            .prepare_node(NodePrep {
                node: "t1-1",
                hostname: "t1-1",
                node_dir: std::path::Path::new("/n"),
                group: &c.groups[0],
                ram_bytes: 512 << 20,
                cpus: 1,
                network: &mut net,
                start: bulkhead_driver::Start::Fresh,
                image_tree: None,
                persistent_key: None,
            })
            .unwrap();
        let p: JailParams = v.decode().unwrap();
        assert_eq!(p.storage_bytes, 448 << 20);
        assert_eq!(p.seccomp, vec![vec![1, 2]]);
        assert!(d.storage_limit(&c.groups[0], 512 << 20).contains("448 MiB"));
        assert_eq!(p.lower, Path::new("/lower"));
        assert_eq!(d.image_owner(0, 5), (100_000, 100_005));
        assert_eq!(d.image_owner(70_000, 0), (165_534, 100_000));
        // A commit's tree replaces the image (#13).
        let v = d
            .prepare_node(NodePrep {
                node: "t1-2",
                hostname: "t1-2",
                node_dir: Path::new("/n"),
                group: &c.groups[0],
                ram_bytes: 512 << 20,
                cpus: 1,
                network: &mut net,
                start: bulkhead_driver::Start::Fresh,
                image_tree: Some(Path::new("/commit-tree")),
                persistent_key: None,
            })
            .unwrap();
        let p: JailParams = v.decode().unwrap();
        assert_eq!(p.lower, Path::new("/commit-tree"));
    }
}
