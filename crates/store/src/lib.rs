//! The tenant's durable state in SQLite (WAL mode): nodes and per-group name counters. One
//! database per tenant, in the tenant's state directory. Every write is one statement or one
//! transaction, so a crash never leaves a half-written row.

use bulkhead_core::{Code, DomainError, NodeState};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("node {0:?} already exists")]
    Exists(String),
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists(n) => DomainError::new(
                Code::AlreadyExists,
                format!("node {n:?} already exists: choose another hostname"),
            ),
            e => DomainError::internal(e.to_string()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub tenant: String,
    pub name: String,
    pub hostgroup: String,
    pub status: NodeState,
    pub ip: String,
    pub cpus: u32,
    pub ram_bytes: u64,
    pub tags: Vec<String>,
    pub persistent: bool,
    pub created_at: String,
}

pub struct Store {
    conn: Connection,
}

const SCHEMA: &str = "
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

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRow> {
    let status: String = r.get(3)?;
    let tags: String = r.get(7)?;
    Ok(NodeRow {
        tenant: r.get(0)?,
        name: r.get(1)?,
        hostgroup: r.get(2)?,
        status: NodeState::parse(&status).unwrap_or(NodeState::Stopped),
        ip: r.get(4)?,
        cpus: r.get(5)?,
        ram_bytes: r.get::<_, i64>(6)? as u64,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        persistent: r.get(8)?,
        created_at: r.get(9)?,
    })
}

const COLS: &str =
    "tenant, name, hostgroup, status, ip, cpus, ram_bytes, tags, persistent, created_at";

impl Store {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        // Tags and names are the tenant's business: root only (the WAL files inherit this).
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store { conn })
    }

    /// Takes the next index of a host group (`<group>-<n>` names), starting at 1. Indexes are
    /// never reused, so a deleted node's name never points at a new node.
    pub fn next_index(&mut self, tenant: &str, group: &str) -> Result<u64, StoreError> {
        let tx = self.conn.transaction()?;
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

    pub fn insert(&self, n: &NodeRow) -> Result<(), StoreError> {
        let r = self.conn.execute(
            &format!("INSERT INTO nodes({COLS}) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
            params![
                n.tenant,
                n.name,
                n.hostgroup,
                n.status.as_str(),
                n.ip,
                n.cpus,
                n.ram_bytes as i64,
                serde_json::to_string(&n.tags).unwrap_or_else(|_| "[]".into()),
                n.persistent,
                n.created_at
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

    pub fn set_status(
        &self,
        tenant: &str,
        name: &str,
        status: NodeState,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "UPDATE nodes SET status=?3 WHERE tenant=?1 AND name=?2",
            params![tenant, name, status.as_str()],
        )?;
        Ok(n == 1)
    }

    pub fn delete(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM nodes WHERE tenant=?1 AND name=?2",
            params![tenant, name],
        )? == 1)
    }

    pub fn get(&self, tenant: &str, name: &str) -> Result<Option<NodeRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLS} FROM nodes WHERE tenant=?1 AND name=?2"),
                params![tenant, name],
                row,
            )
            .optional()?)
    }

    pub fn list(&self, tenant: &str) -> Result<Vec<NodeRow>, StoreError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {COLS} FROM nodes WHERE tenant=?1 ORDER BY hostgroup, created_at, name"
        ))?;
        let rows = st
            .query_map(params![tenant], row)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(t: &str, n: &str) -> NodeRow {
        NodeRow {
            tenant: t.into(),
            name: n.into(),
            hostgroup: "g".into(),
            status: NodeState::Creating,
            ip: String::new(),
            cpus: 1,
            ram_bytes: 1 << 29,
            tags: vec!["a=b".into()],
            persistent: false,
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[test]
    fn nodes_are_scoped_by_tenant() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Store::open(&d.path().join("s.db")).unwrap();
        s.insert(&node("a", "g-1")).unwrap();
        assert!(matches!(
            s.insert(&node("a", "g-1")),
            Err(StoreError::Exists(_))
        ));
        s.insert(&node("b", "g-1")).unwrap();
        assert_eq!(s.list("a").unwrap().len(), 1);
        assert!(s.get("c", "g-1").unwrap().is_none());
        assert!(s.set_status("a", "g-1", NodeState::Running).unwrap());
        assert_eq!(
            s.get("a", "g-1").unwrap().unwrap().status,
            NodeState::Running
        );
        assert_eq!(
            s.get("a", "g-1").unwrap().unwrap().tags,
            vec!["a=b".to_string()]
        );
        assert!(s.delete("a", "g-1").unwrap());
        assert!(!s.delete("a", "g-1").unwrap());
        assert_eq!(s.next_index("a", "g").unwrap(), 1);
        assert_eq!(s.next_index("a", "g").unwrap(), 2);
        assert_eq!(s.next_index("b", "g").unwrap(), 1);
        drop(s);
        let mut s = Store::open(&d.path().join("s.db")).unwrap();
        assert_eq!(
            s.next_index("a", "g").unwrap(),
            3,
            "counters survive a restart"
        );
    }
}
