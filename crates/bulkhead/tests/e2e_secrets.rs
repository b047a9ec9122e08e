//! Secrets (#13), end to end: Slicer's `/secrets` wire shape and status codes, a secret given
//! only to the node that asked for it, on a tmpfs with the asked owner and mode, before its
//! userdata runs; never in the console log, the daemon's log, metrics, the state database's
//! raw bytes or any file under the state directory; foreign tenants get 404; the host master
//! key rotates (daemon stopped, and running) and nodes still get their secrets after a restart.

mod common;

use common::answer::{call, get, Answer};
use common::leaks::{b64, files_containing};
use common::shared::Shared;
use common::{privileged, Daemon};
use hyper::Method;

fn json(c: &bulkhead_api::Client, m: Method, path: &str, v: serde_json::Value) -> Answer {
    call(
        c,
        m,
        path,
        serde_json::to_vec(&v).unwrap(),
        Some("application/json"),
    )
}

fn create_node(c: &bulkhead_api::Client, group: &str, body: serde_json::Value) -> Answer {
    json(
        c,
        Method::POST,
        &format!("/hostgroup/{group}/nodes?wait=userdata&timeout=60s"),
        body,
    )
}

fn ok_node(a: Answer) -> String {
    assert!(a.status.is_success(), "{} {}", a.status, a.text());
    a.json()["hostname"].as_str().unwrap().to_string()
}

