//! Events (#14, part B): the tenant's event stream as kept, by cursor. The daemon's
//! `events/` gives each event its cursor and sends it here without waiting; this module only
//! writes, trims and reads back rows.
//!
//! Invariants:
//! - rows are written in the order they were sent (the writer runs jobs in order), so the
//!   cursors on disk grow with time;
//! - after each insert at most `keep` rows remain: the oldest go first;
//! - the cursor column is the primary key; a cursor is never written twice (a second insert
//!   of one is ignored, never a second row).

use rusqlite::params;

use crate::error::StoreError;
use crate::store::Store;

/// One event as kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub cursor: u64,
    /// RFC 3339, UTC.
    pub time: String,
    pub kind: String,
    pub node: Option<String>,
    /// The kind's JSON object, as text.
    pub detail: String,
}

impl Store {
    /// Writes `e` and trims the table to the newest `keep` rows, on the writer thread, without
    /// waiting for it (events are emitted from anywhere, sync code included). A failure is
    /// logged: the event stays in memory and on the stream, only not across a restart.
    pub fn append_event(&self, e: EventRow, keep: u64) {
        self.post(move |w| {
            let r = w.conn.execute(
                "INSERT OR IGNORE INTO events(cursor, time, kind, node, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![e.cursor as i64, e.time, e.kind, e.node, e.detail],
            );
            let r = r.and_then(|_| {
                w.conn.execute(
                    "DELETE FROM events WHERE cursor <= ?1",
                    params![e.cursor.saturating_sub(keep) as i64],
                )
            });
            if let Err(err) = r {
                tracing::error!(cursor = e.cursor, kind = %e.kind, error = %err, "cannot keep an event in the state database");
            }
        });
    }

    /// The newest `keep` events, oldest first.
    pub async fn events(&self, keep: u64) -> Result<Vec<EventRow>, StoreError> {
        self.call(move |w| {
            let mut st = w.conn.prepare(
                "SELECT cursor, time, kind, node, detail FROM
                   (SELECT * FROM events ORDER BY cursor DESC LIMIT ?1) ORDER BY cursor",
            )?;
            let rows = st
                .query_map(params![keep.min(i64::MAX as u64) as i64], |r| {
                    Ok(EventRow {
                        cursor: r.get::<_, i64>(0)? as u64,
                        time: r.get(1)?,
                        kind: r.get(2)?,
                        node: r.get(3)?,
                        detail: r.get(4)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?
    }

    /// Waits until every job sent before it (events among them) has run.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.call(|_| ()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(cursor: u64) -> EventRow {
        EventRow {
            cursor,
            time: "2026-01-01T00:00:00Z".into(),
            kind: "node.created".into(),
            node: Some(format!("g-{cursor}")),
            detail: "{}".into(),
        }
    }

    #[tokio::test]
    async fn events_are_kept_trimmed_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let s = Store::open(&db, "t").unwrap();
        assert!(s.events(10).await.unwrap().is_empty());
        for c in 1..=5 {
            s.append_event(ev(c), 3);
        }
        s.append_event(ev(5), 3); // a cursor written twice is one row
        s.flush().await.unwrap();
        let got: Vec<u64> = s
            .events(10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.cursor)
            .collect();
        assert_eq!(got, vec![3, 4, 5]);
        let got: Vec<u64> = s
            .events(2)
            .await
            .unwrap()
            .iter()
            .map(|e| e.cursor)
            .collect();
        assert_eq!(got, vec![4, 5]);
        drop(s);
        let s = Store::open(&db, "t").unwrap();
        assert_eq!(s.events(10).await.unwrap().last(), Some(&ev(5)));
    }
}
