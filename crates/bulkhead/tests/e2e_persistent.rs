//! Persistent nodes (#13, `"persistent": true`; ADR 0030), end to end with jail nodes: a file
//! written in a persistent node survives a shutdown and relaunch, a daemon stop with
//! `graceful_shutdown: false` and with `true`, and its supervisor's death (a host reboot, as
//! far as the node is concerned); the same file in a plain node is gone after a relaunch. The
//! layer's image never holds the file's bytes in plaintext; delete wipes it (zeros through a
//! descriptor held from before) and leaves no loop device, mount or directory behind. A
//! persistent microVM (TCG, slow) keeps its LUKS-encrypted root disk the same way.

mod common;

use common::netlab::Netns;
use common::{privileged, vm_config, Daemon};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A marker no ciphertext or image metadata contains by chance.
fn marker() -> String {
    format!("bulkhead-persistent-marker-{}-7f3a9c", std::process::id())
}

/// The node as `GET /nodes` shows it.
fn listed(d: &Daemon, node: &str) -> Option<bulkhead_api::Node> {
    let list: Vec<bulkhead_api::Node> =
        serde_json::from_str(&d.vm_ok(&["list", "--json"])).unwrap();
    list.into_iter().find(|n| n.hostname == node)
}

fn status(d: &Daemon, node: &str) -> String {
    format!("{:?}", listed(d, node).map(|n| n.status))
}

/// Waits until the node answers an exec (a relaunch at daemon start runs in the background).
fn wait_running(d: &Daemon, node: &str) {
    wait_running_for(d, node, Duration::from_secs(60))
}

fn wait_running_for(d: &Daemon, node: &str, patience: Duration) {
    let until = Instant::now() + patience;
    loop {
        let (code, out, _) = d.sh(node, "echo up");
        if code == 0 && out == "up\n" {
            return;
        }
        assert!(
            Instant::now() < until,
            "node {node} did not come back: {}\n{}",
            status(d, node),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn read_marker(d: &Daemon, node: &str) -> (i32, String) {
    let (code, out, _) = d.sh(node, "cat /root/marker 2>/dev/null");
    (code, out)
}

/// Whether `hay` holds `needle` anywhere (read in chunks: images are hundreds of MiB).
fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 4 << 20];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return false;
        }
        carry.extend_from_slice(&buf[..n]);
        if carry.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        let keep = carry.len().saturating_sub(needle.len());
        carry.drain(..keep);
    }
}

/// Loop devices whose backing file lies under `dir`.
fn loops_under(dir: &Path) -> Vec<String> {
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let b = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            b.starts_with(dir.to_str().unwrap())
                .then(|| format!("{}: {}", e.file_name().to_string_lossy(), b.trim()))
        })
        .collect()
}

/// The tenant's storage in use, as `GET /quota` says.
fn storage_used(d: &Daemon) -> u64 {
    use http_body_util::BodyExt;
    let c = d.client();
    common::rt().block_on(async {
        let r = c
            .send(
                hyper::Method::GET,
                "/quota",
                bulkhead_api::client::full_body(Vec::new()),
                None,
            )
            .await
            .unwrap();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        v["tenants"][0]["storage_bytes"]["used"].as_u64().unwrap()
    })
}

fn layer_of(d: &Daemon, node: &str) -> PathBuf {
    d.tenant_dir().join("nodes").join(node).join("layer.img")
}

