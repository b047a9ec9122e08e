//! The API-token authenticator (ADR 0022): a bearer credential that starts with `bh_` is an
//! API token made by `bulkhead token create`, checked against the token store's in-memory map
//! (no SQLite on the request path). Unknown, expired or revoked: 401 saying which (the caller
//! holds the secret, so this tells it nothing new) and what to do. Valid: the principal
//! `token:<id>` with the token's one binding.

use axum::http::HeaderMap;
use bulkhead_core::{Code, DomainError};
use bulkhead_store::tokens::{now_secs, Refusal, TokenRow, PREFIX};
use bulkhead_store::TokenStore;
use std::sync::Arc;

use super::authn::{bearer, Authenticator, Peer};
use super::{Principal, Roles, Via};

pub struct ApiTokens {
    pub store: TokenStore,
    pub roles: Arc<Roles>,
}

fn refused(msg: String) -> DomainError {
    DomainError::new(Code::Unauthorized, msg)
}

/// The principal a token row stands for.
pub fn principal_of(roles: &Roles, row: &TokenRow) -> Result<Principal, DomainError> {
    let id = row.id.to_string();
    // A role removed from the config since the token was made: the token grants nothing.
    let binding = roles
        .binding(&row.role, row.tenant.as_deref())
        .map_err(|e| {
            refused(format!(
                "API token {id} is bound to a role this daemon no longer has ({e}): ask for a new token"
            ))
        })?;
    Ok(Principal {
        expires_at: Some(row.expires_at),
        id: format!("token:{id}"),
        via: Via::ApiToken { id },
        bindings: vec![binding],
    })
}

impl Authenticator for ApiTokens {
    fn authenticate(
        &self,
        _: &Peer,
        headers: &HeaderMap,
    ) -> Result<Option<Principal>, DomainError> {
        let Some(t) = bearer(headers) else {
            return Ok(None);
        };
        if !t.starts_with(PREFIX) && !t.starts_with(bulkhead_store::tokens::E2B_PREFIX) {
            return Ok(None);
        }
        match self.store.check(t, now_secs()) {
            Ok(row) => principal_of(&self.roles, &row).map(Some),
            Err(Refusal::Unknown) => Err(refused(
                "unknown API token (mistyped, or pruned after it expired): ask its tenant-admin for a new one (`bulkhead token create`)"
                    .into(),
            )),
            Err(Refusal::Expired(r)) => Err(refused(format!(
                "API token {} ({:?}) has expired: ask its tenant-admin for a new one (`bulkhead token create`)",
                r.id, r.name
            ))),
            Err(Refusal::Revoked(r)) => Err(refused(format!(
                "API token {} ({:?}) was revoked: ask its tenant-admin for a new one (`bulkhead token create`)",
                r.id, r.name
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::authn::{BearerToken, Chain};
    use bulkhead_store::tokens::NewToken;

    fn headers(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", format!("Bearer {t}").parse().unwrap());
        h
    }

    #[test]
    fn tokens_are_recognised_refused_or_passed_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::open(&dir.path().join("auth.db")).unwrap();
        let roles = Arc::new(Roles::default());
        let (row, secret) = store
            .create(NewToken {
                name: "ci".into(),
                tenant: Some("a3cf".into()),
                role: "developer".into(),
                ttl_secs: 60,
                created_by: "token".into(),
                e2b: false,
            })
            .unwrap();
        let legacy = "0123456789abcdef0123";
        let chain = Chain(vec![
            Box::new(BearerToken {
                token: legacy.into(),
                bindings: vec![roles.binding("global-admin", None).unwrap()],
            }),
            Box::new(ApiTokens {
                store: store.clone(),
                roles: roles.clone(),
            }),
        ]);
        let peer = Peer::Tcp {
            addr: "127.0.0.1:1".parse().unwrap(),
        };
        // The legacy token still works, as global-admin.
        let p = chain.authenticate(&peer, &headers(legacy)).unwrap();
        assert!(p.is_global_admin());
        // A valid API token: its principal and only its binding.
        let p = chain
            .authenticate(&peer, &headers(secret.expose()))
            .unwrap();
        assert_eq!(p.id, format!("token:{}", row.id));
        assert_eq!(
            p.via,
            Via::ApiToken {
                id: row.id.to_string()
            }
        );
        assert!(p.has_role_in("a3cf") && !p.has_role_in("e7d1") && !p.is_global_admin());
        // Unknown, malformed, revoked: 401 each, saying which.
        let e = chain.authenticate(&peer, &headers("bh_nope")).unwrap_err();
        assert_eq!(e.code, Code::Unauthorized);
        assert!(e.message.contains("unknown API token"), "{}", e.message);
        let e = chain
            .authenticate(&peer, &headers("not-a-token"))
            .unwrap_err();
        assert_eq!(e.code, Code::Unauthorized);
        store.revoke(&row.id, now_secs()).unwrap();
        let e = chain
            .authenticate(&peer, &headers(secret.expose()))
            .unwrap_err();
        assert!(e.message.contains("was revoked"), "{}", e.message);
        // Expired.
        let (_, short) = store
            .create(NewToken {
                name: "short".into(),
                tenant: Some("a3cf".into()),
                role: "viewer".into(),
                ttl_secs: 0,
                created_by: "token".into(),
                e2b: false,
            })
            .unwrap();
        let e = chain
            .authenticate(&peer, &headers(short.expose()))
            .unwrap_err();
        assert!(e.message.contains("has expired"), "{}", e.message);
        // No bearer at all: not this authenticator's.
        let a = ApiTokens { store, roles };
        assert!(a.authenticate(&peer, &HeaderMap::new()).unwrap().is_none());
    }
}
