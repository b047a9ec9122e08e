//! Agent wire protocol. A frame is `u32 length (big endian) | u8 kind | payload`, where length
//! counts kind and payload. The first frame on a stream is a [`Request`]; what follows depends
//! on the operation:
//!
//! - `Ping`: agent answers `Event::Pong` with its protocol [`VERSION`] and capabilities.
//! - `Exec`: client may send `Stdin` frames (an empty one closes stdin), and from version 2
//!   `Resize` and `Signal` frames; agent sends `Event::Started`, then `Stdout`/`Stderr` frames,
//!   then `Event::Exit`. Closing the stream kills the command's process group.
//! - `CopyOut`: agent sends `Event::File` then `Data` frames, then an empty `Data` frame.
//! - `CopyIn`: client sends `Data` frames then an empty one; agent answers `Event::Done`.
//! - Version 3 (`fs` capability, docs/adr/0017-agent-fs-operations.md): `Stat` answers
//!   `Event::Stat`; `ReadDir` answers `Event::Entries` (in parts) then `Event::Done`; `Mkdir`
//!   and `Remove` answer `Event::Done`; `Watch` answers `Event::Done` once its watches are
//!   set, then `Event::FsEvent`s until the client closes the stream. A `CopyOut` may carry
//!   `exclude` patterns; a tar download names its entries relative to the tree (no `./`).
//! - `tcp` capability (docs/adr/0019-websockets-for-shell-and-forward.md): `Connect` makes a
//!   TCP connection from inside the node (so `127.0.0.1` is the node's own loopback); the
//!   agent answers `Event::Connected` (or an error: `port_closed` when nothing accepts), then
//!   `Data` frames carry the bytes both ways, and an empty `Data` frame half-closes its
//!   sender's direction, as in a copy. Closing the stream closes the TCP connection.
//! - `no_setid` capability (ADR 0024, `exec_as_root: false`): a `CopyIn`'s `no_setid` clears
//!   the setuid and setgid bits of what it writes; an agent without it ignores the field.
//! - `tmpfs_only` capability (#13, secrets): a file `CopyIn` with `tmpfs_only` is written only
//!   into a directory on a tmpfs (`tmpfs_file.rs`), else refused with `not_tmpfs`; an agent
//!   without it ignores the field, so a client must check for it first.
//!
//! Any operation may end with `Event::Error` instead.
//!
//! Versions (docs/adr/0014-agent-client-and-protocol-v2.md): an agent stays the one its node
//! started with across a daemon upgrade, so a client learns what its agent speaks from the
//! pong (an agent of version 1 sends no `version`) and never sends an older agent a frame or
//! option it does not know: version 1 ignores unknown request fields (a `tty` would silently
//! be dropped) and ends an exec on an unknown frame kind. From version 2 an unknown frame kind
//! is skipped and answered with an `unsupported_frame` error event; the operation goes on.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// Largest payload of one frame. Bigger data is split into several frames.
pub const MAX_FRAME: usize = 256 * 1024;

/// Error code: the node hit its pids limit (fork or thread creation failed with EAGAIN).
pub const PIDS_LIMIT: &str = "pids_limit";
/// Error code: the agent ran out of another resource (file descriptors); retry later.
pub const AGENT_BUSY: &str = "agent_busy";
/// Error code: a frame of a kind this agent does not know (sent by a newer client).
pub const UNSUPPORTED_FRAME: &str = "unsupported_frame";

/// The protocol version this agent speaks.
pub const VERSION: u32 = 3;
/// Capability: `exec` requests (every version).
pub const CAP_EXEC: &str = "exec";
/// Capability: `copy_in` and `copy_out` requests (every version).
pub const CAP_COPY: &str = "copy";
/// Capability: an exec's `tty` option (a pseudo-terminal).
pub const CAP_TTY: &str = "tty";
/// Capability: `Resize` frames during an exec.
pub const CAP_RESIZE: &str = "resize";
/// Capability: `Signal` frames during an exec.
pub const CAP_SIGNAL: &str = "signal";

