//! The daemon's side of a driver: one [`Driver`] per daemon, opened at start for the tenant's
//! `hypervisor` ([`crate::Registry`]). Model: Cloud Hypervisor's `trait Hypervisor`, with the
//! backends beside it. The daemon calls these operations and never asks which driver it has.
//!
//! Every method may block (files, QMP, a disk image): the daemon calls them off its async
//! workers. The supervisor's side (starting the node's processes) is [`crate::Launcher`]: a
//! separate process with other constraints (single-threaded until it clones), sharing nothing
//! with this side but the spec.

use bulkhead_core::HostGroup;
use bulkhead_sandbox::NodeCgroup;
use serde::Serialize;
use std::path::Path;

/// What a driver opens with, once per daemon.
#[derive(Debug, Clone, Copy)]
pub struct HostEnv<'a> {
    /// The state directory shared by every tenant of the host (images, the guest kernel).
    pub state_root: &'a Path,
    pub tenant: &'a str,
    /// `<state>/tenants/<tenant>`.
    pub tenant_dir: &'a Path,
    /// The tenant's installed copy of `bulkhead-agent`.
    pub agent_bin: &'a Path,
    /// The config's image (it exists in the state directory's image store).
    pub image: &'a str,
    pub uid_base: u32,
    pub uid_count: u32,
}

/// One node, before its supervisor starts.
#[derive(Debug)]
pub struct NodePrep<'a> {
    pub node: &'a str,
    pub hostname: &'a str,
    /// Exists, with its mount points and console log; made outside the node's cgroup.
    pub node_dir: &'a Path,
    pub group: &'a HostGroup,
    pub ram_bytes: u64,
    pub cpus: u32,
    /// The node's network; a driver may adjust it (a microVM's guest owns the address and
    /// QEMU's namespace only bridges a tap).
    pub network: &'a mut bulkhead_net::NetworkPlan,
    /// A first start, or the same node starting again (ADR 0018).
    pub start: Start,
    /// The root filesystem tree the node starts from instead of the tenant's image (a commit's,
    /// #13), its owners already mapped with [`Driver::image_owner`]; `None`: the image (or,
    /// for a driver whose supervisor opens a commit itself, [`crate::CommitTree::Supervisor`],
    /// always `None`). The path holds only for this call: the tree is mounted in the calling
    /// thread's own mount namespace (processes the driver starts from it see it too).
    pub image_tree: Option<&'a Path>,
    /// A persistent node's key (#13, persistent nodes; `TenantKey::derive("layer", <node id>)`)
    /// for a driver that encrypts the node's disk itself ([`crate::Persistence::EncryptedDisk`]);
    /// `None` for every other node.
    pub persistent_key: Option<&'a [u8; 64]>,
}

/// How a node starts (ADR 0018).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Its first start: everything the node needs is made afresh.
    #[default]
    Fresh,
    /// It stopped and starts again: a driver keeps what the node kept (a microVM's disk).
    Relaunch,
    /// It was suspended: as a relaunch, and the driver waits for [`Driver::restore`] to bring
    /// its memory back instead of booting.
    Restore,
}

/// A node that exists: the operations after create.
#[derive(Debug, Clone, Copy)]
pub struct NodeRef<'a> {
    pub node: &'a str,
    pub node_dir: &'a Path,
    pub cgroup: &'a NodeCgroup,
}

/// What a node uses now, from its cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NodeStats {
    pub memory_bytes: u64,
    /// `None` where the host's cgroups do not count CPU time per node (v1 without cpuacct
    /// beside cpu).
    pub cpu_usage_usec: Option<u64>,
    pub pids: u64,
    pub oom_kills: u64,
    /// The node's storage as its driver knows it (a microVM's disk); `None` where the node's
    /// root file system says it better (the daemon then reads that).
    pub disk: Option<bulkhead_sandbox::usage::DiskSpace>,
}

impl NodeStats {
    /// The figures every driver's node has: its cgroup's.
    pub fn of_cgroup(cg: &NodeCgroup) -> Self {
        NodeStats {
            memory_bytes: cg.memory_current(),
            cpu_usage_usec: cg.cpu_usage_usec(),
            pids: cg.pids_current(),
            oom_kills: cg.oom_kills(),
            disk: None,
        }
    }
}

/// What `GET /info` says about the driver.
/// #16: who makes a container's mounts in a node of this driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerMounts {
    /// The node's supervisor, on its control channel (`container_mounts` op): the jail,
    /// whose agent cannot mount.
    Supervisor,
    /// The node's agent (`container_mounts` request): a microVM guest's, which is root there.
    Agent,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverInfo {
    /// The accelerator of a hypervisor (`kvm`, `tcg`); `None` for drivers without one.
    pub accel: Option<String>,
}

