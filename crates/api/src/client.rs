//! A small HTTP/1.1 client for the bulkhead API over a UNIX socket or TCP. The CLI and the
//! end-to-end tests both use it, so the tests exercise exactly what users run.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;

use crate::types::ErrorBody;

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: String, token: Option<String> },
}

impl Endpoint {
    /// Parses `unix:///path`, a bare absolute path, or `http://host:port`.
    pub fn parse(s: &str, token: Option<String>) -> Result<Self, ClientError> {
        if let Some(p) = s.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        if let Some(a) = s.strip_prefix("http://") {
            return Ok(Endpoint::Tcp {
                addr: a.trim_end_matches('/').to_string(),
                token,
            });
        }
        Err(ClientError::Usage(format!(
            "cannot use endpoint {s:?}: give a socket path, unix:///path or http://host:port"
        )))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to the bulkhead daemon at {endpoint}: {source} (is `bulkhead up` running, and is this the right --socket or --url?)")]
    Connect {
        endpoint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("the daemon answered {status}: {body}")]
    Api { status: StatusCode, body: ErrorBody },
    #[error("unexpected response: {0}")]
    Decode(String),
}

impl ClientError {
    /// The API error code, when the daemon answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.error, self.code)
    }
}

pub type ReqBody = BoxBody<Bytes, std::io::Error>;

pub fn full_body(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
}

/// Percent-encodes one query value.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Client { endpoint }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
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
        req = req.header("host", "localhost");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let (sender, conn_task) = match &self.endpoint {
            Endpoint::Unix(p) => {
                let s =
                    tokio::net::UnixStream::connect(p)
                        .await
                        .map_err(|e| ClientError::Connect {
                            endpoint: p.display().to_string(),
                            source: e,
                        })?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
                (sender, tokio::spawn(conn))
            }
            Endpoint::Tcp { addr, token } => {
                if let Some(t) = token {
                    req = req.header("authorization", format!("Bearer {t}"));
                }
                let s = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(|e| ClientError::Connect {
                        endpoint: addr.clone(),
                        source: e,
                    })?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
                (sender, tokio::spawn(conn))
            }
        };
        let mut sender = sender;
        let req = req
            .body(body)
            .map_err(|e| ClientError::Usage(format!("bad request: {e}")))?;
        let resp = sender.send_request(req).await?;
        drop(conn_task); // the connection task runs until the body is read
        Ok(resp)
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
