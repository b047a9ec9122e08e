//! The audit trail (#14, part A; ADR 0031) through the real daemon: a shared daemon of two
//! tenants records one line per decision across routes (create, exec, a secret, a 403, a 401,
//! the 404 that hides another tenant's node), each in the right trail; `GET /audit` shows a
//! tenant-admin its tenant only and a global-admin everything; requests carry their
//! `x-request-id`; after a stop (and a restart) `bulkhead audit verify` passes on the
//! untouched files, across rotated files, and fails on each kind of tampering naming the
//! line; no audit file holds a secret value or a token.

mod common;

use common::leaks::{b64, files_containing};
use common::netlab::in_ns;
use common::shared::Shared;
use common::*;
use hyper::Method;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

fn call(c: &bulkhead_api::Client, m: Method, path: &str, body: &str) -> (u16, String) {
    rt().block_on(async {
        use http_body_util::BodyExt;
        let ct = (!body.is_empty()).then_some("application/json");
        let r = c
            .send(
                m,
                path,
                bulkhead_api::client::full_body(body.as_bytes().to_vec()),
                ct,
            )
            .await
            .unwrap();
        let s = r.status().as_u16();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (s, String::from_utf8_lossy(&b).into_owned())
    })
}

/// A raw request on a UNIX socket with an `x-request-id`; the answer's head.
fn with_request_id(sock: &Path, path: &str, id: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nx-request-id: {id}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_lowercase()
}

fn lines(ndjson: &str) -> Vec<serde_json::Value> {
    ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The first line with these fields (a panic shows every line otherwise).
fn find<'a>(ls: &'a [serde_json::Value], want: &[(&str, &str)]) -> &'a serde_json::Value {
    ls.iter()
        .find(|l| want.iter().all(|(k, v)| l[*k] == *v))
        .unwrap_or_else(|| {
            panic!(
                "no audit line with {want:?} in:\n{}",
                ls.iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })
}

fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            let num = n
                .strip_prefix("audit-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()?;
            Some((num, e.path()))
        })
        .collect();
    v.sort();
    v.into_iter().map(|x| x.1).collect()
}

