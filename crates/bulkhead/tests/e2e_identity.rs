//! Workload identity through the real binary (issue #11, ADR 0020): a node finds its JWT at
//! /run/bulkhead/identity/token, on a tmpfs of its own, as soon as a create with wait=agent
//! answers; an independent JWT library (PyJWT with cryptography, from the venv that
//! scripts/sdk-tools.sh builds) verifies it against the daemon's discovery document and JWKS,
//! fetched without credentials; the token is refreshed at half its ttl; after `bulkhead
//! identity rotate` the old key stays published and new tokens carry the new kid; the API
//! refuses the token unless `api_role` binds one, and then grants exactly that role.
//!
//! The daemons serve TCP in network namespaces of their own; every client (CLI, Python) runs
//! inside that namespace.

mod common;

use common::{privileged, BIN};
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const ADMIN_TOKEN: &str = "identity-e2e-token-0123456789abcdef";
const ADDR: &str = "127.0.0.1:18081";
const TOKEN_FILE: &str = "/run/bulkhead/identity/token";

/// The Python of the venv scripts/sdk-tools.sh builds (BULKHEAD_SDK_TOOLS, else
/// target/sdk-tools), which must have PyJWT and cryptography.
fn python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = std::env::var_os("BULKHEAD_SDK_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/sdk-tools"));
    let py = dir.join("venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import jwt, cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import jwt and cryptography: run scripts/sdk-tools.sh {} (it installs pyjwt[crypto] from PyPI), or set BULKHEAD_SDK_TOOLS",
        py.display(),
        dir.display()
    );
    py
}

/// Verifies a token as an outside verifier would: discovery document, then the JWKS it
/// names, both without credentials; PyJWT checks signature (ES256 only), issuer, audience and
/// expiry. Prints the claims, the token's kid and the published kids.
const VERIFY: &str = r#"
import json, sys, urllib.request, jwt
base, aud, token = sys.argv[1:4]
disc = json.load(urllib.request.urlopen(base + "/.well-known/openid-configuration"))
jwks = json.load(urllib.request.urlopen(disc["jwks_uri"]))
keys = {k["kid"]: k for k in jwks["keys"]}
kid = jwt.get_unverified_header(token)["kid"]
key = jwt.PyJWK(keys[kid]).key
claims = jwt.decode(token, key, algorithms=["ES256"], audience=aud, issuer=disc["issuer"])
print(json.dumps({"claims": claims, "kid": kid, "kids": sorted(keys), "discovery": disc}))
"#;

/// A one-tenant daemon (common::Daemon) with a TCP listener beside its socket, whose
/// configured single token is global-admin, and `identity` (YAML) under `config:`.
struct TcpDaemon {
    d: common::Daemon,
    _token: tempfile::TempDir,
}

impl std::ops::Deref for TcpDaemon {
    type Target = common::Daemon;
    fn deref(&self) -> &common::Daemon {
        &self.d
    }
}

impl TcpDaemon {
    fn start(prefix: &str, identity: &str, extra: &[&str]) -> TcpDaemon {
        let dir = common::test_dir();
        let token = dir.path().join("token");
        std::fs::write(&token, ADMIN_TOKEN).unwrap();
        let tcp = format!(
            "  api:\n    tcp: {{ bind: \"{ADDR}\", token_file: {} }}\n",
            token.display()
        );
        let d = common::Daemon::start_edited(prefix, extra, |y| {
            y.replace("  api:\n", &tcp)
                .replace("config:\n", &format!("config:\n{identity}"))
        });
        TcpDaemon { d, _token: dir }
    }

    fn netns(&self) -> String {
        format!("--net=/proc/{}/ns/net", self.d.pid())
    }

