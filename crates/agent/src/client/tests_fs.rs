//! The client's file-system operations (protocol version 3) against the real agent.

use std::time::Duration;

use tokio::net::UnixStream;

use super::super::*;
use super::{root, TestAgent};

/// Version 3's file-system operations through the client against the real agent, and the
/// refusal of them on a connection that does not know the agent has `fs`.
#[tokio::test]
async fn fs_operations_round_trip() {
    if !root() {
        return;
    }
    let agent = TestAgent::start();
    let c = agent.client();
    let info = c.ping().await.unwrap();
    assert_eq!(info.version, proto::VERSION);
    assert!(info.has(proto::CAP_FS));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("a/b");
    let ds = d.to_str().unwrap().to_string();
    c.connect()
        .await
        .unwrap()
        .mkdir(MkdirRequest {
            path: ds.clone(),
            recursive: true,
            mode: Some(0o750),
            ..Default::default()
        })
        .await
        .unwrap();
    std::fs::write(d.join("f.txt"), b"12345").unwrap();
    std::fs::write(d.join("skip.log"), b"x").unwrap();
    let st = c.connect().await.unwrap().stat(&ds).await.unwrap();
    assert_eq!(
        (st.name.as_str(), st.kind.as_str(), st.mode),
        ("b", "directory", 0o750)
    );
    let ls = c.connect().await.unwrap().read_dir(&ds).await.unwrap();
    assert_eq!(ls.len(), 2);
    assert_eq!((ls[0].name.as_str(), ls[0].size), ("f.txt", 5));
    let missing = c.connect().await.unwrap().stat("/no/such/path").await;
    assert!(matches!(missing, Err(AgentError::Remote { code, .. }) if code == "not_found"));

    // A tar download: names relative to the tree, no `./`, excluded paths left out.
    let top = dir.path().join("a");
    let tree = c
        .connect()
        .await
        .unwrap()
        .copy_out_excluding(top.to_str().unwrap(), vec!["*.log".into()])
        .await
        .unwrap()
        .read_to_end()
        .await
        .unwrap();
    let names: Vec<String> = tar::Archive::new(&tree[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["b", "b/f.txt"]);

    // A watch sees a new file; dropping it ends it in the agent.
    let mut w = c
        .connect()
        .await
        .unwrap()
        .watch(vec![ds.clone()], false)
        .await
        .unwrap();
    std::fs::write(d.join("new"), b"n").unwrap();
    let ch = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((ch.kind.as_str(), ch.path), ("create", format!("{ds}/new")));
    drop(w);

    c.connect().await.unwrap().remove(&ds, true).await.unwrap();
    assert!(!d.exists());

    // Without knowing the agent's version, the client refuses rather than guess.
    let s = UnixStream::connect(agent.path()).await.unwrap();
    let r = AgentConn::new(s).stat("/").await;
    assert!(matches!(
        r,
        Err(AgentError::Unsupported { version: None, .. })
    ));
    // An agent of version 2 is refused with its version named.
    let s = UnixStream::connect(agent.path()).await.unwrap();
    let old = AgentInfo {
        version: 2,
        caps: caps_of(2),
        uptime_ms: 0,
        agent_version: None,
        system_uptime_ms: None,
    };
    let r = AgentConn::new(s).with_peer(Some(old)).read_dir("/").await;
    assert!(matches!(
        r,
        Err(AgentError::Unsupported {
            version: Some(2),
            ..
        })
    ));
}