/// `bulkhead audit verify FILES…`: (success, stdout + stderr).
fn verify(files: &[PathBuf]) -> (bool, String) {
    let mut args = vec!["audit", "verify"];
    args.extend(files.iter().map(|p| p.to_str().unwrap()));
    let o = cli(&args);
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// A copy of the trail's files (and its public key) whose file `f` is rewritten by `edit`;
/// verify must fail and name `want` (`audit-<n>.jsonl:<line>`).
fn tampered(dir: &Path, f: usize, edit: impl FnOnce(&mut Vec<String>), want: &str, why: &str) {
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(dir.join("audit.pub"), copy.path().join("audit.pub")).unwrap();
    let files: Vec<PathBuf> = audit_files(dir)
        .iter()
        .map(|p| {
            let to = copy.path().join(p.file_name().unwrap());
            std::fs::copy(p, &to).unwrap();
            to
        })
        .collect();
    let text = std::fs::read_to_string(&files[f]).unwrap();
    let mut ls: Vec<String> = text.lines().map(String::from).collect();
    edit(&mut ls);
    std::fs::write(&files[f], ls.join("\n") + "\n").unwrap();
    let (ok, out) = verify(&files);
    eprintln!("{why}: {}", out.trim());
    assert!(!ok, "{why}: verify passed:\n{out}");
    assert!(
        out.contains(want),
        "{why}: verify should name {want}:\n{out}"
    );
}

#[test]
fn audit_lines_for_allowed_and_denied_requests_verify_and_tampering() {
    if !privileged() {
        return;
    }
    let port = 18471;
    // Small files, so this test's traffic rotates the tenant's trail.
    let mut s = Shared::start(
        "  audit:\n    rotate_size: 2K\n",
        &format!("    tcp: {{ bind: \"127.0.0.1:{port}\" }}\n"),
    );
    let (a, b) = (s.a.clone(), s.b.clone());
    let admin = s.admin_client();
    let (sa, ta) = (s.tenant_sock(&a), s.tenant_client(&a));
    let na = s.add(&sa, &a);
    let nb = s.add(&s.admin, &b);

    // A secret whose value must never reach an audit file, written well and badly.
    let marker = format!("audit-secret-{}", std::process::id());
    let (st, out) = call(
        &ta,
        Method::POST,
        "/secrets",
        &serde_json::json!({"name": "db", "data": b64(marker.as_bytes())}).to_string(),
    );
    assert_eq!(st, 201, "{out}");
    let (st, out) = call(
        &ta,
        Method::POST,
        "/secrets",
        &serde_json::json!({"name": "bad", "data": marker}).to_string(),
    );
    assert_eq!(st, 400, "{out}");
    // An exec whose command line carries it.
    let o = s.vm(&sa, &["exec", &na, "--", "echo", &marker]);
    assert!(o.status.success(), "{o:?}");

    // Tokens of tenant a: a viewer (may not create: 403) and a developer (b's node: 404).
    let mut tokens = Vec::new();
    for role in ["viewer", "developer"] {
        let (st, out) = call(
            &admin,
            Method::POST,
            "/tokens",
            &serde_json::json!({"name": role, "tenant": a, "role": role, "ttl": "1h"}).to_string(),
        );
        assert_eq!(st, 201, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        tokens.push((
            v["token"].as_str().unwrap().to_string(),
            v["id"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let tcp = |t: &str| {
        bulkhead_api::Client::new(bulkhead_api::Endpoint::Tcp {
            addr: format!("127.0.0.1:{port}"),
            token: Some(t.to_string()),
        })
    };
    let (viewer, developer) = (tcp(&tokens[0].0), tcp(&tokens[1].0));
    let wrong = tcp("not-a-token-of-this-daemon");
    let (ga, gnb) = (a.clone(), nb.clone());
    let answers = in_ns(&s.netns_path(), move || {
        let create = format!("/hostgroup/{ga}/nodes");
        [
            call(&viewer, Method::POST, &create, "{}").0,
            call(&developer, Method::GET, &format!("/vm/{gnb}"), "").0,
            call(&wrong, Method::GET, "/nodes", "").0,
            call(&developer, Method::GET, "/audit", "").0,
        ]
    });
    assert_eq!(answers, [403, 404, 401, 403]);

    // The request id: the client's when sane, echoed; else a new one.
    let head = with_request_id(&sa, "/nodes", "e2e-audit-1");
    assert!(head.contains("x-request-id: e2e-audit-1"), "{head}");
    let head = with_request_id(&sa, "/nodes", "bad id!");
    assert!(
        head.contains("x-request-id: ") && !head.contains("bad id"),
        "{head}"
    );

    // Tenant a's admin sees tenant a's lines only.
    let (st, text) = call(&ta, Method::GET, "/audit", "");
    assert_eq!(st, 200, "{text}");
    let mine = lines(&text);
    assert!(mine.iter().all(|l| l["tenant"] == a.as_str()), "{text}");
    let created = find(
        &mine,
        &[
            ("action", "create_node"),
            ("object", &format!("node/{na}")),
            ("outcome", "allowed"),
        ],
    );
    assert_eq!(
        (created["principal"].as_str(), created["via"].as_str()),
        (Some("uid:0"), Some("socket"))
    );
    find(
        &mine,
        &[
            ("action", "exec_in_node"),
            ("object", &format!("node/{na}")),
            ("outcome", "allowed"),
        ],
    );
    find(&mine, &[("action", "write_secret"), ("outcome", "allowed")]);
    let bad = find(&mine, &[("action", "write_secret"), ("outcome", "failed")]);
    assert!(
        bad["reason"]
            .as_str()
            .unwrap()
            .starts_with("invalid_request"),
        "{bad}"
    );
    let forbidden = find(&mine, &[("action", "create_node"), ("outcome", "denied")]);
    assert_eq!(forbidden["via"], "api_token", "{forbidden}");
    assert!(
        forbidden["reason"]
            .as_str()
            .unwrap()
            .starts_with("forbidden"),
        "{forbidden}"
    );
    find(
        &mine,
        &[("request_id", "e2e-audit-1"), ("action", "list_nodes")],
    );
    // Filters.
    let (_, denied) = call(&ta, Method::GET, "/audit?outcome=denied", "");
    assert!(
        lines(&denied).iter().all(|l| l["outcome"] == "denied"),
        "{denied}"
    );
    let (_, creates) = call(&ta, Method::GET, "/audit?action=create_node&since=0", "");
    assert!(lines(&creates).iter().all(|l| l["action"] == "create_node") && !creates.is_empty());
    let (_, none) = call(&ta, Method::GET, "/audit?until=1", "");
    assert!(none.is_empty(), "{none}");
    let (st, _) = call(&ta, Method::GET, "/audit?outcome=maybe", "");
    assert_eq!(st, 400);
    let (st, _) = call(&ta, Method::GET, &format!("/audit?tenant={b}"), "");
    assert_eq!(st, 404, "tenant-admin of a may not read b's trail");

    // The global-admin sees every trail: b's hidden 404, the daemon's failed authentication.
    let (st, text) = call(&admin, Method::GET, "/audit?outcome=denied", "");
    assert_eq!(st, 200, "{text}");
    let all = lines(&text);
    let hidden = find(
        &all,
        &[
            ("tenant", &b),
            ("object", &format!("node/{nb}")),
            ("outcome", "denied"),
        ],
    );
    assert_eq!(hidden["action"], "describe_node", "{hidden}");
    let anon = find(
        &all,
        &[("principal", "anonymous"), ("action", "list_nodes")],
    );
    assert_eq!(
        (anon["tenant"].as_str(), anon["via"].as_str()),
        (Some("-"), Some("none"))
    );
    assert!(
        anon["reason"].as_str().unwrap().starts_with("unauthorized"),
        "{anon}"
    );
    let (_, only_b) = call(&admin, Method::GET, &format!("/audit?tenant={b}"), "");
    assert!(lines(&only_b).iter().all(|l| l["tenant"] == b.as_str()));

    // Stop (a checkpoint closes each trail), start again, one more request, stop.
    s.stop();
    s.spawn();
    let (st, _) = call(&s.tenant_client(&a), Method::GET, "/nodes", "");
    assert_eq!(st, 200);
    s.stop();

    let tenant_dir = s.state.join("tenants").join(&a).join("audit");
    let daemon_dir = s.state.join("shared").join("audit");
    let files = audit_files(&tenant_dir);
    assert!(files.len() >= 2, "2K files rotate: {files:?}");
    let (ok, out) = verify(&files);
    assert!(ok, "{out}");
    assert!(out.starts_with("ok:"), "{out}");
    eprintln!("{} files: {}", files.len(), out.trim());
    for d in [
        s.state.join("tenants").join(&b).join("audit"),
        daemon_dir.clone(),
    ] {
        let (ok, out) = verify(&audit_files(&d));
        assert!(ok, "{}: {out}", d.display());
    }
    // Each file but the first begins with the hash of the one before's last line.
    for w in files.windows(2) {
        let prev = std::fs::read_to_string(&w[0]).unwrap();
        let next = std::fs::read_to_string(&w[1]).unwrap();
        let first: serde_json::Value = serde_json::from_str(next.lines().next().unwrap()).unwrap();
        let last = prev.lines().last().unwrap();
        assert!(
            last.contains("\"checkpoint\""),
            "a rotated file ends with a checkpoint"
        );
        let digest = ring::digest::digest(&ring::digest::SHA256, last.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(first["prev"], hex);
    }

    // No secret value, no token in any audit file.
    let needles: Vec<&[u8]> = vec![
        marker.as_bytes(),
        tokens[0].0.as_bytes(),
        tokens[1].0.as_bytes(),
        b"not-a-token-of-this-daemon",
    ];
    for d in [&tenant_dir, &daemon_dir] {
        let hits = files_containing(d, &needles);
        assert!(hits.is_empty(), "secret data in audit files: {hits:?}");
    }

    // Each kind of tampering fails, naming the first bad line.
    let first = files[0].file_name().unwrap().to_str().unwrap().to_string();
    tampered(
        &tenant_dir,
        0,
        |l| l[2] = l[2].replacen("\"object\":\"", "\"object\":\"x", 1),
        &format!("{first}:3: the line was edited"),
        "edited",
    );
    tampered(
        &tenant_dir,
        0,
        |l| {
            l.remove(2);
        },
        &format!("{first}:3:"),
        "dropped",
    );
    tampered(
        &tenant_dir,
        0,
        |l| {
            let c = l[1].clone();
            l.insert(3, c);
        },
        &format!("{first}:4: the line was inserted"),
        "inserted",
    );
    tampered(
        &tenant_dir,
        0,
        |l| l.swap(2, 3),
        &format!("{first}:3: the line is out of order"),
        "reordered",
    );
    let last = files
        .last()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let n = std::fs::read_to_string(files.last().unwrap())
        .unwrap()
        .lines()
        .count();
    tampered(
        &tenant_dir,
        files.len() - 1,
        |l| l.truncate(n - 1),
        &format!(
            "{last}:{}: the trail ends after this line without a signed checkpoint",
            n - 1
        ),
        "truncated",
    );
}
