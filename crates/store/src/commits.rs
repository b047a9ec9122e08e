//! Commits (#13, ADR 0030): a node's root filesystem turned into a tenant-private image. The
//! sealed file lives in the tenant's directory (the daemon's `tenant/commit.rs`); this module
//! keeps its record.
//!
//! Invariants:
//! - a row is written only once the commit's sealed file is complete and renamed into place,
//!   so a commit cut short (a daemon killed mid-way) never has a row: nothing half-made is
//!   listed, and the daemon wipes files without a row at start;
//! - ids are ULIDs made here ([`CommitId`]), never reused; a row never changes after insert
//!   (a commit is immutable) and goes only with [`Store::delete_commit`];
//! - reads go to SQLite on the writer thread (commits are few and rarely read: no index).

use rusqlite::{params, OptionalExtension};

use crate::error::StoreError;
use crate::id::CommitId;
use crate::store::Store;

/// A commit as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRow {
    pub id: CommitId,
    /// The node it was made from (which may since be gone).
    pub node: String,
    /// That node's host group: a fork's default.
    pub hostgroup: String,
    /// Bytes of the committed tree (the tar stream before sealing).
    pub size_bytes: u64,
    /// `ready` (the only state a row has today: a commit under way has none).
    pub state: String,
    pub created_at: String,
}

const COLS: &str = "id, node, hostgroup, size_bytes, state, created_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CommitRow> {
    let id: String = r.get(0)?;
    Ok(CommitRow {
        id: CommitId::parse(&id).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
        })?,
        node: r.get(1)?,
        hostgroup: r.get(2)?,
        size_bytes: r.get::<_, i64>(3)? as u64,
        state: r.get(4)?,
        created_at: r.get(5)?,
    })
}

impl Store {
    /// Records a commit whose sealed file is complete.
    pub async fn insert_commit(&self, c: CommitRow) -> Result<(), StoreError> {
        self.call(move |w| {
            w.conn.execute(
                &format!("INSERT INTO commits({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    c.id.to_string(),
                    c.node,
                    c.hostgroup,
                    c.size_bytes as i64,
                    c.state,
                    c.created_at
                ],
            )?;
            Ok(())
        })
        .await?
    }

    /// The tenant's commits, oldest first.
    pub async fn commits(&self) -> Result<Vec<CommitRow>, StoreError> {
        self.call(|w| {
            let mut st = w
                .conn
                .prepare(&format!("SELECT {COLS} FROM commits ORDER BY id"))?;
            let rows = st.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?
    }

    /// One commit of the tenant's.
    pub async fn commit(&self, id: CommitId) -> Result<Option<CommitRow>, StoreError> {
        self.call(move |w| {
            Ok(w.conn
                .query_row(
                    &format!("SELECT {COLS} FROM commits WHERE id = ?1"),
                    params![id.to_string()],
                    row,
                )
                .optional()?)
        })
        .await?
    }

    /// Removes a commit's record; false when there was none.
    pub async fn delete_commit(&self, id: CommitId) -> Result<bool, StoreError> {
        self.call(move |w| {
            Ok(w.conn
                .execute("DELETE FROM commits WHERE id = ?1", params![id.to_string()])?
                > 0)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commits_are_recorded_listed_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.db"), "t").unwrap();
        assert!(s.commits().await.unwrap().is_empty());
        let c = CommitRow {
            id: CommitId::new(),
            node: "g-1".into(),
            hostgroup: "g".into(),
            size_bytes: 1234,
            state: "ready".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        s.insert_commit(c.clone()).await.unwrap();
        assert_eq!(s.commits().await.unwrap(), vec![c.clone()]);
        assert_eq!(s.commit(c.id).await.unwrap(), Some(c.clone()));
        assert_eq!(s.commit(CommitId::new()).await.unwrap(), None);
        drop(s);
        // Durable: a reopened store has it.
        let s = Store::open(&dir.path().join("state.db"), "t").unwrap();
        assert_eq!(s.commit(c.id).await.unwrap(), Some(c.clone()));
        assert!(s.delete_commit(c.id).await.unwrap());
        assert!(!s.delete_commit(c.id).await.unwrap());
        assert!(s.commits().await.unwrap().is_empty());
    }
}