    /// Runs `program args` inside the daemon's network namespace.
    fn run_in(&self, program: &str, args: &[&str], token: &str) -> Output {
        Command::new("nsenter")
            .arg(self.netns())
            .arg("--")
            .arg(program)
            .args(args)
            .env("BULKHEAD_URL", format!("http://{ADDR}"))
            .env("BULKHEAD_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// The CLI as global-admin (the listener's bearer token).
    fn cli(&self, args: &[&str]) -> String {
        let o = self.run_in(BIN, args, ADMIN_TOKEN);
        assert!(
            o.status.success(),
            "bulkhead {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            self.log()
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn token_of(&self, node: &str) -> String {
        self.cli(&["vm", "exec", node, "--", "cat", TOKEN_FILE])
            .trim()
            .to_string()
    }

    /// PyJWT's verdict on `token` for audience `aud`.
    fn verify(&self, py: &std::path::Path, token: &str, aud: &str) -> Value {
        let base = format!("http://{ADDR}");
        let o = self.run_in(py.to_str().unwrap(), &["-c", VERIFY, &base, aud, token], "");
        assert!(
            o.status.success(),
            "PyJWT refused the token: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    }

    fn stop_and_assert_clean(self) {
        self.d.stop_and_assert_clean();
    }
}

/// Waits until the node holds a token other than `old`.
fn next_token(d: &TcpDaemon, node: &str, old: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let t = d.token_of(node);
        if t != old && !t.is_empty() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "no fresh token in {within:?}:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_jail_node_holds_a_verifiable_refreshed_token_that_the_api_refuses() {
    if !privileged() {
        return;
    }
    let py = python();
    let d = TcpDaemon::start(
        "wid",
        "  workload_identity:\n    audiences: [vault, storage.internal]\n    ttl: 10s\n",
        &[],
    );
    let node = d.cli(&["vm", "add", &d.tenant]).trim().to_string();
    // wait=agent: the token is there when the create answers.
    let first = d.token_of(&node);
    assert_eq!(first.split('.').count(), 3, "a JWT: {first:?}");
    let mounts = d.cli(&["vm", "exec", &node, "--", "cat", "/proc/mounts"]);
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some("/run/bulkhead/identity"))
        .unwrap_or_else(|| panic!("no mount at /run/bulkhead/identity:\n{mounts}"));
    assert!(
        line.starts_with("tmpfs /run/bulkhead/identity tmpfs "),
        "{line}"
    );
    for opt in ["nosuid", "nodev", "noexec"] {
        assert!(
            line.split(' ').nth(3).unwrap().split(',').any(|o| o == opt),
            "{opt}: {line}"
        );
    }
    let mode = d.cli(&["vm", "exec", &node, "--", "stat", "-c", "%a", TOKEN_FILE]);
    assert_eq!(mode.trim(), "444");

    let v = d.verify(&py, &first, "vault");
    let c = &v["claims"];
    assert_eq!(c["sub"], format!("tenant:{}:node:{node}", d.tenant));
    assert_eq!(c["aud"], serde_json::json!(["vault", "storage.internal"]));
    assert_eq!(c["iss"], format!("http://{ADDR}"));
    assert_eq!(c["tenant"], d.tenant.as_str());
    assert_eq!(c["node"], node.as_str());
    assert_eq!(c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(), 10);
    assert_eq!(
        v["discovery"]["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
    d.verify(&py, &first, "storage.internal");
    let first_kid = v["kid"].as_str().unwrap().to_string();
    assert_eq!(v["kids"], serde_json::json!([first_kid]));

    // Refreshed at half the ttl (5s), before the first expires.
    let t0 = Instant::now();
    let second = next_token(&d, &node, &first, Duration::from_secs(9));
    assert!(t0.elapsed() < Duration::from_secs(9));
    d.verify(&py, &second, "vault");

    // Rotation: a new kid; the old key stays published; the next token uses the new key.
    let out: Value = serde_json::from_str(&d.cli(&["identity", "rotate", "--json"])).unwrap();
    let new_kid = out["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, first_kid);
    let v = d.verify(&py, &second, "vault");
    let mut want = vec![first_kid.clone(), new_kid.clone()];
    want.sort();
    assert_eq!(v["kids"], serde_json::json!(want), "both keys published");
    let third = next_token(&d, &node, &second, Duration::from_secs(9));
    let v = d.verify(&py, &third, "vault");
    assert_eq!(v["kid"], new_kid.as_str());

    // The API refuses the node's token: no role is bound to workload tokens by default.
    let o = d.run_in(BIN, &["vm", "list"], &third);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("401") || err.contains("unauthorized"), "{err}");
    assert!(err.contains("api_role binds none"), "{err}");
    // Without credentials, only the issuer's documents.
    let o = d.run_in(BIN, &["vm", "list"], "");
    assert!(!o.status.success());
    assert!(d.log().contains("workload identity key rotated"));
    d.cli(&["vm", "delete", &node]);
    d.stop_and_assert_clean();
}

#[test]
fn api_role_grants_a_node_its_role_in_its_own_tenant_only() {
    if !privileged() {
        return;
    }
    let d = TcpDaemon::start(
        "wir",
        "  workload_identity:\n    audiences: [bulkhead]\n    api_role: viewer\n",
        &[],
    );
    let node = d.cli(&["vm", "add", &d.tenant]).trim().to_string();
    let token = d.token_of(&node);
    let o = d.run_in(BIN, &["vm", "list", "--json"], &token);
    assert!(
        o.status.success(),
        "a viewer lists: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let nodes: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(nodes.to_string().contains(&node), "{nodes}");
    let o = d.run_in(BIN, &["vm", "exec", &node, "--", "true"], &token);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("403") || err.contains("forbidden"), "{err}");
    let o = d.run_in(BIN, &["identity", "rotate"], &token);
    assert!(
        !o.status.success(),
        "a node may not rotate the issuer's key"
    );
    // A token with a forged signature is refused (401).
    // (A character well inside the signature: the last one carries padding bits.)
    let mut forged = token.clone().into_bytes();
    let i = forged.len() - 10;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let o = d.run_in(BIN, &["vm", "list"], &forged);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("workload token refused"));
    // A relaunched node has a fresh tmpfs: it gets a new token before relaunch answers
    // (ttl is 10m here, so no refresh could have brought it).
    d.cli(&["vm", "shutdown", &node]);
    d.cli(&["vm", "relaunch", &node]);
    let again = d.token_of(&node);
    assert_eq!(again.split('.').count(), 3, "{again:?}");
    assert_ne!(again, token);
    d.cli(&["vm", "delete", &node]);
    d.stop_and_assert_clean();
}

/// A microVM node (TCG here: slow) gets its token on a tmpfs of the guest's, never on the
/// guest's disk, and it verifies like a jail node's.
#[test]
fn a_microvm_node_holds_its_token_on_a_tmpfs() {
    if !privileged() {
        return;
    }
    let py = python();
    let d = TcpDaemon::start(
        "wiv",
        "  workload_identity:\n    audiences: [vault]\n",
        &[
            "--hypervisor",
            "qemu",
            "--ram-mb",
            "256",
            "--storage-size",
            "256M",
        ],
    );
    let node = d
        .cli(&["vm", "add", &d.tenant, "--timeout", "180s"])
        .trim()
        .to_string();
    let token = d.token_of(&node);
    let mounts = d.cli(&["vm", "exec", &node, "--", "cat", "/proc/mounts"]);
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with("tmpfs /run/bulkhead/identity tmpfs ")),
        "{mounts}"
    );
    let v = d.verify(&py, &token, "vault");
    assert_eq!(
        v["claims"]["sub"],
        format!("tenant:{}:node:{node}", d.tenant)
    );
    d.cli(&["vm", "delete", &node]);
    d.stop_and_assert_clean();
}

/// A shared daemon is one issuer for all its tenants (keys in `<state>/shared/identity`):
/// each tenant's nodes get tokens naming their own tenant, and with `api_role` a node's token
/// acts in its own tenant only (another tenant's node is 404, as if missing).
#[test]
fn a_shared_daemon_signs_every_tenants_nodes_and_a_token_acts_in_its_own_tenant_only() {
    if !privileged() {
        return;
    }
    let py = python();
    let s = common::shared::Shared::start(
        "  workload_identity:\n    audiences: [bulkhead, vault]\n    api_role: developer\n",
        &format!("    tcp: {{bind: '{ADDR}'}}\n"),
    );
    let (a, b) = (s.a.clone(), s.b.clone());
    let na = s.add(&s.tenant_sock(&a), &a);
    let nb = s.add(&s.tenant_sock(&b), &b);
    let token = |sock: &std::path::Path, node: &str| {
        let o = s.vm(sock, &["exec", node, "--", "cat", TOKEN_FILE]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let (ta, tb) = (
        token(&s.tenant_sock(&a), &na),
        token(&s.tenant_sock(&b), &nb),
    );
    let in_ns = |program: &str, args: &[&str], bearer: &str| {
        Command::new("nsenter")
            .arg(s.netns_arg())
            .arg("--")
            .arg(program)
            .args(args)
            .env("BULKHEAD_URL", format!("http://{ADDR}"))
            .env("BULKHEAD_TOKEN", bearer)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    };
    let verify = |t: &str| -> Value {
        let o = in_ns(
            py.to_str().unwrap(),
            &["-c", VERIFY, &format!("http://{ADDR}"), "vault", t],
            "",
        );
        assert!(
            o.status.success(),
            "PyJWT: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (va, vb) = (verify(&ta), verify(&tb));
    assert_eq!(va["claims"]["tenant"], a.as_str());
    assert_eq!(vb["claims"]["sub"], format!("tenant:{b}:node:{nb}"));
    assert_eq!(va["kid"], vb["kid"], "one issuer for the daemon");
    assert!(s.state.join("shared/identity/keys.json").exists());
    assert!(!s.state.join("tenants").join(&a).join("identity").exists());

    // a's node, as developer@a: lists only a's nodes, execs in its own tenant, and b's node
    // does not exist for it.
    let o = in_ns(BIN, &["vm", "list", "--json"], &ta);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(list.contains(&na) && !list.contains(&nb), "{list}");
    let o = in_ns(BIN, &["vm", "exec", &na, "--", "true"], &ta);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = in_ns(BIN, &["vm", "exec", &nb, "--", "true"], &ta);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("404") || err.contains("not found"), "{err}");
    s.stop_and_assert_clean();
}

/// Off by default: no issuer documents (404), no key directory, and the node's identity
/// tmpfs stays empty.
#[test]
fn without_the_config_block_nothing_is_issued() {
    if !privileged() {
        return;
    }
    let d = common::Daemon::start("wio", &[]);
    let node = d.add();
    let (code, out, err) = d.sh(&node, "ls -A /run/bulkhead/identity; echo end");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "end\n", "an empty tmpfs");
    let c = d.client();
    for p in [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
    ] {
        let a = common::answer::get(&c, p);
        assert_eq!(a.status.as_u16(), 404, "{p}: {}", a.text());
        assert!(
            a.text().contains("workload identity is off"),
            "{}",
            a.text()
        );
    }
    assert!(!d.tenant_dir().join("identity").exists());
    d.vm_ok(&["delete", &node]);
    d.stop_and_assert_clean();
}
