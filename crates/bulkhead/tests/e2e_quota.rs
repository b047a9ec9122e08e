//! Quotas and the conflict rule (issue #12, ADR 0025), through the real daemon: each quota
//! (nodes, vcpu, ram, storage) refused with 403 `quota_exceeded` and a message naming the
//! quota, its use, the ask and the limit; a delete frees its share at once; parallel creates
//! at the edge never exceed a quota; `GET /quota` and `bulkhead quota` show use against limits;
//! a repeated create of a hostname with the same spec answers 200 with the same node (also at
//! a full quota, and when several race), with a different spec 409 `conflict` naming the
//! fields; on a shared daemon each tenant has its own quotas.

mod common;

use common::shared::Shared;
use common::*;
use hyper::Method;
use serde_json::{json, Value};

/// Sends a request; answers the status and the body as JSON (`null` when it is not JSON).
async fn call(
    c: &bulkhead_api::Client,
    m: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    use http_body_util::BodyExt;
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let ct = (!bytes.is_empty()).then_some("application/json");
    let r = c
        .send(
            m,
            path,
            bulkhead_api::client::full_body(bytes.into_bytes()),
            ct,
        )
        .await
        .unwrap();
    let s = r.status().as_u16();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn create(c: &bulkhead_api::Client, group: &str, body: Value) -> (u16, Value) {
    rt().block_on(call(
        c,
        Method::POST,
        &format!("/hostgroup/{group}/nodes"),
        Some(body),
    ))
}

fn get(c: &bulkhead_api::Client, path: &str) -> Value {
    let (s, v) = rt().block_on(call(c, Method::GET, path, None));
    assert_eq!(s, 200, "GET {path}: {v}");
    v
}

fn delete(c: &bulkhead_api::Client, group: &str, node: &str) {
    let (s, v) = rt().block_on(call(
        c,
        Method::DELETE,
        &format!("/hostgroup/{group}/nodes/{node}"),
        None,
    ));
    assert_eq!(s, 200, "delete {node}: {v}");
}

/// Asserts a 403 `quota_exceeded` whose message carries `want`.
fn refused(got: (u16, Value), want: &str) {
    let (s, v) = got;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["code"], "quota_exceeded", "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.starts_with("quota exceeded: ") && msg.contains(want),
        "{msg:?} lacks {want:?}"
    );
}

fn fig(used: u64, limit: Option<u64>) -> Value {
    json!({ "used": used, "limit": limit })
}

/// A one-tenant daemon whose main group is `vcpu: 2, ram_mb: 1024, storage_size: 512M`, with
/// a second group `<tenant>big` (`vcpu: 1, ram_mb: 128, storage_size: 2G`), and `quotas`.
fn daemon(prefix: &str, quotas: &str) -> Daemon {
    let quotas = quotas.to_string();
    Daemon::start_edited(prefix, &[], move |y| {
        let tenant = y
            .lines()
            .find_map(|l| l.trim().strip_prefix("tenant: "))
            .unwrap()
            .to_string();
        y.replace("storage_size: 1G", "storage_size: 512M")
            .replace("vcpu: 1", "vcpu: 2")
            .replace("ram_mb: 512", "ram_mb: 1024")
            .replace(
                "  image: minimal",
                &format!(
                    "  - name: {tenant}big\n    storage_size: 2G\n    vcpu: 1\n    ram_mb: 128\n    network:\n      mode: none\n  image: minimal\n  quotas: {quotas}"
                ),
            )
    })
}

