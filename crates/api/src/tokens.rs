//! Wire types of API tokens (`/tokens`, `bulkhead token`, ADR 0022). The secret appears in
//! exactly one type, [`CreatedToken`], the answer to the request that made it.

use serde::{Deserialize, Serialize};

/// `POST /tokens`. Unknown keys are refused: a misspelt `tenant` must not mint a token for
/// every tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// A label for people (`ci`).
    pub name: String,
    /// The tenant the token acts in; omitted only for a `global-admin` token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub role: String,
    /// A Go duration (`24h`, `90m`); default 24h, from 1s to 8760h (365 days).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// #15, A: the secret in E2B's API key form (`e2b_<hex>`, what E2B's SDKs accept) instead
    /// of `bh_…`; the same token otherwise (and usable as a bearer token too).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub e2b: bool,
}

/// A token as `GET /tokens` lists it: never the secret nor its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    /// `null`: every tenant (a `global-admin` token).
    pub tenant: Option<String>,
    pub role: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    /// `active`, `expired` or `revoked`.
    pub state: String,
    /// The principal that made it (`token`, `uid:0`, `token:<id>`).
    pub created_by: String,
}

/// `201` to `POST /tokens`: the token and, this once, its secret.
#[derive(Clone, Serialize, Deserialize)]
pub struct CreatedToken {
    pub id: String,
    pub name: String,
    pub tenant: Option<String>,
    pub role: String,
    pub created_at: String,
    pub expires_at: String,
    /// The secret (`bh_…`): send it as `Authorization: Bearer <token>`. Not shown again.
    pub token: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl crate::Client {
    /// `POST /tokens`.
    pub async fn create_token(
        &self,
        req: &CreateTokenRequest,
    ) -> Result<CreatedToken, crate::ClientError> {
        let body = serde_json::to_value(req).expect("a token request is JSON");
        self.json(hyper::Method::POST, "/tokens", Some(&body)).await
    }

    /// `GET /tokens`: the tokens this caller may see.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, crate::ClientError> {
        self.get("/tokens").await
    }

    /// `DELETE /tokens/{id}` (204).
    pub async fn revoke_token(&self, id: &str) -> Result<(), crate::ClientError> {
        self.send_ok(
            hyper::Method::DELETE,
            &format!("/tokens/{}", crate::client::enc(id)),
            crate::client::full_body(bytes::Bytes::new()),
            None,
        )
        .await?;
        Ok(())
    }
}
