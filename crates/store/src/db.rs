//! The SQL. Run by the writer thread, which owns the connection, and at open (migrations and
//! the index's first load). Each function is one statement or one transaction.

use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

use bulkhead_core::NodeState;

use crate::error::StoreError;
use crate::id::NodeId;
use crate::node::NodeRow;

const COLS: &str = "id, tenant, name, hostgroup, status, ip, cpus, ram_bytes, tags, persistent, \
                    created_at, cgroup, network, forwards, userdata, userdata_exit, storage_bytes, spec, \
                    expires_at, on_expiry";

pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    // Tags and names are the tenant's business: root only (the WAL files inherit this).
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    crate::schema::migrate(&mut conn).map_err(|source| StoreError::Schema {
        path: path.display().to_string(),
        source,
    })?;
    Ok(conn)
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRow> {
    let id: String = r.get(0)?;
    let status: String = r.get(4)?;
    let tags: String = r.get(8)?;
    Ok(NodeRow {
        id: NodeId::parse(&id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        hostgroup: r.get(3)?,
        status: NodeState::parse(&status).unwrap_or(NodeState::Stopped),
        ip: r.get(5)?,
        cpus: r.get(6)?,
        ram_bytes: r.get::<_, i64>(7)? as u64,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        persistent: r.get(9)?,
        created_at: r.get(10)?,
        cgroup: r.get(11)?,
        network: r.get(12)?,
        forwards: r.get(13)?,
        userdata: r.get(14)?,
        userdata_exit: r.get(15)?,
        storage_bytes: r.get::<_, Option<i64>>(16)?.map(|b| b as u64),
        spec: r.get(17)?,
        expiry: expiry_of(r.get(18)?, r.get(19)?), // #15 node TTL (B)
    })
}

/// #15 node TTL (B): the expiry columns as a row's. An action this build does not know
/// (written by a newer one) deletes: a node never outlives a timeout it was given.
fn expiry_of(at_ms: Option<i64>, on: Option<String>) -> Option<bulkhead_core::Expiry> {
    at_ms.map(|at| bulkhead_core::Expiry {
        at_ms: at.max(0) as u64,
        on: on
            .as_deref()
            .and_then(bulkhead_core::OnExpiry::parse)
            .unwrap_or(bulkhead_core::OnExpiry::Delete),
    })
}

/// The tenant's nodes, in list order.
pub(crate) fn list(conn: &Connection, tenant: &str) -> Result<Vec<NodeRow>, StoreError> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT {COLS} FROM nodes WHERE tenant=?1 ORDER BY hostgroup, created_at, name"
    ))?;
    let rows = st
        .query_map(params![tenant], row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(crate) fn insert(conn: &Connection, n: &NodeRow) -> Result<(), StoreError> {
    let r = conn.execute(
        &format!(
            "INSERT INTO nodes({COLS}) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)"
        ),
        params![
            n.id.to_string(),
            n.tenant,
            n.name,
            n.hostgroup,
            n.status.as_str(),
            n.ip,
            n.cpus,
            n.ram_bytes as i64,
            serde_json::to_string(&n.tags).unwrap_or_else(|_| "[]".into()),
            n.persistent,
            n.created_at,
            n.cgroup,
            n.network,
            n.forwards,
            n.userdata,
            n.userdata_exit,
            n.storage_bytes.map(|b| b as i64),
            n.spec,
            n.expiry.map(|e| e.at_ms as i64), // #15 node TTL (B)
            n.expiry.map(|e| e.on.as_str()),
        ],
    );
    match r {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::Exists(n.name.clone()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes every column but the node's identity (id, tenant, name, group, creation time);
/// false when there is no such node.
pub(crate) fn update(conn: &Connection, n: &NodeRow) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "UPDATE nodes SET status=?3, ip=?4, cpus=?5, ram_bytes=?6, tags=?7, persistent=?8,
                              cgroup=?9, network=?10, forwards=?11, userdata=?12,
                              userdata_exit=?13, storage_bytes=?14, spec=?15,
                              expires_at=?16, on_expiry=?17
             WHERE tenant=?1 AND name=?2",
        )?
        .execute(params![
            n.tenant,
            n.name,
            n.status.as_str(),
            n.ip,
            n.cpus,
            n.ram_bytes as i64,
            serde_json::to_string(&n.tags).unwrap_or_else(|_| "[]".into()),
            n.persistent,
            n.cgroup,
            n.network,
            n.forwards,
            n.userdata,
            n.userdata_exit,
            n.storage_bytes.map(|b| b as i64),
            n.spec,
            n.expiry.map(|e| e.at_ms as i64), // #15 node TTL (B)
            n.expiry.map(|e| e.on.as_str()),
        ])?
        == 1)
}

pub(crate) fn delete(conn: &Connection, tenant: &str, name: &str) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached("DELETE FROM nodes WHERE tenant=?1 AND name=?2")?
        .execute(params![tenant, name])?
        == 1)
}

/// Takes the next index of a host group (`<group>-<n>` names), starting at 1.
pub(crate) fn next_index(
    conn: &mut Connection,
    tenant: &str,
    group: &str,
) -> Result<u64, StoreError> {
    let tx = conn.transaction()?;
    let next: Option<i64> = tx
        .query_row(
            "SELECT next FROM counters WHERE tenant=?1 AND hostgroup=?2",
            params![tenant, group],
            |r| r.get(0),
        )
        .optional()?;
    let n = next.unwrap_or(1);
    tx.execute(
        "INSERT INTO counters(tenant, hostgroup, next) VALUES(?1, ?2, ?3)
         ON CONFLICT(tenant, hostgroup) DO UPDATE SET next=excluded.next",
        params![tenant, group, n + 1],
    )?;
    tx.commit()?;
    Ok(n as u64)
}

/// #13: the sum of the commits' recorded sizes in `conn` (at open; `commits.rs`).
pub(crate) fn commit_bytes(conn: &Connection) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT COALESCE(SUM(size_bytes), 0) FROM commits",
        [],
        |r| r.get(0),
    )?;
    Ok(n.max(0) as u64)
}
