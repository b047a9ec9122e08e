//! [`TcpTunnel`]: a TCP connection the agent made from inside its node (capability `tcp`),
//! as two halves the caller can drive from two tasks: [`TcpRead`] yields the connection's
//! bytes, [`TcpWrite`] sends bytes and half-closes. Dropping both closes the connection.

use tokio::io::{AsyncRead, AsyncWrite};

use super::events::event_of;
use super::frames::{self, FrameReader};
use super::AgentError;
use crate::proto::{Event, Kind, UnknownKind};

/// An open connection through the agent.
pub struct TcpTunnel<R, W> {
    rd: FrameReader<R>,
    wr: W,
}

/// The connection's bytes, from the node.
pub struct TcpRead<R> {
    rd: FrameReader<R>,
    ended: bool,
}

/// Bytes to the connection, and its half-close.
pub struct TcpWrite<W> {
    wr: W,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> TcpTunnel<R, W> {
    pub(super) fn new(rd: FrameReader<R>, wr: W) -> Self {
        TcpTunnel { rd, wr }
    }

    pub fn split(self) -> (TcpRead<R>, TcpWrite<W>) {
        (
            TcpRead {
                rd: self.rd,
                ended: false,
            },
            TcpWrite { wr: self.wr },
        )
    }
}

impl<R: AsyncRead + Unpin> TcpRead<R> {
    /// The next bytes; `None` once the node's side has closed its direction. An error event
    /// from the agent is [`AgentError::Remote`]; a stream that ends without the closing frame
    /// is [`AgentError::Closed`].
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, AgentError> {
        if self.ended {
            return Ok(None);
        }
        loop {
            match self.rd.next().await {
                Ok(Some((Kind::Data, p))) if p.is_empty() => {
                    self.ended = true;
                    return Ok(None);
                }
                Ok(Some((Kind::Data, p))) => return Ok(Some(p)),
                // An error (the agent could not go on); other events are not for us.
                Ok(Some((Kind::Event, p))) => {
                    event_of(&p)?;
                }
                Ok(Some(_)) => {}
                Err(e) if UnknownKind::of(&e).is_some() => {}
                Ok(None) => return Err(AgentError::Closed),
                Err(e) => return Err(AgentError::Io(e)),
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> TcpWrite<W> {
    /// Sends bytes (an empty slice sends nothing: use [`TcpWrite::close`] to half-close).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), AgentError> {
        if data.is_empty() {
            return Ok(());
        }
        Ok(frames::write_frame(&mut self.wr, Kind::Data, data).await?)
    }

    /// Half-closes: the node's side reads the end of the stream; bytes still come back.
    pub async fn close(&mut self) -> Result<(), AgentError> {
        Ok(frames::write_frame(&mut self.wr, Kind::Data, &[]).await?)
    }
}

/// The `Connected` answer, or what else came.
pub(super) fn connected(e: Event) -> Result<(), AgentError> {
    match e {
        Event::Connected => Ok(()),
        e => Err(AgentError::Unexpected {
            op: "connect",
            event: format!("{e:?}"),
        }),
    }
}
