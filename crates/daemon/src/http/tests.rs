//! The route table against the OpenAPI spec and against the request pipeline.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use std::collections::HashMap;
use std::sync::Arc;
use tower::ServiceExt;

use crate::auth::authn::{Authenticator, Chain, Peer};
use crate::auth::layer::{Pipeline, Tenants};
use crate::auth::{Principal, Roles, Via};

/// Fails when a route is added, removed or changed without the OpenAPI spec, or back.
#[test]
fn routes_match_openapi_spec() {
    let spec: serde_json::Value =
        serde_yaml::from_str(include_str!("../../../../docs/api/openapi.yaml")).expect("parses");
    let mut in_spec: Vec<(String, String)> = Vec::new();
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        for m in ops.as_object().expect("operations").keys() {
            if ["get", "post", "put", "delete", "head", "patch"].contains(&m.as_str()) {
                in_spec.push((path.clone(), m.clone()));
            }
        }
    }
    let mut in_code: Vec<(String, String)> = super::table()
        .into_iter()
        .flat_map(|r| {
            r.methods
                .iter()
                .map(move |(m, _)| (r.path.to_string(), m.to_string()))
        })
        .collect();
    in_spec.sort();
    in_code.sort();
    assert_eq!(
        in_code, in_spec,
        "routes in code (left) differ from docs/api/openapi.yaml (right)"
    );
}

/// A principal the test chooses, whoever connects.
struct Fake(Option<&'static str>);

impl Authenticator for Fake {
    fn authenticate(
        &self,
        _: &Peer,
        _: &axum::http::HeaderMap,
    ) -> Result<Option<Principal>, bulkhead_core::DomainError> {
        Ok(Some(Principal {
            expires_at: None,
            id: "fake".into(),
            via: Via::BearerToken,
            bindings: self
                .0
                .map(|role| Roles::default().binding(role, Some("t")).unwrap())
                .into_iter()
                .collect(),
        }))
    }
}

/// One tenant, `t`, holding every node and group a test names.
struct OneTenant;

impl Tenants for OneTenant {
    fn count(&self) -> usize {
        1
    }
    fn name(&self, _: usize) -> &str {
        "t"
    }
    fn of_node(&self, _: &str) -> Option<usize> {
        Some(0)
    }
    fn of_group(&self, _: &str) -> Option<usize> {
        Some(0)
    }
    fn scope(&self, _: usize, _: &mut axum::http::Extensions) {}
    fn visible(&self, _: Vec<usize>, _: &mut axum::http::Extensions) {}
    fn denied(&self, _: usize, _: &str) {}
    fn unauthenticated(&self) {}
}

fn filter(m: &str) -> MethodFilter {
    MethodFilter::try_from(Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap()).unwrap()
}

/// The real table's paths and methods with stub handlers (the handlers are not under test;
/// the layers around them are), behind the real pipeline with `actions`.
fn stub_router(role: Option<&'static str>, actions: crate::auth::layer::Actions) -> Router {
    let pipeline = Arc::new(Pipeline {
        chain: Chain(vec![Box::new(Fake(role))]),
        tenants: Arc::new(OneTenant),
        actions,
    });
    let mut r = Router::new();
    for route in super::table() {
        let mut mr: MethodRouter = MethodRouter::new();
        for (m, _) in route.methods {
            mr = mr.on(filter(m), || async { "handled" });
        }
        r = r.route(route.path, mr);
    }
    super::with_pipeline(r, pipeline)
}

fn concrete(path: &str) -> String {
    path.replace("{group}", "g")
        .replace("{node}", "g-1")
        .replace("{port}", "8080")
}

async fn call(r: &Router, method: &str, path: &str) -> StatusCode {
    let mut req = Request::builder()
        .method(Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap())
        .uri(concrete(path))
        .body(Body::empty())
        .unwrap();
    req.extensions_mut().insert(Peer::Unix {
        uid: 0,
        gid: 0,
        pid: 1,
    });
    r.clone().oneshot(req).await.unwrap().status()
}

/// Every route of the table declares an action for every method it serves.
#[test]
fn every_route_declares_an_action() {
    let actions = super::actions();
    for route in super::table() {
        assert!(!route.methods.is_empty(), "{} has no methods", route.path);
        for (m, _) in route.methods {
            assert!(
                crate::auth::layer::action_of(&actions, route.path, m).is_some(),
                "{m} {} has no action",
                route.path
            );
        }
    }
}

/// A HEAD a route does not declare needs its GET's action (the GET handler serves it); a
/// route without GET has no HEAD.
#[test]
fn head_reads_what_get_reads() {
    let actions = super::actions();
    for route in super::table() {
        let get = crate::auth::layer::action_of(&actions, route.path, "get");
        let head = crate::auth::layer::action_of(&actions, route.path, "HEAD");
        if !route.methods.iter().any(|(m, _)| *m == "head") {
            assert_eq!(head, get, "HEAD {}", route.path);
        }
    }
    assert!(crate::auth::layer::action_of(&actions, "/healthz", "HEAD").is_some());
    assert!(crate::auth::layer::action_of(&actions, "/vm/{node}/pause", "HEAD").is_none());
}

/// Every route passes the authorization layer: a principal with no role gets 404 on a route
/// with a node or group (its tenant's objects do not exist for it) and 403 on the others,
/// and with the actions removed from the pipeline, even an admin gets 403 (deny by default).
/// Public routes (the identity issuer's keys) answer everyone.
#[tokio::test]
async fn every_route_passes_authorization() {
    let nobody = stub_router(None, super::actions());
    let admin = stub_router(Some("tenant-admin"), super::actions());
    let undeclared = stub_router(Some("tenant-admin"), HashMap::new());
    for route in super::table() {
        for (m, a) in route.methods {
            let public = crate::auth::layer::action_of(&super::actions(), route.path, m)
                .and_then(|a| a.need())
                == Some(crate::auth::Need::Public);
            let object = route.path.contains("{node}") || route.path.contains("{group}");
            let want = match (public, object) {
                (true, _) => StatusCode::OK,
                (false, true) => StatusCode::NOT_FOUND,
                (false, false) => StatusCode::FORBIDDEN,
            };
            assert_eq!(
                call(&nobody, m, route.path).await,
                want,
                "{m} {}",
                route.path
            );
            // A tenant-admin is not global-admin (`POST /identity/rotate`, #11).
            let global = a.need() == Some(crate::auth::Need::GlobalAdmin);
            assert_eq!(
                call(&admin, m, route.path).await,
                if global {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::OK
                },
                "{m} {}",
                route.path
            );
            assert_eq!(
                call(&undeclared, m, route.path).await,
                StatusCode::FORBIDDEN,
                "{m} {} without an action",
                route.path
            );
        }
    }
}

/// A viewer reads but does not act; unknown routes are still 404 (after authentication).
#[tokio::test]
async fn viewer_reads_only() {
    let viewer = stub_router(Some("viewer"), super::actions());
    assert_eq!(call(&viewer, "get", "/nodes").await, StatusCode::OK);
    assert_eq!(
        call(&viewer, "get", "/vm/{node}/health").await,
        StatusCode::OK
    );
    assert_eq!(
        call(&viewer, "post", "/vm/{node}/exec").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&viewer, "get", "/vm/{node}/cp").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&viewer, "delete", "/hostgroup/{group}/nodes/{node}").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(call(&viewer, "get", "/nope").await, StatusCode::NOT_FOUND);
}

