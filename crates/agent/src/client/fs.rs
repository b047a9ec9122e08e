//! File-system operations of protocol version 3 (the `fs` capability): [`AgentConn::stat`],
//! [`AgentConn::read_dir`], [`AgentConn::mkdir`], [`AgentConn::remove`] and
//! [`AgentConn::watch`] (a [`FsWatch`] of changes). Each needs an agent known to have `fs`
//! (see [`AgentConn::with_peer`]); an older one is refused here, before anything is sent.

use tokio::io::{AsyncRead, AsyncWrite};

use super::error::AgentError;
use super::events::{next_known_event, read_event};
use super::frames::FrameReader;
use super::{AgentConn, CopyOut};
use crate::proto::{self, Event, FsInfo, Request};

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

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> AgentConn<R, W> {
    fn require_fs(&self) -> Result<(), AgentError> {
        match &self.peer {
            Some(p) => p.require(proto::CAP_FS),
            None => Err(AgentError::Unsupported {
                feature: proto::CAP_FS,
                version: None,
            }),
        }
    }

    async fn done(mut self, req: Request, op: &'static str) -> Result<(), AgentError> {
        self.require_fs()?;
        match self.open(&req).await? {
            Event::Done { .. } => Ok(()),
            e => Err(AgentError::Unexpected {
                op,
                event: format!("{e:?}"),
            }),
        }
    }

    /// A path's own status (a symlink is reported, not followed).
    pub async fn stat(mut self, path: &str) -> Result<FsInfo, AgentError> {
        self.require_fs()?;
        let req = Request::Stat { path: path.into() };
        match self.open(&req).await? {
            Event::Stat { info } => Ok(info),
            e => Err(AgentError::Unexpected {
                op: "stat",
                event: format!("{e:?}"),
            }),
        }
    }

    /// A directory's entries, by name.
    pub async fn read_dir(mut self, path: &str) -> Result<Vec<FsInfo>, AgentError> {
        self.require_fs()?;
        let mut all = Vec::new();
        let mut e = self.open(&Request::ReadDir { path: path.into() }).await?;
        loop {
            match e {
                Event::Entries { entries } => all.extend(entries),
                Event::Done { .. } => return Ok(all),
                e => {
                    return Err(AgentError::Unexpected {
                        op: "read_dir",
                        event: format!("{e:?}"),
                    })
                }
            }
            e = next_known_event(&mut self.rd).await?;
        }
    }

    pub async fn mkdir(self, r: MkdirRequest) -> Result<(), AgentError> {
        let req = Request::Mkdir {
            path: r.path,
            recursive: r.recursive,
            mode: r.mode,
            uid: r.uid,
            gid: r.gid,
        };
        self.done(req, "mkdir").await
    }

    /// Removes a file, a symlink or an empty directory (`recursive`: a whole tree).
    pub async fn remove(self, path: &str, recursive: bool) -> Result<(), AgentError> {
        let req = Request::Remove {
            path: path.into(),
            recursive,
        };
        self.done(req, "remove").await
    }

    /// Starts watching `paths` (`recursive`: with every directory below them); the watches
    /// are set when this returns.
    pub async fn watch(
        mut self,
        paths: Vec<String>,
        recursive: bool,
    ) -> Result<FsWatch<R, W>, AgentError> {
        self.require_fs()?;
        match self.open(&Request::Watch { paths, recursive }).await? {
            Event::Done { .. } => Ok(FsWatch {
                rd: self.rd,
                _wr: self.wr,
            }),
            e => Err(AgentError::Unexpected {
                op: "watch",
                event: format!("{e:?}"),
            }),
        }
    }

    /// A tar download that leaves out paths matched by `exclude` (Slicer's patterns); with
    /// no patterns this is [`AgentConn::copy_out`], which every agent has.
    pub async fn copy_out_excluding(
        mut self,
        path: &str,
        exclude: Vec<String>,
    ) -> Result<CopyOut<R, W>, AgentError> {
        if exclude.is_empty() {
            return self.copy_out(path, true).await;
        }
        self.require_fs()?;
        let req = Request::CopyOut {
            path: path.into(),
            tar: true,
            exclude,
        };
        match self.open(&req).await? {
            Event::File { mode, size } => Ok(CopyOut::new(mode, size, self.rd, self.wr)),
            e => Err(AgentError::Unexpected {
                op: "copy",
                event: format!("{e:?}"),
            }),
        }
    }
}
