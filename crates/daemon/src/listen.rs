//! The API's listeners and who each one's peers are:
//!
//! | listener | authenticators | bound as |
//! | --- | --- | --- |
//! | `api.bind_address` (admin socket; a one-tenant daemon's only socket), 0600 | socket peer | `global-admin` |
//! | `api.tenant_sockets/<tenant>.sock`, 0600 | socket peer | `tenant-admin@<tenant>` |
//! | `api.tcp` (TLS, or plain on loopback only) | bearer: the configured single token, API tokens, OIDC, workload tokens | per credential |
//! | `api.shim.socket` (#16), 0600 | socket peer, uid 0 only (`crate::shim`) | `shim@<each mapped tenant>` |
//!
//! Every listener serves the same router over the same daemon: what a peer sees follows from
//! its principal's bindings alone (a tenant socket's peer has a role in its tenant only, so it
//! never sees another tenant).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use bulkhead_core::iam::{GLOBAL_ADMIN, TENANT_ADMIN};
use bulkhead_core::DaemonConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::Daemon;
use crate::auth::authn::{Authenticator, BearerToken, Chain, SocketPeer};
use crate::auth::Binding;
use crate::start_error::{io, StartError};
use crate::{serve, tls};
use std::path::Path;

/// A bound listener with its authenticators.
pub enum Bound {
    Unix {
        path: PathBuf,
        listener: tokio::net::UnixListener,
        chain: Chain,
    },
    Tcp {
        listener: tokio::net::TcpListener,
        chain: Chain,
    },
    Tls {
        listener: tls::TlsListener,
        chain: Chain,
    },
    // #15, A: the E2B listener (`config.api.e2b`), its own router (`crate::e2b::listener`)
    E2b(crate::e2b::bind::BoundE2b),
    // #16, B1: the containerd shim's socket (`config.api.shim`), with its namespace mapping
    Shim {
        path: PathBuf,
        listener: tokio::net::UnixListener,
        chain: Chain,
        mapping: crate::shim::Mapping,
    },
}

/// Every UNIX socket the config names: the admin socket, then the tenant sockets.
pub fn sockets(cfg: &DaemonConfig) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = cfg.api.socket.iter().cloned().collect();
    if let Some(dir) = &cfg.api.tenant_sockets {
        v.extend(
            cfg.tenants
                .iter()
                .map(|t| dir.join(format!("{}.sock", t.tenant))),
        );
    }
    v.extend(cfg.api.shim.iter().map(|s| s.socket.clone())); // #16, B1
    v
}

/// Where the API answers, for the ready line.
pub fn describe(cfg: &DaemonConfig) -> String {
    let mut v: Vec<String> = cfg
        .api
        .socket
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    if let Some(d) = &cfg.api.tenant_sockets {
        v.push(format!("{}/<tenant>.sock", d.display()));
    }
    if let Some(t) = &cfg.api.tcp {
        let scheme = if t.tls.is_some() { "https" } else { "http" };
        v.push(format!("{scheme}://{}", t.addr));
    }
    if let Some(e) = &cfg.api.e2b {
        let scheme = if e.tls.is_some() { "https" } else { "http" };
        v.push(format!("E2B {scheme}://{}", e.addr)); // #15, A
    }
    if let Some(s) = &cfg.api.shim {
        v.push(format!("shim {}", s.socket.display())); // #16, B1
    }
    v.join(", ")
}

fn binding(d: &Daemon, role: &str, tenant: Option<&str>) -> Result<Binding, StartError> {
    d.roles.binding(role, tenant).map_err(StartError::Refused)
}

fn bind_unix(path: &PathBuf) -> Result<tokio::net::UnixListener, StartError> {
    let parent = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    // Bound inside a private (0700) directory, made 0600 there, then renamed into place: the
    // socket is never reachable with the process umask's mode, not even for a moment.
    let private = parent.join(format!(".bulkhead-bind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(io(format!("creating {}", private.display())))?;
    }
    let inner = private.join("s");
    let bound = tokio::net::UnixListener::bind(&inner)
        .map_err(io(format!("binding {}", path.display())))
        .and_then(|l| {
            // File permissions are the authentication on a UNIX socket: owner only.
            std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o600))
                .map_err(io(format!("chmod {}", path.display())))?;
            std::fs::rename(&inner, path).map_err(io(format!("placing {}", path.display())))?;
            Ok(l)
        });
    let _ = std::fs::remove_dir_all(&private);
    bound
}

