//! The control plane's route table against `docs/api/e2b-openapi.yaml` (its `/sandboxes` and
//! `/v2/sandboxes` paths; the in-sandbox routes there are envd's, `envd::table()`), and every
//! route declaring an action that some role has.

use crate::auth::{Need, Roles};

#[test]
fn control_routes_match_the_e2b_spec() {
    let spec: serde_json::Value =
        serde_yaml::from_str(include_str!("../../../../docs/api/e2b-openapi.yaml"))
            .expect("parses");
    let mut in_spec: Vec<(String, String)> = Vec::new();
    for (path, ops) in spec["paths"].as_object().expect("paths") {
        if !(path.starts_with("/sandboxes") || path.starts_with("/v2/sandboxes")) {
            continue;
        }
        for m in ops.as_object().expect("operations").keys() {
            if ["get", "post", "put", "delete", "head", "patch"].contains(&m.as_str()) {
                in_spec.push((path.replace("{sandboxID}", "{node}"), m.clone()));
            }
        }
    }
    let mut in_code: Vec<(String, String)> = super::control::table()
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
        "routes in code (left) differ from docs/api/e2b-openapi.yaml (right)"
    );
}

#[test]
fn every_control_route_has_an_action_a_developer_has() {
    let roles = Roles::default();
    let dev = roles.binding("developer", Some("t")).unwrap();
    for r in super::control::table() {
        for (m, a) in r.methods {
            match a.need() {
                Some(Need::Rule(res, verb)) => assert!(
                    dev.role.allows(res, verb),
                    "{m} {}: {a:?} needs {}:{}",
                    r.path,
                    res.as_str(),
                    verb.as_str()
                ),
                other => panic!("{m} {}: {a:?} needs {other:?}", r.path),
            }
        }
    }
}
