//! The store against real SQLite files: migrations from the schema before versioning
//! (`migrations.rs`), reads from the index against what SQLite holds and paging while nodes
//! come and go (`reads.rs`), and writes: tenants, concurrent writers, failing jobs
//! (`writes.rs`).

mod migrations;
mod reads;
mod writes;

use crate::*;

fn new_node(name: &str, group: &str, created_at: &str) -> NewNode {
    NewNode {
        name: name.into(),
        hostgroup: group.into(),
        status: NodeState::Creating,
        ip: String::new(),
        cpus: 1,
        ram_bytes: 1 << 29,
        tags: vec!["a=b".into()],
        persistent: false,
        created_at: created_at.into(),
        network: None,
        userdata: None,
        storage_bytes: None,
        spec: None,
    }
}
