//! The in-memory index of one tenant's nodes, which serves every read: lookups by name, the
//! list, pages. Only the writer thread changes it, and only after its SQLite transaction
//! committed, so a reader never sees a row that is not durable, and never waits for SQLite.
//!
//! Invariants:
//! - `sorted` holds exactly the rows of `by_name`, in list order (host group, creation time,
//!   name: the order of `ORDER BY hostgroup, created_at, name` under SQLite's BINARY collation);
//! - rows are immutable behind their `Arc`: a change replaces the row, so a reader holding one
//!   keeps a consistent (possibly older) view;
//! - the lock is a plain mutex held for map operations only, never across I/O or an await;
//! - a [`Snapshot`] is frozen: every write makes the next list build a new one, so anything
//!   memoised on a snapshot (its serialised form) is invalidated by construction.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::cursor::Cursor;
use crate::node::{key, NodeRow};

#[derive(Default)]
struct Inner {
    by_name: HashMap<String, Arc<NodeRow>>,
    sorted: Vec<Arc<NodeRow>>,
    /// Bumped by every change.
    version: u64,
    /// The snapshot of the current version, once someone asked for it.
    snapshot: Option<Arc<Snapshot>>,
}

impl Inner {
    fn position(&self, r: &NodeRow) -> Result<usize, usize> {
        self.sorted.binary_search_by(|x| key(x).cmp(&key(r)))
    }

    fn changed(&mut self) {
        self.version += 1;
        self.snapshot = None;
    }
}

#[derive(Default)]
pub(crate) struct Index {
    inner: Mutex<Inner>,
}

impl Index {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding it cannot leave the maps half-changed in a way that matters
        // more than a stale view; carry on rather than poison every reader.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn load(rows: Vec<NodeRow>) -> Self {
        let mut inner = Inner::default();
        for r in rows {
            let r = Arc::new(r);
            inner.by_name.insert(r.name.clone(), r.clone());
            inner.sorted.push(r);
        }
        inner.sorted.sort_by(|a, b| key(a).cmp(&key(b)));
        Index {
            inner: Mutex::new(inner),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<NodeRow>> {
        self.lock().by_name.get(name).cloned()
    }

    /// Adds a row, or replaces the row of the same name (whose sort key never changes).
    pub(crate) fn put(&self, row: Arc<NodeRow>) {
        let mut g = self.lock();
        if let Some(old) = g.by_name.insert(row.name.clone(), row.clone()) {
            if let Ok(i) = g.position(&old) {
                g.sorted.remove(i);
            }
        }
        match g.position(&row) {
            Ok(i) => g.sorted[i] = row,
            Err(i) => g.sorted.insert(i, row),
        }
        g.changed();
    }

    pub(crate) fn remove(&self, name: &str) {
        let mut g = self.lock();
        if let Some(old) = g.by_name.remove(name) {
            if let Ok(i) = g.position(&old) {
                g.sorted.remove(i);
            }
            g.changed();
        }
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        let mut g = self.lock();
        if let Some(s) = &g.snapshot {
            return s.clone();
        }
        let s = Arc::new(Snapshot {
            version: g.version,
            rows: g.sorted.clone(),
            json: OnceLock::new(),
        });
        g.snapshot = Some(s.clone());
        s
    }
}

/// The tenant's nodes at one moment, in list order.
pub struct Snapshot {
    version: u64,
    rows: Vec<Arc<NodeRow>>,
    json: OnceLock<Bytes>,
}

/// One page of a list.
pub struct Page<'a> {
    pub rows: Vec<&'a Arc<NodeRow>>,
    /// Where the next page starts; `None` when nothing matching follows this page.
    pub next: Option<Cursor>,
}

impl Snapshot {
    /// Rises with every change; two snapshots of the same version hold the same rows.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn rows(&self) -> &[Arc<NodeRow>] {
        &self.rows
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows of one host group: a contiguous run, the group being the first sort key.
    pub fn group(&self, group: &str) -> &[Arc<NodeRow>] {
        let lo = self.rows.partition_point(|r| r.hostgroup.as_str() < group);
        let hi = self.rows.partition_point(|r| r.hostgroup.as_str() <= group);
        &self.rows[lo..hi]
    }

    /// Up to `limit` rows of `group` (or all groups) that `keep` accepts, starting after
    /// `after`. Finding the start is a binary search; rows `keep` refuses cost a check each.
    pub fn page(
        &self,
        group: Option<&str>,
        after: Option<&Cursor>,
        limit: usize,
        keep: impl Fn(&NodeRow) -> bool,
    ) -> Page<'_> {
        let rows = match group {
            Some(g) => self.group(g),
            None => &self.rows[..],
        };
        let start = after.map_or(0, |c| rows.partition_point(|r| !c.before(r)));
        let mut out = Vec::with_capacity(limit.min(rows.len() - start));
        let mut more = false;
        for r in rows[start..].iter().filter(|r| keep(r)) {
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(r);
        }
        let next = match (more, out.last()) {
            (true, Some(last)) => Some(Cursor::of(last)),
            _ => None,
        };
        Page { rows: out, next }
    }

    /// The serialised form of the whole list, made once per snapshot by `render` (so once per
    /// change of the tenant's nodes, however many readers ask).
    pub fn memo(&self, render: impl FnOnce(&[Arc<NodeRow>]) -> Bytes) -> Bytes {
        self.json.get_or_init(|| render(&self.rows)).clone()
    }

    /// The serialised form, if some reader already made it.
    pub fn memoised(&self) -> Option<Bytes> {
        self.json.get().cloned()
    }
}
