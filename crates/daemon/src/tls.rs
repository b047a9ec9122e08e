//! TLS on the API's TCP listener (`config.api.tcp.tls {cert, key}`): rustls with the ring
//! provider, TLS 1.2 and 1.3, HTTP/1.1 only.
//!
//! Handshakes run beside the accept loop, which never waits for them: each is bounded in time
//! ([`HANDSHAKE_TIMEOUT`]), at most [`MAX_HANDSHAKES`] run at once and at most
//! [`MAX_HANDSHAKES_PER_PEER`] per client address. A connection beyond either bound is
//! closed at once instead of queueing, so clients that open connections and send nothing
//! cannot stall everyone else's handshakes: one address holds at most a few slots, for at most
//! the timeout. A connection whose handshake fails is closed; it never reaches HTTP,
//! authentication or the connection cap's counters.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::auth::authn::Peer;
use crate::serve::PeerOf;

pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_HANDSHAKES: usize = 256;
pub const MAX_HANDSHAKES_PER_PEER: usize = 8;

/// Handshakes under way, in all and per client address.
#[derive(Default)]
struct Pending {
    total: usize,
    by_peer: std::collections::HashMap<std::net::IpAddr, usize>,
}

/// A place among the pending handshakes; given back when dropped.
struct Slot {
    pending: Arc<std::sync::Mutex<Pending>>,
    peer: std::net::IpAddr,
}

impl Slot {
    fn take(pending: &Arc<std::sync::Mutex<Pending>>, peer: std::net::IpAddr) -> Option<Slot> {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        let mine = p.by_peer.get(&peer).copied().unwrap_or(0);
        if p.total >= MAX_HANDSHAKES || mine >= MAX_HANDSHAKES_PER_PEER {
            return None;
        }
        p.total += 1;
        p.by_peer.insert(peer, mine + 1);
        Some(Slot {
            pending: pending.clone(),
            peer,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.total -= 1;
        if let Some(n) = p.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                p.by_peer.remove(&self.peer);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{file} holds no PEM certificate: give the server's certificate chain (leaf first) in PEM"
    )]
    NoCert { file: String },
    #[error("{file} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey { file: String },
    #[error("the certificate and key do not make a TLS server: {0}")]
    Config(String),
}

/// A TLS acceptor from PEM files: the certificate chain and its private key.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            file: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            file: cert.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert {
            file: cert.display().to_string(),
        });
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|source| TlsError::Read {
            file: key.display().to_string(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            file: key.display().to_string(),
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TCP listener whose connections come out TLS-terminated.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // Stops accepting: the listening socket closes with the task.
        self.task.abort();
    }
}

impl TlsListener {
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let pending: Arc<std::sync::Mutex<Pending>> = Default::default();
        let task = tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and the like: pause instead of spinning.
                        tracing::warn!(error = %e, "accepting a TLS connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Responses are streams of small writes (exec frames, Connect envelopes):
                // without this each one after the first waits for the client's delayed ACK.
                let _ = stream.set_nodelay(true);
                let Some(slot) = Slot::take(&pending, addr.ip()) else {
                    tracing::debug!(%addr, "too many TLS handshakes under way: closed");
                    drop(stream);
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            drop(slot);
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local, task })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task ended (it never does while we live): accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

impl PeerOf for TlsStream<TcpStream> {
    fn peer(&self) -> Peer {
        self.get_ref().0.peer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::DigitallySignedStruct;
    use std::time::Instant;
    use tokio::io::AsyncReadExt;

    /// The test's client checks nothing of the certificate: what is under test is the
    /// listener's accept loop, not trust.
    #[derive(Debug)]
    struct NoVerify;

    impl ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let (c, k) = (dir.join("c.pem"), dir.join("k.pem"));
        let o = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=t", "-keyout"])
            .arg(&k)
            .arg("-out")
            .arg(&c)
            .output()
            .expect("openssl (Debian package openssl) makes the test's certificate");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (c, k)
    }

    async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(format!("{ip}:0").parse().unwrap()).unwrap();
        s.connect(to).await.unwrap()
    }

    /// One address that opens many connections and sends nothing holds at most
    /// MAX_HANDSHAKES_PER_PEER slots; its others are closed at once; everyone else's
    /// handshakes go through without waiting.
    #[tokio::test]
    async fn silent_connections_of_one_peer_do_not_stall_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = self_signed(dir.path());
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut l = TlsListener::new(tcp, acceptor(&c, &k).unwrap()).unwrap();
        let to = axum::serve::Listener::local_addr(&l).unwrap();
        let mut idle = Vec::new();
        for _ in 0..(MAX_HANDSHAKES_PER_PEER + 12) {
            idle.push(connect_from("127.0.0.2", to).await);
        }
        // The ones beyond the per-address bound are closed by the daemon.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut closed = 0;
        for s in &mut idle {
            let mut b = [0u8; 1];
            if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await
            {
                closed += 1;
            }
        }
        assert_eq!(
            closed, 12,
            "connections beyond the per-address bound stay open"
        );
        // A client from another address is served at once.
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify))
        .with_no_client_auth();
        let t0 = Instant::now();
        let s = connect_from("127.0.0.1", to).await;
        let client = tokio_rustls::TlsConnector::from(Arc::new(config));
        let (hs, accepted) = tokio::join!(
            client.connect(ServerName::try_from("t").unwrap(), s),
            tokio::time::timeout(
                Duration::from_secs(2),
                axum::serve::Listener::accept(&mut l)
            ),
        );
        hs.expect("handshake");
        let (_, peer) = accepted.expect("accepted within 2 s");
        assert_eq!(peer.ip().to_string(), "127.0.0.1");
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
}
