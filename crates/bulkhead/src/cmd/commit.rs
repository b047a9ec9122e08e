//! `bulkhead vm commit NODE` and `bulkhead commit list|delete|fork` (#13, ADR 0030): a node's
//! root filesystem as a tenant-private commit, and nodes started from one.

use anyhow::Context;
use bulkhead_api::client::enc;
use bulkhead_api::commits::CommitInfo;
use bulkhead_api::CreatedNode;
use hyper::Method;
use std::process::ExitCode;

use super::vm::Conn;

#[derive(clap::Subcommand)]
pub enum CommitCmd {
    /// List the commits of the tenants you may see
    List {
        #[command(flatten)]
        conn: Conn,
        /// Only this tenant's (shared daemons)
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete commits (their files are wiped); refused while nodes made from one exist
    Delete {
        #[command(flatten)]
        conn: Conn,
        ids: Vec<String>,
    },
    /// Start a node from a commit (answers like `vm add`: prints the node's name)
    Fork {
        #[command(flatten)]
        conn: Conn,
        id: String,
        /// The host group (default: the commit's node's group)
        #[arg(long)]
        hostgroup: Option<String>,
        #[arg(long)]
        hostname: Option<String>,
        /// key=value (repeatable)
        #[arg(long)]
        tag: Vec<String>,
        /// Return only once the node's agent answers
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        wait: bool,
        #[arg(long, default_value = "5m")]
        timeout: String,
    },
}

/// `bulkhead vm commit NODE`.
pub async fn commit_node(conn: Conn, node: &str) -> anyhow::Result<ExitCode> {
    let c: CommitInfo = conn
        .client()?
        .json(Method::POST, &format!("/vm/{}/commit", enc(node)), None)
        .await?;
    if conn.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        println!("{}", c.id);
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(cmd: CommitCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        CommitCmd::List { conn, tenant } => {
            let q = tenant.map_or_else(String::new, |t| format!("?tenant={}", enc(&t)));
            let list: Vec<CommitInfo> = conn.client()?.get(&format!("/vm/commits{q}")).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<28} {:<14} {:<20} {:<12} CREATED",
                    "ID", "TENANT", "NODE", "SIZE"
                );
                for c in list {
                    println!(
                        "{:<28} {:<14} {:<20} {:<12} {}",
                        c.id,
                        c.tenant,
                        c.node,
                        bulkhead_core::config::quotas::human_bytes(c.size_bytes),
                        c.created_at
                    );
                }
            }
        }
        CommitCmd::Delete { conn, ids } => {
            anyhow::ensure!(!ids.is_empty(), "name the commit(s) to delete");
            let client = conn.client()?;
            for id in ids {
                client
                    .send_ok(
                        Method::DELETE,
                        &format!("/vm/commits/{}", enc(&id)),
                        bulkhead_api::client::full_body(bytes::Bytes::new()),
                        None,
                    )
                    .await
                    .with_context(|| format!("deleting commit {id}"))?;
                println!("deleted {id}");
            }
        }
        CommitCmd::Fork {
            conn,
            id,
            hostgroup,
            hostname,
            tag,
            wait,
            timeout,
        } => {
            let mut body = serde_json::json!({ "tags": tag });
            if let Some(g) = hostgroup {
                body["hostgroup"] = g.into();
            }
            if let Some(h) = hostname {
                body["hostname"] = h.into();
            }
            let q = if wait {
                format!("?wait=agent&timeout={}", enc(&timeout))
            } else {
                String::new()
            };
            let n: CreatedNode = conn
                .client()?
                .json(
                    Method::POST,
                    &format!("/vm/commits/{}/fork{q}", enc(&id)),
                    Some(&body),
                )
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&n)?);
            } else {
                println!("{}", n.hostname);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
