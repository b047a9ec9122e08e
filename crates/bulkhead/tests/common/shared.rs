//! A shared daemon for the end-to-end suite: two tenants (`a`, `b`) in one `bulkhead up`,
//! an admin socket (global-admin) and a socket per tenant (tenant-admin), in a network
//! namespace of its own and a state directory of its own (a shared daemon claims
//! `<state>/shared`, so two of them never share a state directory).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bulkhead_api::{Client, Endpoint};

use super::{assert_clean, cli, test_dir, unique_tenant, BIN, UP_IN_NETNS};

pub struct Shared {
    /// The first two tenants; each tenant has one host group of its own name.
    pub a: String,
    pub b: String,
    /// Every tenant, `a` and `b` first.
    pub tenants: Vec<String>,
    pub dir: tempfile::TempDir,
    pub state: PathBuf,
    pub admin: PathBuf,
    pub config: PathBuf,
    child: Option<Child>,
}

impl Shared {
    /// Starts a shared daemon. `top` is YAML added under `config:` (two-space indented keys,
    /// e.g. roles), `api` YAML added under `config.api:` (four-space indented, e.g. tcp).
    pub fn start(top: &str, api: &str) -> Shared {
        Self::start_with(2, top, api)
    }

    /// Like [`Shared::start`], with `n` (at least 2) tenants.
    pub fn start_with(n: usize, top: &str, api: &str) -> Shared {
        Self::start_with_groups(&vec![""; n], top, api)
    }

    /// Like [`Shared::start_with`], one tenant per entry of `group_keys`: YAML added to that
    /// tenant's host group (ten-space indented keys, e.g. `dedicated_cores: 1`).
    pub fn start_with_groups(group_keys: &[&str], top: &str, api: &str) -> Shared {
        let n = group_keys.len();
        let tenants: Vec<String> = (0..n).map(|i| unique_tenant(&format!("s{i}t"))).collect();
        let (a, b) = (tenants[0].clone(), tenants[1].clone());
        let dir = test_dir();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711)).unwrap();
        let admin = dir.path().join("admin.sock");
        let list: String = tenants
            .iter()
            .zip(group_keys)
            .map(|(t, k)| format!("    - name: {t}\n      host_groups:\n        - name: {t}\n          ram_mb: 128\n{k}"))
            .collect();
        let yaml = format!(
            "config:\n  graceful_shutdown: false\n  tenants:\n{list}{top}  api:\n    bind_address: {}\n    tenant_sockets: {}\n{api}",
            admin.display(),
            dir.path().join("tenants").display()
        );
        let config = dir.path().join("shared.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut s = Shared {
            a,
            b,
            tenants,
            dir,
            state,
            admin,
            config,
            child: None,
        };
        s.spawn();
        s
    }

    /// A shared daemon whose `config.tenants` list is `list` as written (YAML at four
    /// spaces, naming `tenants`, the first two of which become `a` and `b`); `top` as in
    /// [`Shared::start`]. (#12, policy: tenants with keys of their own.)
    pub fn start_listed(tenants: Vec<String>, list: &str, top: &str) -> Shared {
        Self::start_listed_api(tenants, list, top, "")
    }

    /// Like [`Shared::start_listed`], with `api` YAML added under `config.api:` (four-space
    /// indented, e.g. the shim listener naming the tenants; #16, D).
    pub fn start_listed_api(tenants: Vec<String>, list: &str, top: &str, api: &str) -> Shared {
        let dir = test_dir();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o711)).unwrap();
        let admin = dir.path().join("admin.sock");
        let yaml = format!(
            "config:\n  graceful_shutdown: false\n  tenants:\n{list}{top}  api:\n    bind_address: {}\n    tenant_sockets: {}\n{api}",
            admin.display(),
            dir.path().join("tenants").display()
        );
        let config = dir.path().join("shared.yaml");
        std::fs::write(&config, yaml).unwrap();
        let mut s = Shared {
            a: tenants[0].clone(),
            b: tenants[1].clone(),
            tenants,
            dir,
            state,
            admin,
            config,
            child: None,
        };
        s.spawn();
        s
    }

    /// Starts the daemon (again, after [`Shared::stop`]): its log starts afresh.
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).unwrap();
        let child = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", UP_IN_NETNS, BIN, "up"])
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start bulkhead up");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.log().contains("ready on") {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("shared daemon exited early ({st}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("shared daemon did not become ready:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The UNIX socket of tenant `t`.
    pub fn tenant_sock(&self, t: &str) -> PathBuf {
        self.dir.path().join("tenants").join(format!("{t}.sock"))
    }

    pub fn admin_client(&self) -> Client {
        Client::new(Endpoint::Unix(self.admin.clone()))
    }

    pub fn tenant_client(&self, t: &str) -> Client {
        Client::new(Endpoint::Unix(self.tenant_sock(t)))
    }

    /// The daemon's network namespace (for TCP clients: `netlab::in_ns`).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/ns/net",
            self.child.as_ref().unwrap().id()
        ))
    }

    /// `nsenter --net=...` into the daemon's network namespace (for TCP clients).
    pub fn netns_arg(&self) -> String {
        format!("--net=/proc/{}/ns/net", self.child.as_ref().unwrap().id())
    }

    /// Runs `bulkhead vm VERB --socket SOCK ARGS...`.
    pub fn vm(&self, sock: &std::path::Path, args: &[&str]) -> Output {
        let mut a = vec!["vm", args[0], "--socket", sock.to_str().unwrap()];
        a.extend_from_slice(&args[1..]);
        cli(&a)
    }

    /// Creates a node in group `g` through socket `sock` and returns its name.
    pub fn add(&self, sock: &std::path::Path, g: &str) -> String {
        let o = self.vm(sock, &["add", g]);
        assert!(
            o.status.success(),
            "vm add {g}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            super::stop_daemon(c, Duration::from_secs(60), || self.log());
        }
    }

    /// Stops the daemon (it deletes every node) and checks both tenants left nothing.
    pub fn stop_and_assert_clean(mut self) {
        self.stop();
        for t in &self.tenants {
            assert_clean(t, &self.state.join("tenants").join(t));
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // graceful_shutdown is false: a stop deletes every node of both tenants.
        self.stop();
    }
}
