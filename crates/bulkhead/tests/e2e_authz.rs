//! The route × role × tenant matrix, through the real binary: every route of the router (read
//! from docs/api/openapi.yaml, which a unit test holds equal to the route table) × {global-admin,
//! tenant-admin, developer, viewer, a custom role, no role} × {own tenant, foreign tenant}, each
//! with the answer the role table says: allowed (the handler ran), 403 (a role without
//! the action), 404 (no role in the object's tenant: exactly like a missing object).
//!
//! Requests are harmless: each carries an unknown query key, so a handler that runs answers
//! 400 before doing anything (the test checks that no mutating request succeeded), and the
//! test's nodes survive the whole matrix.

mod common;

use common::netlab::in_ns;
use common::shared::Shared;
use common::*;
use hyper::Method;
use std::collections::BTreeMap;

/// What a route needs, from the role table (independent of the daemon's own table).
fn need(method: &str, path: &str) -> Option<&'static str> {
    Some(match (method, path) {
        ("get" | "head", "/healthz") | ("get", "/info") => "any",
        ("get", "/.well-known/openid-configuration" | "/.well-known/jwks.json") => "public",
        ("post", "/identity/rotate") => "global-admin",
        ("get", "/tokens") => "tokens:list",
        ("post", "/tokens") => "tokens:create",
        ("delete", "/tokens/{id}") => "tokens:delete",
        ("get", "/hostgroup" | "/nodes" | "/hostgroup/{group}/nodes") => "nodes:list",
        ("post", "/hostgroup/{group}/nodes") => "nodes:create",
        ("delete", "/hostgroup/{group}/nodes/{node}") => "nodes:delete",
        ("post", "/vm/{node}/timeout") => "nodes:delete", // node TTL (#15, B)
        ("get", "/metrics" | "/nodes/stats" | "/node/{node}/stats" | "/vm/{node}")
        | ("get", "/vm/{node}/tags" | "/vm/{node}/forwards")
        | ("get" | "head", "/vm/{node}/health") => "nodes:get",
        ("get", "/quota") => "nodes:get", // quotas (#12)
        // volumes (#13): node verbs
        ("get", "/volumes") => "nodes:list",
        ("post", "/volumes" | "/volumes/{id}/snapshots") => "nodes:create",
        ("get", "/volumes/{id}" | "/volumes/{id}/snapshots") => "nodes:get",
        ("delete", "/volumes/{id}" | "/volumes/{id}/snapshots/{sid}") => "nodes:delete",
        // secrets (#13)
        ("get", "/secrets") => "secrets:list",
        ("post", "/secrets") | ("patch", "/secrets/{name}") => "secrets:create",
        ("delete", "/secrets/{name}") => "secrets:delete",
        // commit and fork (#13): node rules govern commits
        ("get", "/vm/commits" | "/vm/commits/{id}") => "nodes:list",
        ("post", "/vm/{node}/commit") => "nodes:copy",
        ("delete", "/vm/commits/{id}") => "nodes:delete",
        ("post", "/vm/commits/{id}/fork") => "nodes:create",
        ("get", "/usage") => "usage:list",   // usage (#14, part E)
        ("get", "/events") => "events:list", // #14, part B
        ("get", "/audit") => "audit:list",   // audit trail (#14, A)
        ("get", "/vm/{node}/logs") => "nodes:logs",
        ("patch", "/vm/{node}/tags") => "nodes:update",
        ("post", "/vm/{node}/pause" | "/vm/{node}/shutdown" | "/vm/{node}/suspend") => {
            "nodes:pause"
        }
        ("post", "/vm/{node}/resume" | "/vm/{node}/relaunch" | "/vm/{node}/restore") => {
            "nodes:resume"
        }
        ("post", "/vm/{node}/forwards") | ("delete", "/vm/{node}/forwards/{port}") => {
            "nodes:forward"
        }
        ("get", "/vm/{node}/forward") => "nodes:forward",
        (
            "get",
            "/vm/{node}/cp"
            | "/vm/{node}/fs/readdir"
            | "/vm/{node}/fs/stat"
            | "/vm/{node}/fs/watch",
        )
        | ("post", "/vm/{node}/cp" | "/vm/{node}/fs/mkdir")
        | ("delete", "/vm/{node}/fs/remove") => "nodes:copy",
        ("post" | "get", "/vm/{node}/exec")
        | ("get" | "delete", "/vm/{node}/exec/{exec_id}")
        | (
            "get",
            "/vm/{node}/exec/{exec_id}/logs"
            | "/vm/{node}/exec/{exec_id}/wait-exit"
            | "/vm/{node}/shell",
        )
        | ("post", "/vm/{node}/exec/{exec_id}/kill") => "nodes:exec",
        // containerd shim (#16, B1): input to background execs; where a pod's node goes
        ("post", "/vm/{node}/exec/{exec_id}/stdin" | "/vm/{node}/exec/{exec_id}/resize") => {
            "nodes:exec"
        }
        ("get", "/shim/placement") => "nodes:create",
        // containers in a node (#16, B2)
        ("put", "/vm/{node}/containers/{cid}/rootfs") => "nodes:copy",
        ("post", "/vm/{node}/containers") | ("delete", "/vm/{node}/containers/{cid}") => {
            "nodes:exec"
        }
        ("get", "/vm/{node}/containers") => "nodes:get",
        _ => return None,
    })
}

