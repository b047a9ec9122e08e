//! Workload identity (ADR 0020): the daemon is an issuer of short-lived, audience-bound JWTs,
//! one per node, which the node finds at [`TOKEN_PATH`] on a tmpfs of its own.
//!
//! ```text
//! issuer.rs     the issuer: config and key ring, what the daemon asks of it
//! keys.rs       ES256 signing keys on disk (0600), kid = JWK thumbprint, rotation window
//! mint.rs       a node's token, verification, the JWKS and discovery documents
//! refresher.rs  per tenant: push a fresh token to every running node at ttl/2, retry soon
//! ```
//! [`Identity`] is daemon-wide (one issuer, one key ring); the tenant side of delivery
//! (through the node's agent) is `tenant/identity.rs`, the API's authenticator
//! `auth/workload.rs`, the routes `http/identity.rs`. Nothing here knows a tenant's nodes.

pub mod issuer;
pub mod keys;
pub mod mint;
pub mod refresher;

pub use issuer::Identity;
pub use keys::{now_secs, KeyError, KeyRing};
pub use mint::{Claims, TokenError};
pub use refresher::{Delivery, Refresher, Target};

/// Where a node finds its token (a tmpfs the node's init mounts: jail `setup.rs`, microVM
/// `agent/src/guest.rs`).
pub const TOKEN_DIR: &str = "/run/bulkhead/identity";
pub const TOKEN_PATH: &str = "/run/bulkhead/identity/token";
