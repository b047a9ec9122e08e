//! A raw Connect client for the E2B end-to-end tests (#15): unary calls, server streams read
//! message by message, and client streams fed over time, in JSON or binary protobuf, with
//! the headers the official SDKs send. Built on `bulkhead_e2b`'s codec, so what it checks is
//! the wire (statuses, content types, envelopes, end-of-stream), not a client library.

#![allow(dead_code)]

pub mod process;

use std::time::Duration;

use bulkhead_e2b::connect::{self as wire, Codec, ConnectError, EnvelopeReader, Msg, Shape};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};

/// How to reach a sandbox's in-sandbox API: a connection maker, the path prefix, and the
/// headers every request carries (the sandbox id and access token on the E2B listener).
#[derive(Clone)]
pub struct Envd {
    pub connect: Conn,
    pub prefix: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Clone)]
pub enum Conn {
    Unix(std::path::PathBuf),
    Tcp(String),
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// A response's status, content type and body.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Envd {
    async fn send(&self, req: Request<Body>) -> Response<Incoming> {
        macro_rules! go {
            ($io:expr) => {{
                let io = hyper_util_io($io);
                let (mut s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                s.send_request(req).await.unwrap()
            }};
        }
        match &self.connect {
            Conn::Unix(p) => go!(tokio::net::UnixStream::connect(p).await.unwrap()),
            Conn::Tcp(a) => go!(tokio::net::TcpStream::connect(a.as_str()).await.unwrap()),
        }
    }

    fn request(&self, method: &str, ct: &str, extra: &[(&str, &str)], body: Body) -> Request<Body> {
        let mut r = Request::post(format!("{}/{method}", self.prefix))
            .header("host", "localhost")
            .header("content-type", ct)
            .header("connect-protocol-version", "1");
        for (k, v) in &self.headers {
            r = r.header(k.as_str(), v.as_str());
        }
        for (k, v) in extra {
            r = r.header(*k, *v);
        }
        r.body(body).unwrap()
    }

    /// Any request on the same connection target (the control plane): status, content type,
    /// body.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Raw {
        let mut r = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let b = Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed();
        let resp = self.send(r.body(b).unwrap()).await;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Raw {
            status,
            content_type,
            body,
        }
    }

    /// A unary call with a raw body; any status.
    pub async fn raw(&self, method: &str, ct: &str, extra: &[(&str, &str)], body: Vec<u8>) -> Raw {
        let b = Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed();
        let r = self.send(self.request(method, ct, extra, b)).await;
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
        Raw {
            status,
            content_type,
            body,
        }
    }

    /// A unary call: the response message, or the Connect error (checked to be well formed).
    pub async fn unary<Req: Msg, Resp: Msg>(
        &self,
        codec: Codec,
        method: &str,
        req: &Req,
        extra: &[(&str, &str)],
    ) -> Result<Resp, ConnectError> {
        let ct = wire::content_type(Shape::Unary, codec);
        let r = self.raw(method, ct, extra, wire::encode(codec, req)).await;
        if r.status == 200 {
            assert_eq!(r.content_type, ct, "{method}");
            return Ok(wire::decode(codec, &r.body).unwrap());
        }
        assert_eq!(r.content_type, "application/json", "{method}: {r:?}");
        let e = ConnectError::from_json(&r.body)
            .unwrap_or_else(|| panic!("{method}: not a Connect error: {r:?}"));
        assert_eq!(e.code.http_status(), r.status, "{method}: {e}");
        Err(e)
    }

    /// Opens a server stream with one request message.
    pub async fn stream<Req: Msg>(
        &self,
        codec: Codec,
        method: &str,
        req: &Req,
        extra: &[(&str, &str)],
    ) -> Stream {
        let ct = wire::content_type(Shape::Stream, codec);
        let b = Full::new(wire::message_frame(codec, req))
            .map_err(|e| match e {})
            .boxed();
        let r = self.send(self.request(method, ct, extra, b)).await;
        assert_eq!(r.status().as_u16(), 200, "{method}");
        assert_eq!(
            r.headers().get("content-type").unwrap().to_str().unwrap(),
            ct,
            "{method}"
        );
        Stream {
            codec,
            body: r.into_body(),
            reader: EnvelopeReader::new(),
            end: None,
        }
    }

    /// A client stream: each message sent after its pause; the one response message or the
    /// error the end-of-stream carries.
    pub async fn client_stream<Req: Msg + Send + 'static, Resp: Msg>(
        &self,
        codec: Codec,
        method: &str,
        msgs: Vec<(Duration, Req)>,
    ) -> Result<Resp, ConnectError> {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(8);
        tokio::spawn(async move {
            for (pause, m) in msgs {
                tokio::time::sleep(pause).await;
                if tx
                    .send(Ok(Frame::data(wire::message_frame(codec, &m))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
        let ct = wire::content_type(Shape::Stream, codec);
        let r = self.send(self.request(method, ct, &[], body)).await;
        assert_eq!(r.status().as_u16(), 200, "{method}");
        let mut s = Stream {
            codec,
            body: r.into_body(),
            reader: EnvelopeReader::new(),
            end: None,
        };
        let first = s.next::<Resp>().await;
        match first {
            Some(m) => {
                assert!(
                    s.next::<Resp>().await.is_none(),
                    "{method}: one message only"
                );
                s.end.clone().unwrap().map(|_| m)
            }
            None => Err(s.end.clone().unwrap().unwrap_err()),
        }
    }
}

fn hyper_util_io<T>(io: T) -> hyper_util::rt::TokioIo<T> {
    hyper_util::rt::TokioIo::new(io)
}

/// A server stream's response, read envelope by envelope.
pub struct Stream {
    codec: Codec,
    body: Incoming,
    reader: EnvelopeReader,
    /// How it ended, once it has: `Ok(())` or the end-of-stream's error.
    pub end: Option<Result<(), ConnectError>>,
}

impl Stream {
    /// The next message; `None` at the end (see [`Stream::end`]).
    pub async fn next<M: Msg>(&mut self) -> Option<M> {
        loop {
            if let Some(f) = self.reader.next_frame().unwrap() {
                if f.is_end() {
                    self.end = Some(match wire::parse_end_stream(&f.payload).unwrap() {
                        None => Ok(()),
                        Some(e) => Err(e),
                    });
                    return None;
                }
                assert!(self.end.is_none(), "a message after the end of the stream");
                return Some(wire::decode_frame(self.codec, &f).unwrap());
            }
            match self.body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        self.reader.push(&d);
                    }
                }
                Some(Err(e)) => panic!("the stream broke: {e}"),
                None => {
                    self.reader.finish().unwrap();
                    assert!(
                        self.end.is_some(),
                        "the stream ended without an end-of-stream"
                    );
                    return None;
                }
            }
        }
    }

    /// Every remaining message, and how the stream ended.
    pub async fn rest<M: Msg>(&mut self) -> (Vec<M>, Result<(), ConnectError>) {
        let mut v = Vec::new();
        while let Some(m) = self.next::<M>().await {
            v.push(m);
        }
        (v, self.end.clone().unwrap())
    }
}
