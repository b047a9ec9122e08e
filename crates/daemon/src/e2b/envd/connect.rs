//! Connect calls over axum (#15, C): the daemon side of `bulkhead_e2b::connect`, for every
//! Connect-RPC route of the in-sandbox API (`process.Process`, `filesystem.Filesystem`).
//! Handlers take the request's headers and body, and get back an axum [`Response`] that is
//! always shaped as Connect wants it: a unary error is its status with a JSON
//! `{"code", "message"}` body; a stream is 200 with enveloped messages and one end-of-stream
//! envelope, carrying the error if it failed.
//!
//! Invariants: bodies are read with a size bound ([`MAX_MESSAGE`]) and, for a unary call and
//! a server stream's one request message, within `config.api.header_timeout`; a unary
//! handler runs at most the call's `Connect-Timeout-Ms` (then `deadline_exceeded`); domain
//! errors map to Connect codes in one place ([`from_domain`]); nothing here panics on input.

use std::future::Future;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bulkhead_core::{Code as DCode, DomainError};
use bulkhead_e2b::connect::{
    self as wire, Call, Code, ConnectError, EnvelopeReader, Msg, Rejection, Reply, Shape,
    MAX_MESSAGE,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::app::App;

/// The Connect code of a domain error: by the HTTP status the daemon gives it, with the
/// codes whose meaning Connect names more precisely.
pub fn from_domain(e: DomainError) -> ConnectError {
    let code = match e.code {
        DCode::AlreadyExists => Code::AlreadyExists,
        DCode::NodeNotReady
        | DCode::NodeDeleting
        | DCode::NodeNotRunning
        | DCode::NodeRunning
        | DCode::ExecRunning
        | DCode::ExecGone => Code::FailedPrecondition,
        DCode::PolicyDenied | DCode::Forbidden | DCode::PermissionDenied => Code::PermissionDenied,
        DCode::Unsupported => Code::Unimplemented,
        _ => match crate::error::status(e.code).as_u16() {
            400 | 405 | 413 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 | 410 => Code::NotFound,
            408 | 504 => Code::DeadlineExceeded,
            409 => Code::Aborted,
            429 | 507 => Code::ResourceExhausted,
            501 => Code::Unimplemented,
            502 | 503 => Code::Unavailable,
            _ => Code::Internal,
        },
    };
    ConnectError::new(code, e.message)
}

/// A header's value as text, by lowercase name.
fn header_of<'a>(h: &'a HeaderMap) -> impl Fn(&str) -> Option<&'a str> + 'a {
    move |name: &str| h.get(name).and_then(|v| v.to_str().ok())
}

/// A unary reply as an HTTP response.
pub fn reply(r: Reply) -> Response {
    let mut resp = (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
        r.body,
    )
        .into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(r.content_type),
    );
    resp
}

/// A unary error response.
pub fn error(e: ConnectError) -> Response {
    reply(e.reply())
}

/// A request turned away before any message was read.
pub fn rejected(r: Rejection) -> Response {
    match r {
        Rejection::UnsupportedMediaType { accept } => {
            let mut resp = StatusCode::UNSUPPORTED_MEDIA_TYPE.into_response();
            resp.headers_mut()
                .insert("accept-post", HeaderValue::from_static(accept));
            resp
        }
        Rejection::Error(e) => error(e),
    }
}

/// Reads a whole (small) body: at most [`MAX_MESSAGE`] bytes, within the tenant's
/// `config.api.header_timeout`.
pub async fn read_body(app: &App, body: Body) -> Result<Bytes, ConnectError> {
    use http_body_util::BodyExt;
    let limit = app.tenant.cfg.conns.header_timeout;
    let read = http_body_util::Limited::new(body, MAX_MESSAGE + 5).collect();
    match tokio::time::timeout(limit, read).await {
        Err(_) => Err(ConnectError::new(
            Code::DeadlineExceeded,
            format!("the request body did not arrive within {limit:?} (config.api.header_timeout)"),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ConnectError::invalid_argument(format!(
                "request body is larger than the limit of {MAX_MESSAGE} bytes"
            )))
        }
        Ok(Err(e)) => Err(ConnectError::invalid_argument(format!(
            "cannot read the request body: {e}"
        ))),
        Ok(Ok(b)) => Ok(b.to_bytes()),
    }
}

/// Serves one unary call: headers checked, body decoded, `f` run within the call's deadline,
/// its result encoded in the request's codec.
pub async fn unary<Req, Resp, F, Fut>(app: &App, headers: &HeaderMap, body: Body, f: F) -> Response
where
    Req: Msg,
    Resp: Msg,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, ConnectError>>,
{
    let call = match Call::from_headers(Shape::Unary, header_of(headers)) {
        Ok(c) => c,
        Err(r) => return rejected(r),
    };
    let req = match read_body(app, body).await {
        Ok(b) => wire::decode::<Req>(call.codec, &b),
        Err(e) => Err(e),
    };
    let result = match req {
        Err(e) => Err(e),
        Ok(req) => match call.timeout {
            None => f(req).await,
            Some(t) => match tokio::time::timeout(t, f(req)).await {
                Ok(r) => r,
                Err(_) => Err(deadline(t)),
            },
        },
    };
    reply(wire::unary_reply(call.codec, result))
}

/// The error of a call whose `Connect-Timeout-Ms` passed.
pub fn deadline(t: std::time::Duration) -> ConnectError {
    ConnectError::new(
        Code::DeadlineExceeded,
        format!("the call's deadline ({} ms) passed", t.as_millis()),
    )
}

