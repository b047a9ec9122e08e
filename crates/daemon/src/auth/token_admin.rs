//! Making, listing and revoking API tokens (`/tokens`, ADR 0022): who may, in which tenant,
//! and which roles they may grant. The HTTP handlers (`http/tokens.rs`) only parse and call
//! these.
//!
//! Rules (each enforced here, each tested):
//! - a token acts in one tenant the daemon serves, with one role; only a `global-admin` token
//!   has no tenant (it applies to every tenant), and only a global-admin may make one;
//! - the caller needs `tokens:create` / `tokens:list` / `tokens:delete` in the token's tenant;
//! - no escalation: the caller may grant a role only if it holds every (resource, verb) of that
//!   role itself in that tenant (over all its bindings there);
//! - a token of a tenant the caller has no role in does not exist for it (404), like a node.

use bulkhead_api::tokens::{CreateTokenRequest, CreatedToken, TokenInfo};
use bulkhead_core::iam::GLOBAL_ADMIN;
use bulkhead_core::{Code, DomainError};
use bulkhead_store::tokens::{now_secs, NewToken, TokenRow};
use bulkhead_store::{TokenId, TokenStore};
use std::sync::Arc;
use std::time::Duration;

use super::{authorize, Action, Denial, Principal, Roles};
use crate::fsutil::rfc3339;

pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
pub const MIN_TTL: Duration = Duration::from_secs(1);
pub const MAX_TTL: Duration = Duration::from_secs(365 * 86400);

/// The daemon's API tokens and the roles they may name.
pub struct TokenService {
    pub store: TokenStore,
    pub roles: Arc<Roles>,
}

fn forbidden(msg: String) -> DomainError {
    DomainError::new(Code::Forbidden, msg)
}

pub fn info(row: &TokenRow, now: u64) -> TokenInfo {
    TokenInfo {
        id: row.id.to_string(),
        name: row.name.clone(),
        tenant: row.tenant.clone(),
        role: row.role.clone(),
        created_at: rfc3339(row.created_at),
        expires_at: rfc3339(row.expires_at),
        revoked_at: row.revoked_at.map(rfc3339),
        state: row.state(now).as_str().into(),
        created_by: row.created_by.clone(),
    }
}

fn ttl_of(req: &CreateTokenRequest) -> Result<Duration, DomainError> {
    let Some(s) = &req.ttl else {
        return Ok(DEFAULT_TTL);
    };
    let d = bulkhead_api::duration::parse_up_to(s, MAX_TTL, "365 days (8760h)")
        .map_err(|e| DomainError::invalid(format!("ttl: {e}")))?;
    if d < MIN_TTL {
        return Err(DomainError::invalid(format!(
            "ttl: {s:?} is shorter than 1s: give e.g. 24h"
        )));
    }
    Ok(d)
}

impl TokenService {
    /// Checks a `POST /tokens` against the rules; the token to record. `tenants`: the tenants
    /// the daemon serves.
    pub fn plan(
        &self,
        p: &Principal,
        tenants: &[&str],
        req: &CreateTokenRequest,
    ) -> Result<NewToken, DomainError> {
        bulkhead_api::names::validate_label("token name", &req.name)
            .map_err(|e| DomainError::invalid(format!("name: {e}")))?;
        let ttl = ttl_of(req)?;
        let role = self.roles.get(&req.role).ok_or_else(|| {
            DomainError::invalid(format!(
                "role: unknown role {:?}: known are {}",
                req.role,
                self.roles.names().join(", ")
            ))
        })?;
        let tenant = match (&req.tenant, role.is_global_admin()) {
            (Some(_), true) => {
                return Err(DomainError::invalid(format!(
                    "tenant: a {GLOBAL_ADMIN} token applies to every tenant: omit tenant"
                )))
            }
            (None, false) => {
                return Err(DomainError::invalid(format!(
                "tenant: a {} token acts in one tenant: give tenant (one of the daemon's tenants)",
                role.name
            )))
            }
            (None, true) => {
                if !p.is_global_admin() {
                    return Err(forbidden(format!(
                        "{} may not grant {GLOBAL_ADMIN}: only a global-admin may",
                        p.id
                    )));
                }
                None
            }
            (Some(t), false) => {
                // Tenants the caller has no role in are not named to it: 403 either way.
                if !p.is_global_admin() && !p.has_role_in(t) {
                    return Err(Denial::NoRole.into_error(p, t));
                }
                if !tenants.contains(&t.as_str()) {
                    return Err(DomainError::invalid(format!(
                        "tenant: unknown tenant {t:?}: this daemon serves {}",
                        tenants.join(", ")
                    )));
                }
                authorize(p, Action::CreateToken, t).map_err(|d| d.into_error(p, t))?;
                // No escalation: every (resource, verb) of the role, the caller holds here.
                let missing: Vec<String> = role
                    .rules()
                    .filter(|(r, v)| !p.may(t, *r, *v))
                    .map(|(r, v)| format!("{}:{}", r.as_str(), v.as_str()))
                    .collect();
                if !missing.is_empty() {
                    return Err(forbidden(format!(
                        "{} may not grant role {:?} in tenant {t:?}: it lacks {} there itself; grant a role it holds all of",
                        p.id,
                        role.name,
                        missing.join(", ")
                    )));
                }
                Some(t.clone())
            }
        };
        // A token never outlives the credential that made it (an API token's expiry, an OIDC
        // or workload JWT's exp): revoking or expiring that one leaves nothing longer behind.
        let mut ttl_secs = ttl.as_secs().max(1);
        if let Some(until) = p.expires_at {
            let left = until.saturating_sub(now_secs());
            if left == 0 {
                return Err(DomainError::new(
                    bulkhead_core::Code::Unauthorized,
                    "the credential this request came with has expired: get a new one",
                ));
            }
            ttl_secs = ttl_secs.min(left);
        }
        Ok(NewToken {
            e2b: req.e2b, // #15, A
            name: req.name.clone(),
            tenant,
            role: role.name.clone(),
            ttl_secs,
            created_by: p.id.clone(),
        })
    }

