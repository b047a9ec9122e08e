//! Writes: nodes are scoped by tenant, concurrent writers pick and insert atomically, a failing
//! job records nothing and a panicking one fails alone, and a node's identity is fixed.

use std::collections::HashSet;

use super::new_node;
use crate::*;

#[tokio::test]
async fn nodes_are_scoped_by_tenant_and_counters_survive() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("s.db");
    let a = Store::open(&path, "a").unwrap();
    let b = Store::open(&path, "b").unwrap();
    let row = a.insert(new_node("g-1", "g", "t")).await.unwrap();
    assert_eq!(row.tenant, "a");
    assert!(matches!(
        a.insert(new_node("g-1", "g", "t")).await,
        Err(StoreError::Exists(_))
    ));
    b.insert(new_node("g-1", "g", "t")).await.unwrap();
    assert_eq!(a.snapshot().len(), 1);
    assert!(Store::open(&path, "c").unwrap().get("g-1").is_none());
    assert!(a.set_status("g-1", NodeState::Running).await.unwrap());
    assert_eq!(a.get("g-1").unwrap().status, NodeState::Running);
    assert_eq!(b.get("g-1").unwrap().status, NodeState::Creating);
    assert_eq!(a.get("g-1").unwrap().tags, vec!["a=b".to_string()]);
    assert!(a.delete("g-1").await.unwrap());
    assert!(!a.delete("g-1").await.unwrap());
    assert!(!a.set_status("g-1", NodeState::Running).await.unwrap());
    assert_eq!(a.next_index("g").await.unwrap(), 1);
    assert_eq!(a.next_index("g").await.unwrap(), 2);
    assert_eq!(b.next_index("g").await.unwrap(), 1);
    drop(a);
    let a = Store::open(&path, "a").unwrap();
    assert_eq!(
        a.next_index("g").await.unwrap(),
        3,
        "counters survive a restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_pick_and_insert_atomically() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("s.db"), "t").unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move {
                let n = new_node(&format!("g-{i}"), "g", "t");
                // The lowest free "address": two creates seeing the same rows would collide.
                s.insert_with(n, |snap, n| {
                    let used: HashSet<String> =
                        snap.group("g").iter().map(|r| r.ip.clone()).collect();
                    let ip = (0..)
                        .map(|k| k.to_string())
                        .find(|k| !used.contains(k))
                        .unwrap();
                    n.ip = ip.clone();
                    Ok::<_, StoreError>(ip)
                })
                .await
                .unwrap()
            })
        })
        .collect();
    let mut ips = HashSet::new();
    for t in tasks {
        let (row, ip) = t.await.unwrap();
        assert_eq!(row.ip, ip);
        assert!(ips.insert(ip), "two creates got the same address");
    }
    assert_eq!(ips.len(), 64);
    assert_eq!(s.read_back().await.unwrap().len(), 64);
    let ids: HashSet<NodeId> = s.snapshot().rows().iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 64);

    // Only one of concurrent deletes wins the transition.
    #[derive(Debug, PartialEq)]
    enum Refused {
        Already,
        Store,
    }
    impl From<StoreError> for Refused {
        fn from(_: StoreError) -> Self {
            Refused::Store
        }
    }
    s.set_status("g-0", NodeState::Running).await.unwrap();
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                s.transition("g-0", |st| match st {
                    NodeState::Deleting => Err(Refused::Already),
                    _ => Ok(NodeState::Deleting),
                })
                .await
            })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(Some(r)) => {
                won += 1;
                assert_eq!(r.status, NodeState::Deleting);
            }
            Ok(None) => panic!("the node is there"),
            Err(e) => assert_eq!(e, Refused::Already),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(s.get("g-0").unwrap().status, NodeState::Deleting);
    assert!(s
        .transition("nope", |_| Ok::<_, StoreError>(NodeState::Running))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_failing_pick_records_nothing_and_a_panic_fails_alone() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("s.db"), "t").unwrap();
    #[derive(Debug)]
    struct Full;
    impl From<StoreError> for Full {
        fn from(_: StoreError) -> Self {
            Full
        }
    }
    let r = s
        .insert_with(new_node("g-1", "g", "t"), |_, _| Err::<(), _>(Full))
        .await;
    assert!(matches!(r, Err(Full)));
    assert!(s.get("g-1").is_none());
    let r = s
        .insert_with(
            new_node("g-1", "g", "t"),
            |_, _| -> Result<(), StoreError> { panic!("a bug in a pick") },
        )
        .await;
    assert!(matches!(r, Err(StoreError::Closed)));
    // The writer carries on.
    s.insert(new_node("g-1", "g", "t")).await.unwrap();
    assert_eq!(s.read_back().await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_identity_of_a_node_cannot_be_modified() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("s.db"), "t").unwrap();
    let before = s.insert(new_node("g-1", "g", "t")).await.unwrap();
    let after = s
        .update("g-1", |r| {
            r.name = "other".into();
            r.hostgroup = "x".into();
            r.id = NodeId::new();
            r.tags.clear();
            Ok::<_, StoreError>(())
        })
        .await
        .unwrap()
        .expect("the node is there");
    assert_eq!(
        (after.id, &after.name, &after.hostgroup),
        (before.id, &before.name, &before.hostgroup)
    );
    assert!(
        after.tags.is_empty(),
        "everything else changes, in SQLite too"
    );
    assert_eq!(s.read_back().await.unwrap()[0], *after);
    // A refused change leaves the node as it was.
    let r = s
        .update("g-1", |r| {
            r.ip = "x".into();
            Err(StoreError::Closed)
        })
        .await;
    assert!(r.is_err());
    assert_eq!(s.get("g-1").unwrap().ip, "");
}

