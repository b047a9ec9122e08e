//! The driver seam: how a node is isolated is a driver's business, and everything else talks
//! to drivers through this crate.
//!
//! - [`Driver`] (`driver.rs`): the daemon's side of a driver, one per daemon: prepare a node,
//!   the memory it needs beyond its RAM, pause/resume, stats, what bounds its storage, info;
//!   snapshot answers [`DriverError::Unsupported`]; how its nodes take volumes ([`VolumeAttach`]);
//! - [`Launcher`] (`launch.rs`): the supervisor's side: start the node's init;
//! - [`Registry`] (`registry.rs`): drivers by config name (the list is the binaries');
//! - [`NodeSpec`] (`spec.rs`): what the daemon hands a supervisor, driver-neutral, with the
//!   driver's own parameters as opaque JSON;
//! - [`supervisor`]: the supervisor process for every driver (spec, standby mode, cgroups,
//!   sockets, console, the control loop);
//! - [`control`]: the supervisor's control channel (`state`, `wait`, `kill`) and its client;
//! - [`instruction`]: the daemon's line to a supervisor: the spec's digest and the volumes'
//!   keys (#13);
//! - [`persist`]: a persistent node's layer as its spec names it, and how a driver keeps it (#13).
//!
//! The drivers (`bulkhead-jail`, `bulkhead-vm`) depend on this crate and never on each other.

pub mod audit_session; // #14 seccomp violations (C): one audit session per node
mod cleanup;
pub mod control;
mod driver;
pub mod instruction;
mod launch;
pub mod persist; // persistent nodes (#13)
mod registry;
pub mod spec;
pub mod supervisor;

pub use cleanup::{cleanup, wipe_node_dir};
pub use driver::{
    ContainerMounts, Driver, DriverError, DriverInfo, HostEnv, NodePrep, NodeRef, NodeStats, Start,
    VolumeAttach,
};
pub use launch::{Launcher, NodeStart};
pub use persist::{CommitTree, LayerMount, Persistence, LAYER_IMAGE};
pub use registry::{DriverEntry, Launchers, Registry};
pub use spec::{
    check_volume_path, files, reserved_overlap, NodeSpec, Params, SpecError, SupervisorState,
    VolumeMount, RESERVED_VOLUME_PATHS,
};
