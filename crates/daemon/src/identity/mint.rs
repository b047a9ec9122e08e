//! Tokens and the documents verifiers read: minting a node's JWT with the current key,
//! verifying one against the published keys, the JWKS and the OpenID discovery document.
//!
//! Claims: `iss`, `sub` = `tenant:<tenant>:node:<node>`, `aud` (always an array), `iat`, `nbf`,
//! `exp` = `iat + ttl`, `jti` (random), and `tenant`, `node`. Header: `alg: ES256`, `kid`,
//! `typ: JWT`. Verification accepts only ES256 and only our keys, whatever the header says.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::keys::{xy, KeyRing};

/// What a node's token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    pub jti: String,
    pub tenant: String,
    pub node: String,
}

pub const CLAIMS_SUPPORTED: [&str; 9] = [
    "iss", "sub", "aud", "iat", "nbf", "exp", "jti", "tenant", "node",
];

/// How far a verifier's clock may be off (seconds), here as in `keys::LEEWAY_SECS`.
pub const VERIFY_LEEWAY: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("signing the token failed: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
    #[error(
        "the token names no key of this issuer (kid {0:?}): it is unknown or retired long ago"
    )]
    UnknownKey(Option<String>),
    #[error("the token is not valid: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

pub fn subject(tenant: &str, node: &str) -> String {
    format!("tenant:{tenant}:node:{node}")
}

fn random_id() -> String {
    let mut b = [0u8; 16];
    // A failing system RNG leaves zeros: jti is for logs and replay caches, not secrecy.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// Signs a token for `node` of `tenant` with the ring's current key, valid `ttl` seconds
/// from `now`.
pub fn mint(
    ring: &KeyRing,
    issuer: &str,
    audiences: &[String],
    ttl: u64,
    now: u64,
    tenant: &str,
    node: &str,
) -> Result<(String, Claims), TokenError> {
    let key = ring.current();
    let claims = Claims {
        iss: issuer.into(),
        sub: subject(tenant, node),
        aud: audiences.to_vec(),
        iat: now,
        nbf: now,
        exp: now + ttl,
        jti: random_id(),
        tenant: tenant.into(),
        node: node.into(),
    };
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key.kid.clone());
    header.typ = Some("JWT".into());
    let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&key.pkcs8))
        .map_err(TokenError::Sign)?;
    Ok((token, claims))
}

/// The `iss` a JWT claims, unverified: only to tell whose token it is.
pub fn peek_issuer(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

/// Verifies `token` against the ring's published keys: ES256, our issuer, `audience` among
/// its `aud`, within `exp`/`nbf` (with [`VERIFY_LEEWAY`]).
pub fn verify(
    ring: &KeyRing,
    issuer: &str,
    audience: &str,
    ttl: u64,
    now: u64,
    token: &str,
) -> Result<Claims, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(TokenError::Invalid)?;
    let key = header
        .kid
        .as_deref()
        .and_then(|kid| ring.published(ttl, now).find(|k| k.kid == kid))
        .ok_or(TokenError::UnknownKey(header.kid.clone()))?;
    let mut v = Validation::new(Algorithm::ES256);
    v.leeway = VERIFY_LEEWAY;
    v.validate_nbf = true;
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_ec_der(&key.public), &v)
        .map(|d| d.claims)
        .map_err(TokenError::Invalid)
}

/// `GET /.well-known/jwks.json`: every published key.
pub fn jwks(ring: &KeyRing, ttl: u64, now: u64) -> Value {
    let keys: Vec<Value> = ring
        .published(ttl, now)
        .map(|k| {
            let (x, y) = xy(&k.public);
            json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": k.kid, "alg": "ES256", "use": "sig"})
        })
        .collect();
    json!({ "keys": keys })
}