#[test]
fn secrets_wire_shape_delivery_and_no_leaks() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("sec", &[]);
    let c = d.client();
    let g = d.tenant.clone();
    let marker = format!("s3cr3t-{}-{}", std::process::id(), d.tenant);
    let marker2 = format!("r0tated-{}", d.tenant);
    let enc = b64(marker.as_bytes());

    // Create: 201; the same name again: 409 (Slicer's SDKs map it to "secret exists").
    let a = json(
        &c,
        Method::POST,
        "/secrets",
        serde_json::json!({"name": "db-password", "data": enc, "permissions": "0440", "uid": 1000, "gid": 1001}),
    );
    assert_eq!(a.status, 201, "{}", a.text());
    let a = json(
        &c,
        Method::POST,
        "/secrets",
        serde_json::json!({"name": "db-password", "data": b64(b"x")}),
    );
    assert_eq!(a.status, 409, "{}", a.text());
    assert_eq!(a.json()["code"], "already_exists");
    // Bad input: 400 naming the problem, never echoing the content.
    for (body, want) in [
        (
            serde_json::json!({"name": "bad", "data": "!!not-base64!!"}),
            "base64",
        ),
        (
            serde_json::json!({"name": "bad", "data": 987654321}),
            "data",
        ),
        (
            serde_json::json!({"name": "../x", "data": b64(b"x")}),
            "invalid secret name",
        ),
        (
            serde_json::json!({"name": "bad", "data": b64(b"x"), "permissions": "4755"}),
            "permissions",
        ),
        (
            serde_json::json!({"name": "bad", "data": b64(b"x"), "extra": 1}),
            "unknown field",
        ),
    ] {
        let a = json(&c, Method::POST, "/secrets", body);
        assert_eq!(a.status, 400, "{}", a.text());
        assert!(a.text().contains(want), "{}", a.text());
        for leak in ["not-base64", "987654321"] {
            assert!(!a.text().contains(leak), "echoed: {}", a.text());
        }
    }
    // List: metadata only, Slicer's fields.
    let a = get(&c, "/secrets");
    assert_eq!(a.status, 200);
    let list = a.json();
    let s = &list.as_array().unwrap()[0];
    assert_eq!(s["name"], "db-password");
    assert_eq!(s["size"], marker.len());
    assert_eq!(s["permissions"], "0440");
    assert_eq!(
        (s["uid"].as_u64(), s["gid"].as_u64()),
        (Some(1000), Some(1001))
    );
    assert!(s["modified_at"].as_str().unwrap().ends_with('Z'));
    assert!(s.get("data").is_none());
    assert!(!a.text().contains(&marker) && !a.text().contains(&enc));
    // The CLI sees the same.
    let out = common::cli_ok(&["secret", "list", "--socket", d.sock()]);
    assert!(out.contains("db-password") && out.contains("0440"), "{out}");

    // An unknown secret at create: 400 naming it; nothing is made.
    let a = create_node(
        &c,
        &g,
        serde_json::json!({"secrets": ["db-password", "nope"]}),
    );
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap()
            .contains("secret \"nope\""),
        "{}",
        a.text()
    );
    assert!(common::rt().block_on(c.nodes()).unwrap().is_empty());

    // The node that asks gets it, before its userdata runs; another node does not.
    let with = ok_node(create_node(
        &c,
        &g,
        serde_json::json!({"secrets": ["db-password"],
            "userdata": "cat /run/secrets/db-password > /tmp/ud-saw 2>&1; echo done"}),
    ));
    let without = ok_node(create_node(&c, &g, serde_json::json!({})));
    let (code, out, err) = d.sh(&with, "cat /run/secrets/db-password");
    assert_eq!((code, out.as_str()), (0, marker.as_str()), "{err}");
    let (_, out, _) = d.sh(&with, "cat /tmp/ud-saw");
    assert_eq!(out, marker, "the userdata ran before the secret was there");
    let (_, out, _) = d.sh(&with, "stat -c '%a %u %g' /run/secrets/db-password");
    assert_eq!(out.trim(), "440 1000 1001");
    let (_, mounts, _) = d.sh(&with, "grep ' /run/secrets ' /proc/mounts");
    assert!(
        mounts.starts_with("tmpfs /run/secrets tmpfs ")
            && ["nosuid", "nodev", "noexec", "size=1024k"]
                .iter()
                .all(|o| mounts.contains(o)),
        "{mounts}"
    );
    let (_, out, _) = d.sh(&without, "ls -A /run/secrets; echo end");
    assert_eq!(out.trim(), "end", "a node that did not ask sees: {out}");

    // PATCH: new content and mode (200); Slicer's Go SDK's metadata-only PATCH sends
    // `data: ""`, which keeps the content. A running node keeps what it was given; a new node
    // gets the new content.
    let a = json(
        &c,
        Method::PATCH,
        "/secrets/db-password",
        serde_json::json!({"data": b64(marker2.as_bytes()), "permissions": "0400"}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["size"], marker2.len());
    let a = json(
        &c,
        Method::PATCH,
        "/secrets/db-password",
        serde_json::json!({"data": "", "uid": 7}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        (a.json()["size"].as_u64(), a.json()["permissions"].as_str()),
        (Some(marker2.len() as u64), Some("0400"))
    );
    let (_, out, _) = d.sh(&with, "cat /run/secrets/db-password");
    assert_eq!(out, marker, "a PATCH reached a running node");
    let later = ok_node(create_node(
        &c,
        &g,
        serde_json::json!({"secrets": ["db-password"]}),
    ));
    let (_, out, _) = d.sh(
        &later,
        "cat /run/secrets/db-password; stat -c ' %a %u' /run/secrets/db-password",
    );
    assert_eq!(out.trim(), format!("{marker2} 400 7"));
    // A relaunch is a fresh start: the node gets the secret as it is now, on a new tmpfs.
    let a = json(
        &c,
        Method::POST,
        &format!("/vm/{with}/shutdown"),
        serde_json::json!({"action": "shutdown"}),
    );
    assert_eq!(a.status, 200, "{}", a.text());
    let a = call(
        &c,
        Method::POST,
        &format!("/vm/{with}/relaunch?wait=agent&timeout=60s"),
        vec![],
        None,
    );
    assert!(a.status.is_success(), "{} {}", a.status, a.text());
    let (_, out, _) = d.sh(&with, "cat /run/secrets/db-password");
    assert_eq!(out, marker2, "a relaunched node has the old content");
    let a = json(
        &c,
        Method::PATCH,
        "/secrets/nope",
        serde_json::json!({"permissions": "0400"}),
    );
    assert_eq!(a.status, 404, "{}", a.text());

    // Never on the host in clear: console logs, the daemon's log, metrics, any file of the
    // state directory (state.db and its WAL included), while running and after the stop.
    let needles: [&[u8]; 4] = [
        marker.as_bytes(),
        marker2.as_bytes(),
        enc.as_bytes(),
        b64(marker2.as_bytes()).leak().as_bytes(),
    ];
    let metrics = get(&c, "/metrics").text();
    for n in needles {
        let n = std::str::from_utf8(n).unwrap();
        assert!(!metrics.contains(n), "metrics show a secret");
        assert!(!d.log().contains(n), "the daemon's log shows a secret");
    }
    let hits = files_containing(&d.state, &needles);
    assert!(hits.is_empty(), "files with a secret in clear: {hits:?}");
    // The search does read the state database: the secret's name (not secret) is there.
    let db = d.tenant_dir().join("state.db").display().to_string();
    let names = files_containing(&d.state, &[b"db-password"]);
    assert!(names.iter().any(|h| h.starts_with(&db)), "{names:?}");

    // DELETE: 200, then 404; the CLI's whole round.
    let a = call(&c, Method::DELETE, "/secrets/db-password", vec![], None);
    assert_eq!(a.status, 200, "{}", a.text());
    let a = call(&c, Method::DELETE, "/secrets/db-password", vec![], None);
    assert_eq!(a.status, 404, "{}", a.text());
    let file = d.dir.path().join("token.txt");
    std::fs::write(&file, "from-a-file").unwrap();
    let f = file.to_str().unwrap();
    common::cli_ok(&[
        "secret",
        "create",
        "--socket",
        d.sock(),
        "api-token",
        "--from-file",
        f,
        "--permissions",
        "0400",
    ]);
    common::cli_ok(&[
        "secret",
        "update",
        "--socket",
        d.sock(),
        "api-token",
        "--uid",
        "5",
    ]);
    let out = common::cli_ok(&["secret", "list", "--socket", d.sock(), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["uid"], 5);
    assert_eq!(v[0]["size"], "from-a-file".len());
    common::cli_ok(&["secret", "delete", "--socket", d.sock(), "api-token"]);
    assert_eq!(get(&c, "/secrets").json(), serde_json::json!([]));

    let state = d.state.clone();
    let log = d.log();
    d.stop_and_assert_clean();
    let hits = files_containing(&state, &needles);
    assert!(
        hits.is_empty(),
        "files with a secret in clear after the stop: {hits:?}"
    );
    assert!(!log.contains(&marker));
}

/// A node's secret through `bulkhead vm exec` on tenant `t`'s socket.
fn cat(s: &Shared, t: &str, node: &str) -> String {
    let o = s.vm(
        &s.tenant_sock(t),
        &["exec", node, "--", "cat", "/run/secrets/shared-name"],
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn foreign_tenants_and_master_key_rotation() {
    if !privileged() {
        return;
    }
    let mut s = Shared::start("", "");
    let (ta, tb) = (s.a.clone(), s.b.clone());
    let (ca, cb) = (s.tenant_client(&ta), s.tenant_client(&tb));
    let marker = format!("tenant-a-only-{}", std::process::id());
    let a = json(
        &ca,
        Method::POST,
        "/secrets",
        serde_json::json!({"name": "shared-name", "data": b64(marker.as_bytes())}),
    );
    assert_eq!(a.status, 201, "{}", a.text());

    // Tenant b: its own (empty) list; a's secret is not found, by name or by ?tenant=.
    assert_eq!(get(&cb, "/secrets").json(), serde_json::json!([]));
    for (m, path) in [
        (Method::PATCH, "/secrets/shared-name"),
        (Method::DELETE, "/secrets/shared-name"),
        (Method::GET, &*format!("/secrets?tenant={ta}")),
    ] {
        let a = json(
            &cb,
            m.clone(),
            path,
            serde_json::json!({"permissions": "0400"}),
        );
        assert_eq!(a.status, 404, "{m} {path}: {}", a.text());
        assert!(!a.text().contains(&marker));
    }
    // b's node cannot ask for a's secret (400 naming it), and a node of b made with b's own
    // secret of the same name gets b's content, never a's.
    let a = create_node(&cb, &tb, serde_json::json!({"secrets": ["shared-name"]}));
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("shared-name"));
    // The admin socket (global-admin) acts in both: it must say which.
    let admin = s.admin_client();
    let a = get(&admin, "/secrets");
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(
        a.text().contains(&ta) && a.text().contains(&tb),
        "{}",
        a.text()
    );
    let a = get(&admin, &format!("/secrets?tenant={ta}"));
    assert_eq!(a.json()[0]["name"], "shared-name");
    let a = get(&admin, "/secrets?tenant=nosuchtenant");
    assert_eq!(a.status, 404, "{}", a.text());
    assert_eq!(
        json(
            &cb,
            Method::POST,
            "/secrets",
            serde_json::json!({"name": "shared-name", "data": b64(b"tenant-b-value")}),
        )
        .status,
        201
    );
    let nb = ok_node(create_node(
        &cb,
        &tb,
        serde_json::json!({"secrets": ["shared-name"]}),
    ));
    let na = ok_node(create_node(
        &ca,
        &ta,
        serde_json::json!({"secrets": ["shared-name"]}),
    ));
    assert_eq!(cat(&s, &tb, &nb), "tenant-b-value");
    assert_eq!(cat(&s, &ta, &na), marker);

    // Rotation with the daemon stopped: a new master key, the tenant keys re-wrapped; after
    // the restart nodes get their secrets as before.
    let keys = s.state.join("keys");
    let before = std::fs::read(keys.join("master.key")).unwrap();
    s.stop();
    let out = common::cli_ok(&[
        "keys",
        "rotate-master",
        "--state-dir",
        s.state.to_str().unwrap(),
        "--json",
    ]);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    // Both tenants' keys and the shared daemon's own `_daemon` key (its audit trail's, #14).
    assert_eq!(r["tenants"], 3, "{out}");
    assert_ne!(r["old_key_id"], r["new_key_id"]);
    let after = std::fs::read(keys.join("master.key")).unwrap();
    assert_ne!(before, after);
    assert!(!keys.join("master.key.new").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(keys.join("master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    s.spawn();
    assert!(
        s.log().contains(r["new_key_id"].as_str().unwrap()),
        "{}",
        s.log()
    );
    let na = ok_node(create_node(
        &ca,
        &ta,
        serde_json::json!({"secrets": ["shared-name"]}),
    ));
    assert_eq!(cat(&s, &ta, &na), marker);
    // Rotation with the daemon running: its tenants' keys are unchanged underneath.
    let out = common::cli_ok(&[
        "keys",
        "rotate-master",
        "--state-dir",
        s.state.to_str().unwrap(),
    ]);
    assert!(out.contains("3 tenant key(s) re-wrapped"), "{out}"); // with `_daemon` (#14)
    let nb = ok_node(create_node(
        &cb,
        &tb,
        serde_json::json!({"secrets": ["shared-name"]}),
    ));
    assert_eq!(cat(&s, &tb, &nb), "tenant-b-value");
    // And once more from a restart: the keyring opens with the master key it now has.
    s.stop();
    s.spawn();
    let na = ok_node(create_node(
        &ca,
        &ta,
        serde_json::json!({"secrets": ["shared-name"]}),
    ));
    assert_eq!(cat(&s, &ta, &na), marker);
    let hits = files_containing(&s.state, &[marker.as_bytes(), b"tenant-b-value"]);
    assert!(hits.is_empty(), "files with a secret in clear: {hits:?}");
    assert!(!s.log().contains(&marker));
    s.stop_and_assert_clean();
}

/// A microVM node (TCG: slow, so one test): the guest's init mounts the same tmpfs, the
/// secret arrives with its owner and mode before the userdata, and neither the node's disk
/// image on the host nor any other file of the state directory holds it.
#[test]
fn a_microvm_node_gets_its_secret_on_tmpfs() {
    if !privileged() {
        return;
    }
    let netns = common::netlab::Netns::new();
    let d = Daemon::start_in(&netns.path(), "secvm", &common::vm_config());
    let c = d.client();
    let marker = format!("vm-s3cr3t-{}", d.tenant);
    let a = json(
        &c,
        Method::POST,
        "/secrets",
        serde_json::json!({"name": "api-key", "data": b64(marker.as_bytes()), "permissions": "0400", "uid": 33, "gid": 33}),
    );
    assert_eq!(a.status, 201, "{}", a.text());
    let a = json(
        &c,
        Method::POST,
        &format!("/hostgroup/{}/nodes?wait=userdata&timeout=300s", d.tenant),
        serde_json::json!({"secrets": ["api-key"],
            "userdata": "cat /run/secrets/api-key > /tmp/ud-saw 2>&1"}),
    );
    let node = ok_node(a);
    let (code, out, err) = d.sh(
        &node,
        "cat /run/secrets/api-key; echo; cat /tmp/ud-saw; echo; stat -c '%a %u %g' /run/secrets/api-key; grep ' /run/secrets ' /proc/mounts",
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], marker);
    assert_eq!(
        lines[1], marker,
        "the userdata ran before the secret was there"
    );
    assert_eq!(lines[2], "400 33 33");
    assert!(
        lines[3].starts_with("tmpfs /run/secrets tmpfs ")
            && ["nosuid", "nodev", "noexec"]
                .iter()
                .all(|o| lines[3].contains(o)),
        "{out}"
    );
    // The guest's disk is a file of the host: the secret is not in it, nor anywhere else.
    let _ = d.sh(&node, "sync");
    let hits = files_containing(&d.state, &[marker.as_bytes()]);
    assert!(hits.is_empty(), "files with the secret in clear: {hits:?}");
    assert!(!d.log().contains(&marker));
    d.stop_and_assert_clean();
}

/// `config.storage.master_key` moves the keyring; a master key others may read stops the
/// start with what to run, and nothing of the tenant is started.
#[test]
fn the_keyring_follows_config_and_refuses_an_open_master_key() {
    if !privileged() {
        return;
    }
    let keydir = tempfile::tempdir().unwrap();
    let master = keydir.path().join("ring").join("master.key");
    let m = master.display().to_string();
    let edit = |y: String| {
        y.replacen(
            "config:\n",
            &format!("config:\n  storage:\n    master_key: {m}\n"),
            1,
        )
    };
    let mut d = Daemon::start_edited("seckr", &[], edit);
    let c = d.client();
    let a = json(
        &c,
        Method::POST,
        "/secrets",
        serde_json::json!({"name": "k", "data": b64(b"moved-keyring")}),
    );
    assert_eq!(a.status, 201, "{}", a.text());
    assert!(master.is_file(), "no master key at {m}");
    assert!(keydir
        .path()
        .join("ring/tenants")
        .join(format!("{}.key", d.tenant))
        .is_file());
    assert!(!d
        .state
        .join("keys/tenants")
        .join(format!("{}.key", d.tenant))
        .exists());
    let node = ok_node(create_node(
        &c,
        &d.tenant,
        serde_json::json!({"secrets": ["k"]}),
    ));
    assert_eq!(d.sh(&node, "cat /run/secrets/k").1, "moved-keyring");
    // Without a wait the create answers first; the secret follows once the agent answers.
    let a = json(
        &c,
        Method::POST,
        &format!("/hostgroup/{}/nodes", d.tenant),
        serde_json::json!({"secrets": ["k"]}),
    );
    let quick = ok_node(a);
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, out, _) = d.sh(&quick, "cat /run/secrets/k");
        if code == 0 && out == "moved-keyring" {
            break;
        }
        assert!(
            std::time::Instant::now() < until,
            "never delivered: {code} {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    d.stop();
    // Readable by others: refused at start, naming the file and the fix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = std::process::Command::new("unshare")
        .args(["--net", "--", common::BIN, "up"])
        .arg(&d.config)
        .arg("--state-dir")
        .arg(&d.state)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "started with a 0644 master key: {err}");
    assert!(err.contains(&m) && err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A config that names another file name is refused naming the key.
    let bad = d.dir.path().join("bad.yaml");
    std::fs::write(&bad, d.config_text().replace("master.key", "key.bin")).unwrap();
    let o = common::cli(&["validate", bad.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("config.storage.master_key"),
        "{err}"
    );
}
