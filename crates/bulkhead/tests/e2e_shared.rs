//! A shared daemon: one `bulkhead up` serving two tenants. The admin socket sees both; a
//! tenant socket never shows the other tenant (its nodes and groups answer exactly like
//! missing ones); client-chosen hostnames carry their group's name; configs whose tenants
//! would share a group, a node name or an address range are refused naming both; the TCP
//! listener speaks TLS, or plain HTTP on loopback only; the CLI reaches it over https with
//! `--cacert`.

mod common;

use common::shared::Shared;
use common::*;
use hyper::Method;
use std::os::unix::fs::PermissionsExt;

fn body_of(c: &bulkhead_api::Client, m: Method, path: &str, body: &str) -> (u16, String) {
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

fn names(json: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| {
            n.get("hostname")
                .or_else(|| n.get("name"))
                .and_then(|x| x.as_str())
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn a_tenant_socket_never_shows_another_tenant() {
    if !privileged() {
        return;
    }
    let s = Shared::start("", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    let admin = s.admin_client();
    let (sa, ta) = (s.tenant_sock(&a), s.tenant_client(&a));
    let na = s.add(&sa, &a);
    let nb = s.add(&s.admin, &b);
    assert!(na.starts_with(&format!("{a}-")) && nb.starts_with(&format!("{b}-")));

    // The admin socket sees both tenants; the tenant socket only its own.
    let (st, all) = body_of(&admin, Method::GET, "/nodes", "");
    assert_eq!(st, 200, "{all}");
    let mut all = names(&all);
    all.sort();
    let mut want = vec![na.clone(), nb.clone()];
    want.sort();
    assert_eq!(all, want);
    let (_, mine) = body_of(&ta, Method::GET, "/nodes", "");
    assert_eq!(names(&mine), vec![na.clone()]);
    let (_, groups) = body_of(&ta, Method::GET, "/hostgroup", "");
    assert_eq!(names(&groups), vec![a.clone()]);
    let (_, groups) = body_of(&admin, Method::GET, "/hostgroup", "");
    assert_eq!(names(&groups).len(), 2);
    let (_, info) = body_of(&ta, Method::GET, "/info", "");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["tenants"], serde_json::json!([a.clone()]));
    // #13: the daemon's storage probe says what protects data at rest on this host (this
    // kernel has fscrypt, and no dm-crypt, which the answer names as missing).
    assert_eq!(info["storage"]["fscrypt"], true, "{info}");
    assert_eq!(info["storage"]["dm_crypt"], false, "{info}");
    assert!(
        info["storage"]["missing"][0]
            .as_str()
            .unwrap_or("")
            .contains("dm-crypt"),
        "{info}"
    );
    // Paged union over both tenants: one node per page, each exactly once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            None => "/nodes?limit=1".to_string(),
            Some(c) => format!("/nodes?limit=1&cursor={c}"),
        };
        let r = rt()
            .block_on(admin.send(
                Method::GET,
                &q,
                bulkhead_api::client::full_body(Vec::new()),
                None,
            ))
            .unwrap();
        cursor = r
            .headers()
            .get("x-next-cursor")
            .map(|v| v.to_str().unwrap().to_string());
        let b = rt()
            .block_on(http_body_util::BodyExt::collect(r.into_body()))
            .unwrap()
            .to_bytes();
        seen.extend(names(&String::from_utf8_lossy(&b)));
        if cursor.is_none() {
            break;
        }
        assert!(seen.len() <= 2, "paging does not end: {seen:?}");
    }
    seen.sort();
    assert_eq!(seen, want);

    // The other tenant's node answers exactly like a node that does not exist.
    let missing = format!("{a}-999");
    for (m, path, body) in [
        (Method::GET, "/vm/NODE/health", ""),
        (Method::POST, "/vm/NODE/exec?cmd=true", ""),
        (Method::GET, "/vm/NODE/logs", ""),
        (Method::GET, "/node/NODE/stats", ""),
        (Method::POST, "/vm/NODE/pause", ""),
    ] {
        let (s1, e1) = body_of(&ta, m.clone(), &path.replace("NODE", &nb), body);
        let (s2, e2) = body_of(&ta, m.clone(), &path.replace("NODE", &missing), body);
        assert_eq!((s1, s2), (404, 404), "{m} {path}: {e1} / {e2}");
        assert_eq!(
            e1.replace(&nb, "X"),
            e2.replace(&missing, "X"),
            "{m} {path}"
        );
    }
    let (st, e) = body_of(
        &ta,
        Method::DELETE,
        &format!("/hostgroup/{b}/nodes/{nb}"),
        "",
    );
    assert_eq!(st, 404, "{e}");
    let (s1, e1) = body_of(&ta, Method::POST, &format!("/hostgroup/{b}/nodes"), "{}");
    let (s2, e2) = body_of(&ta, Method::POST, "/hostgroup/nogroup/nodes", "{}");
    assert_eq!((s1, s2), (404, 404));
    assert_eq!(e1.replace(&b, "X"), e2.replace("nogroup", "X"));
    // The admin reaches both; the node of b is untouched by a's attempts.
    let (st, _) = body_of(&admin, Method::GET, &format!("/vm/{nb}/health"), "");
    assert_eq!(st, 200);
    let o = s.vm(&sa, &["exec", &na, "--", "echo", "mine"]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "mine\n");

    // A client-chosen hostname begins with its group's name on a shared daemon.
    let (st, e) = body_of(
        &ta,
        Method::POST,
        &format!("/hostgroup/{a}/nodes"),
        r#"{"hostname":"job-1"}"#,
    );
    assert_eq!(st, 400, "{e}");
    assert!(e.contains("must begin with its host group's name"), "{e}");
    let (st, e) = body_of(
        &ta,
        Method::POST,
        &format!("/hostgroup/{a}/nodes"),
        &format!(r#"{{"hostname":"{a}-job-1"}}"#),
    );
    assert_eq!(st, 201, "{e}");

    // Denials are counted per tenant; a tenant socket's metrics are its tenant's alone.
    let (_, m) = body_of(&admin, Method::GET, "/metrics", "");
    let denied = m
        .lines()
        .find(|l| l.starts_with(&format!("bulkhead_denied_requests_total{{tenant=\"{b}\"}}")))
        .unwrap_or_else(|| panic!("no denial counter for {b}:\n{m}"));
    let n: u64 = denied.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 7, "{denied}");
    let (_, m) = body_of(&ta, Method::GET, "/metrics", "");
    assert!(!m.contains(&b), "tenant a's metrics show tenant b:\n{m}");
    s.stop_and_assert_clean();
}

fn validate(yaml: &str) -> (bool, String) {
    let dir = test_dir();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, yaml).unwrap();
    let o = cli(&["validate", p.to_str().unwrap()]);
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn configs_whose_tenants_would_share_are_refused_naming_both() {
    let two = |g2: &str, r2: &str, tcp: &str| {
        format!("config:\n  tenants:\n    - name: ta\n      host_groups:\n        - name: web\n          network: {{ mode: isolated, range: 10.77.0.0/24 }}\n    - name: tb\n      host_groups:\n        - name: {g2}\n          network: {{ mode: isolated, range: {r2} }}\n  api:\n    bind_address: /run/bulkhead/x-admin.sock\n{tcp}")
    };
    let (ok, out) = validate(&two("db", "10.78.0.0/24", ""));
    assert!(ok, "{out}");
    assert!(
        out.contains("tenant ta") && out.contains("tenant tb"),
        "{out}"
    );
    let (ok, out) = validate(&two("web", "10.78.0.0/24", ""));
    assert!(!ok);
    assert!(
        out.contains("config.tenants[1].host_groups[0].name")
            && out.contains("\"ta\"")
            && out.contains("\"tb\""),
        "{out}"
    );
    let (ok, out) = validate(&two("web-2", "10.78.0.0/24", ""));
    assert!(!ok && out.contains("followed by a dash"), "{out}");
    let (ok, out) = validate(&two("db", "10.77.0.128/25", ""));
    assert!(
        !ok && out.contains("network.range") && out.contains("tenant \"ta\""),
        "{out}"
    );
    let (ok, out) = validate(&two(
        "db",
        "10.78.0.0/24",
        "    tcp: { bind: \"0.0.0.0:8443\" }\n",
    ));
    assert!(
        !ok && out.contains("config.api.tcp.tls") && out.contains("loopback"),
        "{out}"
    );
}

/// A self-signed certificate for 127.0.0.1 (and its key), made with openssl.
fn cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    let o = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=bulkhead-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&k)
        .arg("-out")
        .arg(&c)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (c, k)
}