/// The header check and the one request message of a server stream; `Err` is the response
/// to send instead (a 415, or a stream that ends at once with the error).
#[allow(clippy::result_large_err)] // the response handlers return at once; never stored
pub async fn stream_request<Req: Msg>(
    app: &App,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Call, Req), Response> {
    let call = Call::from_headers(Shape::Stream, header_of(headers)).map_err(rejected)?;
    let one = async {
        let b = read_body(app, body).await?;
        let mut r = EnvelopeReader::new();
        r.push(&b);
        let frame = r
            .next_frame()?
            .ok_or_else(|| ConnectError::invalid_argument("the request stream holds no message"))?;
        if r.next_frame()?.is_some() {
            return Err(ConnectError::invalid_argument(
                "a server stream takes exactly one request message",
            ));
        }
        r.finish()?;
        wire::decode_frame::<Req>(call.codec, &frame)
    };
    match one.await {
        Ok(req) => Ok((call, req)),
        Err(e) => Err(failed_stream(call, e)),
    }
}

/// A stream response that ends at once with `e`.
pub fn failed_stream(call: Call, e: ConnectError) -> Response {
    stream_response(call, Body::from(wire::end_stream(Some(&e))))
}

fn stream_response(call: Call, body: Body) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(wire::content_type(Shape::Stream, call.codec)),
    );
    resp
}

/// The sending side of a response stream: messages in envelopes, then the end.
pub struct ServerStream {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    call: Call,
}

impl ServerStream {
    /// A stream and the response that carries it (send the response, then feed the stream
    /// from a task).
    pub fn open(call: Call) -> (ServerStream, Response) {
        let (tx, rx) = mpsc::channel(64);
        let resp = stream_response(call, Body::from_stream(ReceiverStream::new(rx)));
        (ServerStream { tx, call }, resp)
    }

    pub fn call(&self) -> Call {
        self.call
    }

    /// Sends one message; false once the client has gone.
    pub async fn send<M: Msg>(&self, m: &M) -> bool {
        self.tx
            .send(Ok(wire::message_frame(self.call.codec, m)))
            .await
            .is_ok()
    }

    /// Ends the stream, with an error or cleanly.
    pub async fn end(self, e: Option<ConnectError>) {
        let _ = self.tx.send(Ok(wire::end_stream(e.as_ref()))).await;
    }

    /// Resolves when the client has gone.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// The receiving side of a client stream: the request body's envelopes, decoded one by one.
pub struct ClientStream {
    call: Call,
    data: axum::body::BodyDataStream,
    reader: EnvelopeReader,
    done: bool,
}

impl ClientStream {
    /// Checks the headers of a client-streaming call; `Err` is the response to send instead.
    #[allow(clippy::result_large_err)] // the response handlers return at once; never stored
    pub fn open(headers: &HeaderMap, body: Body) -> Result<ClientStream, Response> {
        let call = Call::from_headers(Shape::Stream, header_of(headers)).map_err(rejected)?;
        Ok(ClientStream {
            call,
            data: body.into_data_stream(),
            reader: EnvelopeReader::new(),
            done: false,
        })
    }

    pub fn call(&self) -> Call {
        self.call
    }

    /// The next message; `Ok(None)` once the client closed its stream on an envelope
    /// boundary.
    pub async fn next<M: Msg>(&mut self) -> Result<Option<M>, ConnectError> {
        loop {
            if let Some(f) = self.reader.next_frame()? {
                return wire::decode_frame::<M>(self.call.codec, &f).map(Some);
            }
            if self.done {
                self.reader.finish()?;
                return Ok(None);
            }
            match self.data.next().await {
                Some(Ok(chunk)) => self.reader.push(&chunk),
                Some(Err(e)) => {
                    return Err(ConnectError::new(
                        Code::Canceled,
                        format!("the request stream broke: {e}"),
                    ))
                }
                None => self.done = true,
            }
        }
    }

    /// The response of a client stream: its one message and a clean end, or the error.
    pub fn respond<M: Msg>(call: Call, result: Result<M, ConnectError>) -> Response {
        let body = match result {
            Ok(m) => {
                let mut b = wire::message_frame(call.codec, &m).to_vec();
                b.extend_from_slice(&wire::end_stream(None));
                b
            }
            Err(e) => wire::end_stream(Some(&e)).to_vec(),
        };
        stream_response(call, Body::from(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_map_to_connect_codes() {
        let cases = [
            (DomainError::not_found("x"), Code::NotFound),
            (DomainError::invalid("x"), Code::InvalidArgument),
            (
                DomainError::new(DCode::PolicyDenied, "x"),
                Code::PermissionDenied,
            ),
            (
                DomainError::new(DCode::AlreadyExists, "x"),
                Code::AlreadyExists,
            ),
            (DomainError::new(DCode::PathNotFound, "x"), Code::NotFound),
            (
                DomainError::new(DCode::TooManyExecs, "x"),
                Code::ResourceExhausted,
            ),
            (
                DomainError::new(DCode::RateLimited, "x"),
                Code::ResourceExhausted,
            ),
            (
                DomainError::new(DCode::NodeNotRunning, "x"),
                Code::FailedPrecondition,
            ),
            (DomainError::new(DCode::AgentLost, "x"), Code::Unavailable),
            (
                DomainError::new(DCode::Unauthorized, "x"),
                Code::Unauthenticated,
            ),
            (DomainError::internal("x"), Code::Internal),
        ];
        for (e, want) in cases {
            let code = e.code;
            assert_eq!(from_domain(e).code, want, "{code:?}");
        }
    }
}
