//! The client's errors ([`ClientError`]): its own, the daemon's `{"error","code"}` answers,
//! and TLS's. Apart from the client so that the endpoint parser can use them too.

use hyper::StatusCode;

use crate::tls::TlsError;
use crate::types::ErrorBody;

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
    #[error("refusing to send the bearer token over plain HTTP to {url}: it is not a loopback address (the daemon allows plain TCP on loopback only); use {https}")]
    PlainToken { url: String, https: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("{url} did not answer HTTP ({reason}): if the daemon's TCP listener has api.tcp.tls, use {https}")]
    NotHttp {
        url: String,
        https: String,
        reason: String,
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
