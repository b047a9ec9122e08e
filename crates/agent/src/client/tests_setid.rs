//! A copy-in's `no_setid` against the real agent (forked, as in `tests.rs`): the agent says it
//! has the capability, a tar upload's setuid file and setgid directory lose those bits (and
//! keep them without the option), and a single file's `mode` loses them too. And its
//! `tmpfs_only` (#13, secrets): the agent says it has it; a file goes into a tmpfs directory
//! (/dev/shm here) and is refused, nothing written, in a directory on a disk; a client that
//! does not know its agent has the check sends nothing.

use std::os::unix::fs::PermissionsExt;

use super::super::*;
use super::TestAgent;

fn archive() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o2775);
    h.set_size(0);
    b.append_data(&mut h, "d", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o4755);
    h.set_size(2);
    b.append_data(&mut h, "d/sh", &b"#!"[..]).unwrap();
    b.into_inner().unwrap()
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[tokio::test]
async fn no_setid_clears_setuid_and_setgid() {
    let agent = TestAgent::start();
    let c = agent.client();
    assert!(c.ping().await.unwrap().has(proto::CAP_NO_SETID));
    let dir = tempfile::tempdir().unwrap();
    for (name, strip) in [("kept", false), ("stripped", true)] {
        let dest = dir.path().join(name);
        let mut up = c
            .copy_in(CopyInRequest {
                path: dest.to_str().unwrap().into(),
                tar: true,
                no_setid: strip,
                ..Default::default()
            })
            .await
            .unwrap();
        let a = archive();
        up.write(&a).await.unwrap();
        up.finish().await.unwrap();
        let (d, f) = (mode(&dest.join("d")), mode(&dest.join("d/sh")));
        if strip {
            assert_eq!((d, f), (0o775, 0o755), "{name}");
        } else {
            assert_eq!((d, f), (0o2775, 0o4755), "{name}");
        }
    }
    let file = dir.path().join("one");
    let mut up = c
        .copy_in(CopyInRequest {
            path: file.to_str().unwrap().into(),
            mode: Some(0o6755),
            no_setid: true,
            ..Default::default()
        })
        .await
        .unwrap();
    up.write(b"x").await.unwrap();
    up.finish().await.unwrap();
    assert_eq!(mode(&file), 0o755);
}

fn on_tmpfs(p: &std::path::Path) -> bool {
    // SAFETY: statfs is plain data; the path is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    (unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0) && st.f_type as i64 == 0x0102_1994
}

async fn put(c: &AgentClient, path: &std::path::Path) -> Result<u64, AgentError> {
    let mut up = c
        .copy_in(CopyInRequest {
            path: path.to_str().unwrap().into(),
            mode: Some(0o400),
            tmpfs_only: true,
            ..Default::default()
        })
        .await?;
    let _ = up.write(b"hunter2").await;
    up.finish().await
}

#[tokio::test]
async fn tmpfs_only_writes_into_a_tmpfs_and_refuses_a_disk() {
    let agent = TestAgent::start();
    let c = agent.client();
    // Unknown agent: refused before anything is sent.
    let e = put(&c, std::path::Path::new("/dev/shm/never"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, AgentError::Unsupported { feature, .. } if feature == proto::CAP_TMPFS_ONLY),
        "{e}"
    );
    assert!(c.ping().await.unwrap().has(proto::CAP_TMPFS_ONLY));

    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    if on_tmpfs(shm.path()) {
        let f = shm.path().join("s");
        put(&c, &f).await.unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"hunter2");
    } else {
        eprintln!("skipped the tmpfs half: /dev/shm is not a tmpfs here");
    }
    let disk = tempfile::tempdir_in("/var/tmp").unwrap();
    if on_tmpfs(disk.path()) {
        eprintln!("skipped the disk half: /var/tmp is a tmpfs here");
        return;
    }
    let e = put(&c, &disk.path().join("s")).await.unwrap_err();
    match e {
        AgentError::Remote { code, message } => {
            assert_eq!(code, proto::NOT_TMPFS, "{message}");
            assert!(message.contains("not a tmpfs"), "{message}");
        }
        e => panic!("{e}"),
    }
    assert_eq!(std::fs::read_dir(disk.path()).unwrap().count(), 0);
}
