//! One JSON `POST` to a webhook target: `http://` (loopback only), `https://` (the system's
//! roots) or `unix://PATH`. What the policy webhook (ADR 0024, `admission/webhook.rs`) and the
//! event webhook sink (#14, `events/webhook.rs`) share; each reads the answer its own way.
//!
//! Invariants: one HTTP/1.1 request per connection, no redirects followed, no timeout here
//! (each caller bounds its whole exchange); every failure before an answer is a message
//! saying which step failed (the caller wraps it in its own "unreachable" error).

use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderName;
use hyper_util::rt::TokioIo;
use std::sync::OnceLock;

use bulkhead_core::config::policy::WebhookTarget;

/// A poster: for https, a TLS client made at first use and kept.
#[derive(Default)]
pub struct Poster {
    tls: OnceLock<Result<tokio_rustls::TlsConnector, String>>,
}

impl Poster {
    pub fn new() -> Poster {
        Poster::default()
    }

    /// Sends `body` (JSON) to `target` with the `extra` headers; the answer, its body unread.
    pub async fn post(
        &self,
        target: &WebhookTarget,
        extra: &[(HeaderName, &'static str)],
        body: Vec<u8>,
    ) -> Result<hyper::Response<Incoming>, String> {
        let (path, host) = match target {
            WebhookTarget::Unix(_) => ("/".to_string(), "localhost".to_string()),
            WebhookTarget::Http {
                authority, path, ..
            } => (path.clone(), authority.clone()),
        };
        let mut req = hyper::Request::post(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, "bulkhead");
        for (k, v) in extra {
            req = req.header(k, *v);
        }
        let req = req
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        match target {
            WebhookTarget::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(|e| format!("connecting to {}: {e}", p.display()))?;
                crate::outbound::send(TokioIo::new(s), req).await
            }
            WebhookTarget::Http {
                https, host, port, ..
            } => {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
                if !*https {
                    return crate::outbound::send(TokioIo::new(tcp), req).await;
                }
                let tls = self
                    .tls
                    .get_or_init(crate::outbound::https_connector)
                    .clone()?;
                let name = rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("{host:?} is not a TLS name: {e}"))?;
                let s = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {host}: {e}"))?;
                crate::outbound::send(TokioIo::new(s), req).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_post_carries_json_and_the_extra_headers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hook.sock");
        let l = tokio::net::UnixListener::bind(&path).unwrap();
        let got = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = vec![0u8; 4096];
            while !got.ends_with(b"}") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let _ = s
                .write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n")
                .await;
            String::from_utf8_lossy(&got).to_ascii_lowercase()
        });
        let p = Poster::new();
        let r = p
            .post(
                &WebhookTarget::Unix(path),
                &[(hyper::header::ACCEPT, "application/json")],
                br#"{"a":1}"#.to_vec(),
            )
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let req = got.await.unwrap();
        assert!(req.starts_with("post / http/1.1\r\n"), "{req}");
        for h in [
            "content-type: application/json",
            "accept: application/json",
            "user-agent: bulkhead",
            "host: localhost",
        ] {
            assert!(req.contains(h), "{h} in {req}");
        }
        assert!(req.ends_with(r#"{"a":1}"#), "{req}");
        let e = p
            .post(
                &WebhookTarget::Unix("/nonexistent/h.sock".into()),
                &[],
                vec![],
            )
            .await
            .unwrap_err();
        assert!(e.starts_with("connecting to /nonexistent/h.sock"), "{e}");
    }
}
