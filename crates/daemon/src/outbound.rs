//! The daemon's outbound HTTP: one request on a connection the caller opened, and the TLS
//! client every outbound HTTPS call uses (JWKS fetches, the policy and event webhooks).
//!
//! Invariants: one HTTP/1.1 request per connection, no redirects followed, no timeout here
//! (each caller bounds its whole exchange); failures are messages naming the step.

use std::sync::Arc;

/// Sends `req` over `io` (HTTP/1.1, one request) and returns the answer's head and body.
pub(crate) async fn send<T, B>(
    io: T,
    req: hyper::Request<B>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("http: {e}"))
}

/// The TLS client: rustls with the ring provider, the system's root certificates, no client
/// certificate.
pub(crate) fn https_connector() -> Result<tokio_rustls::TlsConnector, String> {
    use hyper_rustls::ConfigBuilderExt;
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("tls setup: {e}"))?
    .with_native_roots()
    .map_err(|e| format!("cannot load the system's root certificates: {e}"))?
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}
