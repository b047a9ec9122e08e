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
//! - reads go to SQLite on the writer thread (commits are few and rarely read: no index),
//!   except the sum of their recorded sizes (#13, quotas: [`Store::commit_bytes`]), kept in
//!   memory and changed only by the writer thread, after the SQL that changed the rows: a
//!   writer job (a node create's or a volume's quota check) that reads it sees every commit
//!   inserted or deleted before it;
//! - [`Store::insert_commit_checked`] checks and inserts in one writer job, so two commits (or
//!   a commit and a create) can never both take the last of the tenant's `storage` quota.

use rusqlite::{params, OptionalExtension};
use std::sync::atomic::Ordering;
use std::sync::Arc;

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

/// What a commit's check sees, in the writer job that inserts it: everything committed
/// before it.
pub struct CommitCheck<'a> {
    /// The tenant's nodes.
    pub nodes: &'a crate::index::Snapshot,
    /// The tenant's volumes and snapshots.
    pub volumes: &'a crate::volumes::Volumes,
    /// The sum of the recorded sizes of the tenant's other commits.
    pub commit_bytes: u64,
}

impl Store {
    /// The sum of the tenant's commits' recorded sizes (from memory; #13, the `storage`
    /// quota). Read from a writer job (a quota check), it is exact as of that job.
    pub fn commit_bytes(&self) -> u64 {
        self.commit_bytes_counter().load(Ordering::Acquire)
    }

    /// Records a commit whose sealed file is complete.
    pub async fn insert_commit(&self, c: CommitRow) -> Result<(), StoreError> {
        self.insert_commit_checked(c, |_| Ok::<(), StoreError>(()))
            .await
    }

    /// Records a commit whose sealed file is complete if `check` (run on the writer thread,
    /// so atomic with every other write: quick, no blocking) accepts it; its error leaves
    /// nothing recorded.
    pub async fn insert_commit_checked<E>(
        &self,
        c: CommitRow,
        check: impl FnOnce(&CommitCheck<'_>) -> Result<(), E> + Send + 'static,
    ) -> Result<(), E>
    where
        E: From<StoreError> + Send + 'static,
    {
        self.call(move |w| {
            let nodes = w.node_snapshot();
            let volumes = w.volumes.get();
            let bytes = Arc::clone(&w.commit_bytes);
            check(&CommitCheck {
                nodes: &nodes,
                volumes: &volumes,
                commit_bytes: bytes.load(Ordering::Acquire),
            })?;
            w.conn
                .execute(
                    &format!("INSERT INTO commits({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                    params![
                        c.id.to_string(),
                        c.node,
                        c.hostgroup,
                        c.size_bytes as i64,
                        c.state,
                        c.created_at
                    ],
                )
                .map_err(StoreError::from)?;
            bytes.fetch_add(c.size_bytes, Ordering::AcqRel);
            Ok(())
        })
        .await
        .map_err(E::from)?
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

    /// Removes a commit's record (its size no longer counts); false when there was none.
    pub async fn delete_commit(&self, id: CommitId) -> Result<bool, StoreError> {
        self.call(move |w| {
            let tx = w.conn.transaction()?;
            let size: Option<i64> = tx
                .query_row(
                    "SELECT size_bytes FROM commits WHERE id = ?1",
                    params![id.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            tx.execute("DELETE FROM commits WHERE id = ?1", params![id.to_string()])?;
            tx.commit()?;
            let Some(size) = size else {
                return Ok(false);
            };
            // Saturating: the sum is of the same rows, so it never goes below 0.
            let _ = w
                .commit_bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    Some(n.saturating_sub(size.max(0) as u64))
                });
            Ok(true)
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

    fn commit(size: u64) -> CommitRow {
        CommitRow {
            id: CommitId::new(),
            node: "g-1".into(),
            hostgroup: "g".into(),
            size_bytes: size,
            state: "ready".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    #[tokio::test]
    async fn the_sum_of_sizes_follows_inserts_and_deletes_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let s = Store::open(&path, "t").unwrap();
        assert_eq!(s.commit_bytes(), 0);
        let (a, b) = (commit(1000), commit(234));
        s.insert_commit(a.clone()).await.unwrap();
        s.insert_commit(b.clone()).await.unwrap();
        assert_eq!(s.commit_bytes(), 1234);
        drop(s);
        let s = Store::open(&path, "t").unwrap();
        assert_eq!(s.commit_bytes(), 1234, "loaded from the rows at open");
        assert!(s.delete_commit(a.id).await.unwrap());
        assert_eq!(s.commit_bytes(), 234);
        // Deleting it again changes nothing.
        assert!(!s.delete_commit(a.id).await.unwrap());
        assert_eq!(s.commit_bytes(), 234);
    }

    #[tokio::test]
    async fn a_checked_insert_sees_the_others_and_a_refusal_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("state.db"), "t").unwrap();
        s.insert_commit(commit(700)).await.unwrap();
        // At most 1000 bytes of commits: the check sees the first one's 700.
        let fits = |size: u64| {
            move |c: &CommitCheck<'_>| {
                assert_eq!(c.nodes.len(), 0);
                assert_eq!(c.volumes.storage_bytes(), 0);
                if c.commit_bytes + size > 1000 {
                    Err(StoreError::Exists(format!("{} + {size}", c.commit_bytes)))
                } else {
                    Ok(())
                }
            }
        };
        let over = commit(301);
        let e = s
            .insert_commit_checked(over.clone(), fits(301))
            .await
            .unwrap_err();
        assert!(
            matches!(e, StoreError::Exists(ref m) if m == "700 + 301"),
            "{e}"
        );
        assert_eq!(s.commit(over.id).await.unwrap(), None);
        assert_eq!(s.commit_bytes(), 700);
        // Parallel checked inserts of 200 each: only one fits beside the 700.
        let (x, y) = (commit(200), commit(200));
        let (rx, ry) = tokio::join!(
            s.insert_commit_checked(x, fits(200)),
            s.insert_commit_checked(y, fits(200))
        );
        assert_eq!(rx.is_ok() as u8 + ry.is_ok() as u8, 1, "{rx:?} {ry:?}");
        assert_eq!(s.commit_bytes(), 900);
        assert_eq!(s.commits().await.unwrap().len(), 2);
    }
}
