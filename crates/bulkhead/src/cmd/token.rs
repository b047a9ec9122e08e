//! `bulkhead token create | list | revoke`: API tokens (ADR 0022), through a running daemon
//! like `bulkhead vm` (the same `--socket`/`--url`/`--token`/`--json` flags). The secret is
//! printed once, by `create`, to stdout alone, so `$(bulkhead token create ...)` captures it.

use bulkhead_api::tokens::{CreateTokenRequest, TokenInfo};
use std::process::ExitCode;

use super::vm::Conn;

#[derive(clap::Subcommand)]
pub enum TokenCmd {
    /// Make a token; prints its secret (bh_…, or e2b_… with --e2b) once
    Create {
        #[command(flatten)]
        conn: Conn,
        /// The tenant it acts in (omit only with --role global-admin)
        #[arg(long)]
        tenant: Option<String>,
        /// global-admin, tenant-admin, developer, viewer, or a role of config.roles
        #[arg(long)]
        role: String,
        /// How long it is valid: a Go duration, 1s to 8760h
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// A label for people (`ci`); with --e2b it defaults to `e2b`
        #[arg(long, required_unless_present = "e2b")]
        name: Option<String>,
        /// #15: print it in E2B's API key form (e2b_<hex>), for E2B_API_KEY
        #[arg(long)]
        e2b: bool,
    },
    /// List the tokens you may see (never their secrets)
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a token by id: the next request with it is refused
    Revoke {
        #[command(flatten)]
        conn: Conn,
        id: String,
    },
}

fn state_column(t: &TokenInfo) -> String {
    match t.state.as_str() {
        "active" => format!("expires {}", t.expires_at),
        "expired" => format!("expired {}", t.expires_at),
        _ => format!("revoked {}", t.revoked_at.as_deref().unwrap_or("")),
    }
}

pub async fn run(c: TokenCmd) -> anyhow::Result<ExitCode> {
    match c {
        TokenCmd::Create {
            conn,
            tenant,
            role,
            ttl,
            name,
            e2b,
        } => {
            let t = conn
                .client()?
                .create_token(&CreateTokenRequest {
                    name: name.unwrap_or_else(|| "e2b".into()),
                    tenant,
                    role,
                    ttl: Some(ttl),
                    e2b,
                })
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!("{}", t.token);
            }
            eprintln!(
                "bulkhead: token {} ({} in {}, expires {}): the secret is shown only now; store it safely",
                t.id,
                t.role,
                t.tenant.as_deref().unwrap_or("every tenant"),
                t.expires_at
            );
        }
        TokenCmd::List { conn } => {
            let ts = conn.client()?.list_tokens().await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&ts)?);
            } else {
                println!(
                    "{:<26}  {:<16} {:<16} {:<14} STATE",
                    "ID", "NAME", "TENANT", "ROLE"
                );
                for t in &ts {
                    println!(
                        "{:<26}  {:<16} {:<16} {:<14} {}",
                        t.id,
                        t.name,
                        t.tenant.as_deref().unwrap_or("*"),
                        t.role,
                        state_column(t)
                    );
                }
            }
        }
        TokenCmd::Revoke { conn, id } => {
            conn.client()?.revoke_token(&id).await?;
            if conn.json {
                println!("{}", serde_json::json!({ "id": id, "revoked": true }));
            } else {
                println!("revoked {id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
