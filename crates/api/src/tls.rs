//! TLS for `https://` endpoints: tokio-rustls with the ring provider, TLS 1.2 and 1.3,
//! HTTP/1.1 by ALPN (what the daemon's listener offers).
//!
//! Trust: the system's CA certificates (rustls-native-certs) by default; with a CA file
//! (`--cacert`), only the certificates in that file. A certificate from that file is also
//! accepted as the server's own when it is byte for byte the one presented: a self-signed
//! certificate as `openssl req -x509` makes it carries `CA:TRUE`, which webpki refuses as an
//! end-entity certificate. That pinned path still checks the URL's host against the
//! certificate's names and never overrides an expired or not-yet-valid certificate (webpki
//! checks validity before anything else). The server name is the URL's host: a DNS name or an
//! IP address (matched against the certificate's IP SANs).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How long a handshake may take before the endpoint counts as not speaking TLS.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading the CA file {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: io::Error,
    },
    #[error("the CA file {file} holds no PEM certificate: give the daemon's certificate or its CA in PEM")]
    NoCert { file: String },
    #[error("no system CA certificates could be loaded ({0}): pass --cacert FILE (env BULKHEAD_CACERT) with the daemon's certificate or its CA")]
    NoRoots(String),
    #[error("cannot make a TLS client: {0}")]
    Config(String),
    #[error("{host:?} is not a usable TLS server name: give https://HOST:PORT with a DNS name or an IP address")]
    ServerName { host: String },
    #[error("the daemon at {url} presented a certificate this client does not trust ({reason}): pass --cacert FILE (env BULKHEAD_CACERT) with the daemon's certificate or the CA that signed it")]
    Untrusted { url: String, reason: String },
    #[error("the daemon's certificate at {url} does not name this host ({reason}): connect with a host name or IP address that is in its subjectAltName")]
    WrongName { url: String, reason: String },
    #[error("the daemon at {url} presented a certificate that is outside its validity period ({reason}): renew api.tcp.tls.cert on the daemon")]
    Expired { url: String, reason: String },
    #[error("{url} did not answer TLS ({reason}): is it a plain HTTP listener? then use http://{addr} (plain TCP only on loopback)")]
    NotTls {
        url: String,
        addr: String,
        reason: String,
    },
    #[error("TLS handshake with {url} failed: {source}")]
    Handshake {
        url: String,
        #[source]
        source: io::Error,
    },
}

/// A TLS client configuration trusting `ca` only, or the system's roots without it.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut pinned = Vec::new();
    match ca {
        Some(file) => {
            pinned = read_certs(file)?;
            roots.add_parsable_certificates(pinned.iter().cloned());
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "none found".into());
                return Err(TlsError::NoRoots(why));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = if roots.is_empty() {
        // Only unparsable-as-anchor certificates were given: they can still be pinned.
        None
    } else {
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?,
        )
    };
    let verifier = Arc::new(Trust {
        inner,
        pinned,
        algs: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let name = || file.display().to_string();
    let pem = std::fs::read(file).map_err(|source| TlsError::Read {
        file: name(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Read {
            file: name(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert { file: name() });
    }
    Ok(certs)
}

/// Runs the TLS handshake on `tcp` for `host`; `url` and `addr` only word the errors.
pub async fn handshake(
    tcp: TcpStream,
    config: Arc<rustls::ClientConfig>,
    host: &str,
    url: &str,
    addr: &str,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let name = ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName {
        host: host.to_string(),
    })?;
    let connect = TlsConnector::from(config).connect(name, tcp);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connect).await {
        Ok(r) => r.map_err(|e| explain(e, url, addr)),
        Err(_) => Err(TlsError::NotTls {
            url: url.to_string(),
            addr: addr.to_string(),
            reason: format!("no TLS answer within {}s", HANDSHAKE_TIMEOUT.as_secs()),
        }),
    }
}

/// Turns a failed handshake into what the user should do about it.
fn explain(e: io::Error, url: &str, addr: &str) -> TlsError {
    let url = url.to_string();
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return TlsError::Handshake { url, source: e };
    };
    let reason = if format!("{tls:?}").contains("CaUsedAsEndEntity") {
        "a self-signed certificate, or a CA's, presented as the server's own".to_string()
    } else {
        tls.to_string()
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                TlsError::WrongName { url, reason }
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => TlsError::Expired { url, reason },
            _ => TlsError::Untrusted { url, reason },
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            TlsError::NotTls {
                url,
                addr: addr.to_string(),
                reason,
            }
        }
        _ => TlsError::Handshake { url, source: e },
    }
}

/// WebPKI against the roots, or a pinned certificate from the CA file (see the module doc).
#[derive(Debug)]
struct Trust {
    inner: Option<Arc<WebPkiServerVerifier>>,
    pinned: Vec<CertificateDer<'static>>,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Trust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let err = match &self.inner {
            Some(v) => match v.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(ok) => return Ok(ok),
                Err(e) => e,
            },
            None => CertificateError::UnknownIssuer.into(),
        };
        let expired = matches!(
            err,
            rustls::Error::InvalidCertificate(
                CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
                    | CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. }
            )
        );
        if expired
            || !self
                .pinned
                .iter()
                .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Err(err);
        }
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_name(&parsed, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
