//! End to end: bad input on every route of the raw API answers a clear 4xx (status, stable
//! code, a message saying what to fix), never a 500.

mod common;

use bulkhead_api::client::full_body;
use common::*;
use hyper::Method;

#[test]
fn bad_input_gets_clear_4xx() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("bad", &["--vcpu", "2", "--ram-mb", "256"]);
    let n = d.add();
    let rt = rt();
    let c = d.client();
    let g = d.tenant.clone();
    let big = "x".repeat(70_000);
    let cases: Vec<(Method, String, String, u16, &str)> = vec![
        (
            Method::POST,
            format!("/hostgroup/{g}/nodes"),
            "{not json".into(),
            400,
            "invalid JSON",
        ),
        (
            Method::POST,
            format!("/hostgroup/{g}/nodes"),
            r#"{"tagz":[]}"#.into(),
            400,
            "unknown field",
        ),
        (
            Method::POST,
            format!("/hostgroup/{g}/nodes"),
            format!(r#"{{"tags":["{big}"]}}"#),
            413,
            "limit",
        ),
        (
            Method::POST,
            format!("/hostgroup/{g}/nodes"),
            r#"{"hostname":"Bad_Name"}"#.into(),
            400,
            "hostname",
        ),
        (
            Method::POST,
            format!("/hostgroup/{g}/nodes"),
            r#"{"tags":["has space"]}"#.into(),
            400,
            "tag",
        ),
        (
            Method::POST,
            format!("/hostgroup/{g}/nodes"),
            r#"{"cpus":3}"#.into(),
            400,
            "cpus",
        ),
        (
            Method::POST,
            format!("/hostgroup/{g}/nodes"),
            r#"{"ram_bytes":1073741824}"#.into(),
            400,
            "ram_bytes",
        ),
        (
            Method::POST,
            format!("/hostgroup/{g}/nodes"),
            r#"{"hostname":""}"#.into(),
            400,
            "hostname",
        ),
        (
            Method::POST,
            format!("/hostgroup/{g}/nodes?wait=forever"),
            "{}".into(),
            400,
            "wait",
        ),
        (
            Method::POST,
            format!("/hostgroup/{g}/nodes?timeout=soon"),
            "{}".into(),
            400,
            "timeout",
        ),
        (
            Method::POST,
            "/hostgroup/nosuchgroup/nodes".into(),
            "{}".into(),
            404,
            "host group",
        ),
        (
            Method::POST,
            format!("/vm/{n}/exec"),
            String::new(),
            400,
            "cmd is required",
        ),
        (
            Method::POST,
            format!("/vm/{n}/exec?cmd=true&bogus=1"),
            String::new(),
            400,
            "unknown query parameter",
        ),
        (
            Method::POST,
            format!("/vm/{n}/exec?cmd=%ff"),
            String::new(),
            400,
            "UTF-8",
        ),
        (
            Method::POST,
            format!("/vm/{n}/exec?cmd=true&uid=-1"),
            String::new(),
            400,
            "uid",
        ),
        (
            Method::POST,
            format!("/vm/{n}/exec?cmd=true&cwd=relative"),
            String::new(),
            400,
            "cwd",
        ),
        (
            Method::POST,
            format!("/vm/{n}/exec?cmd=true&env=NOEQUALS"),
            String::new(),
            400,
            "KEY=VALUE",
        ),
        (
            Method::POST,
            format!("/vm/{n}/exec?cmd=true&cwd=/nonexistent"),
            String::new(),
            400,
            "directory",
        ),
        // A command that is not found is no longer a 400 but an exit code 127 (Slicer's
        // clients read it so; e2e_exec_bg.rs checks it).
        (
            Method::POST,
            format!("/vm/{n}/exec?cmd=true&background=true&ring_bytes=99999999"),
            String::new(),
            400,
            "above the limit",
        ),
        (
            Method::GET,
            format!("/vm/{n}/exec/ex_0123"),
            String::new(),
            404,
            "no background exec",
        ),
        (
            Method::POST,
            format!("/vm/{n}/exec?cmd=true&timeout=5"),
            String::new(),
            400,
            "unit",
        ),
        (
            Method::GET,
            format!("/vm/{n}/cp"),
            String::new(),
            400,
            "path is required",
        ),
        (
            Method::GET,
            format!("/vm/{n}/cp?path=/etc&mode=zip"),
            String::new(),
            400,
            "mode",
        ),
        (
            Method::GET,
            format!("/vm/{n}/cp?path=/nonexistent"),
            String::new(),
            404,
            "nonexistent",
        ),
        (
            Method::POST,
            format!("/vm/{n}/cp?path=/tmp/x&permissions=999"),
            String::new(),
            400,
            "octal",
        ),
        (
            Method::GET,
            "/vm/UPPER/logs".into(),
            String::new(),
            404,
            "not found",
        ),
        (
            Method::GET,
            "/no/such/route".into(),
            String::new(),
            404,
            "no route",
        ),
        (
            Method::PUT,
            "/nodes".into(),
            String::new(),
            405,
            "not allowed",
        ),
        (
            Method::DELETE,
            format!("/hostgroup/{g}/nodes/{g}-999"),
            String::new(),
            404,
            "not found",
        ),
    ];
    for (m, path, body, status, needle) in cases {
        let e = rt
            .block_on(c.send_ok(m.clone(), &path, full_body(body), Some("application/json")))
            .unwrap_err();
        let bulkhead_api::ClientError::Api { status: got, body } = &e else {
            panic!("{m} {path}: {e}")
        };
        assert_eq!(got.as_u16(), status, "{m} {path}: {e}");
        assert!(
            body.error.contains(needle),
            "{m} {path}: {:?} lacks {needle:?}",
            body.error
        );
        assert!(!body.code.is_empty());
    }
    // Sizes beyond the group (and so the host) or beyond their type: 400 with a code that
    // says which, never a 500.
    for (body, code, needle) in [
        (
            r#"{"ram_bytes":18446744073709551615}"#,
            "out_of_range",
            "ram_bytes",
        ),
        (r#"{"cpus":4294967295}"#, "out_of_range", "cpus"),
        (r#"{"ram_bytes":1e30}"#, "invalid_request", "ram_bytes"),
        (r#"{"ram_bytes":-1}"#, "invalid_request", "ram_bytes"),
        (r#"{"cpus":4294967296}"#, "invalid_request", "cpus"),
    ] {
        let path = format!("/hostgroup/{g}/nodes");
        let e = rt
            .block_on(c.send_ok(
                Method::POST,
                &path,
                full_body(body.to_string()),
                Some("application/json"),
            ))
            .unwrap_err();
        let bulkhead_api::ClientError::Api { status, body: b } = &e else {
            panic!("{body}: {e}")
        };
        assert_eq!(
            (status.as_u16(), b.code.as_str()),
            (400, code),
            "{body}: {e}"
        );
        assert!(b.error.contains(needle), "{body}: {:?}", b.error);
    }
    // None of that left a half-made node behind.
    let nodes: Vec<bulkhead_api::Node> = rt.block_on(c.nodes()).unwrap();
    assert_eq!(nodes.len(), 1);
    // A hostname may be chosen once.
    let ok: serde_json::Value = rt
        .block_on(c.json(
            Method::POST,
            &format!("/hostgroup/{g}/nodes"),
            Some(&serde_json::json!({"hostname": "chosen"})),
        ))
        .unwrap();
    assert_eq!(ok["hostname"], "chosen");
    // #12, the conflict rule: the same spec again is the same node (200, e2e_quota.rs); a
    // different one is a conflict.
    let again: serde_json::Value = rt
        .block_on(c.json(
            Method::POST,
            &format!("/hostgroup/{g}/nodes"),
            Some(&serde_json::json!({"hostname": "chosen"})),
        ))
        .unwrap();
    assert_eq!(again, ok);
    let e = rt
        .block_on(c.json::<serde_json::Value>(
            Method::POST,
            &format!("/hostgroup/{g}/nodes"),
            Some(&serde_json::json!({"hostname": "chosen", "tags": ["x"]})),
        ))
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(409));
    d.stop_and_assert_clean();
}
