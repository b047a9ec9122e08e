//! The database's schema as an ordered list of numbered migrations. `PRAGMA user_version`
//! holds the number of the last one applied; each runs in a transaction of its own together
//! with the version bump, so a crash leaves the database at one version or the next, never in
//! between.
//!
//! Invariants:
//! - a fresh database and an upgraded one run the same steps, so they end with the same schema;
//! - version 0 is either an empty file or a database written before versioning (bulkhead up to
//!   0.1 with `nodes` and `counters`); step 1 is that schema with `IF NOT EXISTS`, so both
//!   reach version 1 with every row in place;
//! - a database from a newer bulkhead (a version above [`VERSION`]) is refused, never changed;
//! - steps are never edited once released: a change is a new step at the end.

use rusqlite::{Connection, Transaction, TransactionBehavior};

/// One step from version `version - 1` to `version`.
pub(crate) struct Migration {
    pub(crate) version: u32,
    pub(crate) what: &'static str,
    pub(crate) apply: fn(&Transaction<'_>) -> rusqlite::Result<()>,
}

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "nodes and per-group name counters (the schema before versioning)",
        apply: v1_baseline,
    },
    Migration {
        version: 2,
        what: "node ids, and the node's cgroup, network and forwards records",
        apply: v2_node_records,
    },
    Migration {
        version: 3,
        what: "the node's userdata and its exit code once it ran",
        apply: v3_userdata,
    },
    Migration {
        version: 4,
        what: "the node's storage size and normalized create request (quotas, the conflict rule)",
        apply: v4_spec,
    },
    Migration {
        version: 5,
        what: "secrets, sealed with the tenant's key (#13)",
        apply: v5_secrets,
    },
    // volumes (#13, helper B)
    Migration {
        version: 6,
        what: "volumes, their attachments to nodes, and their snapshots",
        apply: v6_volumes,
    },
    // #13 commit and fork (helper D2)
    Migration {
        version: 7,
        what: "commits: a node's root filesystem sealed as a tenant-private image",
        apply: v7_commits,
    },
    // #14 events (part B)
    Migration {
        version: 8,
        what: "events: the tenant's event stream, by cursor",
        apply: v8_events,
    },
    // #14 usage (part E)
    Migration {
        version: 9,
        what: "usage: per node per time bucket, and the last counters seen per node",
        apply: v9_usage,
    },
    // #15 node TTL (part B)
    Migration {
        version: 10,
        what: "the node's expiry: when its timeout passes and what happens then",
        apply: v10_expiry,
    },
    // #15 E2B sandbox records (part A)
    Migration {
        version: 11,
        what: "E2B sandbox records: template, metadata, sealed envVars, autoPause, times",
        apply: v11_e2b_sandboxes,
    },
];

/// The schema version this build writes.
pub const VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("the database has schema version {found}, newer than this bulkhead's {supported}: run the bulkhead release that wrote it (or a newer one); downgrades are not supported")]
    TooNew { found: u32, supported: u32 },
    #[error("upgrading the state database to schema version {version} ({what})")]
    Step {
        version: u32,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("reading the state database's schema version")]
    Version(#[source] rusqlite::Error),
}

pub fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Brings the database to [`VERSION`]; returns the version it found.
pub fn migrate(conn: &mut Connection) -> Result<u32, SchemaError> {
    run(conn, MIGRATIONS)
}

