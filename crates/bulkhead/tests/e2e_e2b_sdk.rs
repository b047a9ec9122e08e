//! E2B's official SDKs, unchanged, against a live daemon (issue #15, "Done means"): the `e2b`
//! Python package from PyPI and the `e2b` npm package, installed by `scripts/sdk-tools.sh OUT
//! e2b` at pinned versions, run our check scripts (crates/bulkhead/tests/e2b/) that print one
//! JSON line per named check. The SDKs are pointed at the daemon only through their documented
//! settings (E2B_API_KEY, E2B_API_URL, E2B_SANDBOX_URL; the JavaScript script also passes
//! them as constructor options once), over plain HTTP on loopback, inside the daemon's own
//! network namespace.
//!
//! One shared daemon with three tenants: A (the checks' own), B (isolation: its key never sees
//! A's sandboxes, and A's never sees B's) and C (a lifecycle rate limit of 1/s, burst 1: the
//! SDK's RateLimitException). Keys come from `bulkhead token create --role developer --e2b`.
//! Afterwards the sandbox the Python script left running is a node of A through bulkhead's own
//! API and not one of B's, and the daemon's stop leaves nothing behind.

mod common;

use common::{assert_clean, cli, privileged, test_dir, unique_tenant, BIN, UP_IN_NETNS};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The E2B listener, inside the daemon's network namespace.
const E2B: &str = "127.0.0.1:13915";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Installs the SDKs once per test process: `target/sdk-tools` (or BULKHEAD_SDK_TOOLS, which
/// scripts/test.sh sets after installing them itself).
fn tools() -> &'static Path {
    static TOOLS: OnceLock<PathBuf> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let dir = std::env::var_os("BULKHEAD_SDK_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target/sdk-tools"));
        let out = Command::new(root().join("scripts/sdk-tools.sh"))
            .arg(&dir)
            .arg("e2b")
            .output()
            .expect("run scripts/sdk-tools.sh");
        assert!(
            out.status.success(),
            "scripts/sdk-tools.sh OUT e2b failed (it needs PyPI and npm): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// A shared daemon (tenants A, B, C; an admin socket and one per tenant) with the E2B
/// listener, in a network namespace of its own and a state directory of its own.
struct E2bDaemon {
    tenants: [String; 3],
    dir: tempfile::TempDir,
    state: PathBuf,
    admin: PathBuf,
    child: Option<Child>,
}

impl E2bDaemon {
    fn start() -> E2bDaemon {
        let tenants = [
            unique_tenant("e2ba"),
            unique_tenant("e2bb"),
            unique_tenant("e2bc"),
        ];
        let dir = test_dir();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711)).unwrap();
        let admin = dir.path().join("admin.sock");
        let list: String = tenants
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let limits = if i == 2 {
                    "      rate_limits: { lifecycle_per_s: 1, lifecycle_burst: 1 }\n"
                } else {
                    ""
                };
                format!("    - name: {t}\n      host_groups:\n        - name: {t}\n          ram_mb: 256\n          storage_size: 192M\n{limits}")
            })
            .collect();
        let yaml = format!(
            "config:\n  graceful_shutdown: false\n  tenants:\n{list}  api:\n    bind_address: {}\n    tenant_sockets: {}\n    e2b: {{ bind: \"{E2B}\" }}\n",
            admin.display(),
            dir.path().join("tenants").display()
        );
        let config = dir.path().join("e2b.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", UP_IN_NETNS, BIN, "up"])
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bulkhead up");
        let mut d = E2bDaemon {
            tenants,
            dir,
            state,
            admin,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while !d.log().contains("ready on") {
            assert!(Instant::now() < deadline, "daemon not ready:\n{}", d.log());
            if let Some(Ok(Some(st))) = d.child.as_mut().map(|c| c.try_wait()) {
                panic!("daemon exited early ({st}):\n{}", d.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.child.as_ref().unwrap().id())
    }

    fn tenant_sock(&self, t: &str) -> PathBuf {
        self.dir.path().join("tenants").join(format!("{t}.sock"))
    }

    /// `bulkhead token create --tenant T --role developer --e2b` through the admin socket: the
    /// key as the SDKs take it.
    fn e2b_key(&self, tenant: &str) -> String {
        let o = cli(&[
            "token",
            "create",
            "--socket",
            self.admin.to_str().unwrap(),
            "--tenant",
            tenant,
            "--role",
            "developer",
            "--name",
            "e2b-sdk",
            "--ttl",
            "2h",
            "--e2b",
        ]);
        assert!(
            o.status.success(),
            "bulkhead token create --e2b failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let key = String::from_utf8_lossy(&o.stdout).trim().to_string();
        assert!(
            key.starts_with("e2b_")
                && key.len() > 4
                && key[4..].chars().all(|c| c.is_ascii_hexdigit()),
            "`token create --e2b` must print e2b_<hex>, printed {key:?}"
        );
        key
    }

    /// `bulkhead vm list` of a tenant through its own socket.
    fn node_list(&self, tenant: &str) -> String {
        let o = cli(&[
            "vm",
            "list",
            "--socket",
            self.tenant_sock(tenant).to_str().unwrap(),
        ]);
        assert!(
            o.status.success(),
            "vm list: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn stop_and_assert_clean(mut self) {
        if let Some(c) = self.child.take() {
            common::stop_daemon(c, Duration::from_secs(60), || self.log());
        }
        for t in &self.tenants {
            assert_clean(t, &self.state.join("tenants").join(t));
        }
    }
}

impl Drop for E2bDaemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            // SAFETY: signalling the daemon this test started, by its pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let mut c = c;
            let _ = c.wait();
        }
    }
}

