//! A containerd lab for the shim tests (#16): Debian's `containerd` started by the test with a
//! root, state, socket and config file of its own, inside a network namespace the test made
//! (never the host's), with `containerd-shim-bulkhead-v2` first on its `PATH` and
//! `BULKHEAD_URL` naming a test daemon's `api.shim` socket; a `ctr` wrapper bound to its socket
//! and to a namespace of its own; stop by pid and a leak check.
//!
//! Invariants: everything the lab makes is under its own directory, except what containerd
//! and its shims put in fixed host places: shim sockets in `/run/containerd/s/<sha256>` (named
//! from the lab's own address, so [`Containerd::shim_socket`] can find exactly them), runc's
//! state in `/run/containerd/runc/<namespace>`, ctr's FIFOs in `/run/containerd/fifo`, and
//! runc's cgroups under `/sys/fs/cgroup/<controller>/<namespace>`; the namespace is unique to
//! the lab, so nothing of another test's or the host's is ever touched. Only processes this
//! lab started are signalled: containerd by its pid, and on cleanup the shims whose command
//! line names this lab's socket (they were started by this lab's containerd).
//!
//! The shim binary is built beside `bulkhead` (`cargo build -p bulkhead-shim`;
//! `scripts/test.sh` builds it before the tests, and [`shim_bin`] runs that build itself when
//! cargo is at hand, a no-op when fresh).