/// The TCP listener's authenticators, in order: the configured single token (global-admin),
/// then the others as their parts are configured.
async fn tcp_chain(cfg: &DaemonConfig, d: &Daemon) -> Result<Chain, StartError> {
    let tcp = cfg.api.tcp.as_ref().expect("called for a TCP listener");
    let mut chain: Vec<Box<dyn Authenticator>> = Vec::new();
    // Today's single-token setup: a one-tenant daemon always has it (made on first start when
    // no file is given), a shared daemon only when api.tcp.token_file names one.
    if tcp.token_file.is_some() || !cfg.shared {
        let token = load_or_make_token(&d.dir, tcp.token_file.as_deref())?;
        chain.push(Box::new(BearerToken {
            token,
            bindings: vec![binding(d, GLOBAL_ADMIN, None)?],
        }));
    }
    // tokens (#11): `bh_…` API tokens, after the single token.
    chain.push(Box::new(crate::auth::tokens::ApiTokens {
        store: d.tokens.store.clone(),
        roles: d.tokens.roles.clone(),
    }));
    // --- OIDC (#11): after the bearer and API tokens, before workload tokens ---
    if let Some(o) = &cfg.oidc {
        let a = crate::auth::oidc::Oidc::start(o, d.roles.clone())
            .await
            .map_err(|e| StartError::Refused(e.to_string()))?;
        chain.push(Box::new(a));
        tracing::info!(issuer = %o.issuer, audience = %o.audience, "OIDC tokens accepted on TCP");
    }
    // --- end OIDC ---
    // workload identity (#11): nodes' tokens, refused unless api_role binds a role.
    if let Some(id) = &d.host.identity {
        let w = crate::auth::workload::WorkloadToken::new(id.clone(), (*d.roles).clone())
            .map_err(StartError::Refused)?;
        chain.push(Box::new(w));
    }
    Ok(Chain(chain))
}