/// Capability (version 3): `stat`, `read_dir`, `mkdir`, `remove`, `watch` requests, and a
/// copy-out's `exclude`.
pub const CAP_FS: &str = "fs";
/// Capability: `connect` requests (a TCP connection made from inside the node).
pub const CAP_TCP: &str = "tcp";
/// Capability: a copy-in's `no_setid` option (added within version 3; older agents ignore
/// the field, so a client must check for this before relying on it).
pub const CAP_NO_SETID: &str = "no_setid";
/// Capability `tmpfs_only` (#13, secrets, within version 3): a copy-in's `tmpfs_only`. An
/// agent without it ignores the field (it would write anywhere), so a client checks first.
pub const CAP_TMPFS_ONLY: &str = "tmpfs_only";
/// Error code: a `tmpfs_only` copy-in whose directory is not on a tmpfs (nothing written).
pub const NOT_TMPFS: &str = "not_tmpfs";
/// Capability `rename` (#15, added within version 3): `rename` requests. An agent without it
/// answers `invalid_request` (an unknown op), so a client checks for it first.
pub const CAP_RENAME: &str = "rename";
/// Capability `volumes` (#13, attach; only a microVM guest's agent has it): `mount_volume`
/// requests. An agent without it answers `invalid_request` (an unknown op).
pub const CAP_VOLUMES: &str = "volumes";
/// Capability `containers` (#16, within version 3): an exec's `root`, `rlimits` and `groups`,
/// a copy-in's `owners`, and `container_mounts`/`container_unmount` requests (which only a
/// microVM guest's agent serves; a jail's answers `unsupported`: its supervisor mounts).
pub const CAP_CONTAINERS: &str = "containers";
/// Set by a microVM guest's init (`guest::boot`): only that agent mounts volumes and says
/// `volumes` in its pong.
pub static IN_GUEST: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Error code: a `mount_volume` failed (no such disk, a bad file system, a bad key).
pub const MOUNT_FAILED: &str = "mount_failed";
/// Error code: nothing accepts connections on the target of a `connect` (refused, or no
/// answer within the agent's timeout).
pub const PORT_CLOSED: &str = "port_closed";

/// What an agent of `version` can do; an agent of version 1 does not say, and this is it.
pub fn caps_of_version(version: u32) -> &'static [&'static str] {
    match version {
        0 | 1 => &[CAP_EXEC, CAP_COPY],
        2 => &[CAP_EXEC, CAP_COPY, CAP_TTY, CAP_RESIZE, CAP_SIGNAL],
        _ => &[CAP_EXEC, CAP_COPY, CAP_TTY, CAP_RESIZE, CAP_SIGNAL, CAP_FS],
    }
}

/// What this agent can do, as its pong says: its version's capabilities and the ones added
/// within the version (`tcp`), which a client learns only from the pong.
pub fn own_caps() -> Vec<String> {
    let guest = IN_GUEST.load(std::sync::atomic::Ordering::Relaxed);
    caps_of_version(VERSION)
        .iter()
        .chain(&[
            CAP_TCP,
            CAP_NO_SETID,
            CAP_RENAME,
            CAP_CONTAINERS,
            CAP_TMPFS_ONLY,
        ])
        .chain(guest.then_some(&CAP_VOLUMES))
        .map(|c| c.to_string())
        .collect()
}

fn version_1() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Request = 1,
    Stdin = 2,
    Stdout = 3,
    Stderr = 4,
    Event = 5,
    Data = 6,
    /// Version 2: a terminal's new size, [`WinSize::encode`] (client → agent, exec with a tty).
    Resize = 7,
    /// Version 2: a signal for the command's process group, `i32` big-endian (client → agent).
    Signal = 8,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::Stdin,
            3 => Kind::Stdout,
            4 => Kind::Stderr,
            5 => Kind::Event,
            6 => Kind::Data,
            7 => Kind::Resize,
            8 => Kind::Signal,
            _ => return None,
        })
    }
}

/// A frame of a kind this side does not know. Its payload has been read, so the stream is
/// still in step and the reader may go on; the `io::Error` of [`read_frame`] carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown frame kind {0} (this agent speaks protocol version {VERSION})")]
pub struct UnknownKind(pub u8);

