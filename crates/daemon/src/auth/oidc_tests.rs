//! OIDC verification with keys minted here: an ES256 key made with ring, and the committed
//! test-only RSA key (`testdata/`, ring cannot generate RSA keys).

use super::*;
use crate::auth::authn::Chain;
use crate::auth::jwks::KeySet;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bulkhead_core::iam::{Resource, Verb};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

const ISS: &str = "https://idp.example.com";
const RSA_DER: &[u8] = include_bytes!("testdata/oidc-test-only-rsa2048.der");

struct Ec {
    pkcs8: Vec<u8>,
    jwk: Value,
}

fn ec_key(kid: &str) -> Ec {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
        .unwrap()
        .as_ref()
        .to_vec();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).unwrap();
    let p = kp.public_key().as_ref();
    let jwk = json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])});
    Ec { pkcs8, jwk }
}

fn rsa_jwk(kid: &str) -> Value {
    let kp = ring::rsa::KeyPair::from_der(RSA_DER).unwrap();
    let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(kp.public());
    json!({"kty": "RSA", "kid": kid, "n": B64.encode(&c.n), "e": B64.encode(&c.e)})
}

struct Idp {
    ec: Ec,
    oidc: Oidc,
}

fn config(roles_claim: &str) -> OidcConfig {
    OidcConfig {
        issuer: ISS.into(),
        audience: "bulkhead".into(),
        jwks: bulkhead_core::config::JwksSource::File("/unused".into()),
        roles_claim: roles_claim.into(),
        leeway: std::time::Duration::from_secs(60),
    }
}

fn idp_with(roles_claim: &str) -> Idp {
    let ec = ec_key("ec1");
    let doc = json!({"keys": [ec.jwk, rsa_jwk("rsa1")]}).to_string();
    let keys = Jwks::fixed(KeySet::parse(doc.as_bytes(), "test").unwrap(), "test");
    let oidc = Oidc::with_keys(&config(roles_claim), Arc::new(Roles::default()), keys);
    Idp { ec, oidc }
}

fn idp() -> Idp {
    idp_with("bulkhead_roles")
}

fn claims(extra: Value) -> Value {
    let t = now();
    let mut c = json!({"iss": ISS, "aud": "bulkhead", "sub": "alice", "iat": t, "exp": t + 300,
        "bulkhead_roles": ["developer@a3cf", "viewer@e7d1"]});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

impl Idp {
    fn es256(&self, kid: &str, c: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, c, &EncodingKey::from_ec_der(&self.ec.pkcs8)).unwrap()
    }

    fn rs256(&self, c: &Value) -> String {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some("rsa1".into());
        jsonwebtoken::encode(&h, c, &EncodingKey::from_rsa_der(RSA_DER)).unwrap()
    }

    fn ok(&self, token: &str) -> Principal {
        self.oidc
            .verify(token, now())
            .unwrap_or_else(|e| panic!("{}", e.message))
            .expect("recognised")
    }

    /// The 401's message; it never carries the token or its signature.
    fn refused(&self, token: &str) -> String {
        let e = self.oidc.verify(token, now()).unwrap_err();
        assert_eq!(e.code, Code::Unauthorized);
        let sig = token.rsplit('.').next().unwrap();
        assert!(!e.message.contains(token));
        assert!(sig.is_empty() || !e.message.contains(sig), "{}", e.message);
        e.message
    }
}

fn bindings(p: &Principal) -> Vec<String> {
    p.bindings.iter().map(|b| b.to_string()).collect()
}

fn unsigned(alg: &str, c: &Value) -> String {
    let h = B64.encode(json!({"alg": alg, "typ": "JWT", "kid": "rsa1"}).to_string());
    format!("{h}.{}.", B64.encode(c.to_string()))
}