/// The TCP listener's TLS acceptor, when `api.tcp.tls` is configured (files read now).
pub fn tls_acceptor(cfg: &DaemonConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, StartError> {
    let Some(files) = cfg.api.tcp.as_ref().and_then(|t| t.tls.as_ref()) else {
        return Ok(None);
    };
    tls::acceptor(&files.cert, &files.key)
        .map(Some)
        .map_err(|e| StartError::Refused(format!("config.api.tcp.tls: {e}")))
}

/// Binds every listener the config names.
pub async fn bind(
    cfg: &DaemonConfig,
    d: &Arc<Daemon>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<Vec<Bound>, StartError> {
    let mut out = Vec::new();
    if let Some(p) = &cfg.api.socket {
        out.push(Bound::Unix {
            path: p.clone(),
            listener: bind_unix(p)?,
            chain: Chain(vec![Box::new(SocketPeer {
                bindings: vec![binding(d, GLOBAL_ADMIN, None)?],
            })]),
        });
        tracing::info!(socket = %p.display(), "listening (global-admin)");
    }
    if let Some(dir) = &cfg.api.tenant_sockets {
        for t in &cfg.tenants {
            let p = dir.join(format!("{}.sock", t.tenant));
            out.push(Bound::Unix {
                listener: bind_unix(&p)?,
                chain: Chain(vec![Box::new(SocketPeer {
                    bindings: vec![binding(d, TENANT_ADMIN, Some(&t.tenant))?],
                })]),
                path: p.clone(),
            });
            tracing::info!(socket = %p.display(), tenant = %t.tenant, "listening (tenant-admin)");
        }
    }
    if let Some(t) = &cfg.api.tcp {
        let chain = tcp_chain(cfg, d).await?;
        let listener = tokio::net::TcpListener::bind(t.addr)
            .await
            .map_err(io(format!("binding {}", t.addr)))?;
        match tls {
            Some(acceptor) => {
                let listener = tls::TlsListener::new(listener, acceptor)
                    .map_err(io(format!("listening on {}", t.addr)))?;
                tracing::info!(addr = %t.addr, "listening on TCP with TLS");
                out.push(Bound::Tls { listener, chain });
            }
            None => {
                tracing::warn!(addr = %t.addr, "listening on plain TCP (loopback only): bearer credentials cross it unencrypted; configure api.tcp.tls for anything but local use");
                out.push(Bound::Tcp { listener, chain });
            }
        }
    }
    if let Some(e) = crate::e2b::bind::bind(cfg, d).await? {
        out.push(Bound::E2b(e)); // #15, A
    }
    if let Some(s) = &cfg.api.shim {
        // #16, B1
        out.push(Bound::Shim {
            path: s.socket.clone(),
            listener: bind_unix(&s.socket)?,
            chain: crate::shim::chain(d, s)?,
            mapping: crate::shim::Mapping(Arc::new(s.clone())),
        });
        tracing::info!(socket = %s.socket.display(), "listening (containerd shim)");
    }
    if cfg.oidc.is_some() && cfg.api.tcp.is_none() {
        // OIDC (#11): UNIX sockets authenticate by their peer.
        tracing::warn!("config.auth.oidc applies to the TCP listener only, and there is none");
    }
    Ok(out)
}

/// Serves every listener until `stop` turns true; each task ends once its connections have.
pub fn serve_all(
    listeners: Vec<Bound>,
    cfg: &DaemonConfig,
    d: &Arc<Daemon>,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let limits = || serve::Limits {
        header_timeout: cfg.conns.header_timeout,
        max_connections: cfg.conns.max_connections,
        cap_key: "config.api.max_connections",
    };
    let stats = d.host.conn_stats.clone();
    listeners
        .into_iter()
        .map(|b| {
            let mut stop = stop.clone();
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            let (limits, stats) = (limits(), stats.clone());
            match b {
                Bound::Unix {
                    path,
                    listener,
                    chain,
                } => {
                    let router = crate::http::router(d.clone(), chain);
                    // #12, rate: a tenant socket's connections are its tenant's.
                    let limits = crate::rate::socket_limits(cfg, &path, limits);
                    tokio::spawn(async move {
                        serve::serve(listener, router, limits, stats, shutdown).await;
                        let _ = std::fs::remove_file(path);
                    })
                }
                Bound::Tcp { listener, chain } => {
                    use axum::serve::ListenerExt;
                    let router = crate::http::router(d.clone(), chain);
                    // Streamed responses are small writes: no Nagle delay (see the E2B one).
                    let listener = listener.tap_io(|t| {
                        let _ = t.set_nodelay(true);
                    });
                    tokio::spawn(serve::serve(listener, router, limits, stats, shutdown))
                }
                Bound::Tls { listener, chain } => {
                    let router = crate::http::router(d.clone(), chain);
                    tokio::spawn(serve::serve(listener, router, limits, stats, shutdown))
                }
                // #16, B1: the daemon's router, with the namespace mapping for placement
                Bound::Shim {
                    path,
                    listener,
                    chain,
                    mapping,
                } => {
                    let router =
                        crate::http::router(d.clone(), chain).layer(axum::Extension(mapping));
                    tokio::spawn(async move {
                        serve::serve(listener, router, limits, stats, shutdown).await;
                        let _ = std::fs::remove_file(path);
                    })
                }
                // #15, A
                Bound::E2b(e) => {
                    use crate::e2b::bind::E2bListener;
                    let router = crate::e2b::listener::router(d.clone(), e.chain, &e.domain);
                    match e.listener {
                        E2bListener::Tcp(l) => {
                            use axum::serve::ListenerExt;
                            let l = l.tap_io(|t| {
                                let _ = t.set_nodelay(true);
                            });
                            tokio::spawn(serve::serve(l, router, limits, stats, shutdown))
                        }
                        E2bListener::Tls(l) => {
                            tokio::spawn(serve::serve(l, router, limits, stats, shutdown))
                        }
                    }
                }
            }
        })
        .collect()
}

/// Refuses a socket that a live daemon answers on; removes a stale one.
pub fn check_socket(p: &Path) -> Result<(), StartError> {
    if std::os::unix::net::UnixStream::connect(p).is_ok() {
        return Err(StartError::Refused(format!("socket {} is already served by a live daemon: stop it or choose another api.bind_address", p.display())));
    }
    if p.exists() {
        std::fs::remove_file(p).map_err(io(format!("removing stale socket {}", p.display())))?;
    }
    Ok(())
}

fn load_or_make_token(daemon_dir: &Path, file: Option<&Path>) -> Result<String, StartError> {
    let read = |f: &Path| -> Result<String, StartError> {
        let t = std::fs::read_to_string(f)
            .map_err(io(format!("reading token file {}", f.display())))?;
        let t = t.trim().to_string();
        if t.len() < 16 {
            return Err(StartError::Refused(format!(
                "the token in {} is shorter than 16 characters: it is global-admin's, write a long random one (e.g. openssl rand -hex 24)",
                f.display()
            )));
        }
        Ok(t)
    };
    if let Some(f) = file {
        return read(f);
    }
    let p = daemon_dir.join("api-token");
    if p.exists() {
        return read(&p);
    }
    let mut b = [0u8; 24];
    getrandom::fill(&mut b)
        .map_err(|e| StartError::Refused(format!("no randomness for the api token: {e}")))?;
    let t: String = b.iter().map(|x| format!("{x:02x}")).collect();
    // Created 0600 (never readable by others, not even for a moment), and only if absent.
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p)
        .map_err(io(format!("creating {}", p.display())))?;
    f.write_all(t.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io("writing api token"))?;
    Ok(t)
}
