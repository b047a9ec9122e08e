//! `bulkhead vm describe|tags|shutdown|relaunch|suspend|restore`: a node's description, its
//! tags, and its power operations (ADR 0018). One request each.

use anyhow::bail;
use bulkhead_api::client::{enc, full_body};
use bulkhead_api::{CreatedNode, NodeDescription, NodeTags, TagUpdate};
use http_body_util::BodyExt;
use hyper::Method;

use super::conn::Conn;

#[derive(clap::Subcommand)]
pub enum LifecycleCmd {
    /// Describe a node: its settings, image, state and network policy
    Describe {
        #[command(flatten)]
        conn: Conn,
        node: String,
    },
    /// Show a node's tags, or change them (--add/--remove, or --replace)
    Tags {
        #[command(flatten)]
        conn: Conn,
        node: String,
        /// Tag to add (repeatable)
        #[arg(long)]
        add: Vec<String>,
        /// Tag to remove (repeatable)
        #[arg(long)]
        remove: Vec<String>,
        /// Replace all tags with these (repeatable; `--replace ''` clears them)
        #[arg(long)]
        replace: Vec<String>,
    },
    /// Stop a node; it keeps its name and address, and `relaunch` starts it again
    Shutdown {
        #[command(flatten)]
        conn: Conn,
        node: String,
    },
    /// Start a stopped or suspended node again
    Relaunch {
        #[command(flatten)]
        conn: Conn,
        node: String,
        /// Return only once the node's agent answers
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        wait: bool,
    },
    /// Write a microVM node's memory to disk and stop it (jail nodes: use pause)
    Suspend {
        #[command(flatten)]
        conn: Conn,
        node: String,
    },
    /// Bring a suspended node back from disk
    Restore {
        #[command(flatten)]
        conn: Conn,
        node: String,
        /// Return only once the node's agent answers
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        wait: bool,
    },
}

/// A POST answered with text: prints it.
async fn post_text(conn: &Conn, path: &str) -> anyhow::Result<()> {
    let resp = conn
        .client()?
        .send_ok(Method::POST, path, full_body(bytes::Bytes::new()), None)
        .await?;
    let b = resp.into_body().collect().await?.to_bytes();
    print!("{}", String::from_utf8_lossy(&b));
    Ok(())
}

pub async fn run(c: LifecycleCmd) -> anyhow::Result<()> {
    match c {
        LifecycleCmd::Describe { conn, node } => {
            let d: NodeDescription = conn.client()?.get(&format!("/vm/{}", enc(&node))).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                let n = &d.node;
                println!("hostname:  {}", n.hostname);
                println!("hostgroup: {}", n.hostgroup);
                println!("state:     {}", d.state);
                println!("driver:    {} (image {:?})", d.driver, d.image);
                println!("ip:        {}", n.ip);
                println!("cpus:      {}", n.cpus);
                println!("ram_mb:    {}", n.ram_bytes >> 20);
                println!("created:   {}", n.created_at);
                if let Some(at) = &n.expires_at {
                    println!("expires:   {at}"); // #15, B: node TTL
                }
                println!("tags:      {}", n.tags.join(","));
                let net = &d.network;
                println!(
                    "network:   {} (policy from {})",
                    net.mode, net.policy_source
                );
                println!("  allow:   {}", net.effective.allow.join(","));
                println!("  drop:    {}", net.effective.drop.join(","));
            }
        }
        LifecycleCmd::Tags {
            conn,
            node,
            add,
            remove,
            replace,
        } => {
            let path = format!("/vm/{}/tags", enc(&node));
            let client = conn.client()?;
            let t: NodeTags = if add.is_empty() && remove.is_empty() && replace.is_empty() {
                client.get(&path).await?
            } else {
                if !replace.is_empty() && (!add.is_empty() || !remove.is_empty()) {
                    bail!("give --replace alone, or --add and --remove");
                }
                let update = TagUpdate {
                    add,
                    remove,
                    replace: (!replace.is_empty())
                        .then(|| replace.into_iter().filter(|t| !t.is_empty()).collect()),
                };
                client
                    .json(Method::PATCH, &path, Some(&serde_json::to_value(&update)?))
                    .await?
            };
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                for tag in t.tags {
                    println!("{tag}");
                }
            }
        }
        LifecycleCmd::Shutdown { conn, node } => {
            post_text(
                &conn,
                &format!("/vm/{}/shutdown?action=shutdown", enc(&node)),
            )
            .await?
        }
        LifecycleCmd::Relaunch { conn, node, wait } => {
            let q = if wait { "?wait=agent" } else { "" };
            let n: CreatedNode = conn
                .client()?
                .json(
                    Method::POST,
                    &format!("/vm/{}/relaunch{q}", enc(&node)),
                    None,
                )
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&n)?);
            } else {
                println!("{} Running", n.hostname);
            }
        }
        LifecycleCmd::Suspend { conn, node } => {
            post_text(&conn, &format!("/vm/{}/suspend", enc(&node))).await?
        }
        LifecycleCmd::Restore { conn, node, wait } => {
            let q = if wait { "?wait=agent" } else { "" };
            post_text(&conn, &format!("/vm/{}/restore{q}", enc(&node))).await?
        }
    }
    Ok(())
}