/// What each role may do on `nodes` and `tokens` (the table; ci-runner from config).
fn role_allows(role: &str, need: &str) -> bool {
    let nodes_dev = [
        "list", "get", "create", "delete", "exec", "copy", "logs", "pause", "resume", "forward",
        "update",
    ];
    let (res, act) = need.split_once(':').unwrap();
    match role {
        "global-admin" => true,
        "tenant-admin" => true,
        "developer" => {
            (res == "nodes" && nodes_dev.contains(&act))
                || (res, act) == ("secrets", "list")
                || (res, act) == ("usage", "list") // usage (#14, part E)
                || (res, act) == ("events", "list") // #14
        }
        "viewer" => {
            (res == "nodes" && ["list", "get", "logs"].contains(&act))
                || (res, act) == ("usage", "list") // usage (#14, part E)
                || (res, act) == ("events", "list") // #14
        }
        // #16, B1: the containerd shim's built-in role (its socket: e2e_shim_api)
        "shim" => {
            (res == "nodes"
                && [
                    "list", "get", "create", "delete", "exec", "copy", "pause", "resume",
                ]
                .contains(&act))
                || (res, act) == ("events", "list")
        }
        "ci-runner" => {
            res == "nodes" && ["list", "get", "create", "delete", "exec", "copy"].contains(&act)
        }
        _ => false,
    }
}

/// The answer a principal holding `role` in tenant a (or, for `""`, developer in tenant c
/// only) should get for a route needing `need`, on tenant a's object (`own`), tenant b's
/// (`foreign`), or the daemon (`-`).
fn expect(role: &str, need: &str, which: &str) -> Seen {
    match (need, which) {
        ("public", _) => Seen::Allowed,
        _ if role == "global-admin" => Seen::Allowed,
        ("global-admin", _) => Seen::Forbidden,
        // Daemon routes answer for the tenants the principal has a role in (c for "none").
        ("any", "-") => Seen::Allowed,
        (n, "-") => {
            let r = if role.is_empty() { "developer" } else { role };
            if role_allows(r, n) {
                Seen::Allowed
            } else {
                Seen::Forbidden
            }
        }
        (_, "foreign") => Seen::Hidden,
        _ if role.is_empty() => Seen::Hidden,
        (n, _) if role_allows(role, n) => Seen::Allowed,
        _ => Seen::Forbidden,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Allowed,
    Forbidden,
    Hidden,
    Unauthorized,
}

/// A 404 of a node or host group that does not exist for the caller (`node "X" not found…`,
/// `host group "X" not found…`), as opposed to a handler's own 404 (an exec id). A HEAD's 404
/// has no body: those routes have no 404 but the node's.
fn classify(status: u16, body: &str) -> Seen {
    let object_missing = |e: &str| {
        ["node \"", "host group \""].iter().any(|p| {
            e.strip_prefix(p)
                .and_then(|rest| rest.split_once('"'))
                .is_some_and(|(_, after)| after.starts_with(" not found"))
        })
    };
    let hidden = |b: &str| {
        b.is_empty()
            || serde_json::from_str::<serde_json::Value>(b).is_ok_and(|v| {
                v["code"] == "not_found" && v["error"].as_str().is_some_and(object_missing)
            })
    };
    match status {
        401 => Seen::Unauthorized,
        403 => Seen::Forbidden,
        404 if hidden(body) => Seen::Hidden,
        _ => Seen::Allowed,
    }
}

/// Every (path, method) of the OpenAPI spec.
fn routes() -> Vec<(String, String)> {
    let spec: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/api/openapi.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let mut v = Vec::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "head", "patch"].contains(&m.as_str()) {
                v.push((m.clone(), path.clone()));
            }
        }
    }
    v
}

async fn call(c: &bulkhead_api::Client, method: &str, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let m = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
    let sep = if path.contains('?') { '&' } else { '?' };
    let body = if ["post", "patch"].contains(&method) {
        "{}"
    } else {
        ""
    };
    let r = c
        .send(
            m,
            &format!("{path}{sep}zz=1"),
            bulkhead_api::client::full_body(body.as_bytes().to_vec()),
            (!body.is_empty()).then_some("application/json"),
        )
        .await
        .unwrap();
    let s = r.status().as_u16();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    (s, String::from_utf8_lossy(&b).into_owned())
}

