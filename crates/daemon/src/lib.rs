//! The bulkhead daemon: startup (lock, uid range, image, reconciliation), the HTTP API on a
//! UNIX socket or TCP, and shutdown per `graceful_shutdown`.
//!
//! A request flows listener (`serve.rs`) → authentication and authorization (`auth/`) → route
//! handler (`http/`) → tenant context (`tenant/`) over host services (`services.rs`); errors
//! are domain errors until `error.rs` gives them an HTTP status.

pub mod admission;
pub mod app;
pub mod audit; // #14 audit trail
pub mod auth;
pub mod bg;
pub mod commit; // #13 commit and fork: sealed commits and their image trees on the host
pub mod cores;
pub mod e2b; // #15 E2B API
pub mod error;
pub mod events; // #14 events stream
                // fair host-work queues (#12, rate)
pub mod fair;
pub mod flows; // #14 unexpected flows (D)
pub mod forward;
pub mod fsutil;
mod host_limits;
pub mod http;
pub mod identity;
mod keys; // the keyring and the storage probe at start (#13)
mod listen;
pub mod network;
pub mod pool;
mod prepare; // what a start prepares on the host (uid claim, agent, image)
             // per-tenant token buckets and in-flight bounds (#12, rate)
mod outbound; // outbound HTTP: one request, the TLS client (JWKS, webhooks)
pub mod rate;
pub mod seccomp_watch; // #14 seccomp violations (C)
pub mod serve;
pub mod services;
pub mod shim; // #16 containerd shim: its socket's principal
mod start_error;
mod startup;
pub mod tenant;
pub mod tenant_lock;
pub mod tls;
mod upgrade;
pub mod usage; // #14 usage accounting (part E)
pub mod webhook_post; // the policy and event webhooks' one POST

pub use app::{App, Daemon};
pub use startup::{ensure_image, host_facts, run, StartError, DEFAULT_STATE_DIR, UID_REGISTRY};
