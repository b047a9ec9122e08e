//! bulkhead-storage: the host side of storage isolation (issue #13).
//!
//! - [`keys`]: the host master key, per-tenant data keys, derivation, `seal`/`open` (rotation
//!   in `rotate`, chunked streams in `stream`);
//! - [`wipe`]: overwrite-then-unlink of files and trees;
//! - [`loopdev`], [`mountapi`], [`fscrypt`], [`ext4img`]: encrypted ext4 volume images mounted
//!   only as detached mounts (never on a host path); [`privmount`]: an image's tree at a path
//!   in one thread's own mount namespace (a commit's tree, #13);
//! - [`probe`]: which protections this host can give.
//!
//! No daemon or HTTP types here: callers map [`keys::KeyError`] and friends to their codes.

pub mod ext4img;
pub mod fscrypt;
mod fsutil;
pub mod keys;
pub mod loopdev;
pub mod mountapi;
pub mod privmount;
pub mod probe;
pub mod rotate;
pub mod secret;
pub mod stream;
pub mod wipe;

pub use keys::{KeyError, Keyring, TenantKey};
pub use rotate::{rotate_master, RotateReport};
pub use secret::Secret;
