//! Wire types, ids and errors of the bulkhead HTTP API, plus the typed client that the CLI and
//! the end-to-end tests use. Nothing here touches the host: every type is plain data.
//!
//! Field names follow Slicer's API (see `docs/api/openapi.yaml`) so existing scripts keep working.

pub mod bg;
pub mod client;
pub mod commits; // commit and fork (#13)
pub mod containers; // containers in a node, for containerd's shim (#16)
pub mod duration;
pub mod e2b; // E2B control plane wire types (#15, A)
pub mod endpoint;
pub mod error;
pub mod names;
pub mod quota; // quotas (#12)
pub mod secrets; // secrets (#13)
pub mod shell;
pub mod signals;
pub mod stats;
pub mod tls;
pub mod tokens;
pub mod ttl; // node TTL (#15, B): a create's `timeout` on the wire
pub mod types;
pub mod usage; // usage (#14, part E)
pub mod volumes; // volumes and snapshots (#13)
pub mod ws;

pub use bg::{BgDeleted, BgExecInfo, BgExecStarted, BgKillRequest, BgKillResponse, BgWaitExit};
pub use client::{Client, ClientError, Endpoint};
pub use types::*;