#[test]
fn each_quota_is_refused_with_its_figures_and_a_delete_frees_at_once() {
    if !privileged() {
        return;
    }
    let d = daemon("qa", "{nodes: 3, vcpu: 4, ram: 1G, storage: 3G}");
    let (c, t) = (d.client(), d.tenant.clone());
    let big = format!("{t}big");
    let mi = |m: u64| m << 20;
    let (s, n1) = create(&c, &t, json!({"cpus": 2, "ram_bytes": mi(512)}));
    assert_eq!(s, 201, "{n1}");
    let n1 = n1["hostname"].as_str().unwrap().to_string();
    let (s, v) = create(&c, &big, json!({}));
    assert_eq!(s, 201, "{v}");
    refused(
        create(&c, &t, json!({"cpus": 2})),
        "vcpu: 3 in use + 2 asked > 4 allowed (config.quotas.vcpu)",
    );
    refused(
        create(&c, &t, json!({"cpus": 1, "ram_bytes": mi(1024)})),
        "ram: 640M in use + 1G asked > 1G allowed (config.quotas.ram)",
    );
    refused(
        create(&c, &big, json!({})),
        "storage: 2560M in use + 2G asked > 3G allowed (config.quotas.storage)",
    );
    let (s, v) = create(&c, &t, json!({"cpus": 1, "ram_bytes": mi(128)}));
    assert_eq!(s, 201, "{v}");
    refused(
        create(&c, &t, json!({"cpus": 1, "ram_bytes": mi(16)})),
        "nodes: 3 in use + 1 asked > 3 allowed (config.quotas.nodes)",
    );
    // Nothing refused was recorded.
    assert_eq!(get(&c, "/nodes").as_array().unwrap().len(), 3);
    let q = get(&c, "/quota");
    assert_eq!(
        q,
        json!({"tenants": [{
            "tenant": t,
            "nodes": fig(3, Some(3)),
            "vcpu": fig(4, Some(4)),
            "ram_bytes": fig(mi(768), Some(1 << 30)),
            "storage_bytes": fig(3 << 30, Some(3 << 30)),
        }]})
    );
    let out = cli_ok(&["quota", "--socket", d.sock()]);
    assert!(
        out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == [t.as_str(), "3/3", "4/4", "768M/1G", "3G/3G"]),
        "{out}"
    );
    // A delete frees its share as it answers: the same create passes at once.
    delete(&c, &t, &n1);
    let (s, v) = create(&c, &t, json!({"cpus": 2, "ram_bytes": mi(512)}));
    assert_eq!(s, 201, "{v}");
    assert_eq!(get(&c, "/quota")["tenants"][0]["vcpu"], fig(4, Some(4)));
    d.stop_and_assert_clean();
}

