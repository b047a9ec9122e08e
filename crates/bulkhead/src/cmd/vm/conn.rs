//! How `bulkhead vm` verbs reach the daemon: the connection flags every verb takes.

use anyhow::bail;
use bulkhead_api::{Client, Endpoint};
use std::path::PathBuf;

#[derive(clap::Args, Clone)]
pub struct Conn {
    /// The tenant's API socket
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// API address: unix:///path or http://host:port
    #[arg(long, env = "BULKHEAD_URL", global = true, hide_env_values = true)]
    url: Option<String>,
    /// Bearer token for TCP endpoints
    #[arg(long, env = "BULKHEAD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Conn {
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let ep = match (&self.socket, &self.url) {
            (Some(s), _) => Endpoint::Unix(s.clone()),
            (None, Some(u)) => Endpoint::parse(u, self.token.clone())?,
            (None, None) => bail!("say where the daemon is: --socket PATH or BULKHEAD_URL=unix:///run/bulkhead/TENANT.sock"),
        };
        Ok(Client::new(ep))
    }
}
