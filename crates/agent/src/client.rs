//! Host side of the agent protocol over tokio streams.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proto::{Event, Kind, Request, MAX_FRAME};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the node's agent: {0}")]
    Connect(#[source] std::io::Error),
    #[error("agent connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("agent sent a malformed frame: {0}")]
    Protocol(String),
    #[error("{message}")]
    Remote { code: String, message: String },
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    kind: Kind,
    payload: &[u8],
) -> std::io::Result<()> {
    for chunk in payload
        .chunks(MAX_FRAME)
        .chain(payload.is_empty().then_some(&[][..]))
    {
        let mut head = [0u8; 5];
        head[..4].copy_from_slice(&((chunk.len() + 1) as u32).to_be_bytes());
        head[4] = kind as u8;
        w.write_all(&head).await?;
        w.write_all(chunk).await?;
    }
    w.flush().await
}

pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<(Kind, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..]).await?;
    let (len, kind) = crate::proto::decode_head(&head)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(Some((kind, payload)))
}

pub async fn send_request<W: AsyncWrite + Unpin>(w: &mut W, req: &Request) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    write_frame(w, Kind::Request, &bytes).await
}

pub fn parse_event(payload: &[u8]) -> Result<Event, AgentError> {
    serde_json::from_slice(payload).map_err(|e| AgentError::Protocol(e.to_string()))
}

/// Reads the next frame and requires it to be an event; an `Error` event becomes `Remote`.
pub async fn expect_event<R: AsyncRead + Unpin>(r: &mut R) -> Result<Event, AgentError> {
    match read_frame(r).await? {
        Some((Kind::Event, p)) => match parse_event(&p)? {
            Event::Error { message, code } => Err(AgentError::Remote { code, message }),
            e => Ok(e),
        },
        Some((k, _)) => Err(AgentError::Protocol(format!(
            "expected an event, got {k:?}"
        ))),
        None => Err(AgentError::Protocol("agent closed the connection".into())),
    }
}

/// Connects to an agent socket and checks that it answers.
pub async fn ping(path: &std::path::Path) -> Result<u64, AgentError> {
    let mut s = tokio::net::UnixStream::connect(path)
        .await
        .map_err(AgentError::Connect)?;
    send_request(&mut s, &Request::Ping).await?;
    match expect_event(&mut s).await? {
        Event::Pong { uptime_ms } => Ok(uptime_ms),
        e => Err(AgentError::Protocol(format!("expected pong, got {e:?}"))),
    }
}