#[test]
fn valid_rs256_and_es256_tokens_get_exactly_their_bindings() {
    let idp = idp();
    let p = idp.ok(&idp.rs256(&claims(json!({}))));
    assert_eq!(p.id, "oidc:alice");
    assert_eq!(
        p.via,
        Via::Oidc {
            issuer: ISS.into(),
            subject: "alice".into()
        }
    );
    assert_eq!(bindings(&p), ["developer@a3cf", "viewer@e7d1"]);
    assert!(p.may("a3cf", Resource::Nodes, Verb::Exec));
    assert!(!p.may("e7d1", Resource::Nodes, Verb::Exec));
    assert!(p.may("e7d1", Resource::Nodes, Verb::List));
    assert!(!p.has_role_in("zzzz"));
    // ES256, audience as an array that contains ours, a global binding.
    let c = claims(json!({"aud": ["other", "bulkhead"], "bulkhead_roles": ["viewer"]}));
    let p = idp.ok(&idp.es256("ec1", &c));
    assert_eq!(bindings(&p), ["viewer"]);
    assert!(p.has_role_in("anything"));
    // Within the leeway: expired 30 s ago, valid from 30 s on.
    let t = now();
    idp.ok(&idp.es256("ec1", &claims(json!({"exp": t - 30, "nbf": t + 30}))));
}

#[test]
fn each_bad_token_is_a_401_with_its_own_message() {
    let idp = idp();
    let t = now();
    let pubkey_bytes = {
        let kp = ring::rsa::KeyPair::from_der(RSA_DER).unwrap();
        kp.public().as_ref().to_vec()
    };
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("rsa1".into());
    let hmac_with_public_key = jsonwebtoken::encode(
        &hs,
        &claims(json!({})),
        &EncodingKey::from_secret(&pubkey_bytes),
    )
    .unwrap();
    let other_ec = ec_key("ec1");
    let forged = {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("ec1".into());
        jsonwebtoken::encode(
            &h,
            &claims(json!({})),
            &EncodingKey::from_ec_der(&other_ec.pkcs8),
        )
        .unwrap()
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong audience",
            idp.es256("ec1", &claims(json!({"aud": "someone-else"}))),
            "audience (aud) does not include \"bulkhead\"",
        ),
        ("bad signature", forged, "signature does not verify"),
        (
            "alg none",
            unsigned("none", &claims(json!({}))),
            "algorithm \"none\" is not accepted",
        ),
        (
            "HS256 keyed with the RSA public key",
            hmac_with_public_key,
            "algorithm \"HS256\" is not accepted",
        ),
        (
            "expired",
            idp.es256("ec1", &claims(json!({"exp": t - 120}))),
            "expired",
        ),
        (
            "not yet valid",
            idp.es256("ec1", &claims(json!({"nbf": t + 600}))),
            "not valid yet",
        ),
        (
            "nbf not a number",
            idp.es256("ec1", &claims(json!({"nbf": "tomorrow"}))),
            "nbf claim is not a whole number",
        ),
        (
            "iat a fraction",
            idp.es256("ec1", &claims(json!({"iat": 1.5}))),
            "iat claim is not a whole number",
        ),
        (
            "issued in the future",
            idp.es256("ec1", &claims(json!({"iat": t + 600}))),
            "issued in the future",
        ),
        (
            "no exp",
            idp.es256("ec1", &claims(json!({"exp": null}))),
            "no exp claim",
        ),
        (
            "no sub",
            idp.es256("ec1", &claims(json!({"sub": null}))),
            "no sub claim",
        ),
        (
            "no roles claim",
            idp.rs256(&claims(json!({"bulkhead_roles": null}))),
            "no \"bulkhead_roles\" claim",
        ),
        (
            "roles claim not an array",
            idp.rs256(&claims(json!({"bulkhead_roles": "developer@a3cf"}))),
            "\"bulkhead_roles\" claim is not an array",
        ),
        (
            "no known role",
            idp.rs256(&claims(
                json!({"bulkhead_roles": ["root@a3cf", 7, "global-admin@a3cf"]}),
            )),
            "names no known role",
        ),
        (
            "unknown kid",
            idp.es256("ec9", &claims(json!({}))),
            "no key with kid \"ec9\"",
        ),
        (
            "RS256 header on the EC key",
            {
                let c = claims(json!({}));
                let mut h = Header::new(Algorithm::RS256);
                h.kid = Some("ec1".into());
                jsonwebtoken::encode(&h, &c, &EncodingKey::from_rsa_der(RSA_DER)).unwrap()
            },
            "is not a RS256 key",
        ),
        (
            "garbled claims",
            format!("{}.e30x.c2ln", B64.encode(r#"{"alg":"ES256"}"#)),
            "not base64url JSON",
        ),
    ];
    let mut seen = std::collections::HashSet::new();
    for (what, token, want) in &cases {
        let m = idp.refused(token);
        assert!(m.contains(want), "{what}: {m}");
        assert!(seen.insert(m.clone()), "{what}: message not distinct: {m}");
    }
}

#[test]
fn other_credentials_and_other_issuers_are_left_to_the_chain() {
    let idp = idp();
    for t in [
        "bh_0123456789abcdef",
        "0123456789abcdef0123456789abcdef",
        "a.b",
        "a.b.c.d",
    ] {
        assert!(idp.oidc.verify(t, now()).unwrap().is_none(), "{t}");
    }
    // A JWT of another issuer (the daemon's workload tokens) is not ours...
    let foreign = idp.es256("ec1", &claims(json!({"iss": "https://evil.example.com"})));
    assert!(idp.oidc.verify(&foreign, now()).unwrap().is_none());
    // ...and with nobody recognising it, the chain answers 401.
    let chain = Chain(vec![Box::new(idp.oidc)]);
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        format!("Bearer {foreign}").parse().unwrap(),
    );
    let peer = Peer::Tcp {
        addr: "127.0.0.1:1".parse().unwrap(),
    };
    assert_eq!(
        chain.authenticate(&peer, &h).unwrap_err().code,
        Code::Unauthorized
    );
}

