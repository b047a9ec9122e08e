//! The writes of E2B sandbox records (#15, A; `e2b.rs` has the rows and the index): one
//! statement each on the store's writer thread, the index changed in the same job after it
//! committed.

use rusqlite::params;

use crate::e2b::{SandboxIndex, SandboxRow, COLS};
use crate::error::StoreError;
use crate::store::Store;

impl Store {
    /// The tenant's sandbox records, from memory.
    pub fn sandboxes(&self) -> &SandboxIndex {
        self.e2b_index()
    }

    /// Records a sandbox (replacing a record of the same name: the node it named is gone).
    pub async fn put_sandbox(&self, r: SandboxRow) -> Result<(), StoreError> {
        let index = self.e2b_index_arc();
        self.call(move |w| -> Result<(), StoreError> {
            w.conn.execute(
                &format!("INSERT OR REPLACE INTO e2b_sandboxes({COLS}) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                params![
                    r.node_id,
                    r.name,
                    r.template,
                    r.alias,
                    r.client_id,
                    serde_json::to_string(&r.metadata).unwrap_or_else(|_| "{}".into()),
                    r.env_sealed,
                    r.auto_pause,
                    r.allow_internet,
                    r.started_at_ms as i64,
                    r.end_at_ms as i64
                ],
            )?;
            w.conn.execute(
                "DELETE FROM e2b_sandboxes WHERE name = ?1 AND node_id <> ?2",
                params![r.name, r.node_id],
            )?;
            index.put(r);
            Ok(())
        })
        .await?
    }

    /// Sets the time a sandbox's timeout passes; `false` when it has no record.
    pub async fn set_sandbox_end(
        &self,
        name: &str,
        node_id: &str,
        end_at_ms: u64,
    ) -> Result<bool, StoreError> {
        let index = self.e2b_index_arc();
        let Some(old) = index.get(name, node_id) else {
            return Ok(false);
        };
        self.call(move |w| -> Result<bool, StoreError> {
            let n = w.conn.execute(
                "UPDATE e2b_sandboxes SET end_at_ms = ?3 WHERE name = ?1 AND node_id = ?2",
                params![old.name, old.node_id, end_at_ms as i64],
            )?;
            if n > 0 {
                let mut r = (*old).clone();
                r.end_at_ms = end_at_ms;
                index.put(r);
            }
            Ok(n > 0)
        })
        .await?
    }

    /// Forgets a sandbox's record (its node was deleted).
    pub async fn delete_sandbox(&self, name: &str, node_id: &str) -> Result<(), StoreError> {
        let index = self.e2b_index_arc();
        let (name, node_id) = (name.to_string(), node_id.to_string());
        self.call(move |w| -> Result<(), StoreError> {
            w.conn.execute(
                "DELETE FROM e2b_sandboxes WHERE name = ?1 AND node_id = ?2",
                params![name, node_id],
            )?;
            index.remove(&name, &node_id);
            Ok(())
        })
        .await?
    }
}
