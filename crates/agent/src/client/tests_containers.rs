//! #16 against the real agent (forked, as in `tests.rs`): an exec chrooted into a container's
//! root (a busybox rootfs in a temporary directory) with its rlimits and groups; the errors
//! naming a bad root or rlimit; a rootfs upload keeping the tar's numeric owners and refusing
//! absolute names; and a jail-like agent refusing to mount.

use std::os::unix::fs::MetadataExt;

use super::super::*;
use super::{root, text, TestAgent};
use crate::proto::{Rlimit, CAP_CONTAINERS};

/// A tiny rootfs: busybox-static and a passwd file. `None` without /bin/busybox.
fn rootfs() -> Option<tempfile::TempDir> {
    let bb = std::path::Path::new("/bin/busybox");
    if !bb.exists() {
        eprintln!("skipped: no /bin/busybox (install busybox-static)");
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("bin")).unwrap();
    std::fs::create_dir_all(d.path().join("etc")).unwrap();
    std::fs::copy(bb, d.path().join("bin/busybox")).unwrap();
    for l in ["sh", "ls", "id", "cat", "pwd"] {
        std::os::unix::fs::symlink("busybox", d.path().join("bin").join(l)).unwrap();
    }
    std::fs::write(
        d.path().join("etc/passwd"),
        "root:x:0:0:root:/croot:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(d.path().join("marker"), "in the container\n").unwrap();
    Some(d)
}

#[tokio::test]
async fn an_exec_runs_chrooted_with_its_rlimits_and_groups() {
    if !root() {
        return;
    }
    let Some(rootfs) = rootfs() else { return };
    let agent = TestAgent::start();
    let c = agent.client();
    assert!(c.ping().await.unwrap().has(CAP_CONTAINERS));
    let s = c
        .exec(ExecRequest {
            cmd: "sh".into(),
            args: vec![
                "-c".into(),
                "ls /; cat /marker; id -u; id -g; id -G; ulimit -n; ulimit -Hn; pwd; echo $HOME"
                    .into(),
            ],
            root: Some(rootfs.path().to_str().unwrap().into()),
            cwd: Some("/bin".into()),
            uid: 1234,
            gid: 7,
            groups: vec![5, 6],
            rlimits: vec![Rlimit {
                name: "RLIMIT_NOFILE".into(),
                soft: 123,
                hard: 456,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    let (out, err, st) = s.collect().await.unwrap();
    let out = text(&out);
    assert_eq!(st.code, Some(0), "{out} {}", text(&err));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "bin",
            "etc",
            "marker",
            "in the container",
            "1234",
            "7",
            "7 5 6",
            "123",
            "456",
            "/bin",
            "/"
        ],
        "{out}"
    );
    // HOME comes from the container's passwd.
    let s = c
        .exec(ExecRequest {
            cmd: "/bin/sh".into(),
            args: vec!["-c".into(), "echo $HOME".into()],
            root: Some(rootfs.path().to_str().unwrap().into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(text(&s.collect().await.unwrap().0), "/croot\n");
}

#[tokio::test]
async fn bad_roots_commands_and_rlimits_are_named() {
    if !root() {
        return;
    }
    let Some(rootfs) = rootfs() else { return };
    let agent = TestAgent::start();
    let c = agent.client();
    let r = rootfs.path().to_str().unwrap().to_string();
    let remote = |e: AgentError| match e {
        AgentError::Remote { code, message } => (code, message),
        e => panic!("{e:?}"),
    };
    let e = c
        .exec(ExecRequest {
            cmd: "/bin/sh".into(),
            root: Some(format!("{r}/marker")),
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    let (code, m) = remote(e);
    assert!(
        m.contains("cannot change root") && m.contains("marker"),
        "{code} {m}"
    );
    let e = c
        .exec(ExecRequest {
            cmd: "nosuchcmd".into(),
            root: Some(r.clone()),
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    assert_eq!(remote(e).0, "command_not_found");
    let e = c
        .exec(ExecRequest {
            cmd: "/bin/sh".into(),
            root: Some(r.clone()),
            rlimits: vec![Rlimit {
                name: "RLIMIT_BOGUS".into(),
                soft: 1,
                hard: 1,
            }],
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    let (_, m) = remote(e);
    assert!(m.contains("RLIMIT_BOGUS"), "{m}");
    // A jail's agent (not a microVM guest) does not mount.
    let conn = c
        .connect()
        .await
        .unwrap()
        .with_peer(Some(c.info().await.unwrap()));
    let e = conn
        .container_mounts(Request::ContainerUnmount {
            root: "/var/lib/bulkhead/containers/x/rootfs".into(),
        })
        .await
        .unwrap_err();
    let (code, m) = remote(e);
    assert_eq!(code, "unsupported", "{m}");
    assert!(m.contains("supervisor"), "{m}");
}

fn entry(b: &mut tar::Builder<Vec<u8>>, name: &str, uid: u64, gid: u64, mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_size(1);
    b.append_data(&mut h, name, &b"x"[..]).unwrap();
}

#[tokio::test]
async fn a_rootfs_upload_keeps_numeric_owners_and_refuses_absolute_names() {
    if !root() {
        return;
    }
    let agent = TestAgent::start();
    let c = agent.client();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("c/rootfs");
    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, "etc/shadow", 0, 42, 0o640);
    entry(&mut b, "home/u/f", 1000, 1001, 0o4755);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_uid(1000);
    h.set_gid(1001);
    b.append_link(&mut h, "home/u/l", "f").unwrap();
    let a = b.into_inner().unwrap();
    let mut up = c
        .copy_in(CopyInRequest {
            path: dest.to_str().unwrap().into(),
            tar: true,
            owners: true,
            ..Default::default()
        })
        .await
        .unwrap();
    up.write(&a).await.unwrap();
    up.finish().await.unwrap();
    let m = std::fs::metadata(dest.join("home/u/f")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1001, 0o4755));
    let m = std::fs::symlink_metadata(dest.join("home/u/l")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1000, 1001));
    let m = std::fs::metadata(dest.join("etc/shadow")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 42, 0o640));

    // An absolute name: the tar crate writes it as given with a raw header.
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..8].copy_from_slice(b"/etc/x\0\0");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    raw.push(b'x');
    raw.resize(1024 + 512, 0);
    let mut up = c
        .copy_in(CopyInRequest {
            path: dir.path().join("other").to_str().unwrap().into(),
            tar: true,
            owners: true,
            ..Default::default()
        })
        .await
        .unwrap();
    up.write(&raw).await.unwrap();
    let e = up.finish().await.unwrap_err().to_string();
    assert!(e.contains("absolute"), "{e}");
    assert!(!dir.path().join("other").exists());
}
