//! Slicer's own clients against a live daemon (issue #10): Slicer's Go and TypeScript SDKs,
//! built from the third-party snapshots by `scripts/sdk-tools.sh` (offline but for PyPI and
//! npm), run their check programs (crates/bulkhead/tests/sdk/) that call every public SDK
//! function and print one JSON line per named check; and schemathesis drives Slicer's OpenAPI
//! spec against the daemon. Over the UNIX socket and over TCP with a bearer token, on jail
//! nodes, plus create/exec/cp/delete on a microVM node.
//!
//! Every check runs whatever failed before it; a test fails naming each failing check with its
//! detail. Schemathesis findings fail the test unless docs/api/slicer-compat.md lists them
//! (operation, check code, response status) with a reason.

mod common;

use common::netlab::Netns;
use common::{privileged, shared_state, unique_tenant, vm_config, Daemon, BIN, UP_IN_NETNS};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TOKEN: &str = "sdk-e2e-token-0123456789abcdef0123";
const TCP: &str = "127.0.0.1:18080";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the SDKs and check programs once per test process: `target/sdk-tools` (or
/// BULKHEAD_SDK_TOOLS, which scripts/test.sh sets after building them itself).
fn tools() -> &'static Path {
    static TOOLS: OnceLock<PathBuf> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let dir = std::env::var_os("BULKHEAD_SDK_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target/sdk-tools"));
        let out = Command::new(root().join("scripts/sdk-tools.sh"))
            .arg(&dir)
            .output()
            .expect("run scripts/sdk-tools.sh");
        assert!(
            out.status.success(),
            "scripts/sdk-tools.sh failed (it needs PyPI and npm): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

/// Where Slicer's spec is (beside the SDKs).
fn third_party() -> PathBuf {
    if let Some(p) = std::env::var_os("THIRD_PARTY") {
        return PathBuf::from(p);
    }
    [
        root().join("../shared/third_party"),
        root().join("../../shared/third_party"),
        PathBuf::from("/work/shared/third_party"),
    ]
    .into_iter()
    .find(|p| p.join("slicer-openapi.yaml").exists())
    .expect("Slicer's third_party snapshots: set THIRD_PARTY")
}

/// A daemon serving the API on TCP with a bearer token, in a network namespace of its own.
struct TcpDaemon {
    tenant: String,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl TcpDaemon {
    fn start(prefix: &str, range: &str) -> TcpDaemon {
        let dir = common::test_dir();
        let token = dir.path().join("token");
        std::fs::write(&token, TOKEN).unwrap();
        let tenant = unique_tenant(prefix);
        let yaml = common::cli_ok(&[
            "new",
            &tenant,
            "--api-bind",
            TCP,
            "--net",
            "isolated",
            "--isolated-range",
            range,
        ])
        .replace(
            "  api:\n",
            &format!("  api:\n    token_file: {}\n", token.display()),
        );
        let cfg = dir.path().join("tenant.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", UP_IN_NETNS, BIN, "up"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(shared_state())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bulkhead up");
        let d = TcpDaemon {
            tenant,
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !d.log().contains("ready on") {
            assert!(
                Instant::now() < deadline,
                "tcp daemon not ready:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    fn netns(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/ns/net",
            self.child.as_ref().unwrap().id()
        ))
    }

    fn stop_and_assert_clean(mut self) {
        self.stop();
        common::assert_clean(
            &self.tenant,
            &shared_state().join("tenants").join(&self.tenant),
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the daemon this test started, by its pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for TcpDaemon {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(shared_state().join("tenants").join(&self.tenant));
    }
}

/// Where a client reaches a daemon: its network namespace, URL, token and host group.
struct Target {
    netns: PathBuf,
    url: String,
    token: String,
    group: String,
    label: &'static str,
}

fn unix_target(d: &Daemon, netns: PathBuf) -> Target {
    Target {
        netns,
        url: d.sock().to_string(),
        token: String::new(),
        group: d.tenant.clone(),
        label: "unix",
    }
}

fn tcp_target(d: &TcpDaemon) -> Target {
    Target {
        netns: d.netns(),
        url: format!("http://{TCP}"),
        token: TOKEN.to_string(),
        group: d.tenant.clone(),
        label: "tcp",
    }
}

/// Checks that fail because of a defect in the SDK itself, the same against Slicer's server
/// (docs/api/slicer-compat.md says why). They still run; one that passes fails the test, so
/// that the list stays true.
const SDK_DEFECTS: &[(&str, &str)] = &[(
    "hostgroups.GetHostGroupNodes(tag)",
    "the Go SDK puts ?tag= into the URL path (sent escaped, nodes%3Ftag=...), which no route matches",
)];

/// One check's result as the programs print it.
#[derive(serde::Deserialize)]
struct CheckLine {
    name: String,
    ok: bool,
    detail: String,
}

/// Runs a check program in the target's network namespace, with a wall-clock bound; returns
/// a line per failure ("sdk/label check: detail"), after printing every result.
fn run_checks(
    sdk: &str,
    t: &Target,
    set: &str,
    prog: &[&str],
    cwd: &Path,
    last: &str,
) -> Vec<String> {
    let out_path = tempfile::NamedTempFile::new().unwrap();
    let err_path = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", t.netns.display()))
        .arg("--")
        .args(prog)
        .current_dir(cwd)
        .env("SDK_URL", &t.url)
        .env("SDK_TOKEN", &t.token)
        .env("SDK_GROUP", &t.group)
        .env("SDK_SET", set)
        .stdin(Stdio::null())
        .stdout(out_path.reopen().unwrap())
        .stderr(err_path.reopen().unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start {prog:?}: {e}"));
    let limit = Duration::from_secs(if set == "vm" { 900 } else { 600 });
    let deadline = Instant::now() + limit;
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
    let mut failures = Vec::new();
    let (mut pass, mut seen_last) = (0, false);
    for line in stdout.lines() {
        let Ok(c) = serde_json::from_str::<CheckLine>(line) else {
            failures.push(format!("{sdk}/{}: not a check line: {line}", t.label));
            continue;
        };
        seen_last |= c.name == last;
        let known = SDK_DEFECTS.iter().any(|(n, _)| *n == c.name);
        eprintln!(
            "{} {sdk}/{}/{set} {}: {}",
            match (c.ok, known) {
                (true, _) => "PASS",
                (false, false) => "FAIL",
                (false, true) => "KNOWN",
            },
            t.label,
            c.name,
            c.detail
        );
        let defect = SDK_DEFECTS.iter().find(|(n, _)| *n == c.name);
        match (c.ok, defect) {
            (true, None) => pass += 1,
            (false, None) => failures.push(format!("{sdk}/{} {}: {}", t.label, c.name, c.detail)),
            (false, Some((_, why))) => eprintln!("  (an SDK defect: {why})"),
            (true, Some(_)) => failures.push(format!(
                "{sdk}/{} {}: passes now: take it off SDK_DEFECTS and slicer-compat.md",
                t.label, c.name
            )),
        }
    }
    eprintln!(
        "{sdk}/{}/{set}: {pass} checks passed, {} failed",
        t.label,
        failures.len()
    );
    if timed_out || !seen_last {
        failures.push(format!(
            "{sdk}/{}: the program ended before its last check ({last}){}: {}",
            t.label,
            if timed_out { ", timed out" } else { "" },
            stderr.chars().take(2000).collect::<String>()
        ));
    }
    failures
}

fn go_checks(t: &Target, set: &str) -> Vec<String> {
    let bin = tools().join("bin/sdkcheck");
    run_checks(
        "go",
        t,
        set,
        &[bin.to_str().unwrap()],
        tools(),
        "nodes.DeleteVM",
    )
}

fn ts_checks(t: &Target, set: &str) -> Vec<String> {
    let dir = tools().join("ts-sdk");
    run_checks("ts", t, set, &["node", "check.mjs"], &dir, "vm.delete")
}

fn assert_none(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} SDK checks failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn go_sdk_every_call_over_the_socket_and_tcp() {
    if !privileged() {
        return;
    }
    tools();
    let d = Daemon::start("sdkgo", &net("10.91.0.0/24"));
    let mut failures = go_checks(&unix_target(&d, netns_of(&d)), "full");
    d.stop_and_assert_clean();
    let t = TcpDaemon::start("sdkgot", "10.91.1.0/24");
    failures.extend(go_checks(&tcp_target(&t), "full"));
    t.stop_and_assert_clean();
    assert_none(failures);
}

#[test]
fn ts_sdk_every_call_over_the_socket_and_tcp() {
    if !privileged() {
        return;
    }
    tools();
    let d = Daemon::start("sdkts", &net("10.91.2.0/24"));
    let mut failures = ts_checks(&unix_target(&d, netns_of(&d)), "full");
    d.stop_and_assert_clean();
    let t = TcpDaemon::start("sdktst", "10.91.3.0/24");
    failures.extend(ts_checks(&tcp_target(&t), "full"));
    t.stop_and_assert_clean();
    assert_none(failures);
}

/// microVM nodes boot under TCG here: only create, exec, cp and delete, through both SDKs.
#[test]
fn both_sdks_create_exec_copy_delete_on_a_microvm_node() {
    if !privileged() {
        return;
    }
    tools();
    let netns = Netns::new();
    let d = Daemon::start_in(&netns.path(), "sdkvm", &vm_config());
    let t = unix_target(&d, netns.path());
    let mut failures = go_checks(&t, "vm");
    failures.extend(ts_checks(&t, "vm"));
    d.stop_and_assert_clean();
    assert_none(failures);
}

/// Nodes with a network of their own, as Slicer's always have (a forward needs one): each
/// daemon its own range, since tests run side by side.
fn net(range: &str) -> [&str; 4] {
    ["--net", "isolated", "--isolated-range", range]
}

fn netns_of(d: &Daemon) -> PathBuf {
    PathBuf::from(format!("/proc/{}/ns/net", d.pid()))
}

#[path = "sdk/schemathesis.rs"]
mod schemathesis;
