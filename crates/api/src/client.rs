//! A small HTTP/1.1 client for the bulkhead API over a UNIX socket, TCP or TLS over TCP
//! ([`Endpoint`]). The CLI and the end-to-end tests both use it, so the tests exercise exactly
//! what users run. [`Client::connect`] is the one way to the daemon, for requests and
//! WebSockets alike; it sends no token over plain HTTP unless the peer is loopback.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};

pub use crate::endpoint::Endpoint;
pub use crate::error::ClientError;
use crate::types::ErrorBody;

/// The connection to the daemon: a UNIX stream, a TCP stream or TLS over TCP.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type ReqBody = BoxBody<Bytes, std::io::Error>;

pub fn full_body(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
    /// The TLS configuration of an https endpoint, made on first use (it reads the roots).
    tls: Arc<Mutex<Option<Arc<rustls::ClientConfig>>>>,
}

/// Percent-encodes one query value.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Client {
            endpoint,
            tls: Arc::default(),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Opens a connection to the daemon: TLS done, and for plain HTTP with a token, the peer
    /// checked to be loopback.
    pub async fn connect(&self) -> Result<Box<dyn Io>, ClientError> {
        let tcp = |addr: &str| {
            let (url, addr) = (self.endpoint.url(), addr.to_string());
            async move {
                tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|source| ClientError::Connect {
                        endpoint: url,
                        source,
                    })
            }
        };
        match &self.endpoint {
            Endpoint::Unix(p) => {
                let s =
                    tokio::net::UnixStream::connect(p)
                        .await
                        .map_err(|e| ClientError::Connect {
                            endpoint: p.display().to_string(),
                            source: e,
                        })?;
                Ok(Box::new(s))
            }
            Endpoint::Tcp { addr, token } => {
                self.endpoint.check_plain_token()?;
                let s = tcp(addr).await?;
                let loopback = s.peer_addr().is_ok_and(|a| a.ip().is_loopback());
                if token.is_some() && !loopback {
                    return Err(self.endpoint.plain_token_refused());
                }
                Ok(Box::new(s))
            }
            Endpoint::Https {
                addr,
                server_name,
                ca,
                ..
            } => {
                let config = self.tls_config(ca.as_deref())?;
                let s = tcp(addr).await?;
                let url = self.endpoint.url();
                let s = crate::tls::handshake(s, config, server_name, &url, addr).await?;
                Ok(Box::new(s))
            }
        }
    }

    fn tls_config(
        &self,
        ca: Option<&std::path::Path>,
    ) -> Result<Arc<rustls::ClientConfig>, ClientError> {
        let mut slot = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = crate::tls::client_config(ca)?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// A failure below HTTP on a plain http:// endpoint, explained (often a TLS port).
    pub(crate) fn not_http(&self, e: hyper::Error) -> ClientError {
        match &self.endpoint {
            Endpoint::Tcp { addr, .. } if e.is_incomplete_message() || e.is_parse() => {
                ClientError::NotHttp {
                    url: self.endpoint.url(),
                    https: format!("https://{addr}"),
                    reason: e.to_string(),
                }
            }
            _ => ClientError::Http(e),
        }
    }

    /// Sends one request on a fresh connection and returns the raw response (any status).
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: ReqBody,
        content_type: Option<&str>,
    ) -> Result<Response<Incoming>, ClientError> {
        let mut req = Request::builder().method(method).uri(path_and_query);
        req = req.header("host", self.host());
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(t) = self.endpoint.token() {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        let conn_task = tokio::spawn(conn);
        let req = req
            .body(body)
            .map_err(|e| ClientError::Usage(format!("bad request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.not_http(e))?;
        drop(conn_task); // the connection task runs until the body is read
        Ok(resp)
    }

    /// The Host header: the address for TCP, `localhost` on a UNIX socket.
    pub(crate) fn host(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(_) | Endpoint::Tcp { .. } => "localhost".into(),
            Endpoint::Https { addr, .. } => addr.clone(),
        }
    }

    /// Sends a request and turns a non-2xx answer into [`ClientError::Api`].
    pub async fn send_ok(
        &self,
        method: Method,
        path_and_query: &str,
        body: ReqBody,
        content_type: Option<&str>,
    ) -> Result<Response<Incoming>, ClientError> {
        let resp = self
            .send(method, path_and_query, body, content_type)
            .await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
            error: String::from_utf8_lossy(&bytes).into_owned(),
            code: "unknown".into(),
        });
        Err(ClientError::Api { status, body })
    }

    pub async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, ClientError> {
        let (b, ct) = match body {
            Some(v) => (
                full_body(serde_json::to_vec(v).expect("json")),
                Some("application/json"),
            ),
            None => (full_body(Bytes::new()), None),
        };
        let resp = self.send_ok(method, path_and_query, b, ct).await?;
        let bytes = resp.into_body().collect().await?.to_bytes();
        serde_json::from_slice(&bytes)
            .map_err(|e| ClientError::Decode(format!("{e}: {}", String::from_utf8_lossy(&bytes))))
    }

    pub async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(Method::GET, path, None).await
    }

    pub async fn nodes(&self) -> Result<Vec<crate::Node>, ClientError> {
        self.get("/nodes").await
    }

    /// `GET /quota` (#12): each visible tenant's use against its quotas.
    pub async fn quota(&self) -> Result<crate::quota::QuotaReport, ClientError> {
        self.get("/quota").await
    }

    /// Finds a node by hostname, so commands that only know the hostname can build routes.
    pub async fn find_node(&self, hostname: &str) -> Result<crate::Node, ClientError> {
        self.nodes()
            .await?
            .into_iter()
            .find(|n| n.hostname == hostname)
            .ok_or_else(|| ClientError::Api {
                status: StatusCode::NOT_FOUND,
                body: ErrorBody {
                    error: format!(
                        "node {hostname:?} not found: `bulkhead vm list` shows the nodes"
                    ),
                    code: "not_found".into(),
                },
            })
    }
}