#[tokio::test]
async fn tags_and_userdata_survive_a_reopen() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("s.db");
    let a = Store::open(&path, "a").unwrap();
    let mut n = new_node("g-1", "g", "t");
    n.userdata = Some("echo hi".into());
    a.insert(n).await.unwrap();
    assert_eq!(a.get("g-1").unwrap().userdata_exit, None);
    assert!(a
        .set_tags("g-1", vec!["x".into(), "y=1".into()])
        .await
        .unwrap());
    assert!(a.set_userdata_exit("g-1", 3).await.unwrap());
    assert!(!a.set_tags("g-2", vec![]).await.unwrap(), "no such node");
    drop(a);
    let a = Store::open(&path, "a").unwrap();
    let r = a.get("g-1").unwrap();
    assert_eq!(r.tags, vec!["x".to_string(), "y=1".to_string()]);
    assert_eq!(
        (r.userdata.as_deref(), r.userdata_exit),
        (Some("echo hi"), Some(3))
    );
}

/// #15 node TTL (B): an expiry is kept across a reopen, lands only on the node it was meant
/// for, and clearing after acting on one leaves a newer one alone.
#[tokio::test]
async fn expiry_is_kept_checked_by_id_and_cleared_only_as_seen() {
    use bulkhead_core::{Expiry, OnExpiry};
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("s.db");
    let s = Store::open(&path, "t").unwrap();
    let row = s.insert(new_node("g-1", "g", "t")).await.unwrap();
    assert_eq!(row.expiry, None);
    let e = Expiry {
        at_ms: 1_700_000_000_123,
        on: OnExpiry::Pause,
    };
    let set = s.set_expiry("g-1", row.id, Some(e)).await.unwrap().unwrap();
    assert_eq!(set.expiry, Some(e));
    // Another id under the same name: nothing changes.
    assert!(s
        .set_expiry("g-1", NodeId::new(), None)
        .await
        .unwrap()
        .is_none());
    assert!(s.set_expiry("g-2", row.id, None).await.unwrap().is_none());
    drop(s);
    let s = Store::open(&path, "t").unwrap();
    assert_eq!(
        s.get("g-1").unwrap().expiry,
        Some(e),
        "kept across a reopen"
    );
    assert_eq!(s.read_back().await.unwrap()[0].expiry, Some(e));
    // A newer expiry set meanwhile stays; the one acted on is cleared.
    let newer = Expiry {
        at_ms: e.at_ms + 5000,
        on: OnExpiry::Delete,
    };
    s.set_expiry("g-1", row.id, Some(newer)).await.unwrap();
    assert!(!s.clear_expiry_if("g-1", row.id, e).await.unwrap());
    assert_eq!(s.get("g-1").unwrap().expiry, Some(newer));
    assert!(s.clear_expiry_if("g-1", row.id, newer).await.unwrap());
    assert_eq!(s.get("g-1").unwrap().expiry, None);
    drop(s);
    assert_eq!(
        Store::open(&path, "t").unwrap().get("g-1").unwrap().expiry,
        None
    );
}
