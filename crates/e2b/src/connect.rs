//! The Connect protocol (version 1) as E2B's SDKs speak it to envd, server side, without HTTP
//! types: the caller passes header values as strings and bodies as bytes, and turns a
//! [`Reply`] (status, content type, body) or stream frames back into its HTTP response.
//!
//! - Unary calls: `application/json` or `application/proto` bodies; a success is 200 with the
//!   response message in the same codec; a failure is the error's HTTP status with a JSON body
//!   `{"code": "not_found", "message": "…"}` ([`ConnectError::to_json`]).
//! - Streams (server, client and bidi shapes all use it): `application/connect+json` or
//!   `application/connect+proto`, each message in a 5-byte envelope (flags, big-endian u32
//!   length) and the response ended by one envelope with [`FLAG_END_STREAM`] whose payload is
//!   always JSON: `{}` or `{"error": {"code", "message"}}`. A stream's HTTP status is 200 even
//!   when it ends in an error.
//! - Headers: `Connect-Protocol-Version` (absent or `1`), `Connect-Timeout-Ms` (the call's
//!   deadline), `Keepalive-Ping-Interval` (envd's own: seconds between keepalive events on a
//!   server stream), `Content-Encoding`/`Connect-Content-Encoding` (only `identity`: the SDKs
//!   never compress).
//!
//! Invariants: nothing here panics on input; every malformed request (bad header, bad JSON,
//! bad protobuf, torn or oversized envelope, compressed frame) is a [`ConnectError`] with code
//! `invalid_argument` naming the problem, except a content type this server does not speak,
//! which is [`Rejection::UnsupportedMediaType`] (HTTP 415, as the protocol says).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;
use std::time::Duration;

/// Header naming the protocol version; Connect clients send `1`.
pub const PROTOCOL_VERSION_HEADER: &str = "connect-protocol-version";
/// Header carrying the call's deadline in milliseconds.
pub const TIMEOUT_HEADER: &str = "connect-timeout-ms";
/// envd's header: seconds between keepalive events on a server stream.
pub const KEEPALIVE_HEADER: &str = "keepalive-ping-interval";
/// A unary call's body encoding.
pub const CONTENT_ENCODING_HEADER: &str = "content-encoding";
/// A stream's per-message encoding.
pub const STREAM_ENCODING_HEADER: &str = "connect-content-encoding";

/// Envelope flag: the payload is compressed (never negotiated here, so refused).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: the last envelope of a response stream, a JSON end-of-stream message.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Largest message (unary body or one envelope's payload) accepted: 16 MiB.
pub const MAX_MESSAGE: usize = 16 << 20;
/// Shortest keepalive interval honoured, so a client cannot make a stream spin.
pub const MIN_KEEPALIVE: Duration = Duration::from_secs(1);

/// Connect's error codes (the gRPC codes, spelled in snake case on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

const CODES: [(Code, &str, u16); 16] = [
    (Code::Canceled, "canceled", 499),
    (Code::Unknown, "unknown", 500),
    (Code::InvalidArgument, "invalid_argument", 400),
    (Code::DeadlineExceeded, "deadline_exceeded", 504),
    (Code::NotFound, "not_found", 404),
    (Code::AlreadyExists, "already_exists", 409),
    (Code::PermissionDenied, "permission_denied", 403),
    (Code::ResourceExhausted, "resource_exhausted", 429),
    (Code::FailedPrecondition, "failed_precondition", 400),
    (Code::Aborted, "aborted", 409),
    (Code::OutOfRange, "out_of_range", 400),
    (Code::Unimplemented, "unimplemented", 501),
    (Code::Internal, "internal", 500),
    (Code::Unavailable, "unavailable", 503),
    (Code::DataLoss, "data_loss", 500),
    (Code::Unauthenticated, "unauthenticated", 401),
];

