//! #16, B1: the containerd shim's way in (`config.api.shim`): a UNIX socket, root's alone
//! (0600, made by the root daemon), whose peer must be uid 0, authenticated as the principal
//! `shim` with the built-in role `shim` in every tenant the namespace mapping names. It serves
//! the daemon's one router, with the mapping in the requests' extensions for
//! `GET /shim/placement` (`http/shim_placement.rs`).
//!
//! Invariants: a peer that is not root is refused before any route (the file mode already
//! keeps others out; this is the second wall, for a socket someone loosened); the principal
//! has no role outside the mapped tenants, so another tenant's nodes do not exist for it; the
//! socket is removed when the daemon stops and a stale one is replaced at start, never one a
//! live daemon answers on (`listen::check_socket`).

use std::sync::Arc;

use axum::http::HeaderMap;
use bulkhead_core::config::shim::ShimApi;
use bulkhead_core::iam::SHIM;
use bulkhead_core::{Code, DomainError};

use crate::app::Daemon;
use crate::auth::authn::{Authenticator, Chain, Peer};
use crate::auth::{Binding, Principal, Via};
use crate::start_error::StartError;

/// The shim principal's name (audit trails, denials).
pub const PRINCIPAL: &str = "shim";

/// A peer of the shim socket: root only, bound as `shim` in the mapped tenants.
pub struct ShimPeer {
    pub bindings: Vec<Binding>,
}

impl Authenticator for ShimPeer {
    fn authenticate(&self, peer: &Peer, _: &HeaderMap) -> Result<Option<Principal>, DomainError> {
        let Peer::Unix { uid, gid, pid } = *peer else {
            return Ok(None);
        };
        if uid != 0 {
            return Err(DomainError::new(
                Code::Unauthorized,
                format!(
                    "the shim socket takes root peers only (containerd runs its shims as root), and this peer is uid {uid}"
                ),
            ));
        }
        Ok(Some(Principal {
            expires_at: None,
            id: PRINCIPAL.into(),
            via: Via::Socket { uid, gid, pid },
            bindings: self.bindings.clone(),
        }))
    }
}

/// The shim socket's authenticators: role `shim` in every tenant the mapping names.
pub fn chain(d: &Daemon, shim: &ShimApi) -> Result<Chain, StartError> {
    let bindings = shim
        .tenants()
        .into_iter()
        .map(|t| d.roles.binding(SHIM, Some(t)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(StartError::Refused)?;
    Ok(Chain(vec![Box::new(ShimPeer { bindings })]))
}

/// The mapping, as the shim listener's requests carry it.
#[derive(Clone)]
pub struct Mapping(pub Arc<ShimApi>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_peers_are_the_shim() {
        let roles = crate::auth::Roles::default();
        let a = ShimPeer {
            bindings: vec![roles.binding(SHIM, Some("a")).unwrap()],
        };
        let root = Peer::Unix {
            uid: 0,
            gid: 0,
            pid: 9,
        };
        let p = a.authenticate(&root, &HeaderMap::new()).unwrap().unwrap();
        assert_eq!(p.id, "shim");
        assert!(p.has_role_in("a") && !p.has_role_in("b"));
        let user = Peer::Unix {
            uid: 1000,
            gid: 1000,
            pid: 9,
        };
        let e = a.authenticate(&user, &HeaderMap::new()).unwrap_err();
        assert_eq!(e.code, Code::Unauthorized);
        assert!(e.message.contains("uid 1000"), "{}", e.message);
        let tcp = Peer::Tcp {
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        assert!(a.authenticate(&tcp, &HeaderMap::new()).unwrap().is_none());
    }
}
