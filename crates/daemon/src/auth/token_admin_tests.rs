//! The rules of `/tokens` against a real token store: who may make which token where.

use super::*;
use crate::auth::Via;
use bulkhead_core::iam::{RawRole, RawRule};

fn service() -> (tempfile::TempDir, TokenService) {
    let dir = tempfile::tempdir().unwrap();
    let roles = Roles::from_config(&[RawRole {
        name: "minter".into(),
        rules: vec![RawRule {
            resources: vec!["tokens".into(), "nodes".into()],
            actions: vec!["create".into(), "list".into()],
        }],
    }])
    .unwrap();
    let store = TokenStore::open(&dir.path().join("auth.db")).unwrap();
    (
        dir,
        TokenService {
            store,
            roles: Arc::new(roles),
        },
    )
}

fn who(s: &TokenService, bindings: &[&str]) -> Principal {
    Principal {
        expires_at: None,
        id: format!("test:{}", bindings.join("+")),
        via: Via::BearerToken,
        bindings: bindings
            .iter()
            .map(|b| s.roles.parse_binding(b).unwrap())
            .collect(),
    }
}

fn req(tenant: Option<&str>, role: &str) -> CreateTokenRequest {
    CreateTokenRequest {
        name: "ci".into(),
        tenant: tenant.map(Into::into),
        role: role.into(),
        ttl: None,
        e2b: false,
    }
}

const T: &[&str] = &["a", "b"];

#[test]
fn who_may_grant_what() {
    let (_d, s) = service();
    let code =
        |p: &Principal, r: CreateTokenRequest| s.plan(p, T, &r).map(|_| ()).map_err(|e| e.code);
    let global = who(&s, &["global-admin"]);
    let ta = who(&s, &["tenant-admin@a"]);
    let minter = who(&s, &["minter@a"]);
    let dev = who(&s, &["developer@a"]);
    assert_eq!(code(&global, req(None, "global-admin")), Ok(()));
    assert_eq!(code(&global, req(Some("b"), "tenant-admin")), Ok(()));
    assert_eq!(code(&ta, req(Some("a"), "developer")), Ok(()));
    assert_eq!(code(&ta, req(Some("a"), "tenant-admin")), Ok(()));
    assert_eq!(code(&ta, req(Some("a"), "minter")), Ok(()));
    // Not in another tenant, not global-admin.
    assert_eq!(code(&ta, req(Some("b"), "viewer")), Err(Code::Forbidden));
    assert_eq!(code(&ta, req(None, "global-admin")), Err(Code::Forbidden));
    // No escalation: a custom role with tokens:create mints only what it holds all of.
    assert_eq!(
        code(&minter, req(Some("a"), "tenant-admin")),
        Err(Code::Forbidden)
    );
    assert_eq!(
        code(&minter, req(Some("a"), "developer")),
        Err(Code::Forbidden)
    );
    assert_eq!(code(&minter, req(Some("a"), "minter")), Ok(()));
    let e = s
        .plan(&minter, T, &req(Some("a"), "developer"))
        .unwrap_err();
    assert!(e.message.contains("nodes:exec"), "{}", e.message);
    // Without tokens:create at all.
    assert_eq!(code(&dev, req(Some("a"), "viewer")), Err(Code::Forbidden));
    // Bad input: 400 naming the field.
    for (r, field) in [
        (req(Some("a"), "root"), "role:"),
        (req(Some("zz"), "viewer"), "tenant:"),
        (req(None, "viewer"), "tenant:"),
        (req(Some("a"), "global-admin"), "tenant:"),
        (
            CreateTokenRequest {
                ttl: Some("0s".into()),
                ..req(Some("a"), "viewer")
            },
            "ttl:",
        ),
        (
            CreateTokenRequest {
                ttl: Some("8761h".into()),
                ..req(Some("a"), "viewer")
            },
            "ttl:",
        ),
        (
            CreateTokenRequest {
                name: "Bad Name".into(),
                ..req(Some("a"), "viewer")
            },
            "name:",
        ),
    ] {
        let e = s.plan(&global, T, &r).unwrap_err();
        assert_eq!(e.code, Code::InvalidRequest, "{r:?}");
        assert!(e.message.starts_with(field), "{}", e.message);
    }
    let n = s
        .plan(
            &ta,
            T,
            &CreateTokenRequest {
                ttl: Some("2s".into()),
                ..req(Some("a"), "viewer")
            },
        )
        .unwrap();
    assert_eq!(
        (n.ttl_secs, n.created_by.as_str()),
        (2, "test:tenant-admin@a")
    );
}

