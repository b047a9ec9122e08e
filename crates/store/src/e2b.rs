//! E2B sandbox records (#15, A; migration v11): what an E2B create asked for that the node's
//! own row does not hold (template, metadata, envVars, autoPause, client id, times), one row
//! per sandbox, keyed by the node's id.
//!
//! Invariants:
//! - a record belongs to the node whose id it carries: a node of the same name made later
//!   (another id) has none, so readers check the id ([`SandboxIndex::get`]);
//! - `env_sealed` is what the daemon sealed with the tenant's key: this module never sees a
//!   sandbox's environment in clear;
//! - reads come from the in-memory index, which the writer thread changes only after the
//!   statement committed (in the same job), so reads see writes in commit order.

use rusqlite::Connection;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use crate::error::StoreError;

/// A sandbox as recorded.
#[derive(Clone, PartialEq, Eq)]
pub struct SandboxRow {
    /// The node's row id (a ULID, as text).
    pub node_id: String,
    /// The sandbox id: the node's name.
    pub name: String,
    /// The `templateID` as the caller gave it (a host group, an image, a commit, `base`).
    pub template: String,
    /// The template's alias, when it was named by one.
    pub alias: Option<String>,
    pub client_id: String,
    pub metadata: BTreeMap<String, String>,
    /// The sandbox's `envVars` as JSON, sealed by the daemon; empty: none.
    pub env_sealed: Vec<u8>,
    pub auto_pause: bool,
    /// `allow_internet_access` as asked; `None`: not said.
    pub allow_internet: Option<bool>,
    pub started_at_ms: u64,
    /// When its timeout passes as last set (milliseconds since the epoch).
    pub end_at_ms: u64,
}

impl std::fmt::Debug for SandboxRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxRow")
            .field("node_id", &self.node_id)
            .field("name", &self.name)
            .field("template", &self.template)
            .field("metadata", &self.metadata)
            .field(
                "env_sealed",
                &format_args!("{} bytes", self.env_sealed.len()),
            )
            .field("auto_pause", &self.auto_pause)
            .finish_non_exhaustive()
    }
}

/// The tenant's sandbox records by sandbox id, as committed.
#[derive(Default)]
pub struct SandboxIndex {
    rows: RwLock<HashMap<String, Arc<SandboxRow>>>,
}

pub(crate) const COLS: &str = "node_id, name, template, alias, client_id, metadata, env_sealed, auto_pause, allow_internet, started_at_ms, end_at_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SandboxRow> {
    let meta: String = r.get(5)?;
    Ok(SandboxRow {
        node_id: r.get(0)?,
        name: r.get(1)?,
        template: r.get(2)?,
        alias: r.get(3)?,
        client_id: r.get(4)?,
        metadata: serde_json::from_str(&meta).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, e.into())
        })?,
        env_sealed: r.get(6)?,
        auto_pause: r.get(7)?,
        allow_internet: r.get(8)?,
        started_at_ms: r.get::<_, i64>(9)? as u64,
        end_at_ms: r.get::<_, i64>(10)? as u64,
    })
}

impl SandboxIndex {
    pub(crate) fn load(conn: &Connection) -> Result<SandboxIndex, StoreError> {
        let mut st = conn.prepare(&format!("SELECT {COLS} FROM e2b_sandboxes"))?;
        let rows = st.query_map([], row)?;
        let mut m = HashMap::new();
        for r in rows {
            let r = r?;
            m.insert(r.name.clone(), Arc::new(r));
        }
        Ok(SandboxIndex {
            rows: RwLock::new(m),
        })
    }

    /// The record of sandbox `name` if it belongs to node `node_id`.
    pub fn get(&self, name: &str, node_id: &str) -> Option<Arc<SandboxRow>> {
        let m = self.rows.read().unwrap_or_else(|p| p.into_inner());
        m.get(name).filter(|r| r.node_id == node_id).cloned()
    }

    /// Every record (some may be of nodes deleted since: check the ids).
    pub fn all(&self) -> Vec<Arc<SandboxRow>> {
        let m = self.rows.read().unwrap_or_else(|p| p.into_inner());
        m.values().cloned().collect()
    }

    pub(crate) fn put(&self, r: SandboxRow) {
        let mut m = self.rows.write().unwrap_or_else(|p| p.into_inner());
        m.insert(r.name.clone(), Arc::new(r));
    }

    pub(crate) fn remove(&self, name: &str, node_id: &str) {
        let mut m = self.rows.write().unwrap_or_else(|p| p.into_inner());
        if m.get(name).is_some_and(|r| r.node_id == node_id) {
            m.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn rec(name: &str, id: &str) -> SandboxRow {
        SandboxRow {
            node_id: id.into(),
            name: name.into(),
            template: "base".into(),
            alias: None,
            client_id: "bulkhead".into(),
            metadata: [("k".to_string(), "v".to_string())].into(),
            env_sealed: vec![1, 2, 3],
            auto_pause: true,
            allow_internet: Some(false),
            started_at_ms: 1,
            end_at_ms: 2,
        }
    }

    #[tokio::test]
    async fn records_by_node_id_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.db");
        let s = Store::open(&p, "t").unwrap();
        s.put_sandbox(rec("g-abc", "01A")).await.unwrap();
        assert_eq!(s.sandboxes().get("g-abc", "01A").unwrap().template, "base");
        // Another node of the same name has no record.
        assert!(s.sandboxes().get("g-abc", "01B").is_none());
        assert!(s.set_sandbox_end("g-abc", "01A", 99).await.unwrap());
        assert!(!s.set_sandbox_end("g-abc", "01B", 99).await.unwrap());
        drop(s);
        let s = Store::open(&p, "t").unwrap();
        let r = s.sandboxes().get("g-abc", "01A").unwrap();
        assert_eq!(
            (r.end_at_ms, r.auto_pause, r.allow_internet),
            (99, true, Some(false))
        );
        assert_eq!(r.metadata.get("k").map(String::as_str), Some("v"));
        // A new node of the name replaces the old record.
        s.put_sandbox(rec("g-abc", "01C")).await.unwrap();
        assert!(s.sandboxes().get("g-abc", "01A").is_none());
        assert_eq!(s.sandboxes().all().len(), 1);
        s.delete_sandbox("g-abc", "01C").await.unwrap();
        assert!(s.sandboxes().all().is_empty());
        drop(s);
        let s = Store::open(&p, "t").unwrap();
        assert!(s.sandboxes().all().is_empty());
    }
}