pub use super::host_procs::{
    cgroup_dirs, mounts_under, openpty, pids_naming, run_timeout, tail, wait_timeout,
};
use super::netlab::Netns;
use super::{test_dir, Daemon, BIN};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The runtime name containerd resolves to `containerd-shim-bulkhead-v2`.
pub const RUNTIME: &str = "io.containerd.bulkhead.v2";
/// Debian's runc shim, the lab's control.
pub const RUNC: &str = "io.containerd.runc.v2";
/// The shim's binary name.
pub const SHIM_NAME: &str = "containerd-shim-bulkhead-v2";
/// How long a `ctr` command may take before the lab kills it and fails the test.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(180);

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The shim binary beside the `bulkhead` binary under test, built first when cargo is known
/// (`cargo build -p bulkhead-shim` with the same profile; a no-op when it is fresh).
pub fn shim_bin() -> PathBuf {
    let dir = Path::new(BIN).parent().unwrap();
    let bin = dir.join(SHIM_NAME);
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !*built && std::env::var_os("BULKHEAD_NO_SHIM_BUILD").is_none() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut c = Command::new(env!("CARGO"));
        c.current_dir(&workspace)
            .args(["build", "-p", "bulkhead-shim", "--bin", SHIM_NAME]);
        match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => {}
            Some("release") => {
                c.arg("--release");
            }
            Some(p) => {
                c.args(["--profile", p]);
            }
            None => {}
        }
        let st = c.status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "cargo build -p bulkhead-shim failed (the containerd tests need {SHIM_NAME})"
        );
        *built = true;
    }
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p bulkhead-shim` first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// What a lab's containerd runs with.
#[derive(Default, Clone)]
pub struct LabConfig {
    /// The CRI plugin's section, TOML written verbatim after the rest of the config (headers
    /// `[plugins."io.containerd.grpc.v1.cri"]` and below); `None` disables the CRI plugin.
    pub cri: Option<String>,
    /// `BULKHEAD_URL` in containerd's environment (the shims inherit it); `None` unsets it.
    pub bulkhead_url: Option<String>,
}

/// A containerd of the test's own. Dropping it deletes what is left of its tasks and
/// containers, stops it, ends its shims and removes its directory.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    pub state: PathBuf,
    /// containerd's gRPC socket (`ctr --address`).
    pub address: PathBuf,
    pub config: PathBuf,
    /// The containerd namespace `ctr` uses, unique to this lab.
    pub namespace: String,
    /// The network namespace containerd runs in.
    pub netns: PathBuf,
    /// The directory first on containerd's PATH (a link to the shim).
    bin: PathBuf,
    bulkhead_url: Option<String>,
    child: Option<Child>,
    ids: Mutex<Vec<(String, String)>>,
}

/// The config file: version 2, everything in the lab's own directories, plugins the tests do
/// not use disabled.
pub fn config_toml(root: &Path, state: &Path, address: &Path, cri: Option<&str>) -> String {
    let mut disabled = vec![
        "io.containerd.internal.v1.opt",
        "io.containerd.internal.v1.tracing",
        "io.containerd.tracing.processor.v1.otlp",
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.zfs",
    ];
    if cri.is_none() {
        disabled.push("io.containerd.grpc.v1.cri");
    }
    let list: Vec<String> = disabled.iter().map(|p| format!("\"{p}\"")).collect();
    format!(
        "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [{}]\n\n[grpc]\n  address = \"{}\"\n\n[ttrpc]\n  address = \"{}.ttrpc\"\n\n[debug]\n  level = \"info\"\n\n[metrics]\n  address = \"\"\n\n{}\n",
        root.display(),
        state.display(),
        list.join(", "),
        address.display(),
        address.display(),
        cri.unwrap_or("")
    )
}

impl Containerd {
    /// Starts containerd in the network namespace at `netns` and waits until it answers.
    pub fn start(netns: &Path, cfg: LabConfig) -> Containerd {
        let dir = test_dir();
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let address = dir.path().join("containerd.sock");
        let config = dir.path().join("containerd.toml");
        std::fs::write(
            &config,
            config_toml(&root, &state, &address, cfg.cri.as_deref()),
        )
        .unwrap();
        // The shim on PATH by a link of its own: nothing else of the target dir is put there.
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(shim_bin(), bin.join(SHIM_NAME)).unwrap();
        let namespace = format!(
            "bh{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut c = Containerd {
            dir,
            root,
            state,
            address,
            config,
            namespace,
            netns: netns.to_path_buf(),
            bin,
            bulkhead_url: cfg.bulkhead_url.clone(),
            child: None,
            ids: Mutex::new(Vec::new()),
        };
        c.child = Some(c.spawn());
        c.wait_ready();
        c
    }

    /// Starts containerd itself (its log appended to `containerd.log`).
    fn spawn(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .unwrap();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns.display()))
            .args([
                "--",
                "sh",
                "-c",
                super::UP_IN_NETNS,
                "containerd",
                "--config",
            ])
            .arg(&self.config)
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    self.bin.display()
                ),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        match &self.bulkhead_url {
            Some(u) => cmd.env("BULKHEAD_URL", u),
            None => cmd.env_remove("BULKHEAD_URL"),
        };
        cmd.spawn().expect("start containerd")
    }

    /// Stops containerd (SIGTERM; its shims keep running) and starts it again on the same
    /// root, state, socket and config, as an upgrade or a crash-restart would.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Some(self.spawn());
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("containerd exited early ({st}):\n{}", self.log());
            }
            if self.address.exists() && self.ctr(&["version"]).status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `ctr --address A --namespace NS ARGS`, killed (and failing) after [`CTR_TIMEOUT`].
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_timeout(args, CTR_TIMEOUT)
    }

    pub fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        let mut c = self.ctr_command(args);
        c.stdin(Stdio::null());
        run_timeout(c, timeout, &format!("ctr {args:?}"))
    }

    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.address)
            .args(["--namespace", &self.namespace])
            .args(args);
        c
    }

    /// Like [`Containerd::ctr`], failing the test unless it succeeds; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let o = self.ctr(args);
        assert!(
            o.status.success(),
            "ctr {args:?} failed ({}): {}{}\ncontainerd log:\n{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
            tail(&self.log(), 40)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs `ctr ARGS` with a pseudo-terminal as its stdin, stdout and stderr (what `--tty`
    /// needs); returns its exit code and everything it wrote.
    pub fn ctr_tty(&self, args: &[&str], timeout: Duration) -> (i32, String) {
        let (master, slave) = openpty();
        let mut c = self.ctr_command(args);
        let fd = |f: &OwnedFd| Stdio::from(f.try_clone().unwrap());
        c.stdin(fd(&slave)).stdout(fd(&slave)).stderr(fd(&slave));
        let mut child = c.spawn().expect("run ctr");
        // Every copy of the slave side must close here, or the master never reads EOF.
        drop(c);
        drop(slave);
        let mut m = std::fs::File::from(master);
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut buf = [0u8; 4096];
            // EIO once every holder of the slave side has closed it.
            while let Ok(n) = m.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
            out
        });
        let code = wait_timeout(&mut child, timeout, &format!("ctr {args:?}"));
        let out = reader.join().unwrap();
        (code, String::from_utf8_lossy(&out).into_owned())
    }

    /// Imports an image archive and returns `ctr image ls -q` after it.
    pub fn import(&self, archive: &Path) -> String {
        self.ctr_ok(&["image", "import", archive.to_str().unwrap()]);
        self.ctr_ok(&["image", "ls", "-q"])
    }

    /// Remembers a container id, so [`Containerd::assert_clean`] checks its shim's socket.
    pub fn track(&self, id: &str) {
        self.ids
            .lock()
            .unwrap()
            .push((self.namespace.clone(), id.to_string()));
    }

    /// The socket containerd 1.6 gives the shim of `id` in `namespace`:
    /// `/run/containerd/s/<sha256(address/namespace/id)>`.
    pub fn shim_socket(&self, namespace: &str, id: &str) -> PathBuf {
        let key = format!("{}/{namespace}/{id}", self.address.display());
        PathBuf::from("/run/containerd/s").join(super::oci::sha256_hex(key.as_bytes()))
    }

    /// Processes of this lab other than containerd itself: its shims (their command line names
    /// the lab's socket).
    pub fn shim_pids(&self) -> Vec<u32> {
        let me = self.pid();
        pids_naming(self.address.to_str().unwrap())
            .into_iter()
            .filter(|p| Some(*p) != me)
            .collect()
    }

    /// Mount points under the lab's directory.
    pub fn mounts(&self) -> Vec<String> {
        mounts_under(self.dir.path())
    }

    /// Stops containerd with SIGTERM and waits for it (its shims keep running, as they would).
    pub fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            super::stop_daemon(c, Duration::from_secs(30), || self.log());
        }
    }

    /// Stops containerd and asserts nothing of the lab is left: no task or container (asked
    /// before stopping), no shim process, no mount under its directories, no socket of a
    /// tracked shim, no runc state or cgroup of its namespace.
    pub fn stop_and_assert_clean(mut self) {
        let tasks = self.ctr_ok(&["task", "ls", "-q"]);
        let containers = self.ctr_ok(&["container", "ls", "-q"]);
        self.stop();
        assert!(tasks.trim().is_empty(), "tasks left: {tasks}");
        assert!(
            containers.trim().is_empty(),
            "containers left: {containers}"
        );
        self.assert_clean();
    }

    /// The leak check after [`Containerd::stop`].
    pub fn assert_clean(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.shim_pids().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let pids = self.shim_pids();
        assert!(pids.is_empty(), "shim processes left: {pids:?}");
        let m = self.mounts();
        assert!(m.is_empty(), "mounts left: {m:?}");
        for (ns, id) in self.ids.lock().unwrap().iter() {
            let s = self.shim_socket(ns, id);
            assert!(!s.exists(), "shim socket of {id} left: {}", s.display());
        }
        let runc = Path::new("/run/containerd/runc").join(&self.namespace);
        let left: Vec<_> = std::fs::read_dir(&runc)
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "runc state left: {left:?}");
        for d in cgroup_dirs(&self.namespace) {
            let left: Vec<_> = std::fs::read_dir(&d)
                .map(|r| {
                    r.flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.file_name())
                        .collect()
                })
                .unwrap_or_default();
            assert!(left.is_empty(), "cgroups left in {}: {left:?}", d.display());
        }
    }

    /// Best effort, for a test that failed halfway: kills and deletes every task, deletes
    /// every container, stops containerd, ends its shims, unmounts what is left.
    fn clean_up(&mut self) {
        if self.child.is_some() {
            let short = Duration::from_secs(30);
            let ls = |what: &str| -> Vec<String> {
                let o = self.ctr_timeout(&[what, "ls", "-q"], short);
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            };
            for t in ls("task") {
                let _ = self.ctr_timeout(&["task", "kill", "-a", "-s", "SIGKILL", &t], short);
                let _ = self.ctr_timeout(&["task", "delete", "-f", &t], short);
            }
            for c in ls("container") {
                let _ = self.ctr_timeout(&["container", "delete", &c], short);
            }
            if let Some(mut c) = self.child.take() {
                // SAFETY: signalling the containerd this lab started, by its pid.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for p in self.shim_pids() {
            // SAFETY: a shim this lab's containerd started (its command line names the lab's
            // own socket), by its pid.
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
        let mut m = self.mounts();
        m.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in m {
            let _ = Command::new("umount").args(["-l", &p]).status();
        }
        let runc = Path::new("/run/containerd/runc").join(&self.namespace);
        let _ = std::fs::remove_dir_all(runc);
        for d in cgroup_dirs(&self.namespace) {
            let _ = std::fs::remove_dir(d);
        }
        for (ns, id) in self.ids.lock().unwrap().iter() {
            let _ = std::fs::remove_file(self.shim_socket(ns, id));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// Writes the shim's runtime options file (`ctr run --runtime-config-path`, CRI's
/// `options ConfigPath`) into `dir`: the daemon's socket and the driver; returns its path.
pub fn shim_toml(dir: &Path, name: &str, socket: &Path, driver: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!(
            "socket = \"unix://{}\"\ndriver = \"{driver}\"\n",
            socket.display()
        ),
    )
    .unwrap();
    p
}

impl Daemon {
    /// The daemon's `api.shim` socket: `SHIM_SOCK` in a config given to [`Daemon::start_in`]
    /// becomes this path.
    pub fn shim_socket(&self) -> PathBuf {
        self.dir.path().join("shim.sock")
    }
}

/// A one-tenant daemon config (placeholders as [`Daemon::start_in`] fills them) with the shim
/// listener at `SHIM_SOCK` and host group `TENANT` (jail); `qemu` adds a second group
/// `TENANT-vm` of microVMs (256 MiB, 256M disk) for `driver = "qemu"`.
pub fn shim_daemon_yaml(qemu: bool) -> String {
    let vm = if qemu {
        "    - name: TENANT-vm\n      hypervisor: qemu\n      ram_mb: 256\n      storage_size: 256M\n"
    } else {
        ""
    };
    format!(
        "config:\n  tenant: TENANT\n  host_groups:\n    - name: TENANT\n      ram_mb: 256\n      storage_size: 512M\n{vm}  graceful_shutdown: false\n  api:\n    bind_address: SOCKET\n    shim:\n      socket: SHIM_SOCK\n"
    )
}

/// A lab: a network namespace, a bulkhead daemon with a shim listener in it, and containerd
/// in it whose shims reach that daemon. Fields drop in order: containerd (deleting what is
/// left of its tasks through the daemon) before the daemon, the namespace last.
pub struct Lab {
    pub containerd: Containerd,
    pub daemon: Daemon,
    pub netns: Netns,
}

impl Lab {
    /// `yaml` as for [`Daemon::start_in`] (see [`shim_daemon_yaml`]); `cri` as in
    /// [`LabConfig::cri`].
    pub fn start(prefix: &str, yaml: &str, cri: Option<String>) -> Lab {
        let netns = Netns::new();
        let daemon = Daemon::start_in(&netns.path(), prefix, yaml);
        let url = format!("unix://{}", daemon.shim_socket().display());
        let containerd = Containerd::start(
            &netns.path(),
            LabConfig {
                cri,
                bulkhead_url: Some(url),
            },
        );
        Lab {
            containerd,
            daemon,
            netns,
        }
    }

    /// Stops containerd and the daemon, asserting nothing of either is left.
    pub fn stop_and_assert_clean(self) {
        let Lab {
            containerd,
            daemon,
            netns,
        } = self;
        containerd.stop_and_assert_clean();
        daemon.stop_and_assert_clean();
        drop(netns);
    }
}
