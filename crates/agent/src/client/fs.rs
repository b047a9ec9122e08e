//! The types of protocol version 3's file-system operations (the `fs` capability): what
//! `AgentConn::mkdir` makes, and a watch's changes ([`FsWatch`], [`FsChange`]). The operations
//! themselves are `AgentConn`'s (`client/mod.rs`); each needs an agent known to have `fs`.

use tokio::io::AsyncRead;

use super::error::AgentError;
use super::events::read_event;
use super::frames::FrameReader;
use crate::proto::Event;

/// What to make with [`AgentConn::mkdir`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MkdirRequest {
    pub path: String,
    /// Parents too, and no error when the directory exists.
    pub recursive: bool,
    /// Permission bits (default 0755).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsChange {
    /// `create`, `write`, `remove`, `rename`, `chmod`, or `overflow` (events were lost; `path`
    /// then says why).
    pub kind: String,
    pub path: String,
    pub is_dir: bool,
    pub size: u64,
}

/// A watch in progress; dropping it ends the watch in the node.
pub struct FsWatch<R, W> {
    rd: FrameReader<R>,
    /// Kept open: closing it ends the watch.
    _wr: W,
}

impl<R: AsyncRead + Unpin, W> FsWatch<R, W> {
    pub(super) fn new(rd: FrameReader<R>, wr: W) -> Self {
        FsWatch { rd, _wr: wr }
    }

    /// The next change; an error when the agent (or its node) went away.
    pub async fn next(&mut self) -> Result<FsChange, AgentError> {
        loop {
            match read_event(&mut self.rd).await? {
                Some(Event::FsEvent {
                    kind,
                    path,
                    is_dir,
                    size,
                }) => {
                    return Ok(FsChange {
                        kind,
                        path,
                        is_dir,
                        size,
                    })
                }
                None => continue,
                Some(e) => {
                    return Err(AgentError::Unexpected {
                        op: "watch",
                        event: format!("{e:?}"),
                    })
                }
            }
        }
    }
}
