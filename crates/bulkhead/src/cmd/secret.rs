//! `bulkhead secret create | list | update | delete` (#13): the tenant's secrets through a
//! running daemon (Slicer's `/secrets`), with the `--socket`/`--url`/`--token`/`--json` flags
//! of `bulkhead vm`. A secret's content comes from a file (`--from-file`) or stdin, never
//! from an argument (arguments are visible to every user of the host in /proc).

use anyhow::{bail, Context};
use base64::Engine;
use bulkhead_api::secrets::Secret;
use hyper::Method;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use super::vm::Conn;

#[derive(clap::Args, Clone)]
pub struct Content {
    /// Read the content from this file (create: else from stdin)
    #[arg(long, value_name = "FILE")]
    from_file: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
pub struct Meta {
    /// File mode in the node, octal (default for a new secret: 0600)
    #[arg(long)]
    permissions: Option<String>,
    /// Owner in the node (default 0)
    #[arg(long)]
    uid: Option<u32>,
    /// Group in the node (default 0)
    #[arg(long)]
    gid: Option<u32>,
}

#[derive(clap::Subcommand)]
pub enum SecretCmd {
    /// Store a new secret; its content from --from-file or stdin
    Create {
        #[command(flatten)]
        conn: Conn,
        name: String,
        #[command(flatten)]
        content: Content,
        #[command(flatten)]
        meta: Meta,
        /// The tenant, when you may act in several
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the tenant's secrets (names and metadata, never content)
    List {
        #[command(flatten)]
        conn: Conn,
        /// The tenant, when you may act in several
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Change a secret: new content (--from-file, or --stdin), owner or mode. Running nodes
    /// keep what they were given; a node started later gets the new content
    Update {
        #[command(flatten)]
        conn: Conn,
        name: String,
        #[command(flatten)]
        content: Content,
        /// Read new content from stdin
        #[arg(long, conflicts_with = "from_file")]
        stdin: bool,
        #[command(flatten)]
        meta: Meta,
        /// The tenant, when you may act in several
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete a secret (nodes that have it keep their copy until they stop)
    Delete {
        #[command(flatten)]
        conn: Conn,
        name: String,
        /// The tenant, when you may act in several
        #[arg(long)]
        tenant: Option<String>,
    },
}

fn read_content(c: &Content) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    match &c.from_file {
        Some(p) => {
            buf = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        }
        None => {
            // SAFETY: isatty on fd 0 only reads its state.
            if unsafe { libc::isatty(0) } == 1 {
                eprintln!("bulkhead: reading the secret from stdin (end it with Ctrl-D)");
            }
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("reading the secret from stdin")?;
        }
    }
    let out = base64::engine::general_purpose::STANDARD.encode(&buf);
    buf.iter_mut().for_each(|b| *b = 0);
    Ok(out)
}

fn path(base: &str, tenant: &Option<String>) -> String {
    match tenant {
        Some(t) => format!("{base}?tenant={}", bulkhead_api::client::enc(t)),
        None => base.to_string(),
    }
}

fn meta_fields(m: &Meta, body: &mut serde_json::Map<String, serde_json::Value>) {
    if let Some(p) = &m.permissions {
        body.insert("permissions".into(), p.clone().into());
    }
    if let Some(u) = m.uid {
        body.insert("uid".into(), u.into());
    }
    if let Some(g) = m.gid {
        body.insert("gid".into(), g.into());
    }
}

pub async fn run(c: SecretCmd) -> anyhow::Result<ExitCode> {
    match c {
        SecretCmd::Create {
            conn,
            name,
            content,
            meta,
            tenant,
        } => {
            let mut body = serde_json::Map::new();
            body.insert("name".into(), name.clone().into());
            body.insert("data".into(), read_content(&content)?.into());
            meta_fields(&meta, &mut body);
            let _: serde_json::Value = conn
                .client()?
                .json(Method::POST, &path("/secrets", &tenant), Some(&body.into()))
                .await?;
            println!("created secret {name}");
        }
        SecretCmd::List { conn, tenant } => {
            let list: Vec<Secret> = conn.client()?.get(&path("/secrets", &tenant)).await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<32} {:>8} {:<5} {:>6} {:>6} MODIFIED",
                    "NAME", "SIZE", "MODE", "UID", "GID"
                );
                for s in &list {
                    println!(
                        "{:<32} {:>8} {:<5} {:>6} {:>6} {}",
                        s.name, s.size, s.permissions, s.uid, s.gid, s.modified_at
                    );
                }
            }
        }
        SecretCmd::Update {
            conn,
            name,
            content,
            stdin,
            meta,
            tenant,
        } => {
            let mut body = serde_json::Map::new();
            if content.from_file.is_some() || stdin {
                body.insert("data".into(), read_content(&content)?.into());
            }
            meta_fields(&meta, &mut body);
            if body.is_empty() {
                bail!("nothing to change: give --from-file FILE, --stdin, --permissions, --uid or --gid");
            }
            let s: Secret = conn
                .client()?
                .json(
                    Method::PATCH,
                    &path(
                        &format!("/secrets/{}", bulkhead_api::client::enc(&name)),
                        &tenant,
                    ),
                    Some(&body.into()),
                )
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("updated secret {name}");
            }
        }
        SecretCmd::Delete { conn, name, tenant } => {
            let _: serde_json::Value = conn
                .client()?
                .json(
                    Method::DELETE,
                    &path(
                        &format!("/secrets/{}", bulkhead_api::client::enc(&name)),
                        &tenant,
                    ),
                    None,
                )
                .await?;
            println!("deleted secret {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