#[test]
fn every_route_times_every_role_times_own_and_foreign_tenant() {
    if !privileged() {
        return;
    }
    let port = 18460;
    // #16, B1: the containerd shim's socket, its role bound in tenant a only.
    let tenants: Vec<String> = (0..3).map(|i| unique_tenant(&format!("s{i}t"))).collect();
    let shim_dir = test_dir();
    let shim_sock = shim_dir.path().join("shim.sock");
    let list: String = tenants
        .iter()
        .map(|t| {
            format!(
                "    - name: {t}\n      host_groups:\n        - name: {t}\n          ram_mb: 128\n"
            )
        })
        .collect();
    let s = Shared::start_listed_api(
        tenants.clone(),
        &list,
        "  roles:\n    - name: ci-runner\n      rules: [ { resources: [nodes], actions: [list, get, create, delete, exec, copy] } ]\n",
        &format!(
            "    tcp: {{ bind: \"127.0.0.1:{port}\" }}\n    shim: {{ socket: {}, namespaces: {{ \"*\": {} }} }}\n",
            shim_sock.display(),
            tenants[0]
        ),
    );
    let (a, b, c) = (s.a.clone(), s.b.clone(), s.tenants[2].clone());
    assert_eq!(s.tenants.len(), 3);
    let na = s.add(&s.admin, &a);
    let nb = s.add(&s.admin, &b);
    let admin = s.admin_client();
    // Tokens for the roles bound in tenant a (and "no role": a developer of tenant c).
    let mut token = BTreeMap::new();
    for (who, role, tenant) in [
        ("developer", "developer", &a),
        ("viewer", "viewer", &a),
        ("ci-runner", "ci-runner", &a),
        ("none", "developer", &c),
    ] {
        let v: serde_json::Value = rt()
            .block_on(admin.json(
                Method::POST,
                "/tokens",
                Some(
                    &serde_json::json!({"name": who, "tenant": tenant, "role": role, "ttl": "1h"}),
                ),
            ))
            .unwrap();
        token.insert(who, v["token"].as_str().unwrap().to_string());
    }
    let tcp = |t: &str| {
        bulkhead_api::Client::new(bulkhead_api::Endpoint::Tcp {
            addr: format!("127.0.0.1:{port}"),
            token: Some(t.to_string()),
        })
    };
    let clients: Vec<(&str, &str, bulkhead_api::Client)> = vec![
        ("global-admin", "global-admin", admin.clone()),
        ("tenant-admin", "tenant-admin", s.tenant_client(&a)),
        ("developer", "developer", tcp(&token["developer"])),
        ("viewer", "viewer", tcp(&token["viewer"])),
        ("custom", "ci-runner", tcp(&token["ci-runner"])),
        ("none", "", tcp(&token["none"])),
        (
            "shim",
            "shim",
            bulkhead_api::Client::new(bulkhead_api::Endpoint::Unix(shim_sock.clone())),
        ),
    ];
    let routes = routes();
    let mut failures = Vec::new();
    let mut checked = 0;
    let plan: Vec<(String, String, &'static str)> = routes
        .iter()
        .map(|(m, p)| {
            let n = need(m, p).unwrap_or_else(|| panic!("no expectation for {m} {p}: add it"));
            (m.clone(), p.clone(), n)
        })
        .collect();
    let (na2, nb2, a2, b2) = (na.clone(), nb.clone(), a.clone(), b.clone());
    let results = in_ns(&s.netns_path(), move || {
        let (na, nb, a, b) = (na2, nb2, a2, b2);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut out = Vec::new();
        for (who, role, client) in &clients {
            for (m, p, need) in &plan {
                let object = p.contains("{node}") || p.contains("{group}");
                let targets: Vec<(&str, &str, &str)> = if object {
                    vec![("own", &na, &a), ("foreign", &nb, &b)]
                } else {
                    vec![("-", &na, &a)]
                };
                for (which, node, group) in targets {
                    let path = p
                        .replace("{node}", node)
                        .replace("{group}", group)
                        .replace("{exec_id}", "x")
                        .replace("{port}", "8080")
                        .replace("{sid}", "01JZZZZZZZZZZZZZZZZZZZZZZZ") // volumes (#13)
                        .replace("{name}", "x") // secrets (#13)
                        .replace("{id}", "01JZZZZZZZZZZZZZZZZZZZZZZZ");
                    let (st, body) = rt.block_on(call(client, m, &path));
                    out.push((
                        who.to_string(),
                        role.to_string(),
                        m.clone(),
                        p.clone(),
                        *need,
                        which,
                        st,
                        body,
                    ));
                }
            }
        }
        out
    });
    for (who, role, m, p, need, which, st, body) in results {
        checked += 1;
        let seen = classify(st, &body);
        let want = expect(&role, need, which);
        if seen != want {
            failures.push(format!(
                "{who} {m} {p} [{which}]: want {want:?}, got {st} {body}"
            ));
        }
        if seen == Seen::Allowed
            && ["post", "delete", "patch"].contains(&m.as_str())
            && (200..300).contains(&st)
        {
            failures.push(format!(
                "{who} {m} {p} [{which}]: a harmless request succeeded ({st} {body})"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked > 300, "only {checked} cells");
    // The nodes outlived the matrix.
    let (st, _) = rt().block_on(call(&admin, "get", &format!("/vm/{na}/health")));
    assert_eq!(st, 200);
    s.stop_and_assert_clean();
}