#[test]
fn the_tcp_listener_speaks_tls() {
    if !privileged() {
        return;
    }
    let keys = test_dir();
    let (c, k) = cert(keys.path());
    let token = keys.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = Shared::start(
        "",
        &format!(
            "    tcp: {{ bind: \"127.0.0.1:18443\", token_file: {}, tls: {{ cert: {}, key: {} }} }}\n",
            token.display(),
            c.display(),
            k.display()
        ),
    );
    let curl = |args: &[&str]| {
        let o = std::process::Command::new("nsenter")
            .args([
                s.netns_arg().as_str(),
                "--",
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "10",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let url = "https://127.0.0.1:18443/nodes";
    let cacert = c.to_str().unwrap();
    let auth = "Authorization: Bearer 0123456789abcdef0123456789abcdef";
    assert_eq!(curl(&["--cacert", cacert, "-H", auth, url]), "200");
    assert_eq!(curl(&["--cacert", cacert, url]), "401");
    assert_eq!(
        curl(&[
            "--cacert",
            cacert,
            "-H",
            "Authorization: Bearer wrong-wrong-wrong-wrong",
            url
        ]),
        "401"
    );
    // Plain HTTP to the TLS port gets no HTTP answer.
    assert_eq!(curl(&["-H", auth, "http://127.0.0.1:18443/nodes"]), "000");
    // An untrusted certificate is refused by the client (no --cacert).
    assert_eq!(curl(&["-H", auth, url]), "000");
    s.stop_and_assert_clean();
}

#[test]
fn a_missing_certificate_stops_the_start_naming_the_file() {
    if !privileged() {
        return;
    }
    let dir = test_dir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let t = unique_tenant("tlsx");
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!("config:\n  tenant: {t}\n  host_groups:\n    - name: {t}\n  graceful_shutdown: false\n  api:\n    bind_address: {}\n    tcp: {{ bind: \"127.0.0.1:18444\", tls: {{ cert: /nonexistent/cert.pem, key: /nonexistent/key.pem }} }}\n", dir.path().join("s.sock").display()),
    )
    .unwrap();
    let o = std::process::Command::new("unshare")
        .args(["--net", "--", "sh", "-c", UP_IN_NETNS, BIN, "up"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&state)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    assert_clean(&t, &state.join("tenants").join(&t));
}

#[test]
fn the_cli_reaches_a_tls_daemon_with_cacert() {
    if !privileged() {
        return;
    }
    let keys = test_dir();
    let (c, k) = cert(keys.path());
    let tok = "0123456789abcdef0123456789abcdef";
    let token = keys.path().join("token");
    std::fs::write(&token, tok).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = Shared::start(
        "",
        &format!(
            "    tcp: {{ bind: \"127.0.0.1:18445\", token_file: {}, tls: {{ cert: {}, key: {} }} }}\n",
            token.display(),
            c.display(),
            k.display()
        ),
    );
    let node = s.add(&s.tenant_sock(&s.a), &s.a);
    let url = "https://127.0.0.1:18445";
    let cacert = c.to_str().unwrap();
    // `bulkhead vm VERB --url URL --token T ARGS...` in the daemon's network namespace.
    let vm = |url: &str, args: &[&str], env_ca: Option<&str>, stdin: &str| {
        let mut cmd = std::process::Command::new("nsenter");
        cmd.args([s.netns_arg().as_str(), "--", BIN, "vm", args[0]])
            .args(["--url", url, "--token", tok])
            .args(&args[1..])
            .env_remove("BULKHEAD_CACERT")
            .env_remove("BULKHEAD_URL")
            .env_remove("BULKHEAD_TOKEN")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(ca) = env_ca {
            cmd.env("BULKHEAD_CACERT", ca);
        }
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };

    let (code, out, err) = vm(url, &["list", "--cacert", cacert], None, "");
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains(&node), "{out}");

    // Without --cacert the system's roots do not know the self-signed certificate.
    let (code, _, err) = vm(url, &["list"], None, "");
    assert_ne!(code, Some(0));
    assert!(
        err.contains(url) && err.contains("--cacert") && err.contains("not trust"),
        "{err}"
    );
    // Plain http:// to the TLS port hints at https.
    let (code, _, err) = vm("http://127.0.0.1:18445", &["list"], None, "");
    assert_ne!(code, Some(0));
    assert!(err.contains("use https://127.0.0.1:18445"), "{err}");

    // A streamed exec over TLS.
    let (code, out, err) = vm(
        url,
        &["exec", "--cacert", cacert, &node, "--", "echo", "over-tls"],
        None,
        "",
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "over-tls");
    // The shell WebSocket over TLS, the CA file from BULKHEAD_CACERT.
    let (code, out, err) = vm(
        url,
        &["shell", &node],
        Some(cacert),
        "echo from-tls-shell; exit 7\n",
    );
    assert_eq!(code, Some(7), "{out}{err}");
    assert!(out.contains("from-tls-shell"), "{out}{err}");
    s.stop_and_assert_clean();
}

/// A node left by a one-tenant daemon under a name another tenant's group could give (a free
/// hostname) stops a shared daemon over the same stores from starting, naming both tenants:
/// otherwise that name would point at two tenants.
#[test]
fn a_stored_name_another_tenant_could_give_stops_the_start() {
    if !privileged() {
        return;
    }
    let dir = test_dir();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711)).unwrap();
    let (a, b) = (unique_tenant("ca"), unique_tenant("cb"));
    let sock = dir.path().join("a.sock");
    let one = |graceful: bool| {
        format!("config:\n  tenant: {a}\n  host_groups:\n    - name: {a}\n      ram_mb: 128\n  graceful_shutdown: {graceful}\n  api:\n    bind_address: {}\n", sock.display())
    };
    let up = |yaml: &str, name: &str| {
        let cfg = dir.path().join(name);
        std::fs::write(&cfg, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        std::process::Command::new("unshare")
            .args(["--net", "--", "sh", "-c", UP_IN_NETNS, BIN, "up"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&state)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    };
    let wait_ready = |name: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !std::fs::read_to_string(dir.path().join(format!("{name}.log")))
            .unwrap_or_default()
            .contains("ready on")
        {
            assert!(std::time::Instant::now() < deadline, "{name} did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let stop = |mut c: std::process::Child| {
        // SAFETY: signalling the daemon this test started, by its pid.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        c.wait().unwrap();
    };
    // A one-tenant daemon of a: a node named like b's group would name its nodes.
    let c = up(&one(true), "one.yaml");
    wait_ready("one.yaml");
    let o = cli(&[
        "vm",
        "add",
        "--socket",
        sock.to_str().unwrap(),
        &a,
        "--hostname",
        &format!("{b}-1"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    stop(c);
    // The shared daemon over the same state refuses to start, naming both tenants.
    let shared = format!("config:\n  graceful_shutdown: true\n  tenants:\n    - name: {a}\n      host_groups: [ {{ name: {a}, ram_mb: 128 }} ]\n    - name: {b}\n      host_groups: [ {{ name: {b}, ram_mb: 128 }} ]\n  api:\n    bind_address: {}\n", dir.path().join("admin.sock").display());
    let mut c = up(&shared, "shared.yaml");
    let st = c.wait().unwrap();
    assert!(!st.success());
    let log = std::fs::read_to_string(dir.path().join("shared.yaml.log")).unwrap();
    assert!(
        log.contains(&format!("{b}-1"))
            && log.contains(&format!("\"{a}\""))
            && log.contains(&format!("\"{b}\"")),
        "{log}"
    );
    // The node is still there for its own daemon, which deletes it at a stop.
    let c = up(&one(false), "one.yaml");
    wait_ready("one.yaml");
    stop(c);
    assert_clean(&a, &state.join("tenants").join(&a));
    assert_clean(&b, &state.join("tenants").join(&b));
}