#[test]
fn a_persistent_jail_node_keeps_its_layer_across_relaunch_and_daemon_restarts() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("pers", &[]);
    assert!(
        d.config_text().contains("graceful_shutdown: false"),
        "{}",
        d.config_text()
    );
    let m = marker();
    let p = d
        .vm_ok(&["add", &d.tenant, "--persistent"])
        .trim()
        .to_string();
    let plain = d.add();
    let write = format!("echo {m} > /root/marker && sync");
    for n in [&p, &plain] {
        let (code, _, err) = d.sh(n, &write);
        assert_eq!(code, 0, "{n}: {err}");
    }
    assert_eq!(read_marker(&d, &p).1.trim(), m);
    let layer = layer_of(&d, &p);
    assert!(layer.exists(), "a persistent node has its layer image");
    assert!(
        !layer_of(&d, &plain).exists(),
        "a plain node keeps its tmpfs layer"
    );
    // The layer is encrypted at rest: its raw bytes never hold the marker.
    assert!(
        !file_contains(&layer, m.as_bytes()),
        "the raw layer image holds the plaintext marker"
    );
    // `GET /nodes` says which node is persistent.
    assert!(listed(&d, &p).unwrap().persistent);
    assert!(!listed(&d, &plain).unwrap().persistent);

    // Shutdown and relaunch: the persistent node keeps the file, the plain one starts empty.
    for n in [&p, &plain] {
        d.vm_ok(&["shutdown", n]);
        d.vm_ok(&["relaunch", n]);
    }
    assert_eq!(read_marker(&d, &p).1.trim(), m, "relaunch kept the layer");
    assert_ne!(
        read_marker(&d, &plain).1.trim(),
        m,
        "a plain node's layer is gone after a relaunch"
    );

    // A daemon stop with graceful_shutdown: false deletes plain nodes, keeps persistent ones;
    // the next start relaunches the persistent node with its layer.
    d.stop();
    assert!(layer.exists(), "the layer survives the daemon's stop");
    assert!(
        loops_under(&d.tenant_dir()).is_empty(),
        "{:?}",
        loops_under(&d.tenant_dir())
    );
    // The next start (and its stop) with graceful_shutdown: true.
    let cfg = d.config_text();
    std::fs::write(
        &d.config,
        cfg.replace("graceful_shutdown: false", "graceful_shutdown: true"),
    )
    .unwrap();
    d.spawn();
    wait_running(&d, &p);
    assert_eq!(
        read_marker(&d, &p).1.trim(),
        m,
        "daemon restart kept the layer"
    );
    let list: Vec<bulkhead_api::Node> =
        serde_json::from_str(&d.vm_ok(&["list", "--json"])).unwrap();
    let names: Vec<&str> = list.iter().map(|n| n.hostname.as_str()).collect();
    assert_eq!(names, vec![p.as_str()], "only the persistent node is left");
    // Its disk counts against the storage quota with the layer's size, across the restart.
    let size = std::fs::metadata(&layer).unwrap().len();
    assert_eq!(storage_used(&d), size, "the kept node's layer counts");

    // graceful_shutdown: true: the node runs on across the stop and is re-adopted.
    let init = d.supervisor_state(&p)["init_pid"].as_i64().unwrap();
    d.stop();
    d.spawn();
    wait_running(&d, &p);
    assert_eq!(
        d.supervisor_state(&p)["init_pid"].as_i64().unwrap(),
        init,
        "graceful_shutdown: true leaves the node running"
    );
    assert_eq!(read_marker(&d, &p).1.trim(), m);

    // The supervisor dies with the daemon down (a reboot, as far as the node is concerned):
    // the next start relaunches the node with its layer.
    let sup = d.supervisor_state(&p)["supervisor_pid"].as_i64().unwrap() as i32;
    d.crash();
    // SAFETY: killing the node supervisor our daemon started, by its recorded pid.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(200));
    d.spawn();
    wait_running(&d, &p);
    assert_eq!(
        read_marker(&d, &p).1.trim(),
        m,
        "a lost supervisor keeps the layer"
    );
    std::fs::write(&d.config, cfg).unwrap();

    // Delete wipes the layer: a descriptor held from before reads zeros only, and nothing of
    // the node is left on the host (no loop device, no mount, no directory).
    let mut held = std::fs::File::open(&layer).unwrap();
    let size = held.metadata().unwrap().len();
    d.vm_ok(&["delete", &p]);
    assert!(!layer.exists(), "the layer image is removed");
    let mut buf = vec![0u8; 1 << 20];
    let mut nonzero = 0u64;
    loop {
        let n = held.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        nonzero += buf[..n].iter().filter(|b| **b != 0).count() as u64;
    }
    assert_eq!(
        nonzero, 0,
        "the deleted layer ({size} bytes) still holds data"
    );
    assert!(
        loops_under(&d.tenant_dir()).is_empty(),
        "{:?}",
        loops_under(&d.tenant_dir())
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(d.tenant_dir().to_str().unwrap()),
        "a mount under the tenant's directory is left"
    );
    d.stop_and_assert_clean();
}

/// Reads `f` to its end and counts its non-zero bytes.
fn nonzero_bytes(mut f: std::fs::File) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut nonzero = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return nonzero;
        }
        nonzero += buf[..n].iter().filter(|b| **b != 0).count() as u64;
    }
}

#[test]
fn a_persistent_microvm_keeps_its_encrypted_disk_across_relaunch_and_daemon_restart() {
    if !privileged() {
        return;
    }
    let netns = Netns::new();
    let mut d = Daemon::start_in(&netns.path(), "pvm", &vm_config());
    let m = marker();
    let p = d
        .vm_ok(&["add", &d.tenant, "--persistent", "--timeout", "240s"])
        .trim()
        .to_string();
    let (code, _, err) = d.sh(&p, &format!("echo {m} > /root/marker && sync"));
    assert_eq!(code, 0, "{err}");
    let vm = d.tenant_dir().join("nodes").join(&p).join("vm");
    let disk = vm.join("disk.luks");
    assert!(disk.exists(), "a persistent microVM's disk is a LUKS image");
    assert!(!vm.join("disk.ext4").exists() && !vm.join("disk.plain").exists());
    assert!(
        !file_contains(&disk, m.as_bytes()),
        "the raw LUKS disk holds the plaintext marker"
    );
    d.vm_ok(&["shutdown", &p]);
    d.vm_ok(&["relaunch", &p]);
    assert_eq!(read_marker(&d, &p).1.trim(), m, "relaunch kept the disk");
    // A daemon stop with graceful_shutdown: false keeps it; the next start relaunches it.
    d.stop();
    assert!(disk.exists());
    d.spawn();
    wait_running_for(&d, &p, Duration::from_secs(240));
    assert_eq!(
        read_marker(&d, &p).1.trim(),
        m,
        "daemon restart kept the disk"
    );
    let held = std::fs::File::open(&disk).unwrap();
    d.vm_ok(&["delete", &p]);
    assert!(!disk.exists());
    assert_eq!(nonzero_bytes(held), 0, "the deleted disk still holds data");
    d.stop_and_assert_clean();
}

