//! Tenants, host groups and their config: parsing, validation, defaults and the pure policy
//! decisions made from them (resource requests against a group, uid ranges); the node's
//! lifecycle state machine (`node`), a node's timeout and expiry (`ttl`, #15) and the domain's
//! errors with their stable codes (`error`). No syscalls and no HTTP here.

pub mod config;
pub mod cores;
pub mod daemon_config;
pub mod error;
pub mod host;
pub mod iam;
pub mod kernel_limits;
mod layer;
pub mod limits;
pub mod node;
pub mod size;
pub mod ttl; // node TTL (#15, B)
pub mod uid;

pub use config::{ApiListen, ConfigError, GroupNetwork, HostGroup, NetworkMode, TenantConfig};
pub use daemon_config::{Api, DaemonConfig, TcpApi, TlsFiles, DEFAULT_ADMIN_SOCKET};
pub use error::{Code, DomainError};
pub use host::HostFacts;
pub use layer::{jail_layer_bytes, layer_reserve};
pub use limits::ConnLimits;
pub use node::NodeState;
pub use ttl::{Expiry, OnExpiry}; // node TTL (#15, B)

pub use uid::{uid_base, UID_COUNT};