#[test]
fn list_and_revoke_see_only_the_callers_tenants() {
    let (_d, s) = service();
    let global = who(&s, &["global-admin"]);
    let mk = |t: Option<&str>, role: &str| {
        let n = s.plan(&global, T, &req(t, role)).unwrap();
        s.create(n).unwrap()
    };
    let in_a = mk(Some("a"), "developer");
    let in_b = mk(Some("b"), "developer");
    let all = mk(None, "global-admin");
    assert!(in_a.token.starts_with("bh_"));
    let ta = who(&s, &["tenant-admin@a"]);
    let viewer = who(&s, &["viewer@b"]);
    let ids = |p: &Principal| s.list(p).into_iter().map(|t| t.id).collect::<Vec<_>>();
    assert_eq!(
        ids(&global),
        vec![in_a.id.clone(), in_b.id.clone(), all.id.clone()]
    );
    assert_eq!(ids(&ta), vec![in_a.id.clone()]);
    assert!(ids(&viewer).is_empty());
    let code = |p: &Principal, id: &str| s.check_revoke(p, id).map(|_| ()).map_err(|e| e.code);
    assert_eq!(code(&ta, &in_b.id), Err(Code::NotFound));
    assert_eq!(code(&ta, &all.id), Err(Code::NotFound));
    assert_eq!(code(&viewer, &in_b.id), Err(Code::Forbidden));
    assert_eq!(code(&ta, "nope"), Err(Code::InvalidRequest));
    assert_eq!(code(&ta, &TokenId::new().to_string()), Err(Code::NotFound));
    let id = s.check_revoke(&ta, &in_a.id).unwrap();
    s.revoke(&ta, id).unwrap();
    assert_eq!(s.list(&ta)[0].state, "revoked");
    assert!(s.store.check(&in_a.token, now_secs()).is_err());
}

/// A token never outlives the credential that made it, and revoking a token revokes the
/// tokens it made (and theirs).
#[test]
fn tokens_end_with_the_credential_that_made_them() {
    let (_d, s) = service();
    let mut ta = who(&s, &["tenant-admin@a"]);
    ta.expires_at = Some(now_secs() + 60);
    let planned = s.plan(&ta, T, &req(Some("a"), "developer")).unwrap();
    assert!(planned.ttl_secs <= 60, "{}", planned.ttl_secs);
    ta.expires_at = Some(now_secs().saturating_sub(1));
    assert_eq!(
        s.plan(&ta, T, &req(Some("a"), "developer"))
            .unwrap_err()
            .code,
        Code::Unauthorized
    );
    // parent → child → grandchild; revoking the parent revokes all three.
    let global = who(&s, &["global-admin"]);
    let parent = s
        .create(s.plan(&global, T, &req(Some("a"), "tenant-admin")).unwrap())
        .unwrap();
    let as_token = |id: &str| Principal {
        expires_at: None,
        id: format!("token:{id}"),
        via: Via::ApiToken { id: id.into() },
        bindings: vec![s.roles.parse_binding("tenant-admin@a").unwrap()],
    };
    let child = s
        .create(
            s.plan(&as_token(&parent.id), T, &req(Some("a"), "tenant-admin"))
                .unwrap(),
        )
        .unwrap();
    let grandchild = s
        .create(
            s.plan(&as_token(&child.id), T, &req(Some("a"), "developer"))
                .unwrap(),
        )
        .unwrap();
    let other = s
        .create(s.plan(&global, T, &req(Some("a"), "viewer")).unwrap())
        .unwrap();
    s.revoke(&global, parent.id.parse().unwrap()).unwrap();
    for t in [&parent, &child, &grandchild] {
        assert!(
            s.store.check(&t.token, now_secs()).is_err(),
            "{} still works",
            t.id
        );
    }
    assert!(s.store.check(&other.token, now_secs()).is_ok());
}
