//! Shared by the benchmarks: a daemon for one config, in a network namespace of its own.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

/// A fresh directory for one run's config, socket and state (0711: node owners must be able
/// to reach their node directories below it); removed when dropped.
#[allow(dead_code)] // not every benchmark that shares this file uses it
pub fn bench_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("bulkhead-bench-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

/// Writes `yaml` to `dir/t.yaml`, starts `bulkhead up` under `unshare --net` with its state in
/// `state` and its log in `dir/daemon.log`, and waits until `sock` answers.
pub fn start_daemon(dir: &Path, yaml: &str, state: &Path, sock: &Path) -> Child {
    std::fs::write(dir.join("t.yaml"), yaml).unwrap();
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let mut daemon = Command::new("unshare")
        .args(["--net", "--", BIN, "up"])
        .arg(dir.join("t.yaml"))
        .arg("--state-dir")
        .arg(state)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(Instant::now() < deadline, "daemon did not start");
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "daemon exited: {}",
            std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon
}
