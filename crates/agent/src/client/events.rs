//! Reading the agent's events off a connection: an `error` event becomes
//! [`AgentError::Remote`], an event of a kind this client does not know (from a newer agent) is
//! skipped, and a known event that does not parse is a protocol error.

use tokio::io::AsyncRead;

use super::error::AgentError;
use super::frames::FrameReader;
use crate::proto::{Event, Kind};

/// Reads the next event; an `Error` event becomes [`AgentError::Remote`]. `Ok(None)` for an
/// event of a kind this client does not know.
pub(super) async fn read_event<R: AsyncRead + Unpin>(
    r: &mut FrameReader<R>,
) -> Result<Option<Event>, AgentError> {
    match r.next().await? {
        Some((Kind::Event, p)) => event_of(&p),
        Some((k, _)) => Err(AgentError::Protocol(format!(
            "expected an event, got a {k:?} frame"
        ))),
        None => Err(AgentError::Closed),
    }
}

/// The event in `payload`; `Ok(None)` when its name is one this client does not know.
pub(super) fn event_of(payload: &[u8]) -> Result<Option<Event>, AgentError> {
    match serde_json::from_slice::<Event>(payload) {
        Ok(Event::Error { message, code }) => Err(AgentError::Remote { code, message }),
        Ok(e) => Ok(Some(e)),
        Err(e) => {
            const KNOWN: [&str; 10] = [
                "pong",
                "started",
                "exit",
                "file",
                "done",
                "error",
                "stat",
                "entries",
                "fs_event",
                "connected",
            ];
            let name = serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .and_then(|v| v.get("event")?.as_str().map(str::to_string));
            match name {
                Some(n) if !KNOWN.contains(&n.as_str()) => Ok(None),
                _ => Err(AgentError::Protocol(e.to_string())),
            }
        }
    }
}

/// The first event that means something to this client.
pub(super) async fn next_known_event<R: AsyncRead + Unpin>(
    r: &mut FrameReader<R>,
) -> Result<Event, AgentError> {
    loop {
        if let Some(e) = read_event(r).await? {
            return Ok(e);
        }
    }
}
