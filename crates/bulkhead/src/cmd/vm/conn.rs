//! How `bulkhead vm` verbs reach the daemon: the connection flags every verb takes (a UNIX
//! socket, or a URL with a bearer token and, for https, the CA file to trust).

use anyhow::bail;
use bulkhead_api::{Client, Endpoint};
use std::path::PathBuf;

#[derive(clap::Args, Clone)]
pub struct Conn {
    /// The tenant's API socket
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// API address: unix:///path, https://host:port, or http://127.0.0.1:port (plain HTTP:
    /// loopback only)
    #[arg(long, env = "BULKHEAD_URL", global = true, hide_env_values = true)]
    url: Option<String>,
    /// Bearer token for TCP endpoints (never sent over plain HTTP to a non-loopback address)
    #[arg(long, env = "BULKHEAD_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// PEM file with the daemon's certificate or its CA, for https:// URLs: then only the
    /// certificates in it are trusted (without it: the system's CA certificates)
    #[arg(
        long,
        env = "BULKHEAD_CACERT",
        global = true,
        value_name = "FILE",
        hide_env_values = true
    )]
    cacert: Option<PathBuf>,
    /// Print JSON instead of tables
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl Conn {
    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let ep = match (&self.socket, &self.url) {
            (Some(s), _) => Endpoint::Unix(s.clone()),
            (None, Some(u)) => {
                Endpoint::parse(u, self.token.clone())?.with_cacert(self.cacert.clone())?
            }
            (None, None) => bail!("say where the daemon is: --socket PATH or BULKHEAD_URL=unix:///run/bulkhead/TENANT.sock"),
        };
        Ok(Client::new(ep))
    }
}
