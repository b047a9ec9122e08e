//! End to end, over a real daemon and jail node: containers in a node (#16, B2). A busybox
//! rootfs (built here from /bin/busybox of busybox-static) is uploaded as a tar, made a
//! container with proc, dev and tmpfs mounts, and run with `container=`: it sees its own root,
//! /proc and /dev work, uid/gid/groups apply, the tar's owners are kept. A rootfs planting
//! `proc -> /etc` cannot get the node's /etc mounted over. Deleting the container kills its
//! background exec and leaves no mount and no tree in the node.

mod common;

use bulkhead_api::containers::ContainerInfo;
use bulkhead_api::{BgExecStarted, BgWaitExit, BufferedExec};
use common::exec_wire::*;
use common::*;
use hyper::Method;
use serde_json::json;

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], mode: u32, owner: (u64, u64)) {
    let mut h = tar::Header::new_gnu();
    h.set_mode(mode);
    h.set_uid(owner.0);
    h.set_gid(owner.1);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, name, data).unwrap();
}

fn dir(b: &mut tar::Builder<Vec<u8>>, name: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    b.append_data(&mut h, name, std::io::empty()).unwrap();
}

fn link(b: &mut tar::Builder<Vec<u8>>, name: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    b.append_link(&mut h, name, target).unwrap();
}

/// A busybox rootfs; `evil` plants `proc -> /etc` instead of a proc directory.
fn rootfs(evil: bool) -> Vec<u8> {
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let mut b = tar::Builder::new(Vec::new());
    for d in ["bin", "etc", "dev"] {
        dir(&mut b, d);
    }
    if evil {
        link(&mut b, "proc", "/etc");
    } else {
        dir(&mut b, "proc");
    }
    file(&mut b, "bin/busybox", &bb, 0o755, (0, 0));
    for l in ["sh", "ls", "cat", "id", "stat", "sleep", "grep", "echo"] {
        link(&mut b, &format!("bin/{l}"), "busybox");
    }
    file(
        &mut b,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
        (0, 0),
    );
    file(&mut b, "etc/owned", b"x", 0o640, (1234, 5678));
    b.into_inner().unwrap()
}

