//! Frame-level helpers the daemon used before [`super::AgentConn`]; kept only until its
//! routes move onto the typed client.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::AgentError;
use crate::proto::{Event, Kind, Request};

pub use super::frames::write_frame;

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
    Ok(Some((kind?, payload)))
}

pub async fn send_request<W: AsyncWrite + Unpin>(w: &mut W, req: &Request) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(req).map_err(std::io::Error::other)?;
    write_frame(w, Kind::Request, &bytes).await
}

pub fn parse_event(payload: &[u8]) -> Result<Event, AgentError> {
    serde_json::from_slice(payload).map_err(|e| AgentError::Protocol(e.to_string()))
}

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