/// `GET /.well-known/openid-configuration`: what an OIDC library or a cloud's workload
/// identity federation reads to find the keys.
pub fn discovery(issuer: &str) -> Value {
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": ["ES256"],
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "claims_supported": CLAIMS_SUPPORTED,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::JwkSet;

    const ISS: &str = "https://bh.example";

    /// Verifies as an outside verifier would: only the published JWKS, by the token's kid.
    fn verify_with_jwks(jwks: &Value, token: &str, aud: &str) -> Claims {
        let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let jwk = set.find(&kid).expect("the token's key is published");
        let mut v = Validation::new(Algorithm::ES256);
        v.set_issuer(&[ISS]);
        v.set_audience(&[aud]);
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_jwk(jwk).unwrap(), &v)
            .unwrap()
            .claims
    }

    #[test]
    fn minted_tokens_verify_against_the_published_jwks_across_a_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let now = super::super::keys::now_secs();
        let mut ring = KeyRing::open(tmp.path(), 600, now).unwrap();
        let auds = vec!["vault".to_string(), "storage.internal".to_string()];
        let (old, c) = mint(&ring, ISS, &auds, 600, now, "t1", "g-1").unwrap();
        assert_eq!(c.sub, "tenant:t1:node:g-1");
        assert_eq!(c.exp - c.iat, 600);
        let got = verify_with_jwks(&jwks(&ring, 600, now), &old, "storage.internal");
        assert_eq!(got, c);
        let old_kid = ring.current().kid.clone();
        let new_kid = ring.rotate(600, now).unwrap();
        // The old token still verifies against the JWKS; new tokens carry the new kid.
        let set = jwks(&ring, 600, now);
        assert_eq!(set["keys"].as_array().unwrap().len(), 2);
        verify_with_jwks(&set, &old, "vault");
        let (new, _) = mint(&ring, ISS, &auds, 600, now, "t1", "g-1").unwrap();
        let h = jsonwebtoken::decode_header(&new).unwrap();
        assert_eq!(h.kid.as_deref(), Some(new_kid.as_str()));
        assert_eq!(h.alg, Algorithm::ES256);
        assert_ne!(new_kid, old_kid);
        verify_with_jwks(&set, &new, "vault");
        // Our own verifier: audience, issuer, expiry and signature all count.
        assert!(verify(&ring, ISS, "vault", 600, now, &new).is_ok());
        assert!(verify(&ring, ISS, "bulkhead", 600, now, &new).is_err());
        assert!(verify(&ring, "https://other", "vault", 600, now, &new).is_err());
        let past = now - 600 - VERIFY_LEEWAY - 1;
        let (expired, _) = mint(&ring, ISS, &auds, 600, past, "t1", "g-1").unwrap();
        assert!(verify(&ring, ISS, "vault", 600, now, &expired).is_err());
        // A character well inside the signature (the last one carries padding bits).
        let mut forged = new.clone().into_bytes();
        let i = forged.len() - 10;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(verify(&ring, ISS, "vault", 600, now, &forged).is_err());
        assert_eq!(peek_issuer(&new).as_deref(), Some(ISS));
        let d = discovery(ISS);
        assert_eq!(d["jwks_uri"], "https://bh.example/.well-known/jwks.json");
    }

    #[test]
    fn tokens_of_another_key_or_algorithm_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let now = super::super::keys::now_secs();
        let ring = KeyRing::open(&tmp.path().join("a"), 600, now).unwrap();
        let other = KeyRing::open(&tmp.path().join("b"), 600, now).unwrap();
        let auds = vec!["bulkhead".to_string()];
        let (t, _) = mint(&other, ISS, &auds, 600, now, "t", "n").unwrap();
        assert!(matches!(
            verify(&ring, ISS, "bulkhead", 600, now, &t),
            Err(TokenError::UnknownKey(_))
        ));
        // alg none with our kid.
        let kid = ring.current().kid.clone();
        let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"none","kid":"{kid}"}}"#));
        let p = t.split('.').nth(1).unwrap();
        assert!(verify(&ring, ISS, "bulkhead", 600, now, &format!("{h}.{p}.")).is_err());
        // HS256 with our kid, keyed with the public point.
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some(kid);
        let c: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
        let forged =
            jsonwebtoken::encode(&hs, &c, &EncodingKey::from_secret(&ring.current().public))
                .unwrap();
        assert!(verify(&ring, ISS, "bulkhead", 600, now, &forged).is_err());
    }
}