    /// Records a planned token (blocks on SQLite: call from `spawn_blocking`).
    pub fn create(&self, new: NewToken) -> Result<CreatedToken, DomainError> {
        let (row, secret) = self
            .store
            .create(new)
            .map_err(|e| DomainError::internal(e.to_string()))?;
        tracing::info!(token = %row.id, name = %row.name, role = %row.role, tenant = ?row.tenant, by = %row.created_by, "API token created");
        Ok(CreatedToken {
            id: row.id.to_string(),
            name: row.name.clone(),
            tenant: row.tenant.clone(),
            role: row.role.clone(),
            created_at: rfc3339(row.created_at),
            expires_at: rfc3339(row.expires_at),
            token: secret.expose().to_string(),
        })
    }

    /// The tokens `p` may see: all for a global-admin; else those of tenants where it may
    /// `tokens:list`.
    pub fn list(&self, p: &Principal) -> Vec<TokenInfo> {
        let now = now_secs();
        self.store
            .list()
            .iter()
            .filter(|r| {
                p.is_global_admin()
                    || r.tenant
                        .as_deref()
                        .is_some_and(|t| authorize(p, Action::ListTokens, t).is_ok())
            })
            .map(|r| info(r, now))
            .collect()
    }

    /// The token `id` if `p` may revoke it (404 when it does not exist for `p`, 403 when `p`
    /// has a role in its tenant without `tokens:delete`).
    pub fn check_revoke(&self, p: &Principal, id: &str) -> Result<TokenId, DomainError> {
        let not_found = || {
            DomainError::not_found(format!(
                "no API token {id:?}: `bulkhead token list` shows the tokens you may see"
            ))
        };
        let id = TokenId::parse(id).map_err(|e| DomainError::invalid(e.to_string()))?;
        let row = self.store.get(&id).ok_or_else(not_found)?;
        match &row.tenant {
            None if p.is_global_admin() => Ok(id),
            None => Err(not_found()),
            Some(t) => match authorize(p, Action::RevokeToken, t) {
                Ok(()) => Ok(id),
                Err(Denial::NoRole) => Err(not_found()),
                Err(Denial::Forbidden(e)) => Err(e),
            },
        }
    }

    /// Revokes `id` now (blocks on SQLite). The next request with it is refused.
    pub fn revoke(&self, p: &Principal, id: TokenId) -> Result<(), DomainError> {
        match self.store.revoke(&id, now_secs()) {
            Ok(Some(_)) => {
                tracing::info!(token = %id, by = %p.id, "API token revoked");
                // Tokens it made go with it, and theirs (each row is revoked once, so this
                // ends).
                let mut parents = vec![id];
                while let Some(parent) = parents.pop() {
                    let by = format!("token:{parent}");
                    for child in self.store.list() {
                        if child.created_by == by && child.revoked_at.is_none() {
                            if let Ok(Some(_)) = self.store.revoke(&child.id, now_secs()) {
                                tracing::info!(token = %child.id, parent = %parent, "API token revoked with the token that made it");
                                parents.push(child.id);
                            }
                        }
                    }
                }
                Ok(())
            }
            Ok(None) => Err(DomainError::not_found(format!("no API token {id}"))),
            Err(e) => Err(DomainError::internal(e.to_string())),
        }
    }
}

#[cfg(test)]
#[path = "token_admin_tests.rs"]
mod tests;
