//! Copies: [`CopyOut`] hands out a file's (or a tar archive's) chunks after its mode;
//! [`CopyIn`] takes chunks and returns the byte count the agent wrote. An upload that is
//! dropped without [`CopyIn::finish`] never sends its last frame, so the agent discards it.

use tokio::io::{AsyncRead, AsyncWrite};

use super::error::AgentError;
use super::events::{event_of, next_known_event};
use super::frames::{write_frame, FrameReader};
use crate::proto::{Event, Kind, Request, MAX_FRAME};

/// Where an upload goes and whose it becomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyInRequest {
    /// Absolute path in the node (a directory to unpack into with `tar`).
    pub path: String,
    /// The chunks are a tar archive to unpack.
    pub tar: bool,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Permission bits of a single file (default 0644).
    pub mode: Option<u32>,
    /// Clear setuid/setgid bits of everything written (needs the agent's `no_setid`
    /// capability; an older agent ignores it).
    pub no_setid: bool,
    /// #16 (the agent's `containers` capability): a tar keeps its entries' numeric owners and
    /// absolute names are refused (a container's rootfs).
    pub owners: bool,
    /// #13, secrets (the agent's `tmpfs_only` capability, required before it is sent): a file
    /// written only into a directory on a tmpfs, else refused with `not_tmpfs`.
    pub tmpfs_only: bool,
}

impl CopyInRequest {
    pub(super) fn into_request(self) -> Request {
        Request::CopyIn {
            path: self.path,
            tar: self.tar,
            uid: self.uid,
            gid: self.gid,
            mode: self.mode,
            no_setid: self.no_setid,
            owners: self.owners,
            tmpfs_only: self.tmpfs_only,
        }
    }
}

/// A download in progress.
pub struct CopyOut<R, W> {
    /// Permission bits of the file (or the tree's top).
    pub mode: u32,
    /// The file's size (0 for a tar archive, whose size is not known in advance).
    pub size: u64,
    rd: FrameReader<R>,
    /// Kept open: closing it would end the operation early.
    _wr: W,
    ended: bool,
}

impl<R: AsyncRead + Unpin, W> CopyOut<R, W> {
    pub(super) fn new(mode: u32, size: u64, rd: FrameReader<R>, wr: W) -> Self {
        CopyOut {
            mode,
            size,
            rd,
            _wr: wr,
            ended: false,
        }
    }

    /// The next chunk; `Ok(None)` at the end of the file. Anything else mid-stream (the agent
    /// failed to read the file, or went away) is an error: the data so far is incomplete.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, AgentError> {
        if self.ended {
            return Ok(None);
        }
        loop {
            return match self.rd.next().await? {
                Some((Kind::Data, d)) if d.is_empty() => {
                    self.ended = true;
                    Ok(None)
                }
                Some((Kind::Data, d)) => Ok(Some(d)),
                Some((Kind::Event, p)) => Err(match event_of(&p) {
                    Err(e) => e,
                    Ok(None) => continue,
                    Ok(Some(e)) => AgentError::Unexpected {
                        op: "copy",
                        event: format!("{e:?}"),
                    },
                }),
                Some((k, _)) => Err(AgentError::Protocol(format!(
                    "a {k:?} frame in the middle of a copy"
                ))),
                None => Err(AgentError::Closed),
            };
        }
    }

    /// Reads the rest into memory (tests and small files).
    pub async fn read_to_end(mut self) -> Result<Vec<u8>, AgentError> {
        let mut all = Vec::new();
        while let Some(c) = self.next_chunk().await? {
            all.extend_from_slice(&c);
        }
        Ok(all)
    }
}

/// An upload in progress.
pub struct CopyIn<R, W> {
    rd: FrameReader<R>,
    wr: W,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> CopyIn<R, W> {
    pub(super) fn new(rd: FrameReader<R>, wr: W) -> Self {
        CopyIn { rd, wr }
    }

    /// Sends a chunk. An error means the agent stopped reading: [`Self::finish`] says why.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), AgentError> {
        for part in data.chunks(MAX_FRAME) {
            write_frame(&mut self.wr, Kind::Data, part).await?;
        }
        Ok(())
    }

    /// Ends the upload and returns the bytes the agent received, or why it failed.
    pub async fn finish(mut self) -> Result<u64, AgentError> {
        // The agent may have stopped reading (it refused the upload): its answer says why.
        let _ = write_frame(&mut self.wr, Kind::Data, &[]).await;
        match next_known_event(&mut self.rd).await? {
            Event::Done { bytes } => Ok(bytes),
            e => Err(AgentError::Unexpected {
                op: "upload",
                event: format!("{e:?}"),
            }),
        }
    }
}
