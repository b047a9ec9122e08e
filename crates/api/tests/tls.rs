//! The client over TLS against a real rustls server on loopback, with a self-signed
//! certificate made by openssl (as an operator would make one): trusted with the CA file,
//! refused without it naming the URL and --cacert, the wrong scheme either way explained, and
//! a name the certificate does not carry refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bulkhead_api::{Client, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    let o = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=bulkhead-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (c, k)
}

/// Answers each request with `{"auth": <its Authorization header>}`; TLS when `tls` is given.
async fn serve(tls: Option<(&Path, &Path)>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let acceptor = tls.map(|(c, k)| {
        let certs = rustls_pemfile::certs(&mut std::fs::read(c).unwrap().as_slice())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut std::fs::read(k).unwrap().as_slice())
            .unwrap()
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(s).await {
                            answer(s).await;
                        }
                    }
                    None => answer(s).await,
                }
            });
        }
    });
    port
}

async fn answer(mut s: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        // Not HTTP (a TLS ClientHello on the plain port): answer 400, as hyper does.
        if !buf[0].is_ascii_uppercase() {
            let _ = s
                .write_all(
                    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            let _ = s.shutdown().await;
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf).to_lowercase();
    let auth = head
        .lines()
        .find_map(|l| l.strip_prefix("authorization: "))
        .unwrap_or("")
        .to_string();
    let body = serde_json::json!({ "auth": auth }).to_string();
    let _ = s
        .write_all(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await;
    let _ = s.shutdown().await;
}

fn client(url: &str, ca: Option<&Path>) -> Client {
    let ep = Endpoint::parse(url, Some("tok".into()))
        .unwrap()
        .with_cacert(ca.map(Path::to_path_buf))
        .unwrap();
    Client::new(ep)
}

#[tokio::test]
async fn https_with_the_daemons_certificate_and_clear_refusals_without() {
    let dir = tempfile::tempdir().unwrap();
    let (c, k) = cert(dir.path());
    let tls = serve(Some((&c, &k))).await;
    let plain = serve(None).await;

    // Trusted through --cacert (a self-signed certificate with CA:TRUE, as openssl makes it);
    // the token goes along.
    let url = format!("https://127.0.0.1:{tls}");
    let v: serde_json::Value = client(&url, Some(&c)).get("/healthz").await.unwrap();
    assert_eq!(v["auth"], "bearer tok");
    // WebSockets take the same way (the server is no WebSocket server: the handshake gets
    // through TLS and fails on the HTTP answer, not before).
    let e = match client(&url, Some(&c)).websocket("/vm/x/shell", &[]).await {
        Ok(_) => panic!("no WebSocket server here"),
        Err(e) => e.to_string(),
    };
    assert!(!e.contains("certificate") && !e.contains("connect"), "{e}");

    // Without --cacert: the system's roots do not know it.
    let e = client(&url, None)
        .get::<serde_json::Value>("/healthz")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&url) && e.contains("--cacert"), "{e}");

    // Another CA file: refused the same way.
    let other = tempfile::tempdir().unwrap();
    let (c2, _) = cert(other.path());
    let e = client(&url, Some(&c2))
        .get::<serde_json::Value>("/healthz")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&url) && e.contains("--cacert"), "{e}");

    // A host name the certificate does not carry (it names IP 127.0.0.1 only).
    let by_name = format!("https://localhost:{tls}");
    let e = client(&by_name, Some(&c))
        .get::<serde_json::Value>("/healthz")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&by_name) && e.contains("subjectAltName"), "{e}");

    // Plain http:// to the TLS port: hints at https.
    let e = client(&format!("http://127.0.0.1:{tls}"), None)
        .get::<serde_json::Value>("/healthz")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("use https://127.0.0.1:{tls}")), "{e}");

    // https:// to a plain port: hints at http.
    let e = client(&format!("https://127.0.0.1:{plain}"), Some(&c))
        .get::<serde_json::Value>("/healthz")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("use http://127.0.0.1:{plain}")), "{e}");
    // ... where plain HTTP on loopback still works, token included.
    let v: serde_json::Value = client(&format!("http://127.0.0.1:{plain}"), None)
        .get("/healthz")
        .await
        .unwrap();
    assert_eq!(v["auth"], "bearer tok");
}

#[tokio::test]
async fn a_missing_or_empty_ca_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let e = client("https://127.0.0.1:1", Some(&missing))
        .get::<serde_json::Value>("/healthz")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.pem"), "{e}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = client("https://127.0.0.1:1", Some(&empty))
        .get::<serde_json::Value>("/healthz")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("empty.pem") && e.contains("no PEM certificate"),
        "{e}"
    );
}
