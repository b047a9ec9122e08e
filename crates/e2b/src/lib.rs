//! E2B's in-sandbox wire (#15): the protobuf messages of envd's `process` and `filesystem`
//! services, generated at build time from our own `.proto` files in `proto/` (prost types with
//! their proto3 JSON mapping through pbjson), and the Connect protocol codec that carries them
//! ([`connect`]).
//!
//! No HTTP server types live here: the daemon's E2B routes (`bulkhead_daemon::e2b::envd`) read
//! headers and bodies and hand them to this crate as strings and bytes, so the codec is tested
//! on its own and can never panic on what a caller sends.

pub mod connect;
pub mod timestamp;

/// envd's `process` package: `process.Process` and its messages.
#[allow(clippy::all, clippy::pedantic)]
pub mod process {
    include!(concat!(env!("OUT_DIR"), "/process.rs"));
    include!(concat!(env!("OUT_DIR"), "/process.serde.rs"));
}

/// envd's `filesystem` package: `filesystem.Filesystem` and its messages.
#[allow(clippy::all, clippy::pedantic)]
pub mod filesystem {
    include!(concat!(env!("OUT_DIR"), "/filesystem.rs"));
    include!(concat!(env!("OUT_DIR"), "/filesystem.serde.rs"));
}

#[cfg(test)]
mod tests;
