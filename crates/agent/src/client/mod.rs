//! The host side of the agent protocol: a typed, async client.
//!
//! [`AgentClient`] reaches an agent through its socket's path (one connection per operation,
//! as the protocol has it) and remembers what the agent said about itself; [`AgentConn`] is
//! one operation on a stream the caller connected (the daemon connects itself, to wait out
//! a full listen backlog). Operations: [`AgentConn::ping`], [`AgentConn::exec`] (an
//! [`ExecSession`]), [`AgentConn::copy_out`] (a [`CopyOut`] of chunks) and
//! [`AgentConn::copy_in`] (a [`CopyIn`] sink); from protocol version 3 the file-system
//! operations of `fs.rs` (stat, read_dir, mkdir, remove, watch); with the `tcp` capability
//! [`AgentConn::connect_tcp`] (a [`TcpTunnel`] made from inside the node).
//!
//! Versions: a node keeps the agent it started with across an upgrade of the host, so the
//! client never sends an agent something it does not know. What the agent can do comes from
//! its pong, or, inside an exec, from its `started` event; an agent of version 1 says neither
//! and gets the base capabilities ([`crate::proto::caps_of_version`]). A feature the agent
//! lacks is refused here with [`AgentError::Unsupported`], before anything is sent.
//!
//! Events of a kind this client does not know (from a newer agent) are skipped; a known
//! event that does not parse is a protocol error.

mod copy;
mod error;
mod events;
mod exec;
mod frames;
mod fs;
mod tcp;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::UnixStream;

pub use copy::{CopyIn, CopyInRequest, CopyOut};
pub use error::AgentError;
pub use exec::{ExecEvent, ExecInput, ExecOutput, ExecSession, ExitStatus};
pub use fs::{FsChange, FsWatch, MkdirRequest};
pub use tcp::{TcpRead, TcpTunnel, TcpWrite};

use crate::proto::{self, Event, ExecRequest, FsInfo, Kind, Request};
use events::{next_known_event, read_event};
use frames::FrameReader;

/// What an agent says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentInfo {
    pub version: u32,
    pub caps: Vec<String>,
    pub uptime_ms: u64,
    /// The agent's build version; `None` from agents that do not say.
    pub agent_version: Option<String>,
    /// The node's system uptime (see `proto::Event::Pong`); `None` from agents that do not say.
    pub system_uptime_ms: Option<u64>,
}

impl AgentInfo {
    pub fn has(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }

    fn require(&self, cap: &'static str) -> Result<(), AgentError> {
        if self.has(cap) {
            Ok(())
        } else {
            Err(AgentError::Unsupported {
                feature: cap,
                version: Some(self.version),
            })
        }
    }
}

/// The capabilities an agent of `version` has, as owned strings.
fn caps_of(version: u32) -> Vec<String> {
    proto::caps_of_version(version)
        .iter()
        .map(|c| c.to_string())
        .collect()
}

/// One operation on one connection to an agent.
pub struct AgentConn<R, W> {
    rd: FrameReader<R>,
    wr: W,
    peer: Option<AgentInfo>,
    answer_timeout: Option<Duration>,
}

/// An operation on a UNIX socket connection.
pub type UnixConn = AgentConn<ReadHalf<UnixStream>, WriteHalf<UnixStream>>;

