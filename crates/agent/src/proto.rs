//! Agent wire protocol. A frame is `u32 length (big endian) | u8 kind | payload`, where length
//! counts kind and payload. The first frame on a stream is a [`Request`]; what follows depends
//! on the operation:
//!
//! - `Ping`: agent answers `Event::Pong`.
//! - `Exec`: client may send `Stdin` frames (an empty one closes stdin); agent sends
//!   `Event::Started`, then `Stdout`/`Stderr` frames, then `Event::Exit`. Closing the stream
//!   kills the command's process group.
//! - `CopyOut`: agent sends `Event::File` then `Data` frames, then an empty `Data` frame.
//! - `CopyIn`: client sends `Data` frames then an empty one; agent answers `Event::Done`.
//!
//! Any operation may end with `Event::Error` instead.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};

/// Largest payload of one frame. Bigger data is split into several frames.
pub const MAX_FRAME: usize = 256 * 1024;

/// Error code: the node hit its pids limit (fork or thread creation failed with EAGAIN).
pub const PIDS_LIMIT: &str = "pids_limit";
/// Error code: the agent ran out of another resource (file descriptors); retry later.
pub const AGENT_BUSY: &str = "agent_busy";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Request = 1,
    Stdin = 2,
    Stdout = 3,
    Stderr = 4,
    Event = 5,
    Data = 6,
}

impl Kind {
    fn from_u8(b: u8) -> io::Result<Self> {
        Ok(match b {
            1 => Kind::Request,
            2 => Kind::Stdin,
            3 => Kind::Stdout,
            4 => Kind::Stderr,
            5 => Kind::Event,
            6 => Kind::Data,
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("unknown frame kind {b}"),
                ))
            }
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Exec(ExecRequest),
    CopyOut {
        path: String,
        tar: bool,
    },
    CopyIn {
        path: String,
        tar: bool,
        uid: Option<u32>,
        gid: Option<u32>,
        mode: Option<u32>,
    },
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Pong {
        uptime_ms: u64,
    },
    Started {
        pid: i32,
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
    Ok(Some(kind))
}

pub(crate) fn decode_head(head: &[u8; 5]) -> io::Result<(usize, Kind)> {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len == 0 || len - 1 > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad frame length {len}"),
        ));
    }
    Ok((len - 1, Kind::from_u8(head[4])?))
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
        let unknown = [0, 0, 0, 1, 99];
        assert!(read_frame(&mut &unknown[..]).is_err());
    }
}
