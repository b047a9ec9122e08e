//! One-time import of node records that releases before the store's schema version 2 kept as
//! files in the node's directory: `network.json` (the node's network), `forwards.json` (its port
//! forwards) and the cgroup id, which was read back out of the supervisor's `spec.json`. Nodes
//! kept running across an upgrade (`graceful_shutdown: true`) are found with their network,
//! forwards and cgroup by the new daemon.
//!
//! Invariants: runs at start, before reconciliation (which would otherwise sweep the cgroup of
//! a node whose id it does not know); a record is written to the store before its file is
//! removed, so a crash in between imports again, never loses it; nodes created by this release
//! have no such files and their cgroup is recorded before their spec exists, so this reads
//! nothing for them.

use bulkhead_store::{NodeRow, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::forward::{ForwardSpec, FORWARDS_FILE};
use crate::network::{NodeNet, NODE_NET_FILE};

/// What one legacy node directory holds.
#[derive(Default)]
struct Found {
    network: Option<String>,
    forwards: Option<String>,
    cgroup: Option<String>,
}

fn read(dir: &Path, row: &NodeRow) -> Found {
    let text = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    Found {
        // Only well-formed records: a damaged file is worth a warning, not a broken node.
        network: text(NODE_NET_FILE)
            .filter(|_| row.network.is_none())
            .filter(|t| serde_json::from_str::<NodeNet>(t).is_ok()),
        forwards: text(FORWARDS_FILE)
            .filter(|t| serde_json::from_str::<Vec<ForwardSpec>>(t).is_ok()),
        cgroup: row
            .cgroup
            .is_none()
            .then(|| bulkhead_driver::spec::spec_cgroup(dir))
            .flatten(),
    }
}

/// Imports the files of every node in `nodes_dir` that state knows; returns how many nodes
/// had something to import.
pub async fn import_node_files(store: &Store, nodes_dir: &Path) -> usize {
    let rows: Vec<Arc<NodeRow>> = store.snapshot().rows().to_vec();
    let dir = nodes_dir.to_path_buf();
    let found: Vec<(Arc<NodeRow>, PathBuf, Found)> = tokio::task::spawn_blocking(move || {
        rows.into_iter()
            .map(|r| {
                let d = dir.join(&r.name);
                let f = read(&d, &r);
                (r, d, f)
            })
            .collect()
    })
    .await
    .unwrap_or_default();
    let mut imported = 0;
    for (row, dir, f) in found {
        let name = &row.name;
        let (mut any, mut forwards_in) = (false, false);
        if let Some(n) = f.network {
            match store.set_network(name, Some(n)).await {
                Ok(_) => any = true,
                Err(e) => tracing::error!(node = %name, error = %e, "cannot import network.json"),
            }
        }
        if let Some(fw) = f.forwards {
            match store.set_forwards(name, fw).await {
                Ok(_) => (any, forwards_in) = (true, true),
                Err(e) => tracing::error!(node = %name, error = %e, "cannot import forwards.json"),
            }
        }
        if let Some(c) = f.cgroup {
            match store.set_cgroup(name, Some(c)).await {
                Ok(_) => any = true,
                Err(e) => tracing::error!(node = %name, error = %e, "cannot import the cgroup id"),
            }
        }
        // The files go once the store has their content.
        if let Some(now) = store.get(name) {
            if now.network.is_some() {
                let _ = std::fs::remove_file(dir.join(NODE_NET_FILE));
            }
            if forwards_in {
                let _ = std::fs::remove_file(dir.join(FORWARDS_FILE));
            }
        }
        if any {
            tracing::info!(node = %name, "imported the node's records from its directory");
            imported += 1;
        }
    }
    imported
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulkhead_store::{NewNode, NodeState};

    fn new_node(name: &str) -> NewNode {
        NewNode {
            name: name.into(),
            hostgroup: "g".into(),
            status: NodeState::Running,
            ip: "169.254.100.2".into(),
            cpus: 1,
            ram_bytes: 1 << 29,
            tags: vec![],
            persistent: false,
            created_at: "2026-01-01T00:00:00Z".into(),
            network: None,
            userdata: None,
            storage_bytes: None,
            spec: None,
        }
    }

    #[tokio::test]
    async fn files_of_nodes_from_an_older_release_are_imported_once() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("state.db"), "t").unwrap();
        let nodes = d.path().join("nodes");
        store.insert(new_node("g-1")).await.unwrap();
        store.insert(new_node("g-2")).await.unwrap();
        let (g1, g2) = (nodes.join("g-1"), nodes.join("g-2"));
        std::fs::create_dir_all(&g1).unwrap();
        std::fs::create_dir_all(&g2).unwrap();
        let net = r#"{"group":0,"slot":1,"address":"169.254.100.2","host_if":"bv0a0001"}"#;
        std::fs::write(g1.join(NODE_NET_FILE), net).unwrap();
        let fw = r#"[{"node":"g-1","node_ip":"169.254.100.2","listen":"127.0.0.1:20001","node_port":80,"proxy_protocol":false,"trusted_proxies":[]}]"#;
        std::fs::write(g1.join(FORWARDS_FILE), fw).unwrap();
        std::fs::write(g1.join("spec.json"), r#"{"cgroup":"c0123456789ab"}"#).unwrap();
        // A node without a network: only its cgroup; a damaged file is left alone.
        std::fs::write(g2.join("spec.json"), r#"{"cgroup":"cba9876543210"}"#).unwrap();
        std::fs::write(g2.join(FORWARDS_FILE), "[{").unwrap();

        assert_eq!(import_node_files(&store, &nodes).await, 2);
        let r1 = store.get("g-1").unwrap();
        assert_eq!(r1.network.as_deref(), Some(net));
        assert_eq!(crate::network::node_net_of(&r1).unwrap().slot, 1);
        assert_eq!(crate::forward::parse_record(&r1.forwards).len(), 1);
        assert_eq!(r1.cgroup.as_deref(), Some("c0123456789ab"));
        assert!(!g1.join(NODE_NET_FILE).exists() && !g1.join(FORWARDS_FILE).exists());
        assert!(g1.join("spec.json").exists(), "the supervisor's file stays");
        let r2 = store.get("g-2").unwrap();
        assert_eq!((r2.network.as_deref(), r2.forwards.as_str()), (None, "[]"));
        assert_eq!(r2.cgroup.as_deref(), Some("cba9876543210"));
        assert!(g2.join(FORWARDS_FILE).exists());

        // Once: a second start finds nothing to import, and what was imported survives.
        assert_eq!(import_node_files(&store, &nodes).await, 0);
        drop(store);
        let store = Store::open(&d.path().join("state.db"), "t").unwrap();
        assert_eq!(
            store.get("g-1").unwrap().cgroup.as_deref(),
            Some("c0123456789ab")
        );
    }
}