#[test]
fn unknown_roles_are_skipped_and_dotted_claims_are_found() {
    let idp = idp();
    let c = claims(json!({"bulkhead_roles": ["root", "developer@a3cf", "developer@a3cf", 3]}));
    assert_eq!(bindings(&idp.ok(&idp.rs256(&c))), ["developer@a3cf"]);
    let kc = idp_with("realm_access.roles");
    let c =
        claims(json!({"bulkhead_roles": null, "realm_access": {"roles": ["tenant-admin@a3cf"]}}));
    assert_eq!(
        bindings(&kc.ok(&kc.es256("ec1", &c))),
        ["tenant-admin@a3cf"]
    );
    // A claim whose name has dots (Auth0's namespaced claims) is found as it is.
    let ns = idp_with("https://bulkhead.example/roles");
    let c = claims(json!({"https://bulkhead.example/roles": ["viewer@a3cf"]}));
    assert_eq!(bindings(&ns.ok(&ns.es256("ec1", &c))), ["viewer@a3cf"]);
}

#[test]
fn key_sets_keep_only_keys_bulkhead_verifies_with() {
    let ec = ec_key("ec1");
    let mut p384 = ec.jwk.clone();
    p384["kid"] = "p384".into();
    p384["crv"] = "P-384".into();
    p384["alg"] = "ES384".into();
    let mut enc = rsa_jwk("enc");
    enc["use"] = "enc".into();
    let small = json!({"kty": "RSA", "kid": "small", "n": B64.encode([0xc5u8; 128]), "e": "AQAB"});
    let doc = json!({"keys": [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        p384, enc, small,
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": B64.encode([1u8; 32])},
        {"kty": "weird"},
        ec.jwk, rsa_jwk("rsa1"),
    ]});
    let set = KeySet::parse(doc.to_string().as_bytes(), "t").unwrap();
    assert_eq!(set.len(), 2);
    assert!(set.find(Some("rsa1"), KeyKind::Rs256).is_ok());
    assert!(set.find(None, KeyKind::Es256).is_ok());
    for kid in ["hmac", "p384", "enc", "small", "ed"] {
        assert_eq!(
            set.find(Some(kid), KeyKind::Rs256).err(),
            Some(Lookup::UnknownKid),
            "{kid}"
        );
    }
    for bad in [
        "not json",
        "{}",
        r#"{"keys": 3}"#,
        r#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
    ] {
        let e = KeySet::parse(bad.as_bytes(), "jwks_file /x").err().unwrap();
        assert!(e.to_string().contains("jwks_file /x"), "{e}");
    }
}

