//! `bulkhead identity`: the daemon's workload identity issuer (ADR 0020). `rotate` makes a
//! new signing key (`POST /identity/rotate`, global-admin); the old key stays published until
//! the tokens it signed have expired.

use hyper::Method;
use std::process::ExitCode;

use super::vm::Conn;

#[derive(clap::Subcommand)]
pub enum IdentityCmd {
    /// Make a new signing key for nodes' workload identity tokens (global-admin)
    Rotate {
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(c: IdentityCmd) -> anyhow::Result<ExitCode> {
    match c {
        IdentityCmd::Rotate { conn } => {
            let v: serde_json::Value = conn
                .client()?
                .json(Method::POST, "/identity/rotate", None)
                .await?;
            if conn.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "new signing key {}; the old one stays in /.well-known/jwks.json until its tokens expire",
                    v["kid"].as_str().unwrap_or("?")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
