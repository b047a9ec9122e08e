//! OIDC through the real binary: a one-tenant daemon on TCP (loopback of a network namespace
//! of its own) trusts an IdP whose keys this test mints (ES256 with ring, RS256 with the
//! committed test-only RSA key). A developer token of the tenant lists and execs, a viewer's
//! exec is 403, a token for another tenant finds no node here (404), each bad token is 401;
//! with `jwks_url`, the IdP's key is rotated and the daemon picks up the new kid without a
//! restart.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bulkhead_api::{Client, Endpoint};
use common::answer::{call, get, Answer};
use common::netlab::{sh_in, Netns};
use common::*;
use hyper::{Method, StatusCode};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ISS: &str = "https://idp.example.com";
const ADMIN_TOKEN: &str = "0123456789abcdef0123456789abcdef";
const RSA_DER: &[u8] = include_bytes!("../../daemon/src/auth/testdata/oidc-test-only-rsa2048.der");

struct Ec {
    kid: String,
    pkcs8: Vec<u8>,
}

impl Ec {
    fn new(kid: &str) -> Ec {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .unwrap()
                .as_ref()
                .to_vec();
        Ec {
            kid: kid.into(),
            pkcs8,
        }
    }

    fn jwk(&self) -> Value {
        let kp = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &self.pkcs8,
            &SystemRandom::new(),
        )
        .unwrap();
        let p = kp.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig",
            "x": B64.encode(&p[1..33]), "y": B64.encode(&p[33..65])})
    }

    fn sign(&self, c: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&h, c, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

fn rsa_jwk() -> Value {
    let kp = ring::rsa::KeyPair::from_der(RSA_DER).unwrap();
    let c = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(kp.public());
    json!({"kty": "RSA", "kid": "r1", "alg": "RS256", "n": B64.encode(&c.n), "e": B64.encode(&c.e)})
}

fn rs256(c: &Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("r1".into());
    jsonwebtoken::encode(&h, c, &EncodingKey::from_rsa_der(RSA_DER)).unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(roles: &[&str], extra: Value) -> Value {
    let t = now();
    let mut c = json!({"iss": ISS, "aud": "bulkhead", "sub": "alice", "iat": t, "exp": t + 600,
        "bulkhead_roles": roles});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

/// The daemon this test started, stopped by its pid even when an assertion fails.
struct Stop(std::process::Child);

impl Drop for Stop {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to the daemon this test started, by its pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Starts `bulkhead up` for `tenant` on TCP `addr` in `ns`, with `auth` appended to the config.
fn start(ns: &Path, dir: &Path, tenant: &str, addr: &str, auth: &str) -> Stop {
    std::fs::write(dir.join("token"), ADMIN_TOKEN).unwrap();
    let yaml = cli_ok(&["new", tenant, "--api-bind", addr]).replace(
        "  api:\n",
        &format!("  api:\n    token_file: {}\n", dir.join("token").display()),
    ) + auth;
    let cfg = dir.join("tenant.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    Stop(
        Command::new("nsenter")
            .arg(format!("--net={}", ns.display()))
            .args(["--", BIN, "up"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(shared_state())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

fn tcp(addr: &str, token: &str) -> Client {
    Client::new(Endpoint::Tcp {
        addr: addr.into(),
        token: Some(token.into()),
    })
}

fn wait_up(addr: &str, dir: &Path) {
    let admin = tcp(addr, ADMIN_TOKEN);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = rt().block_on(admin.send(
            Method::GET,
            "/healthz",
            bulkhead_api::client::full_body(Vec::new()),
            None,
        ));
        let why = match up {
            Ok(r) if r.status() == StatusCode::OK => return,
            Ok(r) => format!("{}", r.status()),
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "daemon not up ({why}): {}",
            std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(a: &Answer) -> u16 {
    a.status.as_u16()
}

#[test]
fn oidc_tokens_from_a_key_file_get_exactly_their_bindings() {
    if !privileged() {
        return;
    }
    let dir = test_dir();
    let tenant = unique_tenant("oi");
    let other = unique_tenant("oj");
    let addr = "127.0.0.1:18241";
    let (k1, stranger) = (Ec::new("k1"), Ec::new("k1"));
    let jwks = dir.path().join("idp-jwks.json");
    std::fs::write(&jwks, json!({"keys": [k1.jwk(), rsa_jwk()]}).to_string()).unwrap();
    let auth = format!(
        "  auth:\n    oidc:\n      issuer: {ISS}\n      audience: bulkhead\n      jwks_file: {}\n",
        jwks.display()
    );
    let netns = Netns::new();
    assert!(sh_in(&netns.path(), "ip link set lo up").0);
    let ns = netns.path();
    let daemon = start(&ns, dir.path(), &tenant, addr, &auth);
    let (d, t, o) = (dir.path().to_path_buf(), tenant.clone(), other.clone());
    common::netlab::in_ns(&ns, move || {
        wait_up(addr, &d);
        let admin = tcp(addr, ADMIN_TOKEN);
        let made = call(
            &admin,
            Method::POST,
            &format!("/hostgroup/{t}/nodes?wait=agent"),
            b"{}".to_vec(),
            Some("application/json"),
        );
        assert!(made.status.is_success(), "{}", made.text());
        let node = made.json()["hostname"].as_str().unwrap().to_string();
        let exec = format!("/vm/{node}/exec?cmd=echo&args=hi&stdio=text&buffered=true");
        let post = |c: &Client, p: &str| call(c, Method::POST, p, Vec::new(), None);

        // A developer of this tenant (ES256) lists and execs.
        let dev = tcp(
            addr,
            &k1.sign(&claims(&[&format!("developer@{t}")], json!({}))),
        );
        let listed = get(&dev, "/nodes");
        assert_eq!(status(&listed), 200, "{}", listed.text());
        assert!(listed.text().contains(&node), "{}", listed.text());
        let ran = post(&dev, &exec);
        assert_eq!(status(&ran), 200, "{}", ran.text());
        assert!(ran.text().contains("hi"), "{}", ran.text());
        // The same with RS256.
        let dev_rsa = tcp(
            addr,
            &rs256(&claims(&[&format!("developer@{t}")], json!({}))),
        );
        assert_eq!(status(&post(&dev_rsa, &exec)), 200);
        // A viewer lists but may not exec: 403 naming the action.
        let viewer = tcp(
            addr,
            &k1.sign(&claims(&[&format!("viewer@{t}")], json!({}))),
        );
        assert_eq!(status(&get(&viewer, "/nodes")), 200);
        let no = post(&viewer, &exec);
        assert_eq!(status(&no), 403, "{}", no.text());
        assert!(no.text().contains("exec"), "{}", no.text());
        // A developer of another tenant finds no such node here (404, as if missing), and
        // lists nothing of this tenant.
        let foreign = tcp(
            addr,
            &k1.sign(&claims(&[&format!("developer@{o}")], json!({}))),
        );
        let hidden = post(&foreign, &exec);
        assert_eq!(status(&hidden), 404, "{}", hidden.text());
        let listed = get(&foreign, "/nodes");
        assert!(!listed.text().contains(&node), "{}", listed.text());

        // Each bad token: 401, with the reason.
        let t0 = now();
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some("r1".into());
        let unsigned = |c: &Value| {
            format!(
                "{}.{}.",
                B64.encode(json!({"alg": "none", "kid": "k1"}).to_string()),
                B64.encode(c.to_string())
            )
        };
        let roles = [format!("developer@{t}")];
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        let bad: Vec<(&str, String, &str)> = vec![
            (
                "wrong issuer",
                k1.sign(&claims(&roles, json!({"iss": "https://other.example.com"}))),
                "bearer token",
            ),
            (
                "wrong audience",
                k1.sign(&claims(&roles, json!({"aud": "not-bulkhead"}))),
                "audience",
            ),
            (
                "bad signature",
                stranger.sign(&claims(&roles, json!({}))),
                "signature",
            ),
            ("alg none", unsigned(&claims(&roles, json!({}))), "\"none\""),
            (
                "HMAC",
                jsonwebtoken::encode(
                    &hs,
                    &claims(&roles, json!({})),
                    &EncodingKey::from_secret(b"the public key"),
                )
                .unwrap(),
                "\"HS256\"",
            ),
            (
                "expired",
                k1.sign(&claims(&roles, json!({"exp": t0 - 3600}))),
                "expired",
            ),
            (
                "not yet valid",
                k1.sign(&claims(&roles, json!({"nbf": t0 + 3600}))),
                "not valid yet",
            ),
            (
                "no roles claim",
                k1.sign(&claims(&roles, json!({"bulkhead_roles": null}))),
                "bulkhead_roles",
            ),
            (
                "unknown kid",
                Ec::new("k9").sign(&claims(&roles, json!({}))),
                "k9",
            ),
        ];
        for (what, token, want) in bad {
            let a = get(&tcp(addr, &token), "/nodes");
            assert_eq!(status(&a), 401, "{what}: {}", a.text());
            let v = a.json();
            assert_eq!(v["code"], "unauthorized", "{what}");
            let msg = v["error"].as_str().unwrap();
            assert!(msg.contains(want), "{what}: {msg}");
            assert!(
                !msg.contains(&token),
                "{what}: the message echoes the token"
            );
        }
        let gone = call(
            &admin,
            Method::DELETE,
            &format!("/hostgroup/{t}/nodes/{node}"),
            Vec::new(),
            None,
        );
        assert_eq!(status(&gone), 200, "{}", gone.text());
    });
    drop(daemon);
    let state = shared_state();
    assert_clean(&tenant, &state.join("tenants").join(&tenant));
    let _ = std::fs::remove_dir_all(state.join("tenants").join(&tenant));
}

/// A tiny IdP key endpoint on loopback in `ns`: answers every request with the current
/// document. Stops when the returned flag is set.
fn serve_jwks(ns: &Path, port: u16, doc: Arc<Mutex<String>>) -> (Arc<AtomicBool>, Arc<Mutex<u32>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let hits = Arc::new(Mutex::new(0u32));
    let (s, h) = (stop.clone(), hits.clone());
    let ns = ns.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(&ns).unwrap();
        // SAFETY: setns on a namespace fd for this thread only.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        while !s.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = c.read(&mut buf);
                    let body = doc.lock().unwrap().clone();
                    *h.lock().unwrap() += 1;
                    let _ = write!(
                        c,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    rx.recv().unwrap();
    (stop, hits)
}

#[test]
fn oidc_keys_from_a_url_rotate_without_restart() {
    if !privileged() {
        return;
    }
    let dir = test_dir();
    let tenant = unique_tenant("ou");
    let addr = "127.0.0.1:18242";
    let (k1, k2) = (Ec::new("k1"), Ec::new("k2"));
    let doc = Arc::new(Mutex::new(json!({"keys": [k1.jwk()]}).to_string()));
    let netns = Netns::new();
    assert!(sh_in(&netns.path(), "ip link set lo up").0);
    let ns = netns.path();
    let (stop, hits) = serve_jwks(&ns, 18243, doc.clone());
    let auth = format!(
        "  auth:\n    oidc:\n      issuer: {ISS}\n      audience: bulkhead\n      jwks_url: http://127.0.0.1:18243/jwks.json\n"
    );
    let daemon = start(&ns, dir.path(), &tenant, addr, &auth);
    let (d, t) = (dir.path().to_path_buf(), tenant.clone());
    let rotated = doc.clone();
    common::netlab::in_ns(&ns, move || {
        wait_up(addr, &d);
        let roles = [format!("viewer@{t}")];
        let c = claims(&[roles[0].as_str()], json!({}));
        let (old, new) = (tcp(addr, &k1.sign(&c)), tcp(addr, &k2.sign(&c)));
        assert_eq!(status(&get(&old, "/nodes")), 200);
        let a = get(&new, "/nodes");
        assert_eq!(status(&a), 401, "{}", a.text());
        // The IdP rotates to k2; a token with the new kid prompts an early fetch.
        *rotated.lock().unwrap() = json!({"keys": [k2.jwk()]}).to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a = get(&new, "/nodes");
            if status(&a) == 200 {
                break;
            }
            assert_eq!(status(&a), 401, "{}", a.text());
            assert!(
                Instant::now() < deadline,
                "new kid not picked up: {}",
                a.text()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        // k1 left the IdP's set: its tokens are refused now.
        assert_eq!(status(&get(&old, "/nodes")), 401);
    });
    // Junk kids did not make the daemon hammer the IdP: start, and at most a few refetches.
    let n = *hits.lock().unwrap();
    assert!((2..=6).contains(&n), "{n} fetches");
    drop(daemon);
    stop.store(true, Ordering::SeqCst);
    let state = shared_state();
    assert_clean(&tenant, &state.join("tenants").join(&tenant));
    let _ = std::fs::remove_dir_all(state.join("tenants").join(&tenant));
}

/// The real IdP's files (`scripts/idp-tools.sh`, npm): `target/idp-tools`, or
/// BULKHEAD_IDP_TOOLS. `None` (the test skips) when npm cannot install it outside CI.
fn idp_tools() -> Option<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var_os("BULKHEAD_IDP_TOOLS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("target/idp-tools"));
    let out = Command::new(root.join("scripts/idp-tools.sh"))
        .arg(&dir)
        .output()
        .expect("run scripts/idp-tools.sh");
    if out.status.success() {
        return Some(dir);
    }
    let why = format!(
        "scripts/idp-tools.sh failed (it needs node and npm): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::env::var_os("CI").is_none(), "{why}");
    eprintln!("SKIP: {why}");
    None
}

/// A client_credentials grant at the IdP's token endpoint (plain HTTP/1.1 on loopback).
fn idp_token(port: u16, resource: &str) -> String {
    let body = format!("grant_type=client_credentials&scope=nodes&resource={resource}");
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /token HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Basic {}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        base64::engine::general_purpose::STANDARD.encode("ci:ci-secret"),
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {answer}"));
    v["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token: {answer}"))
        .to_string()
}

#[test]
fn a_real_idp_issues_tokens_bulkhead_honours() {
    if !privileged() {
        return;
    }
    let Some(tools) = idp_tools() else { return };
    let dir = test_dir();
    let tenant = unique_tenant("op");
    let (addr, port) = ("127.0.0.1:18244", 18245u16);
    let netns = Netns::new();
    assert!(sh_in(&netns.path(), "ip link set lo up").0);
    let ns = netns.path();
    // panva's oidc-provider, in the daemon's namespace, binding viewer@<tenant> to its client.
    struct Idp(std::process::Child);
    impl Drop for Idp {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut idp = Idp(Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["--", "node"])
        .arg(tools.join("idp.mjs"))
        .arg(port.to_string())
        .arg(format!("viewer@{tenant}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("idp.log")).unwrap())
        .spawn()
        .expect("start node"));
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(idp.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(
        line.contains("idp ready"),
        "{line}{}",
        std::fs::read_to_string(dir.path().join("idp.log")).unwrap_or_default()
    );
    let auth = format!(
        "  auth:\n    oidc:\n      issuer: http://127.0.0.1:{port}\n      audience: bulkhead\n      jwks_url: http://127.0.0.1:{port}/jwks\n"
    );
    let daemon = start(&ns, dir.path(), &tenant, addr, &auth);
    let (d, t) = (dir.path().to_path_buf(), tenant.clone());
    common::netlab::in_ns(&ns, move || {
        wait_up(addr, &d);
        for resource in ["urn:bulkhead:es", "urn:bulkhead:rs"] {
            let token = idp_token(port, resource);
            let c = tcp(addr, &token);
            let listed = get(&c, "/nodes");
            assert_eq!(status(&listed), 200, "{resource}: {}", listed.text());
            // A viewer: authenticated, and refused what its role lacks.
            let made = call(
                &c,
                Method::POST,
                &format!("/hostgroup/{t}/nodes"),
                b"{}".to_vec(),
                Some("application/json"),
            );
            assert_eq!(status(&made), 403, "{resource}: {}", made.text());
            assert!(made.text().contains("oidc:ci"), "{}", made.text());
            // The same token, tampered with, is refused.
            // (A character well inside the signature: the last one's low bits are padding.)
            let mut bad = token.clone().into_bytes();
            let i = bad.len() - 10;
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            let bad = String::from_utf8(bad).unwrap();
            let refused = get(&tcp(addr, &bad), "/nodes");
            assert!(refused.text().contains("signature"), "{}", refused.text());
            assert_eq!(status(&get(&tcp(addr, &bad), "/nodes")), 401, "{resource}");
        }
    });
    drop(daemon);
    drop(idp);
    let state = shared_state();
    assert_clean(&tenant, &state.join("tenants").join(&tenant));
    let _ = std::fs::remove_dir_all(state.join("tenants").join(&tenant));
}
