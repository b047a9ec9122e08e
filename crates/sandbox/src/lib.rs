//! The sandbox primitives every driver and the supervisor share: the one clone into a node's
//! namespaces with its uid/gid maps and start pipes ([`ns`]), who owns the new user namespace
//! and the per-user kernel limits inside it ([`owner`], ADR 0009), capability dropping
//! ([`caps`]), and the node's cgroups on v1 and v2 hosts ([`cgroup`]) with what a node uses
//! ([`usage`]) and the tenants' weights, the daemon's cgroup and CPU pinning ([`fair`]). The jail's init and
//! QEMU's confinement are both built from these; neither driver depends on the other.

pub mod caps;
mod cgfs;
mod cgmove;
pub mod cgroup;
pub mod fair;
pub mod ns;
mod owner;
pub mod usage;

pub use cgroup::{CgroupError, Cgroups, Limits, NodeCgroup};
pub use ns::NsError;
pub use owner::{as_owner, restore_in_child, write_user_sysctls, OwnerError};
