//! Where the daemon listens, as `--socket` / `--url` name it: a UNIX socket, plain HTTP over
//! TCP, or HTTPS.
//!
//! Invariant: a bearer token never crosses plain HTTP to anything but loopback. [`Endpoint::parse`]
//! refuses an `http://` URL with a token whose host is a non-loopback IP address, and the
//! client checks the connected peer again before it sends a byte (a host name may resolve
//! anywhere). The daemon itself allows plain TCP on loopback only.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::error::ClientError;

/// Where the daemon listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    /// Plain HTTP; `addr` is `host:port`. A token goes only to a loopback peer.
    Tcp {
        addr: String,
        token: Option<String>,
    },
    /// HTTPS; `addr` is `host:port`, `server_name` the host the certificate must name (a DNS
    /// name or an IP address), `ca` a PEM file trusted instead of the system's roots.
    Https {
        addr: String,
        server_name: String,
        token: Option<String>,
        ca: Option<PathBuf>,
    },
}

impl Endpoint {
    /// Parses `unix:///path`, a bare absolute path, `http://host:port` or
    /// `https://host[:port]` (port 443 by default).
    pub fn parse(s: &str, token: Option<String>) -> Result<Self, ClientError> {
        if let Some(p) = s.strip_prefix("unix://") {
            return Ok(Endpoint::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        if let Some(a) = s.strip_prefix("http://") {
            let ep = Endpoint::Tcp {
                addr: a.trim_end_matches('/').to_string(),
                token,
            };
            ep.check_plain_token()?;
            return Ok(ep);
        }
        if let Some(a) = s.strip_prefix("https://") {
            let a = a.trim_end_matches('/');
            let bad = |why: &str| {
                ClientError::Usage(format!(
                    "cannot use endpoint {s:?}: {why}; give https://HOST:PORT"
                ))
            };
            if a.contains(['/', '?', '#', '@']) {
                return Err(bad("the daemon's URL takes no path, query or user"));
            }
            let (host, port) = split_host_port(a).ok_or_else(|| bad("no host"))?;
            let addr = match port {
                Some(p) => {
                    p.parse::<u16>()
                        .map_err(|_| bad(&format!("{p:?} is not a port")))?;
                    a.to_string()
                }
                None => format!("{a}:443"),
            };
            return Ok(Endpoint::Https {
                addr,
                server_name: host.to_string(),
                token,
                ca: None,
            });
        }
        Err(ClientError::Usage(format!(
            "cannot use endpoint {s:?}: give a socket path, unix:///path, https://host:port or http://127.0.0.1:port (plain HTTP on loopback only)"
        )))
    }

    /// Trusts only the certificates in the PEM file `ca` (an https endpoint's `--cacert`).
    /// A UNIX socket ignores it; a plain http:// URL refuses it (the user meant https).
    pub fn with_cacert(self, ca: Option<PathBuf>) -> Result<Self, ClientError> {
        let Some(file) = ca else { return Ok(self) };
        match self {
            Endpoint::Https {
                addr,
                server_name,
                token,
                ..
            } => Ok(Endpoint::Https {
                addr,
                server_name,
                token,
                ca: Some(file),
            }),
            Endpoint::Tcp { addr, .. } => Err(ClientError::Usage(format!(
                "--cacert {} is for https:// URLs, but http://{addr} is plain HTTP: use https://{addr} if the daemon's TCP listener has api.tcp.tls",
                file.display()
            ))),
            unix @ Endpoint::Unix(_) => Ok(unix),
        }
    }

    /// The endpoint as a URL, for messages.
    pub fn url(&self) -> String {
        match self {
            Endpoint::Unix(p) => format!("unix://{}", p.display()),
            Endpoint::Tcp { addr, .. } => format!("http://{addr}"),
            Endpoint::Https { addr, .. } => format!("https://{addr}"),
        }
    }

    /// The bearer token sent with each request (never on a UNIX socket).
    pub fn token(&self) -> Option<&str> {
        match self {
            Endpoint::Unix(_) => None,
            Endpoint::Tcp { token, .. } | Endpoint::Https { token, .. } => token.as_deref(),
        }
    }

    /// Refuses a token over plain HTTP to a host that is a non-loopback IP address.
    pub(crate) fn check_plain_token(&self) -> Result<(), ClientError> {
        if let Endpoint::Tcp {
            addr,
            token: Some(_),
        } = self
        {
            let host = split_host_port(addr).map(|(h, _)| h).unwrap_or(addr);
            if host.parse::<IpAddr>().is_ok_and(|ip| !ip.is_loopback()) {
                return Err(self.plain_token_refused());
            }
        }
        Ok(())
    }

    pub(crate) fn plain_token_refused(&self) -> ClientError {
        let addr = match self {
            Endpoint::Tcp { addr, .. } => addr.as_str(),
            _ => "",
        };
        ClientError::PlainToken {
            url: self.url(),
            https: format!("https://{addr}"),
        }
    }
}

/// `host:port`, `host`, `[v6]:port` or `[v6]` into the host (without brackets) and the port.
fn split_host_port(a: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        match after {
            "" => (h, None),
            p => (h, Some(p.strip_prefix(':')?)),
        }
    } else {
        match a.split_once(':') {
            Some((h, p)) if !p.contains(':') => (h, Some(p)),
            Some(_) => return None, // a bare IPv6 address needs brackets
            None => (a, None),
        }
    };
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn https(s: &str) -> (String, String) {
        match Endpoint::parse(s, None).unwrap() {
            Endpoint::Https {
                addr, server_name, ..
            } => (addr, server_name),
            e => panic!("{s}: {e:?}"),
        }
    }

    #[test]
    fn https_urls_give_the_address_and_the_certificate_name() {
        assert_eq!(
            https("https://127.0.0.1:8443"),
            ("127.0.0.1:8443".into(), "127.0.0.1".into())
        );
        assert_eq!(
            https("https://api.example.com/"),
            ("api.example.com:443".into(), "api.example.com".into())
        );
        assert_eq!(
            https("https://[::1]:8443"),
            ("[::1]:8443".into(), "::1".into())
        );
        assert_eq!(https("https://[::1]"), ("[::1]:443".into(), "::1".into()));
        for bad in [
            "https://",
            "https://h:x",
            "https://h:8443/api",
            "https://u@h:1",
            "https://::1:8443",
            "https://[::1]x",
        ] {
            let e = Endpoint::parse(bad, None).unwrap_err().to_string();
            assert!(e.contains("https://HOST:PORT"), "{bad}: {e}");
        }
        let e = Endpoint::parse("ftp://h", None).unwrap_err().to_string();
        assert!(e.contains("https://host:port"), "{e}");
    }

    #[test]
    fn plain_http_carries_a_token_to_loopback_only() {
        let tok = || Some("secret".to_string());
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.8.9.10:8080",
            "http://[::1]:8080",
            "http://localhost:8080",
        ] {
            Endpoint::parse(ok, tok()).unwrap();
        }
        for far in ["http://10.1.2.3:8080", "http://[2001:db8::1]:8080"] {
            let e = Endpoint::parse(far, tok()).unwrap_err().to_string();
            assert!(
                e.contains(far) && e.contains("https://") && e.contains("token"),
                "{e}"
            );
            // Without a token there is nothing to leak.
            Endpoint::parse(far, None).unwrap();
        }
        // https carries it anywhere.
        Endpoint::parse("https://10.1.2.3:8443", tok()).unwrap();
    }

    #[test]
    fn cacert_goes_with_https_only() {
        let ca = Some(PathBuf::from("/etc/ca.pem"));
        let ep = Endpoint::parse("https://h:1", None)
            .unwrap()
            .with_cacert(ca.clone())
            .unwrap();
        assert!(matches!(ep, Endpoint::Https { ca: Some(_), .. }));
        let e = Endpoint::parse("http://127.0.0.1:1", None)
            .unwrap()
            .with_cacert(ca.clone())
            .unwrap_err()
            .to_string();
        assert!(e.contains("https://127.0.0.1:1"), "{e}");
        Endpoint::parse("/run/x.sock", None)
            .unwrap()
            .with_cacert(ca)
            .unwrap();
    }
}