/// Brings a database to the last of `migrations` (numbered 1, 2, ...); returns the version it
/// found. Shared by every SQLite file of bulkhead (`state.db`, `auth.db`).
pub(crate) fn run(conn: &mut Connection, migrations: &[Migration]) -> Result<u32, SchemaError> {
    let latest = migrations.last().map_or(0, |m| m.version);
    let found = version(conn).map_err(SchemaError::Version)?;
    if found > latest {
        return Err(SchemaError::TooNew {
            found,
            supported: latest,
        });
    }
    for m in migrations.iter().filter(|m| m.version > found) {
        let step = |source| SchemaError::Step {
            version: m.version,
            what: m.what,
            source,
        };
        // IMMEDIATE: the write lock first, then the version, so that two processes opening
        // the same file cannot both apply a step.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(step)?;
        let now: u32 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(step)?;
        if now >= m.version {
            continue;
        }
        (m.apply)(&tx).map_err(step)?;
        tx.pragma_update(None, "user_version", m.version)
            .map_err(step)?;
        tx.commit().map_err(step)?;
        tracing::info!(
            version = m.version,
            what = m.what,
            "state database upgraded"
        );
    }
    Ok(found)
}

/// The schema bulkhead wrote before versioning, exactly (plus `IF NOT EXISTS`, which it had).
fn v1_baseline(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS nodes (
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
);",
    )
}

/// Nodes get an id (a ULID, never reused) and the records that lived in files of the node's
/// directory: its cgroup id (was read from `spec.json`), its network (`network.json`) and its
/// port forwards (`forwards.json`). The files themselves are imported by the daemon at start,
/// which knows where node directories are. SQLite cannot add a NOT NULL column without a
/// default, so the table is rebuilt (its recommended way: new table, copy, drop, rename).
fn v2_node_records(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE nodes_v2 (
    id         TEXT NOT NULL UNIQUE,
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
    cgroup     TEXT,
    network    TEXT,
    forwards   TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (tenant, name)
);",
    )?;
    // Ids in creation order, so that old nodes' ids sort like new ones'.
    let old: Vec<i64> = tx
        .prepare("SELECT rowid FROM nodes ORDER BY created_at, name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut copy = tx.prepare(
        "INSERT INTO nodes_v2(id, tenant, name, hostgroup, status, ip, cpus, ram_bytes, tags,
                              persistent, created_at)
         SELECT ?1, tenant, name, hostgroup, status, ip, cpus, ram_bytes, tags, persistent,
                created_at FROM nodes WHERE rowid = ?2",
    )?;
    for rowid in old {
        copy.execute(rusqlite::params![
            crate::id::NodeId::new().to_string(),
            rowid
        ])?;
    }
    drop(copy);
    tx.execute_batch("DROP TABLE nodes; ALTER TABLE nodes_v2 RENAME TO nodes;")
}

/// A node's userdata (the script run once at its first start) and its exit code once it ended
/// (`NULL` while it has not; ADR 0018). Both nullable, so old rows need no value.
fn v3_userdata(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE nodes ADD COLUMN userdata TEXT;
ALTER TABLE nodes ADD COLUMN userdata_exit INTEGER;",
    )
}

/// A node's storage size (quotas count it, ADR 0025) and the normalized create request that
/// made it (the conflict rule compares a repeated create with it). Both nullable: nodes made
/// before this step have neither, and the daemon says so rather than guess.
fn v4_spec(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE nodes ADD COLUMN storage_bytes INTEGER;
ALTER TABLE nodes ADD COLUMN spec TEXT;",
    )
}

/// Secrets (#13): one row per secret of the tenant, its content sealed with the tenant's key
/// by the daemon (AES-256-GCM, AAD naming the tenant and the secret): this database never
/// holds a secret's plaintext. `size` is the plaintext's length (Slicer lists it);
/// `permissions` the file mode the secret gets in a node.
fn v5_secrets(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE secrets (
    name        TEXT PRIMARY KEY NOT NULL,
    sealed      BLOB NOT NULL,
    size        INTEGER NOT NULL,
    permissions INTEGER NOT NULL,
    uid         INTEGER NOT NULL,
    gid         INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);",
    )
}