/// Issue #13: a relaunch whose supervisor fails to start the node answers the error and leaves
/// the node Stopped with its layer (the supervisor removes only what it made for that start);
/// once the cause is gone, the node relaunches with what it wrote.
#[test]
fn a_failed_relaunch_keeps_a_persistent_jail_node_and_its_layer() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("prelf", &[]);
    let m = marker();
    let p = d
        .vm_ok(&["add", &d.tenant, "--persistent"])
        .trim()
        .to_string();
    let (code, _, err) = d.sh(&p, &format!("echo {m} > /root/marker && sync"));
    assert_eq!(code, 0, "{err}");
    let layer = layer_of(&d, &p);
    d.vm_ok(&["shutdown", &p]);
    // The supervisor binds (or moves a standby's socket to) the node's agent socket before the
    // jail starts: a non-empty directory in its place makes every start fail, deterministically.
    let sock = d.tenant_dir().join("nodes").join(&p).join("agent.sock");
    std::fs::create_dir_all(sock.join("in-the-way")).unwrap();
    let o = d.vm(&["relaunch", &p]);
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "the relaunch started the node anyway");
    assert!(
        said.contains("agent.sock"),
        "the error names the cause: {said}"
    );
    assert_eq!(status(&d, &p), "Some(Stopped)", "{}", d.log());
    assert!(layer.exists(), "a failed relaunch removed the node's layer");
    assert!(
        loops_under(&d.tenant_dir()).is_empty(),
        "{:?}",
        loops_under(&d.tenant_dir())
    );
    // The cause gone, the node relaunches with its layer.
    std::fs::remove_dir_all(&sock).unwrap();
    d.vm_ok(&["relaunch", &p]);
    assert_eq!(read_marker(&d, &p).1.trim(), m, "the layer kept the file");
    d.vm_ok(&["delete", &p]);
    assert!(!layer.exists(), "the layer image is removed");
    d.stop_and_assert_clean();
}

/// Issue #13: a daemon killed while a persistent node is `Creating` in its relaunch keeps the
/// node (it had been made; only a half-made create is removed): the next start leaves it
/// Stopped with its layer and nothing of it running, and a relaunch brings its file back.
#[test]
fn a_daemon_killed_during_a_relaunch_keeps_the_persistent_node_and_its_layer() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("prelk", &[]);
    let m = marker();
    let p = d
        .vm_ok(&["add", &d.tenant, "--persistent"])
        .trim()
        .to_string();
    let (code, _, err) = d.sh(&p, &format!("echo {m} > /root/marker && sync"));
    assert_eq!(code, 0, "{err}");
    let layer = layer_of(&d, &p);
    d.vm_ok(&["shutdown", &p]);
    // A relaunch opens the node's console log for writing before its supervisor starts: a
    // FIFO in its place, with no reader, holds the relaunch there, the node `Creating`.
    let console = d.tenant_dir().join("nodes").join(&p).join("console.log");
    std::fs::remove_file(&console).unwrap();
    let c = std::ffi::CString::new(console.to_str().unwrap()).unwrap();
    // SAFETY: a plain mkfifo on a path of the test's own daemon's state.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (sock, node) = (d.sock().to_string(), p.clone());
    let relaunch =
        std::thread::spawn(move || common::cli(&["vm", "relaunch", "--socket", &sock, &node]));
    let until = Instant::now() + Duration::from_secs(20);
    while status(&d, &p) != "Some(Creating)" {
        assert!(
            Instant::now() < until,
            "relaunch not under way: {}",
            status(&d, &p)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(status(&d, &p), "Some(Creating)", "the relaunch went on");
    d.crash();
    assert!(!relaunch.join().unwrap().status.success());
    std::fs::remove_file(&console).unwrap();
    d.spawn();
    assert_eq!(status(&d, &p), "Some(Stopped)", "{}", d.log());
    assert!(layer.exists(), "the node's layer is gone");
    assert!(
        loops_under(&d.tenant_dir()).is_empty(),
        "{:?}",
        loops_under(&d.tenant_dir())
    );
    d.vm_ok(&["relaunch", &p]);
    assert_eq!(read_marker(&d, &p).1.trim(), m, "the layer kept the file");
    d.vm_ok(&["delete", &p]);
    assert!(!layer.exists(), "the layer image is removed");
    d.stop_and_assert_clean();
}
