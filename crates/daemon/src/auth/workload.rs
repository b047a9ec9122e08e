//! A node's workload identity token presented to the bulkhead API (ADR 0020).
//!
//! The authenticator recognises a bearer JWT whose `iss` is this daemon's issuer (anything
//! else is not its kind: another authenticator, OIDC, may take it). Without
//! `config.workload_identity.api_role` it refuses every such token (401, saying so): the API
//! trusts no workload by default. With it, a token signed by one of our published keys, not
//! expired, with `bulkhead` in its `aud`, is a principal `workload:<tenant>/<node>` bound to
//! `api_role@<tenant>`: its own tenant only, whatever the role.

use axum::http::HeaderMap;
use bulkhead_core::{Code, DomainError};
use std::sync::Arc;

use super::authn::{bearer, Authenticator, Peer};
use super::{Principal, Roles, Via};
use crate::identity::Identity;

pub struct WorkloadToken {
    pub identity: Arc<Identity>,
    /// The roles `api_role` is looked up in (built-in and the config's).
    pub roles: Roles,
}

impl WorkloadToken {
    /// Checks `api_role` against the known roles now, so that a typo stops the start rather
    /// than every request.
    pub fn new(identity: Arc<Identity>, roles: Roles) -> Result<Self, String> {
        if let Some(r) = &identity.cfg.api_role {
            roles
                .binding(r, Some("check"))
                .map_err(|e| format!("config.workload_identity.api_role: {e}"))?;
        }
        Ok(WorkloadToken { identity, roles })
    }
}

fn refused(why: impl std::fmt::Display) -> DomainError {
    DomainError::new(Code::Unauthorized, format!("workload token refused: {why}"))
}

impl Authenticator for WorkloadToken {
    fn authenticate(
        &self,
        _: &Peer,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, DomainError> {
        let Some(token) = bearer(headers) else {
            return Ok(None);
        };
        if !self.identity.claims_ours(token) {
            return Ok(None);
        }
        let Some(role) = &self.identity.cfg.api_role else {
            return Err(DomainError::new(
                Code::Unauthorized,
                "workload tokens are not accepted by this API: config.workload_identity.api_role binds none",
            ));
        };
        let c = self.identity.verify_for_api(token).map_err(refused)?;
        let binding = self.roles.binding(role, Some(&c.tenant)).map_err(refused)?;
        Ok(Some(Principal {
            expires_at: Some(c.exp),
            id: format!("workload:{}/{}", c.tenant, c.node),
            via: Via::Workload {
                tenant: c.tenant,
                node: c.node,
            },
            bindings: vec![binding],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authn::Chain;
    use crate::auth::{authorize, Action, Denial};
    use bulkhead_core::config::identity::WorkloadIdentityConfig;

    fn identity(dir: &std::path::Path, auds: &[&str], role: Option<&str>) -> Arc<Identity> {
        let cfg = WorkloadIdentityConfig {
            audiences: auds.iter().map(|a| a.to_string()).collect(),
            ttl: std::time::Duration::from_secs(600),
            issuer: "https://bh.example".into(),
            api_role: role.map(str::to_string),
        };
        Arc::new(Identity::open(cfg, dir).unwrap())
    }

    fn headers(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {token}").parse().unwrap());
        h
    }

    const PEER: Peer = Peer::Unix {
        uid: 0,
        gid: 0,
        pid: 1,
    };

    #[test]
    fn refused_unless_a_role_is_bound_then_scoped_to_the_nodes_tenant() {
        let tmp = tempfile::tempdir().unwrap();
        let off = identity(tmp.path(), &["vault", "bulkhead"], None);
        let (t, _) = off.mint("a", "g-1").unwrap();
        let chain = Chain(vec![Box::new(
            WorkloadToken::new(off.clone(), Roles::default()).unwrap(),
        )]);
        let e = chain.authenticate(&PEER, &headers(&t)).unwrap_err();
        assert_eq!(e.code, Code::Unauthorized);
        assert!(e.message.contains("api_role binds none"), "{}", e.message);

        let on = identity(tmp.path(), &["vault", "bulkhead"], Some("viewer"));
        let a = WorkloadToken::new(on.clone(), Roles::default()).unwrap();
        let p = a.authenticate(&PEER, &headers(&t)).unwrap().unwrap();
        assert_eq!(p.id, "workload:a/g-1");
        assert!(authorize(&p, Action::ListNodes, "a").is_ok());
        assert!(matches!(
            authorize(&p, Action::ExecInNode, "a"),
            Err(Denial::Forbidden(_))
        ));
        assert_eq!(authorize(&p, Action::ListNodes, "b"), Err(Denial::NoRole));
        // Not ours: another authenticator's business.
        assert!(a
            .authenticate(&PEER, &headers("bh_0123456789abcdef"))
            .unwrap()
            .is_none());
        // Ours, but not meant for the API.
        let vault_only = identity(&tmp.path().join("v"), &["vault"], None);
        let (t2, _) = vault_only.mint("a", "g-1").unwrap();
        let a2 = WorkloadToken {
            identity: Arc::new(
                Identity::open(
                    WorkloadIdentityConfig {
                        api_role: Some("viewer".into()),
                        ..vault_only.cfg.clone()
                    },
                    &tmp.path().join("v"),
                )
                .unwrap(),
            ),
            roles: Roles::default(),
        };
        let e = a2.authenticate(&PEER, &headers(&t2)).unwrap_err();
        assert_eq!(e.code, Code::Unauthorized);
        // An unknown role is refused at start.
        let bad = identity(&tmp.path().join("x"), &["bulkhead"], Some("nope"));
        assert!(WorkloadToken::new(bad, Roles::default()).is_err());
    }
}