impl Code {
    /// The wire name (`not_found`).
    pub fn as_str(self) -> &'static str {
        CODES
            .iter()
            .find(|c| c.0 == self)
            .map_or("unknown", |c| c.1)
    }

    /// The HTTP status of a unary error response with this code (Connect's table).
    pub fn http_status(self) -> u16 {
        CODES.iter().find(|c| c.0 == self).map_or(500, |c| c.2)
    }

    /// The code a wire name names, if any.
    pub fn parse(name: &str) -> Option<Code> {
        CODES.iter().find(|c| c.1 == name).map(|c| c.0)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Connect error: a code and a message for the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct WireError {
    code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    message: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct WireEnd {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<WireError>,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> ConnectError {
        ConnectError {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> ConnectError {
        ConnectError::new(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> ConnectError {
        ConnectError::new(Code::NotFound, message)
    }

    fn wire(&self) -> WireError {
        WireError {
            code: self.code.as_str().to_string(),
            message: self.message.clone(),
        }
    }

    /// The JSON body of a unary error response: `{"code": "…", "message": "…"}`.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&self.wire()).unwrap_or_default()
    }

    /// Reads a unary error body (for clients and tests); `None` when it is not one.
    pub fn from_json(body: &[u8]) -> Option<ConnectError> {
        let w: WireError = serde_json::from_slice(body).ok()?;
        Some(ConnectError::new(Code::parse(&w.code)?, w.message))
    }

    /// The unary error response for this error.
    pub fn reply(&self) -> Reply {
        Reply {
            status: self.code.http_status(),
            content_type: "application/json",
            body: self.to_json(),
        }
    }
}

/// How messages are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    Json,
    Proto,
}

/// Whether a call's bodies are bare messages (unary) or enveloped (streams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Unary,
    Stream,
}

/// The content type of a request or response of this shape and codec.
pub fn content_type(shape: Shape, codec: Codec) -> &'static str {
    match (shape, codec) {
        (Shape::Unary, Codec::Json) => "application/json",
        (Shape::Unary, Codec::Proto) => "application/proto",
        (Shape::Stream, Codec::Json) => "application/connect+json",
        (Shape::Stream, Codec::Proto) => "application/connect+proto",
    }
}

/// The shape and codec a content type names (parameters such as `charset` are ignored).
pub fn parse_content_type(value: &str) -> Option<(Shape, Codec)> {
    let media = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" => Some((Shape::Unary, Codec::Json)),
        "application/proto" => Some((Shape::Unary, Codec::Proto)),
        "application/connect+json" => Some((Shape::Stream, Codec::Json)),
        "application/connect+proto" => Some((Shape::Stream, Codec::Proto)),
        _ => None,
    }
}

/// Why a request was turned away before any message was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// HTTP 415 with an `Accept-Post` header listing `accept`.
    UnsupportedMediaType { accept: &'static str },
    /// A Connect error (unary shape: status and JSON body; streams: the same, as nothing was
    /// streamed yet).
    Error(ConnectError),
}

impl From<ConnectError> for Rejection {
    fn from(e: ConnectError) -> Rejection {
        Rejection::Error(e)
    }
}

/// What a request's headers say about the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub codec: Codec,
    /// The deadline the client set (`Connect-Timeout-Ms`), if any.
    pub timeout: Option<Duration>,
    /// The keepalive interval the client asked for (`Keepalive-Ping-Interval`), at least
    /// [`MIN_KEEPALIVE`].
    pub keepalive: Option<Duration>,
}

impl Call {
    /// Checks a request's headers for a method of `shape`; `header` returns a header's value
    /// by lowercase name (`None` when absent or not text).
    pub fn from_headers<'a>(
        shape: Shape,
        header: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Call, Rejection> {
        let accept = match shape {
            Shape::Unary => "application/json, application/proto",
            Shape::Stream => "application/connect+json, application/connect+proto",
        };
        let codec = match header("content-type").and_then(parse_content_type) {
            Some((s, codec)) if s == shape => codec,
            _ => return Err(Rejection::UnsupportedMediaType { accept }),
        };
        if let Some(v) = header(PROTOCOL_VERSION_HEADER) {
            if v.trim() != "1" {
                return Err(ConnectError::invalid_argument(format!(
                    "connect-protocol-version must be 1, not {v:?}"
                ))
                .into());
            }
        }
        let encoding = match shape {
            Shape::Unary => CONTENT_ENCODING_HEADER,
            Shape::Stream => STREAM_ENCODING_HEADER,
        };
        if let Some(v) = header(encoding) {
            if !v.trim().eq_ignore_ascii_case("identity") {
                return Err(ConnectError::new(
                    Code::Unimplemented,
                    format!("{encoding} {v:?} is not supported: send messages uncompressed"),
                )
                .into());
            }
        }
        Ok(Call {
            codec,
            timeout: header(TIMEOUT_HEADER).map(parse_timeout).transpose()?,
            keepalive: header(KEEPALIVE_HEADER).map(parse_keepalive).transpose()?,
        })
    }
}

/// `Connect-Timeout-Ms`: a positive integer of at most 10 digits.
pub fn parse_timeout(v: &str) -> Result<Duration, ConnectError> {
    let v = v.trim();
    match v.parse::<u64>() {
        Ok(ms) if ms > 0 && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Duration::from_millis(ms))
        }
        _ => Err(ConnectError::invalid_argument(format!(
            "connect-timeout-ms must be a positive integer of at most 10 digits, not {v:?}"
        ))),
    }
}

/// `Keepalive-Ping-Interval`: whole seconds, raised to [`MIN_KEEPALIVE`].
pub fn parse_keepalive(v: &str) -> Result<Duration, ConnectError> {
    let v = v.trim();
    match v.parse::<u32>() {
        Ok(s) => Ok(Duration::from_secs(u64::from(s)).max(MIN_KEEPALIVE)),
        Err(_) => Err(ConnectError::invalid_argument(format!(
            "keepalive-ping-interval must be a number of seconds, not {v:?}"
        ))),
    }
}

/// A message this codec carries: a prost message with its proto3 JSON mapping.
pub trait Msg:
    prost::Message + prost::Name + Default + serde::Serialize + serde::de::DeserializeOwned
{
}

impl<T> Msg for T where
    T: prost::Message + prost::Name + Default + serde::Serialize + serde::de::DeserializeOwned
{
}

