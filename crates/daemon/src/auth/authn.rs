//! Authentication: turning a request and the connection it came on into a [`Principal`].
//!
//! The listener records the connection's [`Peer`] in every request's extensions
//! (`serve.rs`); each [`Authenticator`] either recognises the request (a principal), rejects
//! it (its proof is wrong: 401), or does not apply. A listener's chain tries its
//! authenticators in order; a request none of them recognises is refused.

use axum::http::HeaderMap;
use bulkhead_core::{Code, DomainError};
use std::net::SocketAddr;

use super::{Binding, Principal, Via};

/// The other end of an API connection, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    Unix { uid: u32, gid: u32, pid: i32 },
    Tcp { addr: SocketAddr },
}

pub trait Authenticator: Send + Sync {
    /// `Ok(Some)`: recognised; `Ok(None)`: not this authenticator's kind of request;
    /// `Err`: this authenticator's kind, with a wrong proof.
    fn authenticate(
        &self,
        peer: &Peer,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, DomainError>;
}

/// A peer of a UNIX socket. The socket is root-only (0600), so whoever connected passed the
/// file permission check: that is the proof. Bound as the socket says: the admin socket
/// (and a one-tenant daemon's socket) as `global-admin`, a tenant socket as `tenant-admin` of
/// its tenant.
pub struct SocketPeer {
    pub bindings: Vec<Binding>,
}

impl Authenticator for SocketPeer {
    fn authenticate(&self, peer: &Peer, _: &HeaderMap) -> Result<Option<Principal>, DomainError> {
        let Peer::Unix { uid, gid, pid } = *peer else {
            return Ok(None);
        };
        Ok(Some(Principal {
            expires_at: None,
            id: format!("uid:{uid}"),
            via: Via::Socket { uid, gid, pid },
            bindings: self.bindings.clone(),
        }))
    }
}

/// The TCP listener's configured bearer token (`api.token_file`, or one the daemon made):
/// today's single-token setup, bound as `global-admin`.
pub struct BearerToken {
    pub token: String,
    pub bindings: Vec<Binding>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator for BearerToken {
    fn authenticate(
        &self,
        _: &Peer,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, DomainError> {
        let Some(t) = bearer(headers) else {
            return Ok(None);
        };
        if !constant_time_eq(t.as_bytes(), self.token.as_bytes()) {
            return Ok(None);
        }
        Ok(Some(Principal {
            expires_at: None,
            id: "token".into(),
            via: Via::BearerToken,
            bindings: self.bindings.clone(),
        }))
    }
}

/// The `Authorization: Bearer` credential of a request, if it carries one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110 §11.1).
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(rest)
        })
        .map(str::trim)
}

pub fn unauthorized() -> DomainError {
    DomainError::new(
        Code::Unauthorized,
        "missing or wrong bearer token: send Authorization: Bearer <token>",
    )
}

/// A listener's authenticators, tried in order.
pub struct Chain(pub Vec<Box<dyn Authenticator>>);

impl Chain {
    pub fn authenticate(&self, peer: &Peer, headers: &HeaderMap) -> Result<Principal, DomainError> {
        for a in &self.0 {
            if let Some(p) = a.authenticate(peer, headers)? {
                return Ok(p);
            }
        }
        Err(unauthorized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_checks_the_header() {
        let roles = super::super::Roles::default();
        let chain = Chain(vec![Box::new(BearerToken {
            token: "0123456789abcdef".into(),
            bindings: vec![roles.parse_binding("tenant-admin@t").unwrap()],
        })]);
        let peer = Peer::Tcp {
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        let mut h = HeaderMap::new();
        assert_eq!(
            chain.authenticate(&peer, &h).unwrap_err().code,
            Code::Unauthorized
        );
        h.insert("authorization", "Bearer 0123456789abcdeX".parse().unwrap());
        assert!(chain.authenticate(&peer, &h).is_err());
        h.insert("authorization", "bearer 0123456789abcdef".parse().unwrap());
        assert!(
            chain.authenticate(&peer, &h).is_ok(),
            "the scheme is case-insensitive"
        );
        h.insert("authorization", "Basic 0123456789abcdef".parse().unwrap());
        assert!(chain.authenticate(&peer, &h).is_err());
        h.insert("authorization", "Bearer 0123456789abcdef".parse().unwrap());
        let p = chain.authenticate(&peer, &h).unwrap();
        assert!(p.has_role_in("t"));
        assert!(!p.has_role_in("u"));
    }

    #[test]
    fn socket_peer_applies_to_unix_peers_only() {
        let a = SocketPeer { bindings: vec![] };
        let unix = Peer::Unix {
            uid: 0,
            gid: 0,
            pid: 7,
        };
        let p = a.authenticate(&unix, &HeaderMap::new()).unwrap().unwrap();
        assert_eq!(p.id, "uid:0");
        assert_eq!(
            p.via,
            Via::Socket {
                uid: 0,
                gid: 0,
                pid: 7
            }
        );
        let tcp = Peer::Tcp {
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        assert!(a.authenticate(&tcp, &HeaderMap::new()).unwrap().is_none());
        // A chain of authenticators that do not apply refuses.
        assert!(Chain(vec![Box::new(a)])
            .authenticate(&tcp, &HeaderMap::new())
            .is_err());
    }
}