#[tokio::test]
async fn a_changed_key_file_is_picked_up_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let (a, b) = (ec_key("a"), ec_key("b"));
    std::fs::write(&path, json!({"keys": [a.jwk]}).to_string()).unwrap();
    let src = bulkhead_core::config::JwksSource::File(path.clone());
    let j = Jwks::start(&src).await.unwrap();
    assert!(j.get().find(Some("a"), KeyKind::Es256).is_ok());
    // A bad rewrite keeps the last good keys.
    std::fs::write(&path, "garbage").unwrap();
    tokio::time::sleep(crate::auth::jwks::FILE_POLL * 2).await;
    assert!(j.get().find(Some("a"), KeyKind::Es256).is_ok());
    let tmp = dir.path().join("new.json");
    std::fs::write(&tmp, json!({"keys": [b.jwk]}).to_string()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let deadline = std::time::Instant::now() + crate::auth::jwks::FILE_POLL * 4;
    while j.get().find(Some("b"), KeyKind::Es256).is_err() {
        assert!(std::time::Instant::now() < deadline, "new key not loaded");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(j.get().find(Some("a"), KeyKind::Es256).is_err());
    // A missing or unusable file at start is a start error naming it.
    let missing = bulkhead_core::config::JwksSource::File(dir.path().join("nope.json"));
    let e = Jwks::start(&missing).await.err().unwrap().to_string();
    assert!(e.contains("nope.json"), "{e}");
}

#[tokio::test]
async fn a_jwks_url_is_fetched_and_an_unreachable_one_does_not_stop_the_start() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let doc = json!({"keys": [ec_key("u1").jwk]}).to_string();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let r = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{doc}",
                doc.len()
            );
            let _ = s.write_all(r.as_bytes()).await;
        }
    });
    let src = bulkhead_core::config::JwksSource::Url(format!("http://{addr}/jwks"));
    let j = Jwks::start(&src).await.unwrap();
    assert!(j.get().find(Some("u1"), KeyKind::Es256).is_ok());
    // Nothing listens here: the daemon still starts, with no keys (tokens refused).
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    let src = bulkhead_core::config::JwksSource::Url(format!("http://{gone}/jwks"));
    let j = Jwks::start(&src).await.unwrap();
    assert!(j.get().is_empty());
}

#[test]
fn remembered_tokens_still_expire_and_follow_the_key_set() {
    let idp = idp();
    let t = now();
    let token = idp.es256("ec1", &claims(json!({"exp": t + 100})));
    assert_eq!(idp.ok(&token).id, "oidc:alice");
    assert_eq!(
        idp.oidc.verify(&token, t).unwrap().unwrap().id,
        "oidc:alice"
    );
    // Past exp and the leeway, the remembered token is refused like any expired one.
    let e = idp.oidc.verify(&token, t + 100 + 61).unwrap_err();
    assert!(e.message.contains("expired"), "{}", e.message);
    // The IdP drops ec1: a token verified under the old set is checked again, and refused.
    let token = idp.es256("ec1", &claims(json!({})));
    idp.ok(&token);
    let doc = json!({"keys": [rsa_jwk("rsa1")]}).to_string();
    idp.oidc
        .keys
        .set(KeySet::parse(doc.as_bytes(), "test").unwrap());
    assert!(idp.refused(&token).contains("no key with kid \"ec1\""));
}