/// Decodes one message. An empty body is the empty message in either codec.
pub fn decode<M: Msg>(codec: Codec, bytes: &[u8]) -> Result<M, ConnectError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(too_large(bytes.len()));
    }
    match codec {
        Codec::Proto => M::decode(bytes).map_err(|e| {
            ConnectError::invalid_argument(format!("invalid protobuf for {}: {e}", M::full_name()))
        }),
        Codec::Json if bytes.iter().all(u8::is_ascii_whitespace) => Ok(M::default()),
        Codec::Json => serde_json::from_slice(bytes).map_err(|e| {
            ConnectError::invalid_argument(format!("invalid JSON for {}: {e}", M::full_name()))
        }),
    }
}

/// Encodes one message.
pub fn encode<M: Msg>(codec: Codec, msg: &M) -> Vec<u8> {
    match codec {
        Codec::Proto => msg.encode_to_vec(),
        // pbjson's serializers only fail on a writer error, and a Vec never fails.
        Codec::Json => serde_json::to_vec(msg).unwrap_or_default(),
    }
}

/// A unary response: the caller sends `status`, `Content-Type: content_type` and `body`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// The unary response for a handler's result.
pub fn unary_reply<M: Msg>(codec: Codec, result: Result<M, ConnectError>) -> Reply {
    match result {
        Ok(msg) => Reply {
            status: 200,
            content_type: content_type(Shape::Unary, codec),
            body: encode(codec, &msg),
        },
        Err(e) => e.reply(),
    }
}

fn too_large(len: usize) -> ConnectError {
    ConnectError::invalid_argument(format!(
        "message of {len} bytes is over the limit of {MAX_MESSAGE} bytes"
    ))
}

/// One envelope: flags, a big-endian u32 length, the payload.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flags);
    // A payload over 4 GiB cannot be framed; messages are far below MAX_MESSAGE's 16 MiB.
    b.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    b.put_slice(payload);
    b.freeze()
}

/// One stream message in its envelope.
pub fn message_frame<M: Msg>(codec: Codec, msg: &M) -> Bytes {
    envelope(0, &encode(codec, msg))
}

/// The end-of-stream envelope: `{}` or `{"error": {"code", "message"}}`, JSON in both codecs.
pub fn end_stream(error: Option<&ConnectError>) -> Bytes {
    let end = WireEnd {
        error: error.map(ConnectError::wire),
    };
    envelope(
        FLAG_END_STREAM,
        &serde_json::to_vec(&end).unwrap_or_default(),
    )
}

/// Reads an end-of-stream payload (for clients and tests): `Ok(None)` for a clean end,
/// `Ok(Some(e))` for an error end.
pub fn parse_end_stream(payload: &[u8]) -> Result<Option<ConnectError>, ConnectError> {
    let end: WireEnd = serde_json::from_slice(payload)
        .map_err(|e| ConnectError::invalid_argument(format!("invalid end-of-stream: {e}")))?;
    match end.error {
        None => Ok(None),
        Some(w) => Ok(Some(ConnectError::new(
            Code::parse(&w.code).unwrap_or(Code::Unknown),
            w.message,
        ))),
    }
}

/// One envelope read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub flags: u8,
    pub payload: Bytes,
}

impl Frame {
    pub fn is_end(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }
}

/// Splits a byte stream (arriving in chunks of any size) into envelopes.
#[derive(Debug, Default)]
pub struct EnvelopeReader {
    buf: BytesMut,
}

impl EnvelopeReader {
    pub fn new() -> EnvelopeReader {
        EnvelopeReader::default()
    }

    /// Adds bytes as they arrive.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole envelope, `Ok(None)` until one has arrived. A compressed envelope or
    /// one longer than [`MAX_MESSAGE`] is an error (the stream cannot continue after it).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ConnectError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if flags & FLAG_COMPRESSED != 0 {
            return Err(ConnectError::invalid_argument(
                "compressed message but no encoding was negotiated: send messages uncompressed",
            ));
        }
        if flags & !(FLAG_COMPRESSED | FLAG_END_STREAM) != 0 {
            return Err(ConnectError::invalid_argument(format!(
                "unknown envelope flags {flags:#04x}"
            )));
        }
        if len > MAX_MESSAGE {
            return Err(too_large(len));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Frame { flags, payload }))
    }

    /// Checks the stream ended on an envelope boundary (call when the body is done).
    pub fn finish(&self) -> Result<(), ConnectError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ConnectError::invalid_argument(format!(
                "stream ended inside an envelope ({} bytes left over)",
                self.buf.len()
            )))
        }
    }
}

/// Decodes a request stream's message envelope; an end-of-stream envelope from a client is
/// refused (clients end their stream by closing the body).
pub fn decode_frame<M: Msg>(codec: Codec, frame: &Frame) -> Result<M, ConnectError> {
    if frame.is_end() {
        return Err(ConnectError::invalid_argument(
            "a request stream ends by closing the body, not with an end-of-stream envelope",
        ));
    }
    decode(codec, &frame.payload)
}