#[test]
fn parallel_creates_at_the_edge_never_exceed_a_quota() {
    if !privileged() {
        return;
    }
    let d = daemon("qp", "{nodes: 3, vcpu: 5}");
    let (c, t) = (d.client(), d.tenant.clone());
    // One node first, then 10 at once for the 2 places left (nodes), of 2 vcpus each for the
    // 4 left (vcpu): whatever the order, exactly 2 pass.
    let (s, v) = create(&c, &t, json!({"cpus": 1}));
    assert_eq!(s, 201, "{v}");
    let statuses: Vec<(u16, Value)> = rt().block_on(async {
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (c, t) = (c.clone(), t.clone());
                tokio::spawn(async move {
                    call(
                        &c,
                        Method::POST,
                        &format!("/hostgroup/{t}/nodes"),
                        Some(json!({"cpus": 2})),
                    )
                    .await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let ok = statuses.iter().filter(|(s, _)| *s == 201).count();
    let refusals: Vec<&Value> = statuses
        .iter()
        .filter(|(s, _)| *s != 201)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(ok, 2, "{statuses:?}");
    for v in &refusals {
        assert_eq!(v["code"], "quota_exceeded", "{v}");
    }
    assert_eq!(get(&c, "/nodes").as_array().unwrap().len(), 3);
    let q = &get(&c, "/quota")["tenants"][0];
    assert_eq!(
        (q["nodes"].clone(), q["vcpu"].clone()),
        (fig(3, Some(3)), fig(5, Some(5)))
    );
    assert_eq!(q["ram_bytes"]["limit"], Value::Null, "unset: unlimited");
    d.stop_and_assert_clean();
}

#[test]
fn the_conflict_rule_returns_the_same_node_or_names_what_differs() {
    if !privileged() {
        return;
    }
    let d = daemon("qc", "{nodes: 2}");
    let (c, t) = (d.client(), d.tenant.clone());
    let h = format!("{t}-web");
    let spec = json!({"hostname": h, "cpus": 1, "tags": ["env=ci", "x"], "userdata": "echo hi"});
    let (s, first) = create(&c, &t, spec.clone());
    assert_eq!(s, 201, "{first}");
    assert_eq!(first["hostname"], h);
    // A retry: the same node, 200. Tags in another order and the group's defaults written out
    // are the same spec.
    let (s, again) = create(&c, &t, spec.clone());
    assert_eq!((s, &again), (200, &first));
    let same = json!({"hostname": h, "cpus": 1, "ram_bytes": 1u64 << 30, "tags": ["x", "env=ci"], "userdata": "echo hi"});
    let (s, again) = create(&c, &t, same);
    assert_eq!((s, &again), (200, &first));
    assert_eq!(
        get(&c, "/nodes").as_array().unwrap().len(),
        1,
        "no second node"
    );
    // A different spec: 409 naming the fields.
    let (s, v) = create(
        &c,
        &t,
        json!({"hostname": h, "cpus": 2, "tags": ["x"], "userdata": "echo hi"}),
    );
    assert_eq!((s, v["code"].as_str()), (409, Some("conflict")), "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "node {h:?} exists with a different spec (existing vs asked): cpus (1 vs 2), tags:"
        )),
        "{msg}"
    );
    let (s, v) = create(&c, &format!("{t}big"), json!({"hostname": h}));
    assert_eq!(s, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("hostgroup"), "{v}");
    // Several identical creates at once: one makes the node, the others get it.
    let h2 = format!("{t}-race");
    let answers: Vec<(u16, Value)> = rt().block_on(async {
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (c, t, h2) = (c.clone(), t.clone(), h2.clone());
                tokio::spawn(async move {
                    call(
                        &c,
                        Method::POST,
                        &format!("/hostgroup/{t}/nodes"),
                        Some(json!({"hostname": h2})),
                    )
                    .await
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let mut codes: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    codes.sort();
    assert_eq!(codes, [200, 200, 200, 201], "{answers:?}");
    assert!(
        answers.iter().all(|(_, v)| v == &answers[0].1),
        "{answers:?}"
    );
    // The quota (2 nodes) is full, yet a retry of an existing node still answers it.
    let (s, again) = create(&c, &t, spec);
    assert_eq!((s, &again), (200, &first));
    refused(
        create(&c, &t, json!({"hostname": format!("{t}-third")})),
        "nodes: 2 in use + 1 asked > 2 allowed",
    );
    assert_eq!(get(&c, "/nodes").as_array().unwrap().len(), 2);
    // Once deleted, the name is free for any spec.
    delete(&c, &t, &h);
    let (s, v) = create(&c, &t, json!({"hostname": h, "cpus": 2}));
    assert_eq!(s, 201, "{v}");
    d.stop_and_assert_clean();
}

#[test]
fn quotas_are_per_tenant_on_a_shared_daemon() {
    if !privileged() {
        return;
    }
    // Indented under the last tenant's entry: tenant b gets `quotas`, a has none.
    let s = Shared::start("      quotas: { nodes: 1, vcpu: 1 }\n", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    let admin = s.admin_client();
    let (s1, v) = create(&admin, &b, json!({}));
    assert_eq!(s1, 201, "{v}");
    refused(
        create(&admin, &b, json!({})),
        &format!("nodes: 1 in use + 1 asked > 1 allowed (config.tenants[name={b}].quotas.nodes)"),
    );
    // Tenant a is not held back by b's quota, nor b's use counted against a.
    for _ in 0..2 {
        let (st, v) = create(&s.tenant_client(&a), &a, json!({}));
        assert_eq!(st, 201, "{v}");
    }
    let all = get(&admin, "/quota");
    assert_eq!(all["tenants"].as_array().unwrap().len(), 2, "{all}");
    let of = |t: &str| {
        all["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["tenant"] == t)
            .cloned()
            .unwrap()
    };
    assert_eq!(of(&a)["nodes"], fig(2, None));
    assert_eq!(of(&b)["nodes"], fig(1, Some(1)));
    assert_eq!(of(&b)["vcpu"], fig(1, Some(1)));
    // A tenant's socket shows its own tenant only.
    let mine = get(&s.tenant_client(&a), "/quota");
    assert_eq!(mine["tenants"].as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine["tenants"][0]["tenant"], a);
    s.stop_and_assert_clean();
}

/// A retry that arrives while the first create is still under way answers the node as it is
/// (200, `Creating`), and the first create then completes it: what a caller sees is
/// documented in the operator guide.
#[test]
fn a_retry_while_the_node_is_being_created_returns_it() {
    if !privileged() {
        return;
    }
    let d = daemon("qr", "{nodes: 1}");
    // Hold every standby supervisor of this test's daemon, so the first create hangs midway
    // (as e2e_lifecycle's a_node_being_created_answers_409 does).
    let held = Held::standbys(&d);
    let (c, t) = (d.client(), d.tenant.clone());
    let h = format!("{t}-slow");
    let body = json!({"hostname": h, "tags": ["a"]});
    let first = {
        let (c, t, body) = (c.clone(), t.clone(), body.clone());
        std::thread::spawn(move || create(&c, &t, body))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let nodes = get(&c, "/nodes");
        if nodes.as_array().unwrap().iter().any(|n| n["hostname"] == h) {
            assert_eq!(nodes[0]["status"], "Creating", "{nodes}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node never showed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // The retry: the same node at once, while it is still Creating; the quota (1 node) does
    // not refuse it.
    let (s, again) = create(&c, &t, body.clone());
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["hostname"], h);
    assert_eq!(get(&c, "/nodes")[0]["status"], "Creating");
    drop(held);
    let (s, made) = first.join().unwrap();
    assert_eq!((s, &made), (201, &again));
    assert_eq!(get(&c, "/nodes").as_array().unwrap().len(), 1);
    d.stop_and_assert_clean();
}

/// Nodes that exist already count: at a full quota a stopped node still counts (a create is
/// refused), and bringing it back (relaunch) or resuming a paused one is never refused.
#[test]
fn a_full_quota_never_refuses_bringing_back_the_tenants_own_nodes() {
    if !privileged() {
        return;
    }
    let d = daemon("qb", "{nodes: 1, vcpu: 2}");
    let (c, t) = (d.client(), d.tenant.clone());
    let (s, v) = create(&c, &t, json!({}));
    assert_eq!(s, 201, "{v}");
    let n = v["hostname"].as_str().unwrap().to_string();
    let post = |path: String| rt().block_on(call(&c, Method::POST, &path, None)).0;
    assert_eq!(post(format!("/vm/{n}/shutdown")), 200);
    assert_eq!(get(&c, "/nodes")[0]["status"], "Stopped");
    refused(
        create(&c, &t, json!({})),
        "nodes: 1 in use + 1 asked > 1 allowed",
    );
    assert_eq!(post(format!("/vm/{n}/relaunch?wait=agent")), 200);
    assert_eq!(post(format!("/vm/{n}/pause")), 200);
    assert_eq!(post(format!("/vm/{n}/resume")), 200);
    assert_eq!(get(&c, "/nodes")[0]["status"], "Running");
    assert_eq!(d.sh(&n, "echo back").1, "back\n");
    assert_eq!(get(&c, "/quota")["tenants"][0]["nodes"], fig(1, Some(1)));
    d.stop_and_assert_clean();
}

/// The daemon's standby supervisors, paused (SIGSTOP) once the pool is full, so that a create
/// hangs after its record exists; resumed when dropped (also when the test fails, so that the
/// daemon can still stop).
struct Held(Vec<i32>);

impl Held {
    fn standbys(d: &Daemon) -> Held {
        let standbys = || -> Vec<i32> {
            let o = std::process::Command::new("pgrep")
                .args(["-f", "--", &format!("--standby {} ", d.tenant)])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        };
        // Four standby processes, the same for half a second: a standby still starting is
        // not yet in the daemon's pool, and one paused then fails its start, so a create
        // would start a supervisor of its own instead of hanging.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let held = loop {
            let seen = standbys();
            std::thread::sleep(std::time::Duration::from_millis(500));
            if seen.len() >= 4 && standbys() == seen {
                break seen;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the standby pool never filled"
            );
        };
        for p in &held {
            // SAFETY: pausing supervisors this test's daemon started, by pid.
            unsafe { libc::kill(*p, libc::SIGSTOP) };
        }
        Held(held)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        for p in &self.0 {
            // SAFETY: resuming the supervisors paused in `Held::standbys`.
            unsafe { libc::kill(*p, libc::SIGCONT) };
        }
    }
}

/// A create whose client disconnects midway still runs to its end (ADR 0025): the node comes
/// up and stays, never stuck `Creating`, and counts once. A retry with `wait=agent` while the
/// node is still being created answers 200 only once the node runs, and a delete removes it.
#[test]
fn a_disconnected_create_completes_and_a_waiting_retry_answers_once_it_runs() {
    if !privileged() {
        return;
    }
    let d = daemon("qd", "{nodes: 1}");
    // Held standbys: the create hangs midway (after its record, before its node runs).
    let held = Held::standbys(&d);
    let (c, t) = (d.client(), d.tenant.clone());
    let h = format!("{t}-gone");
    let body = json!({"hostname": h});
    let path = format!("/hostgroup/{t}/nodes?wait=agent&timeout=60s");
    // The first caller gives up after 2s: its connection is dropped mid-create.
    let gave_up = rt().block_on(async {
        let asked = call(&c, Method::POST, &path, Some(body.clone()));
        tokio::time::timeout(std::time::Duration::from_secs(2), asked).await
    });
    assert!(gave_up.is_err(), "the create answered early: {gave_up:?}");
    assert_eq!(get(&c, "/nodes")[0]["status"], "Creating");
    // A retry that waits: no answer while the node is still being created.
    let retry = {
        let (c, path, body) = (c.clone(), path.clone(), body.clone());
        std::thread::spawn(move || rt().block_on(call(&c, Method::POST, &path, Some(body))))
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(!retry.is_finished(), "the retry did not wait for the node");
    drop(held);
    let (s, again) = retry.join().unwrap();
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["hostname"], h);
    let nodes = get(&c, "/nodes");
    assert_eq!(nodes.as_array().unwrap().len(), 1, "{nodes}");
    assert_eq!(nodes[0]["status"], "Running", "{nodes}");
    assert_eq!(d.sh(&h, "echo up").1, "up\n");
    assert_eq!(get(&c, "/quota")["tenants"][0]["nodes"], fig(1, Some(1)));
    delete(&c, &t, &h);
    assert_eq!(get(&c, "/nodes"), json!([]));
    assert_eq!(get(&c, "/quota")["tenants"][0]["nodes"], fig(0, Some(1)));
    d.stop_and_assert_clean();
}

/// A retry that waits for a node whose first create then fails (its agent not in time) answers
/// 409 `conflict` saying so (or, in a narrow race, the node just before its removal), and the
/// node is gone: nothing counts any more, never a node stuck `Creating`.
#[test]
fn a_waiting_retry_of_a_create_that_fails_answers_conflict() {
    if !privileged() {
        return;
    }
    let d = daemon("qf", "{nodes: 1}");
    let held = Held::standbys(&d);
    let (c, t) = (d.client(), d.tenant.clone());
    let h = format!("{t}-fails");
    let body = json!({"hostname": h});
    // The first create's wait runs out while its supervisor is held: it fails and removes
    // the node once the supervisor answers.
    let first = {
        let (c, path, body) = (
            c.clone(),
            format!("/hostgroup/{t}/nodes?wait=agent&timeout=1s"),
            body.clone(),
        );
        std::thread::spawn(move || rt().block_on(call(&c, Method::POST, &path, Some(body))))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while get(&c, "/nodes").as_array().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the node never showed"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let retry = {
        let (c, path, body) = (
            c.clone(),
            format!("/hostgroup/{t}/nodes?wait=agent&timeout=60s"),
            body.clone(),
        );
        std::thread::spawn(move || rt().block_on(call(&c, Method::POST, &path, Some(body))))
    };
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(held);
    let (s, v) = first.join().unwrap();
    assert_eq!((s, v["code"].as_str()), (408, Some("timeout")), "{v}");
    // The retry either saw the node removed (409 saying so) or, when its agent answered in
    // the moment between the node running and the first create's cleanup, got it (200) and
    // finds it gone on its next call, as the operator guide says.
    let (s, v) = retry.join().unwrap();
    if s == 200 {
        assert_eq!(v["hostname"], h);
    } else {
        assert_eq!((s, v["code"].as_str()), (409, Some("conflict")), "{v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("failed and removed it"),
            "{v}"
        );
    }
    assert_eq!(get(&c, "/nodes"), json!([]));
    assert_eq!(get(&c, "/quota")["tenants"][0]["nodes"], fig(0, Some(1)));
    d.stop_and_assert_clean();
}