/// Percent-encodes everything but letters and digits.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn containers_in_a_jail_node() {
    if !privileged() {
        return;
    }
    if !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("skipped: no /bin/busybox (install busybox-static)");
        return;
    }
    let d = Daemon::start("ctrs", &[]);
    let n = d.add();
    let rt = rt();
    let c = d.client();
    let put = |cid: &str, body: Vec<u8>| {
        send(
            &rt,
            &c,
            Method::PUT,
            &format!("/vm/{n}/containers/{cid}/rootfs"),
            body,
        )
    };
    let create = |body: serde_json::Value| {
        send(
            &rt,
            &c,
            Method::POST,
            &format!("/vm/{n}/containers"),
            serde_json::to_vec(&body).unwrap(),
        )
    };
    let exec = |q: &str| -> BufferedExec {
        ok_json(
            &rt,
            &c,
            Method::POST,
            &format!("/vm/{n}/exec?buffered=true&{q}"),
            None,
        )
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();

    // Upload and create.
    let (s, b) = put("c1", rootfs(false));
    assert_eq!(s, 201, "{}", text(&b));
    let (s, b) = create(json!({"id": "c1", "mounts": [
        {"destination": "/proc", "kind": "proc"},
        {"destination": "/dev", "kind": "dev"},
        {"destination": "/tmp", "kind": "tmpfs", "size_bytes": 1048576},
    ]}));
    assert_eq!(s, 201, "{}", text(&b));
    let info: ContainerInfo = serde_json::from_slice(&b).unwrap();
    assert_eq!(info.root, "/var/lib/bulkhead/containers/c1/rootfs");
    let l: Vec<ContainerInfo> = ok_json(&rt, &c, Method::GET, &format!("/vm/{n}/containers"), None);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0].id, "c1");

    // Its own root, /proc and /dev, its tmpfs, the tar's owners.
    let sh = |script: &str, extra: &str| {
        let q = format!("container=c1&cmd=sh&args=-c&args={}{extra}", enc(script));
        exec(&q)
    };
    let r = sh(
        "ls /; grep ^Name: /proc/self/status; echo hi > /dev/null && echo devnull-ok; grep -c ' /tmp .* tmpfs ' /proc/self/mountinfo; stat -c %u:%g:%a /etc/owned",
        "",
    );
    assert_eq!(r.exit_code, 0, "{} {}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout, "bin\ndev\netc\nproc\ntmp\nName:\tgrep\ndevnull-ok\n1\n1234:5678:640\n",
        "{}",
        r.stderr
    );
    let r = sh("id -u; id -g; id -G", "&uid=1000&gid=1000&groups=5,6");
    assert_eq!(r.stdout, "1000\n1000\n1000 5 6\n", "{}", r.stderr);

    // Conflicts and bad input.
    let (s, b) = put("c1", rootfs(false));
    assert_eq!(s, 409, "{}", text(&b));
    let (s, b) = create(json!({"id": "c1"}));
    assert_eq!(s, 409, "{}", text(&b));
    let (s, b) = create(json!({"id": "../x"}));
    assert_eq!(s, 400, "{}", text(&b));
    let (s, b) = create(json!({"id": "norootfs"}));
    assert_eq!(s, 404, "{}", text(&b));
    assert!(text(&b).contains("upload it first"), "{}", text(&b));

    // A planted symlink never leads a mount out of the container's root.
    let etc_mounts = || d.sh(&n, "grep -c ' /etc ' /proc/self/mountinfo").1;
    let before = etc_mounts();
    let (s, b) = put("evil", rootfs(true));
    assert_eq!(s, 201, "{}", text(&b));
    let (s, b) =
        create(json!({"id": "evil", "mounts": [{"destination": "/proc", "kind": "proc"}]}));
    assert_eq!(s, 400, "{}", text(&b));
    assert!(text(&b).contains("symlink"), "{}", text(&b));
    assert_eq!(etc_mounts(), before);
    let (code, out, _) = d.sh(
        &n,
        "grep -c /var/lib/bulkhead/containers/evil /proc/self/mountinfo",
    );
    assert_eq!((code, out.trim()), (1, "0"), "a failed create left mounts");
    let l: Vec<ContainerInfo> = ok_json(&rt, &c, Method::GET, &format!("/vm/{n}/containers"), None);
    assert_eq!(l.len(), 1);

    // A background exec of the container dies with it; nothing is left.
    let bg: BgExecStarted = ok_json(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec?background=true&container=c1&cmd=sleep&args=300"),
        None,
    );
    let (s, b) = send(
        &rt,
        &c,
        Method::DELETE,
        &format!("/vm/{n}/containers/c1"),
        vec![],
    );
    assert_eq!(s, 204, "{}", text(&b));
    let w: BgWaitExit = ok_json(
        &rt,
        &c,
        Method::GET,
        &format!("/vm/{n}/exec/{}/wait-exit?timeout=10", bg.exec_id),
        None,
    );
    assert!(!w.running, "{w:?}");
    let (code, out, err) = d.sh(
        &n,
        "grep -c /var/lib/bulkhead/containers/c1 /proc/self/mountinfo; test -e /var/lib/bulkhead/containers/c1 && echo tree-left; true",
    );
    assert_eq!((code, out.as_str()), (0, "0\n"), "{err}");
    let (s, b) = send(
        &rt,
        &c,
        Method::DELETE,
        &format!("/vm/{n}/containers/c1"),
        vec![],
    );
    assert_eq!(s, 404, "{}", text(&b));
    let (s, b) = send(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec?buffered=true&container=c1&cmd=true"),
        vec![],
    );
    assert_eq!(s, 404, "{}", text(&b));
    let l: Vec<ContainerInfo> = ok_json(&rt, &c, Method::GET, &format!("/vm/{n}/containers"), None);
    assert!(l.is_empty());
    d.stop_and_assert_clean();
}
