//! Reads: the index holds what SQLite holds, pages are stable while nodes come and go, and
//! the serialised list is made once per change.

use std::collections::HashSet;
use std::sync::Arc;

use super::new_node;
use crate::*;

#[tokio::test]
async fn the_index_matches_sqlite_after_writes_and_after_reopen() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("s.db");
    let s = Store::open(&path, "t").unwrap();
    for i in 0..30 {
        let g = ["b", "a", "c"][i % 3];
        s.insert(new_node(
            &format!("{g}-{i}"),
            g,
            &format!("2026-01-01T00:00:{:02}Z", 59 - i),
        ))
        .await
        .unwrap();
    }
    for i in (0..30).step_by(4) {
        let name = format!("{}-{i}", ["b", "a", "c"][i % 3]);
        assert!(s.delete(&name).await.unwrap());
    }
    s.set_status("a-1", NodeState::Running).await.unwrap();
    s.set_cgroup("a-1", Some("c0123456789ab".into()))
        .await
        .unwrap();
    s.set_network("a-1", Some(r#"{"slot":3}"#.into()))
        .await
        .unwrap();
    s.set_forwards("a-1", r#"[{"node_port":80}]"#.into())
        .await
        .unwrap();
    let got: Vec<NodeRow> = s.snapshot().rows().iter().map(|r| (**r).clone()).collect();
    assert_eq!(got, s.read_back().await.unwrap());
    assert_eq!(got.len(), 30 - 8);
    let a1 = s.get("a-1").unwrap();
    assert_eq!(a1.cgroup.as_deref(), Some("c0123456789ab"));
    assert_eq!(a1.forwards, r#"[{"node_port":80}]"#);
    drop(s);
    let s = Store::open(&path, "t").unwrap();
    let again: Vec<NodeRow> = s.snapshot().rows().iter().map(|r| (**r).clone()).collect();
    assert_eq!(again, got);
    // The list order is SQLite's ORDER BY hostgroup, created_at, name.
    let keys: Vec<_> = again
        .iter()
        .map(|r| (r.hostgroup.clone(), r.created_at.clone(), r.name.clone()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

#[tokio::test]
async fn paging_is_stable_while_nodes_come_and_go() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("s.db"), "t").unwrap();
    // Same timestamps on purpose: the name breaks ties.
    for i in 0..60 {
        let g = if i % 2 == 0 { "even" } else { "odd" };
        s.insert(new_node(
            &format!("n{i:02}"),
            g,
            &format!("2026-01-01T00:00:0{}Z", i % 3),
        ))
        .await
        .unwrap();
    }
    let first: HashSet<String> = s.snapshot().rows().iter().map(|r| r.name.clone()).collect();
    let mut seen: Vec<String> = Vec::new();
    let mut deleted = HashSet::new();
    let mut cursor: Option<Cursor> = None;
    let mut round = 0;
    loop {
        let snap = s.snapshot();
        let page = snap.page(None, cursor.as_ref(), 7, |_| true);
        assert!(page.rows.len() <= 7);
        seen.extend(page.rows.iter().map(|r| r.name.clone()));
        let Some(next) = page.next else { break };
        // Between pages: a node before the cursor and one after it go, new ones come.
        let victim = snap
            .rows()
            .iter()
            .rev()
            .find(|r| !deleted.contains(&r.name) && !seen.contains(&r.name));
        if let Some(v) = victim {
            let v = v.name.clone();
            assert!(s.delete(&v).await.unwrap());
            deleted.insert(v);
        }
        s.delete(&seen[0]).await.unwrap();
        s.insert(new_node(
            &format!("new{round}"),
            "even",
            "2026-01-01T00:00:00Z",
        ))
        .await
        .unwrap();
        s.insert(new_node(
            &format!("late{round}"),
            "zzz",
            "2026-01-01T00:00:00Z",
        ))
        .await
        .unwrap();
        round += 1;
        // A cursor survives its text form.
        cursor = Some(Cursor::decode(&next.encode()).unwrap());
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no node twice: {seen:?}");
    for n in first.difference(&deleted) {
        assert!(
            seen.contains(n),
            "{n} was there throughout but never listed"
        );
    }
    assert!(
        seen.iter().any(|n| n.starts_with("late")),
        "nodes added ahead of the cursor appear"
    );
    // Across pages, the order is the list order.
    let keys: Vec<_> = seen
        .iter()
        .filter_map(|n| s.get(n))
        .map(|r| Cursor::of(&r))
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
}

#[tokio::test]
async fn pages_of_a_group_with_a_filter() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("s.db"), "t").unwrap();
    for (i, g) in ["a", "b", "c"].iter().cycle().take(30).enumerate() {
        let mut n = new_node(&format!("{g}-{i:02}"), g, "2026-01-01T00:00:00Z");
        n.tags = vec![format!("parity={}", i % 2)];
        s.insert(n).await.unwrap();
    }
    let snap = s.snapshot();
    assert_eq!(snap.group("b").len(), 10);
    assert!(snap.group("b").iter().all(|r| r.hostgroup == "b"));
    assert!(snap.group("nope").is_empty());
    let even = |r: &NodeRow| r.tags[0] == "parity=0";
    let p1 = snap.page(Some("b"), None, 3, even);
    assert_eq!(p1.rows.len(), 3);
    assert!(p1.rows.iter().all(|r| r.hostgroup == "b" && even(r)));
    let p2 = snap.page(Some("b"), p1.next.as_ref(), 3, even);
    assert_eq!(p2.rows.len(), 2);
    assert!(p2.next.is_none(), "nothing matching follows");
    // Exactly a page's worth left: no empty page after it.
    let all = snap.page(None, None, 30, |_| true);
    assert_eq!(all.rows.len(), 30);
    assert!(all.next.is_none());
}

#[tokio::test]
async fn the_serialised_list_is_made_once_per_change() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(&d.path().join("s.db"), "t").unwrap();
    s.insert(new_node("g-1", "g", "t")).await.unwrap();
    let snap = s.snapshot();
    let made = std::sync::atomic::AtomicUsize::new(0);
    let render = |rows: &[Arc<NodeRow>]| {
        made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        bytes::Bytes::from(rows.len().to_string())
    };
    assert_eq!(snap.memo(render), "1");
    assert_eq!(s.snapshot().memo(render), "1");
    assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
    let v = snap.version();
    s.insert(new_node("g-2", "g", "t")).await.unwrap();
    let snap2 = s.snapshot();
    assert!(snap2.version() > v);
    assert!(
        snap2.memoised().is_none(),
        "a write invalidates the serialised list"
    );
    assert_eq!(snap2.memo(render), "2");
    assert_eq!(
        snap.memoised().unwrap(),
        "1",
        "an older snapshot keeps its view"
    );
}
