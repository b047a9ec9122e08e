//! Binding the E2B listener (#15, A): `config.api.e2b`'s address, its TLS files read now, and
//! its authenticators: the sandboxes' access tokens first (an in-sandbox request names its
//! sandbox), then `X-API-KEY`, then bearer API tokens (`bh_…`/`e2b_…` in `Authorization`).

use std::sync::Arc;

use bulkhead_core::DaemonConfig;

use crate::app::Daemon;
use crate::auth::authn::{Authenticator, Chain};
use crate::start_error::{io, StartError};

/// The E2B listener, plain (loopback) or TLS.
pub enum E2bListener {
    Tcp(tokio::net::TcpListener),
    Tls(crate::tls::TlsListener),
}

/// A bound E2B listener: the socket, its authenticators, the domain its sandboxes report.
pub struct BoundE2b {
    pub listener: E2bListener,
    pub chain: Chain,
    pub domain: String,
}

fn api_tokens(d: &Daemon) -> crate::auth::tokens::ApiTokens {
    crate::auth::tokens::ApiTokens {
        store: d.tokens.store.clone(),
        roles: d.tokens.roles.clone(),
    }
}

/// The E2B listener's authenticators.
pub fn chain(d: &Arc<Daemon>) -> Chain {
    let v: Vec<Box<dyn Authenticator>> = vec![
        Box::new(super::access::SandboxAccess { daemon: d.clone() }),
        Box::new(super::access::ApiKey {
            tokens: api_tokens(d),
        }),
        Box::new(api_tokens(d)),
    ];
    Chain(v)
}

/// Binds `config.api.e2b`, if configured.
pub async fn bind(cfg: &DaemonConfig, d: &Arc<Daemon>) -> Result<Option<BoundE2b>, StartError> {
    let Some(e) = &cfg.api.e2b else {
        return Ok(None);
    };
    let tcp = tokio::net::TcpListener::bind(e.addr)
        .await
        .map_err(io(format!("binding config.api.e2b {}", e.addr)))?;
    let listener = match &e.tls {
        Some(files) => {
            let acceptor = crate::tls::acceptor(&files.cert, &files.key)
                .map_err(|err| StartError::Refused(format!("config.api.e2b.tls: {err}")))?;
            let l = crate::tls::TlsListener::new(tcp, acceptor)
                .map_err(io(format!("listening on {}", e.addr)))?;
            tracing::info!(addr = %e.addr, domain = %e.domain, "E2B API listening with TLS");
            E2bListener::Tls(l)
        }
        None => {
            tracing::warn!(addr = %e.addr, "E2B API on plain HTTP (loopback only): API keys and access tokens cross it unencrypted; configure api.e2b.tls for anything but local use");
            E2bListener::Tcp(tcp)
        }
    };
    Ok(Some(BoundE2b {
        listener,
        chain: chain(d),
        domain: e.domain.clone(),
    }))
}
