//! The store against real SQLite files: migrations from the schema before versioning, the
//! index against what SQLite holds, paging while nodes come and go, concurrent writers.

use super::*;
use rusqlite::{params, Connection};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

/// The schema bulkhead wrote before versioning, copied verbatim from its `store/src/lib.rs`
/// (the `SCHEMA` constant): the fixture for databases written by that code.
const V0_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS nodes (
    tenant     TEXT NOT NULL,
    name       TEXT NOT NULL,
    hostgroup  TEXT NOT NULL,
    status     TEXT NOT NULL,
    ip         TEXT NOT NULL,
    cpus       INTEGER NOT NULL,
    ram_bytes  INTEGER NOT NULL,
    tags       TEXT NOT NULL,
    persistent INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE IF NOT EXISTS counters (
    tenant    TEXT NOT NULL,
    hostgroup TEXT NOT NULL,
    next      INTEGER NOT NULL,
    PRIMARY KEY (tenant, hostgroup)
);
";

/// A v0 row: (tenant, name, group, status, ip, cpus, ram, tags, persistent, created_at).
type V0Row = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u32,
    i64,
    &'static str,
    bool,
    &'static str,
);

const V0_ROWS: &[V0Row] = &[
    (
        "a",
        "web-1",
        "web",
        "Running",
        "169.254.100.2",
        2,
        1 << 30,
        r#"["env=prod","x"]"#,
        true,
        "2026-01-01T00:00:00Z",
    ),
    (
        "a",
        "web-2",
        "web",
        "Paused",
        "169.254.100.6",
        1,
        1 << 29,
        "[]",
        false,
        "2026-01-01T00:00:01Z",
    ),
    (
        "a",
        "db-1",
        "db",
        "Running",
        "",
        4,
        1 << 31,
        r#"["role=db"]"#,
        false,
        "2026-01-02T10:00:00Z",
    ),
    (
        "b",
        "web-1",
        "web",
        "Running",
        "169.254.104.2",
        1,
        1 << 29,
        "[]",
        false,
        "2026-01-03T00:00:00Z",
    ),
];

/// Writes a database the way bulkhead did before versioning (same pragmas, same statements).
fn write_v0(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(V0_SCHEMA).unwrap();
    for r in V0_ROWS {
        conn.execute(
            "INSERT INTO nodes(tenant, name, hostgroup, status, ip, cpus, ram_bytes, tags, persistent, created_at) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9],
        )
        .unwrap();
    }
    for (t, g, n) in [("a", "web", 3), ("a", "db", 2), ("b", "web", 2)] {
        conn.execute(
            "INSERT INTO counters(tenant, hostgroup, next) VALUES(?1, ?2, ?3)",
            params![t, g, n],
        )
        .unwrap();
    }
    assert_eq!(schema::version(&conn).unwrap(), 0);
}

fn schema_of(path: &Path) -> Vec<(String, String, Option<String>)> {
    let conn = Connection::open(path).unwrap();
    let mut st = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn new_node(name: &str, group: &str, created_at: &str) -> NewNode {
    NewNode {
        name: name.into(),
        hostgroup: group.into(),
        status: NodeState::Creating,
        ip: String::new(),
        cpus: 1,
        ram_bytes: 1 << 29,
        tags: vec!["a=b".into()],
        persistent: false,
        created_at: created_at.into(),
        network: None,
    }
}

#[tokio::test]
async fn a_database_from_before_versioning_upgrades_in_place() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.db");
    write_v0(&path);

    let s = Store::open(&path, "a").unwrap();
    let snap = s.snapshot();
    let want: Vec<&V0Row> = {
        let mut v: Vec<_> = V0_ROWS.iter().filter(|r| r.0 == "a").collect();
        v.sort_by_key(|r| (r.2, r.9, r.1));
        v
    };
    assert_eq!(snap.len(), want.len());
    for (got, w) in snap.rows().iter().zip(want) {
        assert_eq!(
            (
                got.tenant.as_str(),
                got.name.as_str(),
                got.hostgroup.as_str()
            ),
            (w.0, w.1, w.2)
        );
        assert_eq!(got.status.as_str(), w.3);
        assert_eq!(
            (got.ip.as_str(), got.cpus, got.ram_bytes as i64),
            (w.4, w.5, w.6)
        );
        assert_eq!(got.tags, serde_json::from_str::<Vec<String>>(w.7).unwrap());
        assert_eq!((got.persistent, got.created_at.as_str()), (w.8, w.9));
        assert_eq!(
            (
                got.cgroup.as_deref(),
                got.network.as_deref(),
                got.forwards.as_str()
            ),
            (None, None, "[]")
        );
    }
    // Old nodes got ids in creation order.
    let mut by_time: Vec<_> = snap.rows().to_vec();
    by_time.sort_by(|a, b| (&a.created_at, &a.name).cmp(&(&b.created_at, &b.name)));
    assert!(by_time.windows(2).all(|w| w[0].id < w[1].id));
    // Counters carry on where they were; the other tenant's rows and counters are intact.
    assert_eq!(s.next_index("web").await.unwrap(), 3);
    assert_eq!(s.next_index("db").await.unwrap(), 2);
    assert_eq!(s.next_index("new").await.unwrap(), 1);
    let b = Store::open(&path, "b").unwrap();
    assert_eq!(b.snapshot().len(), 1);
    assert_eq!(b.get("web-1").unwrap().ip, "169.254.104.2");
    assert_eq!(b.next_index("web").await.unwrap(), 2);
    drop((s, b));
    let conn = Connection::open(&path).unwrap();
    assert_eq!(schema::version(&conn).unwrap(), SCHEMA_VERSION);
    let n: i64 = conn
        .query_row("SELECT count(*) FROM nodes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n as usize, V0_ROWS.len(), "no row lost");
}

#[tokio::test]
async fn fresh_and_upgraded_databases_have_the_same_schema() {
    let d = tempfile::tempdir().unwrap();
    let (old, fresh) = (d.path().join("old.db"), d.path().join("fresh.db"));
    write_v0(&old);
    drop(Store::open(&old, "a").unwrap());
    drop(Store::open(&fresh, "a").unwrap());
    let (a, b) = (schema_of(&old), schema_of(&fresh));
    assert!(a.iter().any(|t| t.1 == "nodes"), "{a:?}");
    assert_eq!(a, b);
    // Opening again changes nothing.
    drop(Store::open(&fresh, "a").unwrap());
    assert_eq!(schema_of(&fresh), b);
}

#[test]
fn a_database_from_a_newer_bulkhead_is_refused_untouched() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.db");
    drop(Store::open(&path, "a").unwrap());
    let newer = SCHEMA_VERSION + 1;
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", newer)
        .unwrap();
    let before = schema_of(&path);
    let e = Store::open(&path, "a").err().expect("refused");
    let msg = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(msg.contains(&format!("schema version {newer}")), "{msg}");
    assert!(
        msg.contains(&format!("this bulkhead's {SCHEMA_VERSION}")),
        "{msg}"
    );
    assert_eq!(schema_of(&path), before);
    let conn = Connection::open(&path).unwrap();
    assert_eq!(schema::version(&conn).unwrap(), newer);
}

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