impl<S: AsyncRead + AsyncWrite> AgentConn<ReadHalf<S>, WriteHalf<S>> {
    /// Wraps a connected stream. Its halves live in the operation's parts (an exec's input
    /// and output); the stream closes once both are dropped.
    pub fn new(stream: S) -> Self {
        let (r, w) = tokio::io::split(stream);
        AgentConn::from_halves(r, w)
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> AgentConn<R, W> {
    pub fn from_halves(r: R, w: W) -> Self {
        AgentConn {
            rd: FrameReader::new(r),
            wr: w,
            peer: None,
            answer_timeout: None,
        }
    }

    /// What the agent said of itself on another connection (a ping): features beyond the
    /// base ones (a tty) need it.
    pub fn with_peer(mut self, info: Option<AgentInfo>) -> Self {
        self.peer = info;
        self
    }

    /// Bounds the wait for the agent's first answer ([`AgentError::Timeout`]).
    pub fn with_answer_timeout(mut self, t: Duration) -> Self {
        self.answer_timeout = Some(t);
        self
    }

    async fn send(&mut self, req: &Request) -> io::Result<()> {
        let bytes = serde_json::to_vec(req).map_err(io::Error::other)?;
        frames::write_frame(&mut self.wr, Kind::Request, &bytes).await
    }

    /// Sends the request and reads the first answer. An agent that refused the connection at
    /// once (no thread left for it) may have closed it before the request was written: its
    /// answer is still read, so a refusal is not mistaken for a lost agent.
    async fn open(&mut self, req: &Request) -> Result<Event, AgentError> {
        let sent = self.send(req).await;
        let answer = match self.answer_timeout {
            Some(t) => tokio::time::timeout(t, next_known_event(&mut self.rd))
                .await
                .map_err(|_| AgentError::Timeout(t)),
            None => Ok(next_known_event(&mut self.rd).await),
        };
        match (sent, answer) {
            (_, Ok(Err(e @ AgentError::Remote { .. }))) => Err(e),
            (Ok(()), Ok(r)) => r,
            (Ok(()), Err(t)) => Err(t),
            (Err(e), _) => Err(AgentError::Io(e)),
        }
    }

    /// Asks the agent who it is.
    pub async fn ping(mut self) -> Result<AgentInfo, AgentError> {
        match self.open(&Request::Ping).await? {
            Event::Pong {
                uptime_ms,
                version,
                caps,
                agent_version,
                system_uptime_ms,
            } => Ok(AgentInfo {
                agent_version,
                system_uptime_ms,
                version,
                caps: if caps.is_empty() {
                    caps_of(version)
                } else {
                    caps
                },
                uptime_ms,
            }),
            e => Err(AgentError::Unexpected {
                op: "ping",
                event: format!("{e:?}"),
            }),
        }
    }

    /// Starts a command. A `tty` needs an agent known to have one (see [`Self::with_peer`]).
    pub async fn exec(mut self, req: ExecRequest) -> Result<ExecSession<R, W>, AgentError> {
        if req.tty.is_some() {
            match &self.peer {
                Some(p) => p.require(proto::CAP_TTY)?,
                None => {
                    return Err(AgentError::Unsupported {
                        feature: proto::CAP_TTY,
                        version: None,
                    })
                }
            }
        }
        match self.open(&Request::Exec(req)).await? {
            Event::Started { pid, version } => {
                let caps = match self.peer {
                    Some(p) => p.caps,
                    None => caps_of(version),
                };
                Ok(ExecSession::new(pid, version, caps, self.rd, self.wr))
            }
            e => Err(AgentError::Unexpected {
                op: "exec",
                event: format!("{e:?}"),
            }),
        }
    }

    /// Reads a file (`tar`: a tree as a tar archive) out of the node.
    pub async fn copy_out(mut self, path: &str, tar: bool) -> Result<CopyOut<R, W>, AgentError> {
        let req = Request::CopyOut {
            path: path.to_string(),
            tar,
            exclude: Vec::new(),
        };
        match self.open(&req).await? {
            Event::File { mode, size } => Ok(CopyOut::new(mode, size, self.rd, self.wr)),
            e => Err(AgentError::Unexpected {
                op: "copy",
                event: format!("{e:?}"),
            }),
        }
    }

    /// Starts an upload; the agent answers only at its end ([`CopyIn::finish`]).
    /// Starts an upload. `tmpfs_only` needs an agent known to have it (an older one would
    /// ignore it and write anywhere: refused here, nothing sent).
    pub async fn copy_in(mut self, req: CopyInRequest) -> Result<CopyIn<R, W>, AgentError> {
        if req.tmpfs_only {
            match &self.peer {
                Some(p) => p.require(proto::CAP_TMPFS_ONLY)?,
                None => {
                    return Err(AgentError::Unsupported {
                        feature: proto::CAP_TMPFS_ONLY,
                        version: None,
                    })
                }
            }
        }
        if let Err(e) = self.send(&req.into_request()).await {
            // The agent may have refused the connection at once (pids limit): say why.
            return Err(match read_event(&mut self.rd).await {
                Err(r @ AgentError::Remote { .. }) => r,
                _ => AgentError::Io(e),
            });
        }
        Ok(CopyIn::new(self.rd, self.wr))
    }
}

/// Protocol version 3's file-system operations (the `fs` capability, `client/fs.rs` has their
/// types): an agent not known to have `fs` is refused before anything is sent.
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
                // An honest agent stops at MAX_ENTRIES; a guest's agent is not trusted to.
                Event::Entries { entries }
                    if all.len() + entries.len() <= crate::fs::MAX_ENTRIES =>
                {
                    all.extend(entries)
                }
                Event::Done { .. } => return Ok(all),
                Event::Entries { .. } => {
                    return Err(AgentError::Unexpected {
                        op: "read_dir",
                        event: format!("more than {} entries", crate::fs::MAX_ENTRIES),
                    })
                }
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
    /// Renames `from` to `to` (capability `rename`).
    pub async fn rename(self, from: &str, to: &str) -> Result<(), AgentError> {
        match &self.peer {
            Some(p) => p.require(proto::CAP_RENAME)?,
            None => {
                return Err(AgentError::Unsupported {
                    feature: proto::CAP_RENAME,
                    version: None,
                })
            }
        }
        let req = Request::Rename {
            from: from.into(),
            to: to.into(),
        };
        self.done(req, "rename").await
    }

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
            Event::Done { .. } => Ok(FsWatch::new(self.rd, self.wr)),
            e => Err(AgentError::Unexpected {
                op: "watch",
                event: format!("{e:?}"),
            }),
        }
    }

    /// A TCP connection to `host:port` made by the agent from inside the node (`127.0.0.1` is
    /// the node's own loopback). Needs an agent known to have `tcp` ([`Self::with_peer`]);
    /// nothing accepting there is [`AgentError::Remote`] with code `port_closed`.
    pub async fn connect_tcp(
        mut self,
        host: &str,
        port: u16,
    ) -> Result<TcpTunnel<R, W>, AgentError> {
        match &self.peer {
            Some(p) => p.require(proto::CAP_TCP)?,
            None => {
                return Err(AgentError::Unsupported {
                    feature: proto::CAP_TCP,
                    version: None,
                })
            }
        }
        let req = Request::Connect {
            host: host.into(),
            port,
        };
        tcp::connected(self.open(&req).await?)?;
        Ok(TcpTunnel::new(self.rd, self.wr))
    }

    /// Mounts a volume in a microVM guest (#13, attach). Needs an agent known to have
    /// `volumes` ([`Self::with_peer`]); an older agent, or a jail's, is
    /// [`AgentError::Unsupported`].
    pub async fn mount_volume(mut self, req: proto::MountVolume) -> Result<(), AgentError> {
        match &self.peer {
            Some(p) => p.require(proto::CAP_VOLUMES)?,
            None => {
                return Err(AgentError::Unsupported {
                    feature: proto::CAP_VOLUMES,
                    version: None,
                })
            }
        }
        match self.open(&Request::MountVolume(req)).await? {
            Event::Done { .. } => Ok(()),
            e => Err(AgentError::Unexpected {
                op: "mount_volume",
                event: format!("{e:?}"),
            }),
        }
    }

    /// #16: makes (`Request::ContainerMounts`) or removes (`Request::ContainerUnmount`) a
    /// container's mounts in a microVM guest. Needs an agent known to have `containers`
    /// ([`Self::with_peer`]); a jail's agent answers `unsupported` (its supervisor mounts).
    pub async fn container_mounts(mut self, req: Request) -> Result<(), AgentError> {
        match &self.peer {
            Some(p) => p.require(proto::CAP_CONTAINERS)?,
            None => {
                return Err(AgentError::Unsupported {
                    feature: proto::CAP_CONTAINERS,
                    version: None,
                })
            }
        }
        match self.open(&req).await? {
            Event::Done { .. } => Ok(()),
            e => Err(AgentError::Unexpected {
                op: "container_mounts",
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

/// An agent reached through its socket's path: one connection per operation.
pub struct AgentClient {
    path: PathBuf,
    info: Mutex<Option<AgentInfo>>,
}

impl AgentClient {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AgentClient {
            path: path.into(),
            info: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn known(&self) -> Option<AgentInfo> {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A connection for one operation, knowing what this client learnt of the agent.
    pub async fn connect(&self) -> Result<UnixConn, AgentError> {
        let s = crate::unix_path::connect_async(&self.path)
            .await
            .map_err(AgentError::Connect)?;
        Ok(AgentConn::new(s).with_peer(self.known()))
    }

    /// Asks the agent who it is, and remembers it.
    pub async fn ping(&self) -> Result<AgentInfo, AgentError> {
        let info = self.connect().await?.ping().await?;
        *self.info.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.clone());
        Ok(info)
    }

    /// What the agent said of itself; asks it the first time.
    pub async fn info(&self) -> Result<AgentInfo, AgentError> {
        match self.known() {
            Some(i) => Ok(i),
            None => self.ping().await,
        }
    }

    /// Starts a command; with a `tty`, asks the agent first whether it has them.
    pub async fn exec(
        &self,
        req: ExecRequest,
    ) -> Result<ExecSession<ReadHalf<UnixStream>, WriteHalf<UnixStream>>, AgentError> {
        if req.tty.is_some() {
            self.info().await?.require(proto::CAP_TTY)?;
        }
        self.connect().await?.exec(req).await
    }

    pub async fn copy_out(
        &self,
        path: &str,
        tar: bool,
    ) -> Result<CopyOut<ReadHalf<UnixStream>, WriteHalf<UnixStream>>, AgentError> {
        self.connect().await?.copy_out(path, tar).await
    }

    pub async fn copy_in(
        &self,
        req: CopyInRequest,
    ) -> Result<CopyIn<ReadHalf<UnixStream>, WriteHalf<UnixStream>>, AgentError> {
        self.connect().await?.copy_in(req).await
    }

    /// A TCP connection made from inside the node; asks the agent first whether it has `tcp`.
    pub async fn connect_tcp(
        &self,
        host: &str,
        port: u16,
    ) -> Result<TcpTunnel<ReadHalf<UnixStream>, WriteHalf<UnixStream>>, AgentError> {
        self.info().await?.require(proto::CAP_TCP)?;
        self.connect().await?.connect_tcp(host, port).await
    }
}