/// A request that came through no listener (no peer recorded) is refused.
#[tokio::test]
async fn no_peer_no_principal() {
    let admin = stub_router(Some("tenant-admin"), super::actions());
    let req = Request::builder()
        .uri("/healthz")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        admin.oneshot(req).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

/// Without credentials, exactly the routes whose action is public (the workload identity
/// issuer's keys) are served; every other route, and an unknown one, is 401 (#11).
#[tokio::test]
async fn only_public_routes_pass_without_credentials() {
    struct Nothing;
    impl Authenticator for Nothing {
        fn authenticate(
            &self,
            _: &Peer,
            _: &axum::http::HeaderMap,
        ) -> Result<Option<Principal>, bulkhead_core::DomainError> {
            Ok(None)
        }
    }
    let pipeline = Arc::new(Pipeline {
        chain: Chain(vec![Box::new(Nothing)]),
        tenants: Arc::new(OneTenant),
        actions: super::actions(),
    });
    let mut r = Router::new();
    for route in super::table() {
        let mut mr: MethodRouter = MethodRouter::new();
        for (m, _) in route.methods {
            mr = mr.on(filter(m), || async { "handled" });
        }
        r = r.route(route.path, mr);
    }
    let r = super::with_pipeline(r, pipeline);
    let mut public = 0;
    for route in super::table() {
        for (m, a) in route.methods {
            let want = if a.need() == Some(crate::auth::Need::Public) {
                public += 1;
                StatusCode::OK
            } else {
                StatusCode::UNAUTHORIZED
            };
            assert_eq!(call(&r, m, route.path).await, want, "{m} {}", route.path);
        }
    }
    assert_eq!(public, 2, "the discovery document and the JWKS");
    assert_eq!(call(&r, "get", "/nope").await, StatusCode::UNAUTHORIZED);
}

/// A node or group name that does not decode (invalid UTF-8) is refused by the layer (400),
/// never authorized as a route over the whole daemon.
#[tokio::test]
async fn undecodable_object_names_fail_closed() {
    let admin = stub_router(Some("tenant-admin"), super::actions());
    for route in super::table() {
        if !(route.path.contains("{node}") || route.path.contains("{group}")) {
            continue;
        }
        for (m, _) in route.methods {
            let path = route
                .path
                .replace("{node}", "%FF")
                .replace("{group}", "%FF")
                .replace("{exec_id}", "x")
                .replace("{port}", "8080");
            let mut req = Request::builder()
                .method(Method::from_bytes(m.to_ascii_uppercase().as_bytes()).unwrap())
                .uri(path)
                .body(Body::empty())
                .unwrap();
            req.extensions_mut().insert(Peer::Unix {
                uid: 0,
                gid: 0,
                pid: 1,
            });
            let st = admin.clone().oneshot(req).await.unwrap().status();
            assert_eq!(st, StatusCode::BAD_REQUEST, "{m} {}", route.path);
        }
    }
}