impl UnknownKind {
    /// The unknown kind behind an error of [`read_frame`], if that is what it is.
    pub fn of(e: &io::Error) -> Option<UnknownKind> {
        e.get_ref()?.downcast_ref::<UnknownKind>().copied()
    }
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct WinSize {
    pub cols: u16,
    pub rows: u16,
}

impl WinSize {
    /// The payload of a `Resize` frame: `u16 cols | u16 rows`, big-endian.
    pub fn encode(self) -> [u8; 4] {
        let (c, r) = (self.cols.to_be_bytes(), self.rows.to_be_bytes());
        [c[0], c[1], r[0], r[1]]
    }

    pub fn decode(p: &[u8]) -> Option<Self> {
        let p: &[u8; 4] = p.try_into().ok()?;
        Some(WinSize {
            cols: u16::from_be_bytes([p[0], p[1]]),
            rows: u16::from_be_bytes([p[2], p[3]]),
        })
    }
}

/// The payload of a `Signal` frame.
pub fn encode_signal(sig: i32) -> [u8; 4] {
    sig.to_be_bytes()
}

pub fn decode_signal(p: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(p.try_into().ok()?))
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Exec(ExecRequest),
    CopyOut {
        path: String,
        tar: bool,
        /// Version 3: patterns of paths (relative to the tree) a tar download leaves out.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
    },
    CopyIn {
        path: String,
        tar: bool,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
        /// `no_setid` capability: clear setuid and setgid bits of everything written (a tar
        /// upload's entries, a file's `mode`). Absent: false (as older daemons send it).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_setid: bool,
        /// `containers` capability (#16): a tar upload keeps its entries' numeric owners, and
        /// refuses absolute names (a container's rootfs). Absent: false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        owners: bool,
        /// `tmpfs_only` capability (#13, secrets): a file (not a tar) is written only into a
        /// directory on a tmpfs, reached without following a symlink. Absent: false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        tmpfs_only: bool,
    },
    /// Version 3: a path's own status (a symlink is not followed).
    Stat {
        path: String,
    },
    /// Version 3: a directory's entries.
    ReadDir {
        path: String,
    },
    /// Version 3: makes a directory (`recursive`: with its parents, and no error if it exists).
    Mkdir {
        path: String,
        recursive: bool,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    },
    /// Version 3: removes a file, a symlink or an empty directory (`recursive`: a whole tree).
    Remove {
        path: String,
        recursive: bool,
    },
    /// Capability `rename` (#15): renames `from` to `to` (`rename(2)`: a file or directory
    /// at `to` is replaced as the kernel allows); answers `Event::Done`.
    Rename {
        from: String,
        to: String,
    },
    /// Version 3: reports changes under `paths` until the client closes the stream.
    Watch {
        paths: Vec<String>,
        recursive: bool,
    },
    /// Capability `tcp`: a TCP connection to `host:port` made from inside the node. `host`
    /// is an IP address or `localhost`; it resolves in the node, whose own network (its
    /// loopback included) is all the agent reaches.
    Connect {
        host: String,
        port: u16,
    },
    /// Capability `volumes`: mounts the encrypted volume on the virtio disk whose serial is
    /// `serial` at `path` (the file system on a private directory, its fscrypt key added with
    /// `key`, 64 bytes in hex, then its `data` directory bound at `path`, `nodev,nosuid`,
    /// `noexec` unless `exec`, read-only if `read_only`). Answers `Event::Done`.
    MountVolume(MountVolume),
    /// Capability `containers` (#16; served by a microVM guest's agent only): makes a
    /// container's mounts under `root` (`crate::container_mounts::make`); answers `Done`.
    ContainerMounts {
        root: String,
        #[serde(default)]
        mounts: Vec<crate::containers::ContainerMount>,
        #[serde(default)]
        readonly: bool,
    },
    /// Capability `containers`: detaches every mount under `root`; answers `Done`.
    ContainerUnmount {
        root: String,
    },
}

