//! Databases from before versioning upgrade in place to the schema a fresh one gets; one from
//! a newer bulkhead is refused untouched.

use rusqlite::{params, Connection};
use std::path::Path;

use crate::*;

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
        assert_eq!((got.userdata.as_deref(), got.userdata_exit), (None, None));
        assert_eq!((got.storage_bytes, got.spec.as_deref()), (None, None));
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

/// Version 3 to 4: old rows keep every column and have no storage size or spec (NULL, which
/// the daemon reads as "made before this release"); new rows keep theirs across a reopen.
#[tokio::test]
async fn version_3_gains_the_storage_size_and_spec_of_new_nodes_only() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("state.db");
    {
        let mut conn = Connection::open(&path).unwrap();
        schema::run(&mut conn, &schema::MIGRATIONS[..3]).unwrap();
        assert_eq!(schema::version(&conn).unwrap(), 3);
        conn.execute(
            "INSERT INTO nodes(id, tenant, name, hostgroup, status, ip, cpus, ram_bytes, tags,
                               persistent, created_at, forwards, userdata)
             VALUES(?1, 'a', 'web-1', 'web', 'Stopped', '', 2, 1073741824, '[\"x\"]', 0,
                    '2026-01-01T00:00:00Z', '[]', 'echo hi')",
            params![NodeId::new().to_string()],
        )
        .unwrap();
    }
    let s = Store::open(&path, "a").unwrap();
    let old = s.get("web-1").unwrap();
    assert_eq!(
        (old.cpus, old.ram_bytes, old.tags.clone()),
        (2, 1 << 30, vec!["x".to_string()])
    );
    assert_eq!(old.userdata.as_deref(), Some("echo hi"));
    assert_eq!((old.storage_bytes, old.spec.as_deref()), (None, None));
    let mut n = super::new_node("web-2", "web", "2026-01-02T00:00:00Z");
    n.storage_bytes = Some(25 << 30);
    n.spec = Some(r#"{"cpus":1}"#.into());
    s.insert(n).await.unwrap();
    // Changing another column keeps them.
    assert!(s.set_tags("web-2", vec!["y".into()]).await.unwrap());
    drop(s);
    let s = Store::open(&path, "a").unwrap();
    let new = s.get("web-2").unwrap();
    assert_eq!(new.storage_bytes, Some(25 << 30));
    assert_eq!(new.spec.as_deref(), Some(r#"{"cpus":1}"#));
    assert_eq!(new.tags, vec!["y".to_string()]);
    assert_eq!(s.read_back().await.unwrap().len(), 2);
    assert_eq!(s.get("web-1").unwrap().spec, None);
}
