//! The per-node registry of containers (#16, B2): in the daemon's memory only, forgotten
//! with the node (like background execs). An id is `Busy` while it is being created or
//! deleted (not listed, not usable, not re-creatable); `tenant/containers.rs` does the work.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use bulkhead_api::containers::ContainerInfo;

#[derive(Clone)]
pub(crate) enum Entry {
    /// Being created or deleted: not listed, not usable, not re-creatable.
    Busy,
    Ready(ContainerInfo),
}

/// Every node's containers.
#[derive(Default)]
pub struct Containers {
    nodes: Mutex<HashMap<String, BTreeMap<String, Entry>>>,
}

impl Containers {
    pub(crate) fn get(&self, node: &str, id: &str) -> Option<Entry> {
        self.nodes.lock().unwrap().get(node)?.get(id).cloned()
    }

    /// Marks `id` busy; `false` if it exists already.
    pub(crate) fn reserve(&self, node: &str, id: &str) -> bool {
        let mut g = self.nodes.lock().unwrap();
        let m = g.entry(node.to_string()).or_default();
        if m.contains_key(id) {
            return false;
        }
        m.insert(id.to_string(), Entry::Busy);
        true
    }

    pub(crate) fn set(&self, node: &str, id: &str, e: Option<Entry>) {
        let mut g = self.nodes.lock().unwrap();
        let m = g.entry(node.to_string()).or_default();
        match e {
            Some(e) => {
                m.insert(id.to_string(), e);
            }
            None => {
                m.remove(id);
            }
        }
        if m.is_empty() {
            g.remove(node);
        }
    }

    /// A node's made containers, by id.
    pub(crate) fn ready(&self, node: &str) -> Vec<ContainerInfo> {
        let g = self.nodes.lock().unwrap();
        g.get(node)
            .map(|m| {
                m.values()
                    .filter_map(|e| match e {
                        Entry::Ready(c) => Some(c.clone()),
                        Entry::Busy => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets a node's containers (the node is gone).
    pub fn forget_node(&self, node: &str) {
        self.nodes.lock().unwrap().remove(node);
    }
}