/// A `mount_volume` request. Its `Debug` leaves the key out.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
pub struct MountVolume {
    pub serial: String,
    pub path: String,
    pub read_only: bool,
    #[serde(default)]
    pub exec: bool,
    pub key: String,
}

impl std::fmt::Debug for MountVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountVolume")
            .field("serial", &self.serial)
            .field("path", &self.path)
            .field("read_only", &self.read_only)
            .field("exec", &self.exec)
            .finish_non_exhaustive()
    }
}

impl Drop for MountVolume {
    fn drop(&mut self) {
        let mut k = std::mem::take(&mut self.key).into_bytes();
        for b in k.iter_mut() {
            // SAFETY: a valid, exclusive reference to one byte.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

/// What `Stat` and `ReadDir` say about one path.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FsInfo {
    /// The last component of the path (the entry's name in a listing).
    pub name: String,
    /// `file`, `directory`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    /// Modification time: seconds and nanoseconds since the epoch.
    pub mtime_s: i64,
    pub mtime_ns: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner and group (#15; absent from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// A symlink's target as stored in the link (#15; absent from older agents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecRequest {
    pub cmd: String,
    pub args: Vec<String>,
    /// `KEY=VALUE` entries added to a minimal default environment.
    pub env: Vec<String>,
    pub cwd: Option<String>,
    pub uid: u32,
    pub gid: u32,
    /// Whether the client will send stdin frames; otherwise stdin is /dev/null.
    pub stdin: bool,
    /// Kill the process group after this long.
    pub timeout_ms: Option<u64>,
    /// Version 2: run the command on a pseudo-terminal of this size. Its output (stdout and
    /// stderr together) comes as `Stdout` frames; `Stdin` frames are typed into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<WinSize>,
    // #16 B1 (fields; B2 implements them in the agent, capability `containers`):
    /// Run chrooted in this directory of the node (a container's root), before
    /// setgroups/setgid/setuid and the chdir to `cwd` (or `/`). Absent: the node's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// Resource limits set before the command runs (OCI names: `RLIMIT_NOFILE`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rlimits: Vec<Rlimit>,
    /// Supplementary group ids (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<u32>,
}

/// #16: one resource limit of an exec; `u64::MAX` is unlimited (`RLIM_INFINITY`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rlimit {
    /// The OCI name, e.g. `RLIMIT_NOFILE`.
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Pong {
        uptime_ms: u64,
        /// Absent from an agent of version 1.
        #[serde(default = "version_1")]
        version: u32,
        /// Absent from an agent of version 1: see [`caps_of_version`].
        #[serde(default)]
        caps: Vec<String>,
        /// The agent's build version (its crate's); absent from older agents.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_version: Option<String>,
        /// How long the node's system has been up: the guest kernel's uptime in a microVM,
        /// the node's pid namespace's (this agent is its init) in a jail. Absent from older
        /// agents.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system_uptime_ms: Option<u64>,
    },
    Started {
        pid: i32,
        /// The agent's protocol version (absent from version 1), so that a session learns
        /// what it may send without a ping of its own.
        #[serde(default = "version_1")]
        version: u32,
    },
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
        timed_out: bool,
    },
    File {
        mode: u32,
        size: u64,
    },
    Done {
        bytes: u64,
    },
    Error {
        message: String,
        code: String,
    },
    /// Version 3: the answer to `Stat`.
    Stat {
        info: FsInfo,
    },
    /// Version 3: a part of the answer to `ReadDir` (the last part is followed by `Done`).
    Entries {
        entries: Vec<FsInfo>,
    },
    /// Version 3: a change seen by a `Watch`: `kind` is `create`, `write`, `remove`, `rename`
    /// or `chmod`, or `overflow` when the kernel dropped events.
    FsEvent {
        kind: String,
        path: String,
        is_dir: bool,
        size: u64,
    },
    /// Capability `tcp`: the answer to `Connect` once the connection is made.
    Connected,
}

impl Event {
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Event::Error {
            message: message.into(),
            code: code.to_string(),
        }
    }
}

