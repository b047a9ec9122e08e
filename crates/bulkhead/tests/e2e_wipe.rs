//! Wiping what a plain (non-persistent) microVM node leaves on the host (#13, storage
//! isolation: tenant data never reaches another tenant by a reused disk), end to end under
//! TCG: a marker the guest wrote and synced is in its root disk (`vm/disk.ext4`), and a
//! marker in its memory is in its memory file once suspended (`suspended.mem`); after a
//! restore, a relaunch and a delete, descriptors held from before read zeros only, and
//! nothing of the node is left. A second node's disk is wiped by the daemon's stop
//! (`graceful_shutdown: false` deletes plain nodes). One daemon: microVMs under TCG are slow.

mod common;

use common::netlab::Netns;
use common::{privileged, vm_config, Daemon};
use std::fs::File;
use std::os::unix::fs::FileExt;

/// A marker no image or guest memory holds by chance.
fn marker(what: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bulkhead-wipe-{what}-{}-{t:x}", std::process::id())
}

/// Reads the whole of `f` (from offset 0, whatever its position) in chunks: whether it holds
/// `needle`, and how many of its bytes are not zero.
fn scan(f: &File, needle: &[u8]) -> (bool, u64) {
    let mut buf = vec![0u8; 4 << 20];
    let (mut off, mut found, mut nonzero) = (0u64, false, 0u64);
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = f.read_at(&mut buf, off).unwrap();
        if n == 0 {
            return (found, nonzero);
        }
        off += n as u64;
        nonzero += buf[..n].iter().filter(|b| **b != 0).count() as u64;
        carry.extend_from_slice(&buf[..n]);
        found |= carry.windows(needle.len()).any(|w| w == needle);
        let keep = carry.len().saturating_sub(needle.len());
        carry.drain(..keep);
    }
}

/// `f` (held from before its file was dropped) holds no data any more.
fn assert_wiped(f: &File, needle: &str, what: &str) {
    let (found, nonzero) = scan(f, needle.as_bytes());
    assert!(!found, "the dropped {what} still holds the marker");
    assert_eq!(nonzero, 0, "the dropped {what} still holds data");
}

#[test]
fn a_plain_microvms_disk_and_memory_files_are_wiped_when_dropped() {
    if !privileged() {
        return;
    }
    let netns = Netns::new();
    let mut d = Daemon::start_in(&netns.path(), "wipe", &vm_config());
    let node = d
        .vm_ok(&["add", &d.tenant, "--timeout", "240s"])
        .trim()
        .to_string();
    let dir = d.tenant_dir().join("nodes").join(&node);
    let (on_disk, in_ram) = (marker("disk"), marker("ram"));

    // The guest's write reaches the host's plaintext disk file: the test can see it.
    let (code, _, err) = d.sh(&node, &format!("echo {on_disk} > /root/marker && sync"));
    assert_eq!(code, 0, "{err}");
    let disk = File::open(dir.join("vm/disk.ext4")).expect("a plain microVM's disk");
    assert!(
        scan(&disk, on_disk.as_bytes()).0,
        "the guest's synced file is not in its disk image"
    );
    // A marker held in a guest process's memory only.
    let (code, _, err) = d.sh(
        &node,
        &format!(
            "setsid sh -c 'm={in_ram}; while :; do sleep 1; done' </dev/null >/dev/null 2>&1 &"
        ),
    );
    assert_eq!(code, 0, "{err}");

    // Suspend, then restore: the memory file had the guest's RAM, and is wiped once loaded.
    let suspend = |d: &Daemon| -> File {
        let out = d.vm_ok(&["suspend", &node]);
        assert!(out.contains("Suspended"), "{out}");
        let mem = File::open(dir.join("suspended.mem")).expect("the memory file");
        assert!(
            scan(&mem, in_ram.as_bytes()).0,
            "the guest's memory is not in its memory file"
        );
        mem
    };
    let mem = suspend(&d);
    let out = d.vm_ok(&["restore", &node]);
    assert!(out.contains("Running"), "{out}");
    assert!(!dir.join("suspended.mem").exists());
    assert_wiped(&mem, &in_ram, "memory file (restore)");

    // Suspend, then relaunch (a fresh boot from the disk): the memory is dropped, wiped.
    let mem = suspend(&d);
    d.vm_ok(&["relaunch", &node]);
    assert!(!dir.join("suspended.mem").exists());
    assert_wiped(&mem, &in_ram, "memory file (relaunch)");
    let (_, out, _) = d.sh(&node, "cat /root/marker");
    assert_eq!(out.trim(), on_disk, "a relaunch keeps the node's disk");

    // Delete: the disk is wiped and nothing of the node is left.
    d.vm_ok(&["delete", &node]);
    assert_wiped(&disk, &on_disk, "root disk");
    assert!(!dir.exists(), "the node's directory is left");
    assert!(!d.vm_ok(&["list", "--json"]).contains(&node));

    // Delete-all at the daemon's stop goes the same way.
    let other = d
        .vm_ok(&["add", &d.tenant, "--timeout", "240s"])
        .trim()
        .to_string();
    let other_dir = d.tenant_dir().join("nodes").join(&other);
    let (code, _, err) = d.sh(&other, &format!("echo {on_disk} > /root/marker && sync"));
    assert_eq!(code, 0, "{err}");
    let disk = File::open(other_dir.join("vm/disk.ext4")).unwrap();
    assert!(scan(&disk, on_disk.as_bytes()).0, "not in the second disk");
    d.stop();
    assert_wiped(&disk, &on_disk, "root disk (daemon stop)");
    assert!(!other_dir.exists(), "the node's directory is left");
    common::assert_clean(&d.tenant, &d.tenant_dir());
}
