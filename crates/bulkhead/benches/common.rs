//! Shared by the benchmarks: a daemon for one config, in a network namespace of its own.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bulkhead");

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
