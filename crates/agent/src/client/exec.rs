//! An exec in progress: [`ExecSession`], splittable into its [`ExecInput`] (stdin, resize,
//! signal) and its [`ExecOutput`] (stdout, stderr, exit), so that stdin can be fed from one
//! task while the output is read in another. The command lives as long as the connection:
//! dropping both halves (or the session) closes it, and the agent kills the command's
//! process group.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::error::AgentError;
use super::events::event_of;
use super::frames::{write_frame, FrameReader};
use crate::proto::{self, Event, Kind, WinSize, MAX_FRAME};

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code, when it exited.
    pub code: Option<i32>,
    /// The signal that killed it, when one did.
    pub signal: Option<i32>,
    /// Killed because the request's timeout passed.
    pub timed_out: bool,
}

/// What an exec produces, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    Stdout(Vec<u8>),
    /// Never with a tty: a terminal has one output.
    Stderr(Vec<u8>),
    /// The last event of the exec.
    Exit(ExitStatus),
}

/// A running command.
pub struct ExecSession<R, W> {
    input: ExecInput<W>,
    output: ExecOutput<R>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> ExecSession<R, W> {
    pub(super) fn new(
        pid: i32,
        version: u32,
        caps: Vec<String>,
        rd: FrameReader<R>,
        wr: W,
    ) -> Self {
        ExecSession {
            input: ExecInput {
                wr,
                version,
                caps: caps.into(),
                stdin_closed: false,
            },
            output: ExecOutput {
                rd,
                pid,
                ended: false,
            },
        }
    }

    /// The command's pid inside the node.
    pub fn pid(&self) -> i32 {
        self.output.pid
    }

    /// The agent's protocol version.
    pub fn agent_version(&self) -> u32 {
        self.input.version
    }

    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<(), AgentError> {
        self.input.write_stdin(data).await
    }

    pub async fn close_stdin(&mut self) -> Result<(), AgentError> {
        self.input.close_stdin().await
    }

    pub async fn resize(&mut self, size: WinSize) -> Result<(), AgentError> {
        self.input.resize(size).await
    }

    pub async fn signal(&mut self, sig: i32) -> Result<(), AgentError> {
        self.input.signal(sig).await
    }

    /// See [`ExecOutput::next`].
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, AgentError> {
        self.output.next().await
    }

    /// Reads to the end: stdout, stderr and how the command ended. For tests and small
    /// outputs; an agent error on the way ends it.
    pub async fn collect(mut self) -> Result<(Vec<u8>, Vec<u8>, ExitStatus), AgentError> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match self.output.next().await? {
                Some(ExecEvent::Stdout(d)) => out.extend_from_slice(&d),
                Some(ExecEvent::Stderr(d)) => err.extend_from_slice(&d),
                Some(ExecEvent::Exit(s)) => return Ok((out, err, s)),
                None => return Err(AgentError::Closed),
            }
        }
    }

    pub fn split(self) -> (ExecInput<W>, ExecOutput<R>) {
        (self.input, self.output)
    }
}

/// What goes to the command: stdin, and from protocol version 2 resize and signal.
pub struct ExecInput<W> {
    wr: W,
    version: u32,
    caps: Arc<[String]>,
    stdin_closed: bool,
}

impl<W: AsyncWrite + Unpin> ExecInput<W> {
    fn require(&self, cap: &'static str) -> Result<(), AgentError> {
        if self.caps.iter().any(|c| c == cap) {
            Ok(())
        } else {
            Err(AgentError::Unsupported {
                feature: cap,
                version: Some(self.version),
            })
        }
    }

    /// Writes to the command's stdin (ignored by the agent unless the request asked for
    /// stdin or a tty). Nothing is sent for empty data.
    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<(), AgentError> {
        for part in data.chunks(MAX_FRAME) {
            write_frame(&mut self.wr, Kind::Stdin, part).await?;
        }
        Ok(())
    }

    /// Ends the command's stdin (on a tty: types its end-of-file character, when in
    /// canonical mode). Once; later calls do nothing.
    pub async fn close_stdin(&mut self) -> Result<(), AgentError> {
        if !std::mem::replace(&mut self.stdin_closed, true) {
            write_frame(&mut self.wr, Kind::Stdin, &[]).await?;
        }
        Ok(())
    }

    /// Sets the tty's size (the command gets `SIGWINCH`); without a tty the agent ignores it.
    pub async fn resize(&mut self, size: WinSize) -> Result<(), AgentError> {
        self.require(proto::CAP_RESIZE)?;
        write_frame(&mut self.wr, Kind::Resize, &size.encode()).await?;
        Ok(())
    }

    /// Sends `sig` to the command's process group. A number that is no signal is answered
    /// with an error on the output side.
    pub async fn signal(&mut self, sig: i32) -> Result<(), AgentError> {
        self.require(proto::CAP_SIGNAL)?;
        write_frame(&mut self.wr, Kind::Signal, &proto::encode_signal(sig)).await?;
        Ok(())
    }

    /// Closes our side of the connection for writing. The agent takes a closed connection
    /// for a client that left and kills the command: only for tests of exactly that.
    pub async fn shutdown(&mut self) -> Result<(), AgentError> {
        self.wr.shutdown().await?;
        Ok(())
    }
}

/// What comes from the command.
pub struct ExecOutput<R> {
    pub(super) rd: FrameReader<R>,
    pub(super) pid: i32,
    pub(super) ended: bool,
}

impl<R: AsyncRead + Unpin> ExecOutput<R> {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The next output or the exit; `Ok(None)` once the exit was returned. An error the agent
    /// reports mid-exec (a frame it refused) is `Err(Remote)` and the exec goes on: call again.
    /// A connection that ends before the exit is [`AgentError::Closed`]. Cancel-safe: a
    /// `select!` may drop this future without losing output.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>, AgentError> {
        if self.ended {
            return Ok(None);
        }
        loop {
            let (kind, p) = match self.rd.next().await {
                Ok(Some(f)) => f,
                Ok(None) => return Err(AgentError::Closed),
                Err(e) if proto::UnknownKind::of(&e).is_some() => continue,
                Err(e) => return Err(e.into()),
            };
            match kind {
                Kind::Stdout => return Ok(Some(ExecEvent::Stdout(p))),
                Kind::Stderr => return Ok(Some(ExecEvent::Stderr(p))),
                Kind::Event => match event_of(&p)? {
                    Some(Event::Exit {
                        code,
                        signal,
                        timed_out,
                    }) => {
                        self.ended = true;
                        return Ok(Some(ExecEvent::Exit(ExitStatus {
                            code,
                            signal,
                            timed_out,
                        })));
                    }
                    _ => continue,
                },
                _ => continue,
            }
        }
    }
}
