//! Harness for the end-to-end suite: each test starts the real `bulkhead` binary as a daemon
//! for a tenant of its own, in a network namespace of its own (so nothing it does can touch
//! the machine's root network namespace), with a private state directory and socket.
//!
//! These tests need root. Outside CI they skip with a message; in CI (CI=true) a missing
//! privilege fails the run, because everything we claim must be proven there.

#![allow(dead_code)]

pub mod answer;
pub mod containerd; // containerd lab (#16, C)
pub mod exec_wire;
pub mod host_procs; // its host-side helpers
pub mod lab_nodes;
pub mod leaks; // secrets (#13)
pub mod netlab;
pub mod oci; // OCI image archives (#16, C)
pub mod shared;

use bulkhead_api::{Client, Endpoint};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

/// Run under `unshare --net`: loopback up in the daemon's own namespace, then exec the daemon
/// (so its pid is the one the test holds).
pub const UP_IN_NETNS: &str = "ip link set lo up && exec \"$0\" \"$@\"";

/// Whether the suite can run here; panics in CI when it cannot.
pub fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var_os("CI").is_some() {
            panic!("the end-to-end suite must run as root in CI");
        }
        eprintln!("SKIP: end-to-end tests need root (they create namespaces and cgroups)");
    }
    root
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A tenant name unique to this test process and call.
pub fn unique_tenant(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

pub struct Daemon {
    pub tenant: String,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
    /// The network namespace the daemon runs in (a [`NetLab`]'s host); `None` for one of its own.
    pub netns: Option<PathBuf>,
    child: Option<Child>,
}

/// A tenant of microVM nodes (`hypervisor: qemu`, 256 MiB, 256M disk); `TENANT` and `SOCKET`
/// are filled in by [`Daemon::start_in`] and its kin.
pub fn vm_config() -> String {
    "config:\n  tenant: TENANT\n  host_groups:\n    - name: TENANT\n      ram_mb: 256\n      storage_size: 256M\n  hypervisor: qemu\n  graceful_shutdown: false\n  api:\n    bind_address: SOCKET\n".to_string()
}

/// Runs the CLI and returns its output.
pub fn cli(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run bulkhead")
}

pub fn cli_ok(args: &[&str]) -> String {
    let o = cli(args);
    assert!(
        o.status.success(),
        "bulkhead {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Shared image store for the whole suite, so each test does not rebuild `minimal`.
/// `scripts/test.sh` points BULKHEAD_E2E_STATE at a directory it removes afterwards.
pub fn shared_state() -> PathBuf {
    let p = std::env::var_os("BULKHEAD_E2E_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("bulkhead-e2e-state"));
    std::fs::create_dir_all(&p).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o711)).unwrap();
    p
}

/// A private directory for one daemon's config, socket and log; its node's mapped root must
/// traverse it (0711).
pub fn test_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-e2e-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

impl Daemon {
    /// Writes a config with `bulkhead new NAME --socket ... <extra>` and starts the daemon.
    pub fn start(prefix: &str, extra: &[&str]) -> Daemon {
        Self::start_edited(prefix, extra, |y| y)
    }

    /// Like [`Daemon::start`], with the generated config passed through `edit` first.
    pub fn start_edited(prefix: &str, extra: &[&str], edit: impl Fn(String) -> String) -> Daemon {
        let tenant = unique_tenant(prefix);
        let dir = test_dir();
        let socket = dir.path().join("api.sock");
        let mut args = vec!["new", &tenant, "--socket", socket.to_str().unwrap()];
        args.extend_from_slice(extra);
        let yaml = edit(cli_ok(&args));
        Self::start_with_yaml(tenant, dir, &yaml)
    }

    pub fn start_with_yaml(tenant: String, dir: tempfile::TempDir, yaml: &str) -> Daemon {
        let config = dir.path().join("tenant.yaml");
        std::fs::write(&config, yaml).unwrap();
        let socket = dir.path().join("api.sock");
        let mut d = Daemon {
            tenant,
            socket,
            config,
            state: shared_state(),
            netns: None,
            child: None,
            dir,
        };
        d.spawn();
        d
    }

    /// Starts a daemon for `yaml` (with TENANT and SOCKET placeholders filled in) inside the
    /// network namespace at `netns`.
    pub fn start_in(netns: &Path, prefix: &str, yaml: &str) -> Daemon {
        let tenant = unique_tenant(prefix);
        let dir = test_dir();
        let socket = dir.path().join("api.sock");
        let yaml = yaml
            .replace("TENANT", &tenant)
            // the api.shim socket (#16, containerd::shim_daemon_yaml)
            .replace("SHIM_SOCK", dir.path().join("shim.sock").to_str().unwrap())
            .replace("SOCKET", socket.to_str().unwrap());
        let config = dir.path().join("tenant.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut d = Daemon {
            tenant,
            socket,
            config,
            state: shared_state(),
            netns: Some(netns.to_path_buf()),
            child: None,
            dir,
        };
        d.spawn();
        d
    }

    /// Starts `bulkhead up` in a new network namespace (unshare -n keeps /sys, and so the
    /// cgroup tree, visible, unlike `ip netns exec`), or in the lab's host namespace.
    pub fn spawn(&mut self) {
        let offset = self.log().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display()))
                    .args(["--", BIN, "up"]);
                c
            }
            None => {
                let mut c = Command::new("unshare");
                c.args(["--net", "--", "sh", "-c", UP_IN_NETNS, BIN, "up"]);
                c
            }
        };
        let child = cmd
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bulkhead up");
        self.child = Some(child);
        self.wait_ready(offset);
    }

    /// Waits until this start (the log after `offset`) says ready.
    fn wait_ready(&mut self, offset: usize) {
        // A ceiling only (an exit fails at once): a microVM tenant's first start builds its
        // guest kernel.
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
                && self
                    .log()
                    .get(offset..)
                    .is_some_and(|l| l.contains("ready on"))
            {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("daemon exited early ({st}):\n{}", self.log());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not become ready:\n{}", self.log());
    }

    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn client(&self) -> Client {
        Client::new(Endpoint::Unix(self.socket.clone()))
    }

    pub fn sock(&self) -> &str {
        self.socket.to_str().unwrap()
    }

    /// Runs `bulkhead vm ARGS --socket S`.
    pub fn vm(&self, args: &[&str]) -> Output {
        // --socket goes right after the verb: anything after `--` belongs to the command.
        let mut a = vec!["vm", args[0], "--socket", self.sock()];
        a.extend_from_slice(&args[1..]);
        cli(&a)
    }

    pub fn vm_ok(&self, args: &[&str]) -> String {
        let o = self.vm(args);
        assert!(
            o.status.success(),
            "vm {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Creates a node with wait=agent and returns its name.
    pub fn add(&self) -> String {
        self.vm_ok(&["add", &self.tenant]).trim().to_string()
    }

    /// Runs a shell snippet in a node; returns (exit code, stdout, stderr).
    pub fn sh(&self, node: &str, script: &str) -> (i32, String, String) {
        let o = self.vm(&["exec", node, "--", "sh", "-c", script]);
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Kills the daemon with SIGKILL (nodes keep running under their supervisors).
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether the daemon process has exited, and its status.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The network namespace of a running node (its init's).
    pub fn node_netns(&self, node: &str) -> PathBuf {
        let pid = self.supervisor_state(node)["init_pid"].as_i64().unwrap();
        PathBuf::from(format!("/proc/{pid}/ns/net"))
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            stop_daemon(c, Duration::from_secs(30), || self.log());
        }
    }

    /// Reads a file of a node's cgroup: `controller` names the v1 hierarchy; on v2 the file is
    /// looked up in the unified tree.
    pub fn cgroup_file(&self, node: &str, controller: &str, file: &str) -> String {
        self.cgroup_file_v1_v2(node, controller, file, file)
    }

    /// Like [`Daemon::cgroup_file`], where v1 and v2 name the file differently.
    pub fn cgroup_file_v1_v2(
        &self,
        node: &str,
        controller: &str,
        v1_file: &str,
        v2_file: &str,
    ) -> String {
        let id = bulkhead_driver::spec::spec_cgroup(&self.tenant_dir().join("nodes").join(node))
            .expect("node spec names its cgroup");
        let v1 = format!(
            "/sys/fs/cgroup/{controller}/bulkhead/{}/{id}/{v1_file}",
            self.tenant
        );
        let v2 = format!("/sys/fs/cgroup/bulkhead/{}/{id}/{v2_file}", self.tenant);
        std::fs::read_to_string(&v1)
            .or_else(|_| std::fs::read_to_string(&v2))
            .unwrap_or_else(|e| panic!("{v1} / {v2}: {e}"))
    }

    /// What the node's supervisor recorded (`supervisor_pid`, `init_pid`, ...).
    pub fn supervisor_state(&self, node: &str) -> serde_json::Value {
        let p = self
            .tenant_dir()
            .join("nodes")
            .join(node)
            .join("supervisor.json");
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    }

    pub fn tenant_dir(&self) -> PathBuf {
        self.state.join("tenants").join(&self.tenant)
    }

    /// Stops the daemon (deleting its nodes) and asserts nothing of the tenant is left.
    pub fn stop_and_assert_clean(mut self) {
        self.stop();
        assert_clean(&self.tenant, &self.tenant_dir());
    }

    fn remove_state(&self) {
        let _ = std::fs::remove_dir_all(self.tenant_dir());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        // Nodes may be left: graceful_shutdown: true, a crashed daemon, or a test that failed
        // halfway. Start the daemon once more with graceful_shutdown off and stop it: the
        // product's own reconciliation and shutdown remove them.
        let cfg = std::fs::read_to_string(&self.config).unwrap_or_default();
        let nodes_left = std::fs::read_dir(self.tenant_dir().join("nodes"))
            .is_ok_and(|mut r| r.next().is_some());
        let cgroups_left = ["memory", ""].iter().any(|c| {
            Path::new("/sys/fs/cgroup")
                .join(c)
                .join("bulkhead")
                .join(&self.tenant)
                .exists()
        });
        if cfg.contains("graceful_shutdown: true") || nodes_left || cgroups_left {
            let _ = std::fs::write(
                &self.config,
                cfg.replace("graceful_shutdown: true", "graceful_shutdown: false"),
            );
            // A panic here while a test is already failing would abort: catch it.
            let respawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
            if respawn.is_ok() {
                self.stop();
            }
        }
        self.remove_state();
    }
}

/// Stops a daemon this test started with SIGTERM and waits up to `patience`; kills it and
/// fails the test (showing `log()`) if it does not stop.
pub fn stop_daemon(mut c: Child, patience: Duration, log: impl Fn() -> String) {
    // SAFETY: signalling the daemon this test started, by its pid.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    panic!("daemon did not stop on SIGTERM:\n{}", log());
}

/// No node directory, cgroup or process of the tenant remains on the host.
pub fn assert_clean(tenant: &str, tenant_dir: &Path) {
    let nodes: Vec<_> = std::fs::read_dir(tenant_dir.join("nodes"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(nodes.is_empty(), "node directories left: {nodes:?}");
    for ctrl in ["memory", "cpu", "pids", "freezer", "cpuset", "blkio", ""] {
        let p = Path::new("/sys/fs/cgroup")
            .join(ctrl)
            .join("bulkhead")
            .join(tenant);
        let left: Vec<_> = std::fs::read_dir(&p)
            .map(|r| {
                r.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "cgroups left under {}: {left:?}",
            p.display()
        );
    }
    let procs = Command::new("pgrep")
        .args(["-f", &format!("tenants/{tenant}/nodes|--standby {tenant} ")])
        .output()
        .unwrap();
    assert!(
        procs.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&procs.stdout)
    );
    for ctrl in ["memory", "cpu", "pids", "freezer", "cpuset", "blkio", ""] {
        let p = Path::new("/sys/fs/cgroup")
            .join(ctrl)
            .join("bulkhead")
            .join(tenant);
        assert!(!p.exists(), "the tenant's cgroup {} is left", p.display());
    }
    // No core of the host stays reserved for the tenant (#12, dedicated_cores).
    let held: Vec<String> = std::fs::read_dir("/run/bulkhead/cores")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path()).is_ok_and(|w| w.starts_with(&format!("{tenant}/")))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        held.is_empty(),
        "cores still reserved for {tenant}: {held:?}"
    );
    // Any process still inside one of the tenant's cgroups (a node, or a supervisor in its slot).
    let needle = format!("/bulkhead/{tenant}/");
    let inside: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("cgroup")).is_ok_and(|c| c.contains(&needle))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        inside.is_empty(),
        "processes left in the tenant's cgroups: {inside:?}"
    );
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
