//! A copy-in's `no_setid` against the real agent (forked, as in `tests.rs`): the agent says it
//! has the capability, a tar upload's setuid file and setgid directory lose those bits (and
//! keep them without the option), and a single file's `mode` loses them too.

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
