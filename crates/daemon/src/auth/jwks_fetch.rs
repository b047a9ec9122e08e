//! One GET of a `jwks_url`: https with the system's root certificates (rustls, ring), or plain
//! http to a loopback host only; no redirects, no cookies, no proxy; the whole exchange
//! (resolve, connect, TLS, request, body) bounded by a timeout and the body by a size the
//! caller gives. Runs only in the key set's refresher task (`jwks.rs`), never on a request.

use http_body_util::{BodyExt, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;
use std::time::Duration;

pub struct Fetcher {
    uri: Uri,
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    max_body: usize,
}

impl Fetcher {
    /// Checks the URL (https, or http to loopback) and loads the system roots for https.
    pub fn new(url: &str, timeout: Duration, max_body: usize) -> Result<Fetcher, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let host = uri
            .host()
            .ok_or_else(|| format!("{url:?} has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if bulkhead_core::config::auth::is_loopback(&host) => false,
            _ => return Err(format!("{url:?}: use https (http only to a loopback host)")),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            Some(crate::outbound::https_connector()?)
        } else {
            None
        };
        Ok(Fetcher {
            uri,
            host,
            port,
            tls,
            timeout,
            max_body,
        })
    }

    /// The document's bytes, or why not (the message names what failed, never a secret).
    pub async fn get(&self) -> Result<Vec<u8>, String> {
        match tokio::time::timeout(self.timeout, self.exchange()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn exchange(&self) -> Result<Vec<u8>, String> {
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connecting to {}:{}: {e}", self.host, self.port))?;
        let path = self.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let authority = self
            .uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or(&self.host);
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::USER_AGENT, "bulkhead")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let resp = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("{:?} is not a TLS server name: {e}", self.host))?;
                let s = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.host))?;
                crate::outbound::send(TokioIo::new(s), req).await?
            }
            None => crate::outbound::send(TokioIo::new(tcp), req).await?,
        };
        if resp.status() != hyper::StatusCode::OK {
            return Err(format!("answered {} (expected 200)", resp.status()));
        }
        let body = Limited::new(resp.into_body(), self.max_body)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?;
        Ok(body.to_bytes().to_vec())
    }
}