/// Volumes (#13, `volumes.rs`): volumes, who holds them, their snapshots.
fn v6_volumes(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE volumes (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    size_bytes    INTEGER NOT NULL,
    inodes        INTEGER NOT NULL,
    labels        TEXT NOT NULL DEFAULT '{}',
    key_id        TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    from_snapshot TEXT
);
CREATE TABLE volume_attachments (
    volume    TEXT NOT NULL,
    node      TEXT NOT NULL,
    path      TEXT NOT NULL,
    read_only INTEGER NOT NULL,
    PRIMARY KEY (volume, node)
);
CREATE TABLE snapshots (
    id         TEXT PRIMARY KEY,
    volume     TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    key_id     TEXT NOT NULL,
    state      TEXT NOT NULL,
    created_at TEXT NOT NULL
);",
    )
}

fn v7_commits(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE commits (
    id         TEXT NOT NULL PRIMARY KEY,
    node       TEXT NOT NULL,
    hostgroup  TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    state      TEXT NOT NULL,
    created_at TEXT NOT NULL,
    image_tree TEXT
);",
    )
}

/// Events (#14, `events.rs`): the tenant's event stream. The cursor is the row's key and
/// only grows (the daemon gives each event the last cursor plus one); the oldest rows go when
/// more than `events.keep` are kept. `detail` is the kind's JSON object.
fn v8_events(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE events (
    cursor INTEGER PRIMARY KEY,
    time   TEXT NOT NULL,
    kind   TEXT NOT NULL,
    node   TEXT,
    detail TEXT NOT NULL
);",
    )
}

/// #14 usage (part E, `usage.rs`): what each node used per time bucket (deltas, summed), and
/// the cumulative counters last read from each live node (so a restarted daemon counts on from
/// them: never twice, nothing lost).
fn v9_usage(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE usage (
    node_id              TEXT NOT NULL,
    node                 TEXT NOT NULL,
    bucket               INTEGER NOT NULL,
    node_ms              INTEGER NOT NULL,
    cpu_usec             INTEGER NOT NULL,
    memory_byte_seconds  REAL NOT NULL,
    memory_peak          INTEGER NOT NULL,
    rx_bytes             INTEGER NOT NULL,
    tx_bytes             INTEGER NOT NULL,
    storage_byte_seconds REAL NOT NULL,
    execs                INTEGER NOT NULL,
    PRIMARY KEY (node_id, bucket)
);
CREATE INDEX usage_by_bucket ON usage (bucket);
CREATE TABLE usage_last (
    node_id     TEXT NOT NULL PRIMARY KEY,
    node        TEXT NOT NULL,
    cgroup      TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    cpu_usec    INTEGER NOT NULL,
    rx_bytes    INTEGER NOT NULL,
    tx_bytes    INTEGER NOT NULL,
    oom_kills   INTEGER NOT NULL,
    memory_peak INTEGER NOT NULL
);",
    )
}

/// #15 node TTL (part B, ADR 0037): when a node's timeout passes (wall-clock milliseconds since
/// the Unix epoch) and what happens then (`delete` or `pause`). Both `NULL` for a node without
/// one (every node made before this step).
fn v10_expiry(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "ALTER TABLE nodes ADD COLUMN expires_at INTEGER;
ALTER TABLE nodes ADD COLUMN on_expiry TEXT;",
    )
}

/// #15 E2B sandbox records (part A, ADR 0036): one row per sandbox, keyed by its node's id;
/// `env_sealed` is sealed by the daemon with the tenant's key.
fn v11_e2b_sandboxes(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE e2b_sandboxes (
    node_id        TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    template       TEXT NOT NULL,
    alias          TEXT,
    client_id      TEXT NOT NULL,
    metadata       TEXT NOT NULL,
    env_sealed     BLOB NOT NULL,
    auto_pause     INTEGER NOT NULL,
    allow_internet INTEGER,
    started_at_ms  INTEGER NOT NULL,
    end_at_ms      INTEGER NOT NULL
);
CREATE INDEX e2b_sandboxes_name ON e2b_sandboxes(name);",
    )
}