/// One check's result as the scripts print it.
#[derive(serde::Deserialize)]
struct CheckLine {
    name: String,
    ok: bool,
    detail: String,
}

/// What one script reported: failures ("sdk check: detail") and each check's detail by name.
struct Report {
    failures: Vec<String>,
    details: Vec<(String, String)>,
}

/// Runs a check script in the daemon's network namespace with the SDK's settings in its
/// environment, bounded in time; prints every result.
fn run_script(
    sdk: &str,
    d: &E2bDaemon,
    prog: &[&Path],
    cwd: &Path,
    env: &[(&str, &str)],
) -> Report {
    let out_path = tempfile::NamedTempFile::new().unwrap();
    let err_path = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", d.netns()))
        .arg("--")
        .args(prog)
        .current_dir(cwd)
        // Only the SDK's documented settings point it at bulkhead.
        .env("E2B_API_URL", format!("http://{E2B}"))
        .env("E2B_SANDBOX_URL", format!("http://{E2B}"))
        .env_remove("E2B_DOMAIN")
        .env_remove("E2B_DEBUG")
        .stdin(Stdio::null())
        .stdout(out_path.reopen().unwrap())
        .stderr(err_path.reopen().unwrap());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {prog:?}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut timed_out = false;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            timed_out = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let stdout = std::fs::read_to_string(out_path.path()).unwrap_or_default();
    let stderr = std::fs::read_to_string(err_path.path()).unwrap_or_default();
    let mut r = Report {
        failures: Vec::new(),
        details: Vec::new(),
    };
    let (mut pass, mut done) = (0, false);
    for line in stdout.lines() {
        let Ok(c) = serde_json::from_str::<CheckLine>(line) else {
            r.failures.push(format!("{sdk}: not a check line: {line}"));
            continue;
        };
        println!(
            "{sdk} {:<28} {} {}",
            c.name,
            if c.ok { "ok  " } else { "FAIL" },
            c.detail
        );
        done |= c.name == "done";
        if c.ok {
            pass += 1;
        } else {
            r.failures.push(format!("{sdk} {}: {}", c.name, c.detail));
        }
        r.details.push((c.name, c.detail));
    }
    println!("{sdk}: {pass} checks passed, {} failed", r.failures.len());
    if timed_out {
        r.failures.push(format!("{sdk}: timed out after 900 s"));
    }
    if !done {
        r.failures.push(format!(
            "{sdk}: the script did not finish (no `done` line); stderr:\n{stderr}"
        ));
    }
    r
}

#[test]
fn e2b_sdks_against_bulkhead() {
    if !privileged() {
        return;
    }
    let tools = tools();
    let d = E2bDaemon::start();
    let [a, b, c] = d.tenants.clone();
    let (ka, kb, kc) = (d.e2b_key(&a), d.e2b_key(&b), d.e2b_key(&c));
    let run = unique_tenant("run");
    let env = [
        ("E2B_API_KEY", ka.as_str()),
        ("E2BCHECK_TEMPLATE", a.as_str()),
        ("E2BCHECK_KEY_B", kb.as_str()),
        ("E2BCHECK_KEY_C", kc.as_str()),
        ("E2BCHECK_RUN", run.as_str()),
        ("E2BCHECK_ONLY", ""),
    ];
    let mut failures = Vec::new();

    let venv = tools.join("e2b-venv");
    let py = run_script(
        "python",
        &d,
        &[&venv.join("bin/python"), &venv.join("e2b_check.py")],
        &venv,
        &env,
    );
    failures.extend(py.failures);

    // The sandbox the Python script kept is a node of A, seen through bulkhead's own API, and
    // not one of B's.
    match py.details.iter().find(|(n, _)| n == "keep") {
        Some((_, id)) if !id.is_empty() => {
            if !d.node_list(&a).contains(id.as_str()) {
                failures.push(format!(
                    "sandbox {id} is not a node of tenant A: {}",
                    d.node_list(&a)
                ));
            }
            if d.node_list(&b).contains(id.as_str()) {
                failures.push(format!("sandbox {id} is listed by tenant B"));
            }
        }
        _ => failures.push("python left no sandbox to look up (`keep`)".into()),
    }

    let js_dir = tools.join("e2b-js");
    let node = PathBuf::from("node");
    let js = run_script(
        "js",
        &d,
        &[&node, &js_dir.join("e2b_check.mjs")],
        &js_dir,
        &env,
    );
    failures.extend(js.failures);

    let log = d.log();
    if log.contains("panicked") {
        failures.push(format!("the daemon panicked:\n{log}"));
    }
    d.stop_and_assert_clean();
    assert!(
        failures.is_empty(),
        "{} E2B SDK check(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