/// Why a driver operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("unknown hypervisor {name:?}: this build has {}; use one of those", known.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", "))]
    Unknown {
        name: String,
        known: Vec<&'static str>,
    },
    #[error("{what} is not supported by the {driver} driver yet")]
    Unsupported {
        driver: &'static str,
        what: &'static str,
    },
    /// This host cannot run the driver (a missing program, a kernel that does not build).
    #[error("{0}")]
    Unavailable(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Cgroup(#[from] bulkhead_sandbox::CgroupError),
    #[error(transparent)]
    Namespaces(#[from] bulkhead_sandbox::NsError),
    #[error(transparent)]
    Spec(#[from] crate::SpecError),
    /// The driver cannot do this by its nature; the message says why and what to do instead.
    #[error("{0}")]
    Refused(String),
    /// Anything else a driver reports, in its own words.
    #[error("{0}")]
    Failed(String),
}

impl DriverError {
    /// An `Io` error naming what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DriverError {
        let what = what.into();
        move |source| DriverError::Io { what, source }
    }
}

/// A driver's daemon side.
pub trait Driver: Send + Sync {
    /// Its registry name (`jail`, `qemu`).
    fn name(&self) -> &'static str;

    /// Prepares one node on the host before its supervisor starts (a microVM's root disk, say)
    /// and returns the driver's part of the spec ([`crate::NodeSpec::params`]).
    fn prepare_node(&self, node: NodePrep<'_>) -> Result<crate::spec::Params, DriverError>;

    /// Memory the node's cgroup needs beyond the node's RAM (QEMU itself, for a microVM).
    fn memory_overhead(&self) -> u64 {
        0
    }

    /// Pauses (`true`) or resumes a running node; it keeps its memory meanwhile.
    fn set_paused(&self, node: NodeRef<'_>, paused: bool) -> Result<(), DriverError>;

    /// What the node uses now.
    fn stats(&self, node: NodeRef<'_>) -> Result<NodeStats, DriverError> {
        Ok(NodeStats::of_cgroup(node.cgroup))
    }

    /// The host owner of a file that the node sees owned by `uid`/`gid`, for image trees the
    /// daemon unpacks for this driver's nodes (a commit's, #13): a jail's tree is shifted into
    /// the tenant's uid range, a microVM's keeps the guest's own ids.
    fn image_owner(&self, uid: u32, gid: u32) -> (u32, u32) {
        (uid, gid)
    }

    /// One sentence for a 507: what bounds a node's storage, with the figures.
    fn storage_limit(&self, group: &HostGroup, ram_bytes: u64) -> String;

    fn info(&self) -> DriverInfo {
        DriverInfo::default()
    }

    /// #16: who makes a container's mounts in this driver's nodes.
    fn container_mounts(&self) -> ContainerMounts {
        ContainerMounts::Agent
    }

    /// Writes the running node's memory and device state to `file` and leaves the node
    /// stopped but alive (the caller ends it once the file is complete). ADR 0018.
    fn suspend(&self, _node: NodeRef<'_>, _file: &Path) -> Result<(), DriverError> {
        Err(DriverError::Unsupported {
            driver: self.name(),
            what: "suspend to disk",
        })
    }

    /// Loads the memory [`Driver::suspend`] wrote into a node started with [`Start::Restore`]
    /// and lets it run on.
    fn restore(&self, _node: NodeRef<'_>, _file: &Path) -> Result<(), DriverError> {
        Err(DriverError::Unsupported {
            driver: self.name(),
            what: "restore from disk",
        })
    }

    /// A snapshot of the node's storage (once storage lands).
    fn snapshot(&self, _node: NodeRef<'_>, _snapshot: &str) -> Result<(), DriverError> {
        Err(DriverError::Unsupported {
            driver: self.name(),
            what: "snapshot",
        })
    }

    /// How this driver's nodes get their volumes (#13, attach); a driver that does not say
    /// cannot take any, and the daemon refuses a create that asks for one.
    fn volume_attach(&self) -> VolumeAttach {
        VolumeAttach::Unsupported
    }

    /// How this driver keeps a persistent node's storage (#13, persistent nodes); a driver
    /// that does not say cannot, and a create asking for `persistent: true` is refused.
    fn persistence(&self) -> crate::Persistence {
        crate::Persistence::Unsupported
    }

    /// How this driver's nodes take the tree of a commit they start from (#13 commit and
    /// fork); a driver that does not say reads it only while it prepares the node.
    fn commit_tree(&self) -> crate::CommitTree {
        crate::CommitTree::Prepare
    }
}

/// How a driver's nodes get the volumes their spec names (`NodeSpec::volumes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeAttach {
    /// The driver takes no volumes.
    Unsupported,
    /// The supervisor mounts them before the node's first process runs (a jail): the node
    /// starts with them in place.
    Supervisor,
    /// The supervisor hands the images to the node as disks, and the daemon asks the node's
    /// agent to mount them once it answers (a microVM's guest:
    /// `bulkhead_agent::proto::Request::MountVolume`).
    GuestAgent,
}