pub fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    debug_assert!(payload.len() <= MAX_FRAME);
    let len = (payload.len() + 1) as u32;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&len.to_be_bytes());
    head[4] = kind as u8;
    w.write_all(&head)?;
    w.write_all(payload)?;
    w.flush()
}

pub fn write_json(w: &mut impl Write, kind: Kind, v: &impl Serialize) -> io::Result<()> {
    let bytes = serde_json::to_vec(v).map_err(io::Error::other)?;
    write_frame(w, kind, &bytes)
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(Kind, Vec<u8>)>> {
    let mut payload = Vec::new();
    Ok(read_frame_into(r, &mut payload)?.map(|k| (k, payload)))
}

/// Reads one frame into `payload`, reusing its allocation: a long upload then touches no new
/// memory of the agent's once the first frame is in, which matters when the node's memory is
/// full (a page fault the memory cgroup cannot satisfy is retried, not failed).
pub fn read_frame_into(r: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Option<Kind>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..])?;
    let (len, kind) = decode_head(&head)?;
    payload.resize(len, 0);
    r.read_exact(payload)?;
    kind.map(Some)
}

/// The payload's length and the frame's kind; an unknown kind is an error only once the
/// payload has been read, so that a reader can skip the frame.
pub(crate) fn decode_head(head: &[u8; 5]) -> io::Result<(usize, io::Result<Kind>)> {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len - 1 > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame length {len}"),
        ));
    }
    let kind = Kind::from_u8(head[4])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, UnknownKind(head[4])));
    Ok((len - 1, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_json(&mut buf, Kind::Request, &Request::Ping).unwrap();
        write_frame(&mut buf, Kind::Data, b"").unwrap();
        let mut r = &buf[..];
        let (k, p) = read_frame(&mut r).unwrap().unwrap();
        assert_eq!(k, Kind::Request);
        assert_eq!(
            serde_json::from_slice::<Request>(&p).unwrap(),
            Request::Ping
        );
        assert_eq!(read_frame(&mut r).unwrap().unwrap(), (Kind::Data, vec![]));
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn rejects_oversized_and_unknown_frames() {
        let mut big = ((MAX_FRAME + 2) as u32).to_be_bytes().to_vec();
        big.push(6);
        assert!(read_frame(&mut &big[..]).is_err());
        // An unknown kind is skipped whole: the next frame still reads.
        let mut two = vec![0, 0, 0, 3, 99, b'h', b'i'];
        write_frame(&mut two, Kind::Data, b"ok").unwrap();
        let mut r = &two[..];
        let e = read_frame(&mut r).unwrap_err();
        assert_eq!(UnknownKind::of(&e), Some(UnknownKind(99)));
        assert_eq!(
            read_frame(&mut r).unwrap().unwrap(),
            (Kind::Data, b"ok".to_vec())
        );
    }

    #[test]
    fn a_version_1_pong_and_started_read_as_version_1() {
        let pong: Event = serde_json::from_str(r#"{"event":"pong","uptime_ms":5}"#).unwrap();
        assert_eq!(
            pong,
            Event::Pong {
                uptime_ms: 5,
                version: 1,
                caps: vec![],
                agent_version: None,
                system_uptime_ms: None,
            }
        );
        let started: Event = serde_json::from_str(r#"{"event":"started","pid":7}"#).unwrap();
        assert_eq!(started, Event::Started { pid: 7, version: 1 });
        assert_eq!(caps_of_version(1), &[CAP_EXEC, CAP_COPY]);
        // A request without `tty` is what a version 1 agent reads.
        let v = serde_json::to_value(Request::Exec(ExecRequest::default())).unwrap();
        assert!(v.get("tty").is_none());
    }

    #[test]
    fn control_payloads_round_trip() {
        let w = WinSize {
            cols: 132,
            rows: 43,
        };
        assert_eq!(WinSize::decode(&w.encode()), Some(w));
        assert_eq!(WinSize::decode(&[1, 2, 3]), None);
        assert_eq!(decode_signal(&encode_signal(15)), Some(15));
        assert_eq!(decode_signal(&[]), None);
    }
}
