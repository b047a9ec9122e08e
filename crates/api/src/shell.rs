//! The binary frames of Slicer's `shell` WebSocket (`GET /vm/{node}/shell`), as both of its
//! SDKs speak them (`shell/shell.go`, `shell.ts`): each WebSocket message is one frame, a
//! 1-byte type, a 4-byte big-endian payload length, then the payload.
//!
//! | type | direction | payload |
//! | --- | --- | --- |
//! | `0x01` data | both | terminal bytes |
//! | `0x02` window size | client → node | `cols` u32 BE, `rows` u32 BE |
//! | `0x03` shutdown | client → node | none: end the session |
//! | `0x04` heartbeat | client → node | none |
//! | `0x05` session close | node → client | bulkhead: the exit status, i32 BE (empty if unknown) |
//!
//! Pure data: the daemon and the CLI both use it.

/// Terminal bytes.
pub const DATA: u8 = 0x01;
/// A new terminal size.
pub const WINDOW_SIZE: u8 = 0x02;
/// The client ends the session.
pub const SHUTDOWN: u8 = 0x03;
/// Keeps idle proxies from closing the connection; ignored.
pub const HEARTBEAT: u8 = 0x04;
/// The shell has ended.
pub const SESSION_CLOSE: u8 = 0x05;

const HEADER: usize = 5;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Data(Vec<u8>),
    WindowSize {
        cols: u32,
        rows: u32,
    },
    Shutdown,
    Heartbeat,
    /// The exit status of the shell (its exit code, or 128 + the signal that killed it).
    SessionClose(Option<i32>),
    /// A type this version does not know: skipped.
    Unknown(u8),
}

/// Why a message is not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("shell frame shorter than its 5-byte header")]
    Short,
    #[error("shell frame says {said} payload bytes but carries {got}")]
    Length { said: usize, got: usize },
    #[error("window size frame needs 8 bytes (cols, rows as u32 big-endian), got {0}")]
    WindowSize(usize),
}

impl Frame {
    /// The frame as one WebSocket message.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Data(d) => (DATA, d.clone()),
            Frame::WindowSize { cols, rows } => {
                let mut p = cols.to_be_bytes().to_vec();
                p.extend_from_slice(&rows.to_be_bytes());
                (WINDOW_SIZE, p)
            }
            Frame::Shutdown => (SHUTDOWN, vec![]),
            Frame::Heartbeat => (HEARTBEAT, vec![]),
            Frame::SessionClose(code) => (
                SESSION_CLOSE,
                code.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default(),
            ),
            Frame::Unknown(k) => (*k, vec![]),
        };
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.push(kind);
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Parses one WebSocket message. Bytes after the payload are ignored, as the SDKs do.
    pub fn decode(msg: &[u8]) -> Result<Frame, FrameError> {
        if msg.len() < HEADER {
            return Err(FrameError::Short);
        }
        let said = u32::from_be_bytes([msg[1], msg[2], msg[3], msg[4]]) as usize;
        let body = &msg[HEADER..];
        if body.len() < said {
            return Err(FrameError::Length {
                said,
                got: body.len(),
            });
        }
        let p = &body[..said];
        Ok(match msg[0] {
            DATA => Frame::Data(p.to_vec()),
            WINDOW_SIZE => {
                if p.len() < 8 {
                    return Err(FrameError::WindowSize(p.len()));
                }
                Frame::WindowSize {
                    cols: u32::from_be_bytes([p[0], p[1], p[2], p[3]]),
                    rows: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                }
            }
            SHUTDOWN => Frame::Shutdown,
            HEARTBEAT => Frame::Heartbeat,
            SESSION_CLOSE => Frame::SessionClose(
                (p.len() >= 4).then(|| i32::from_be_bytes([p[0], p[1], p[2], p[3]])),
            ),
            k => Frame::Unknown(k),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_the_sdks_layout() {
        // encodeFrame(FRAME_TYPE_WINDOW_SIZE, [0,0,0,80, 0,0,0,24]) in shell.ts
        let ws = Frame::WindowSize { cols: 80, rows: 24 }.encode();
        assert_eq!(ws, [2, 0, 0, 0, 8, 0, 0, 0, 80, 0, 0, 0, 24]);
        assert_eq!(Frame::Shutdown.encode(), [3, 0, 0, 0, 0]);
        for f in [
            Frame::Data(b"ls\r".to_vec()),
            Frame::WindowSize { cols: 1, rows: 2 },
            Frame::Shutdown,
            Frame::Heartbeat,
            Frame::SessionClose(Some(3)),
            Frame::SessionClose(None),
        ] {
            assert_eq!(Frame::decode(&f.encode()).unwrap(), f);
        }
    }

    #[test]
    fn malformed_frames_are_named() {
        assert_eq!(Frame::decode(&[1, 0, 0]), Err(FrameError::Short));
        assert_eq!(
            Frame::decode(&[1, 0, 0, 0, 4, b'a']),
            Err(FrameError::Length { said: 4, got: 1 })
        );
        assert_eq!(
            Frame::decode(&[2, 0, 0, 0, 2, 0, 1]),
            Err(FrameError::WindowSize(2))
        );
        assert_eq!(Frame::decode(&[9, 0, 0, 0, 0]), Ok(Frame::Unknown(9)));
    }
}
