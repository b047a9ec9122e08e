//! The agent is bulkhead's program inside every node. It runs as PID 1, reaps orphans, forwards
//! termination to the node's processes, and serves exec, copy, file-system and TCP connect
//! requests.
//!
//! The protocol ([`proto`]) is a sequence of length-prefixed frames on one byte stream per
//! operation. A jail hands the agent a listening UNIX socket; a microVM carries the same
//! frames over virtio-serial with a stream id in front ([`mux`], [`guest`]).

pub mod client;
#[cfg(target_os = "linux")]
pub mod container_mounts;
pub mod containers;
#[cfg(target_os = "linux")]
mod copy;
#[cfg(target_os = "linux")]
mod error_event;
#[cfg(target_os = "linux")]
mod exec;
#[cfg(target_os = "linux")]
mod exec_prepare;
#[cfg(target_os = "linux")]
mod fs;
pub mod glob;
#[cfg(target_os = "linux")]
pub mod guest;
#[cfg(target_os = "linux")]
pub mod mux;
pub mod proto;
#[cfg(target_os = "linux")]
mod pty;
#[cfg(target_os = "linux")]
mod reaper;
#[cfg(target_os = "linux")]
pub mod server;
#[cfg(target_os = "linux")]
mod sha256;
#[cfg(target_os = "linux")]
mod tarfix;
#[cfg(target_os = "linux")]
mod tcp;
#[cfg(target_os = "linux")]
mod tmpfs_file; // #13, secrets: files written only onto a tmpfs
pub mod unix_path; // sockets past sun_path's 108 bytes (a node's agent, control and QMP sockets)
#[cfg(target_os = "linux")]
mod untar;
#[cfg(target_os = "linux")]
mod upload;
#[cfg(target_os = "linux")]
pub mod volume;
#[cfg(target_os = "linux")]
mod watch;
