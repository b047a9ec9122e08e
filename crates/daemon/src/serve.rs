//! Serving the API on a listener with bounds a hostile client cannot stretch.
//!
//! - **Header timeout** (`config.api.header_timeout`): hyper's own `header_read_timeout`. Its
//!   clock starts when the connection is ready for a request (just accepted, or the previous
//!   response fully sent) and stops when a request head is complete. A client that sent part
//!   of a head (slowloris) gets a 408 and is closed; a connection idle between requests is
//!   closed silently (HTTP allows the server to close an idle keep-alive connection, and a 408
//!   there could race a request the client just sent). A request in progress (its body being
//!   read, or its response streaming, however long a command stays silent) is never on this
//!   clock: it is not idle.
//! - **Connection cap** (`config.api.max_connections`): a connection beyond it is accepted,
//!   answered `503 too_many_connections` without reading its request, and closed, so a client
//!   learns why instead of hanging in the listen backlog. Writing those answers is itself
//!   bounded: at most [`REJECTERS`] at a time, each for at most [`REJECT_LINGER`]; beyond that
//!   a connection is closed unanswered.
//! - **Memory**: hyper's per-connection buffer is capped at [`MAX_BUF`] (request heads larger
//!   than that are refused by hyper with 431), so memory is bounded by the cap times that.
//!
//! - **Peer**: every request carries the connection's [`Peer`] (kernel-reported credentials of
//!   a UNIX peer, the address of a TCP one) in its extensions, for authentication.
//!
//! On shutdown the listener stops accepting, every connection is told to finish its request
//! in progress and close, and serving returns once all have.

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};

use crate::auth::authn::Peer;
use crate::error::ApiError;

/// hyper's read and write buffer limit per connection (its minimum is 8 KiB).
pub const MAX_BUF: usize = 64 * 1024;
/// Connections being answered 503 at once.
pub const REJECTERS: usize = 64;
/// How long a 503 answer may take to write, and how long the rejected connection's request is
/// then drained so that closing it does not reset the connection before the client reads.
pub const REJECT_LINGER: Duration = Duration::from_secs(1);
/// How long a 408 answer may take to write.
const WRITE_408: Duration = Duration::from_secs(1);

/// What the API listener has done, for `/metrics`.
#[derive(Default)]
pub struct ConnStats {
    pub open: AtomicU64,
    pub rejected: AtomicU64,
    /// Closed with a 408: part of a request head, then not the rest in time.
    pub header_timeouts: AtomicU64,
    /// Closed silently: no request began in time.
    pub idle_closed: AtomicU64,
}

pub struct Limits {
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// The config key that sets `max_connections`, named in the 503 (#12: a tenant socket's
    /// is `config.rate_limits.max_connections`).
    pub cap_key: &'static str,
}

/// Serves `router` on `listener` until `shutdown` completes, then drains connections.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    limits: Limits,
    stats: Arc<ConnStats>,
    shutdown: impl Future<Output = ()>,
) where
    L: axum::serve::Listener,
    L::Io: AsyncRead + AsyncWrite + PeerOf + Unpin + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let rejecters = Arc::new(Semaphore::new(REJECTERS));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        // axum's accept retries errors itself (EMFILE included), pausing between tries.
        let io = tokio::select! {
            (io, _) = listener.accept() => io,
            _ = &mut shutdown => break,
        };
        match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                let (router, stop, stats) = (router.clone(), stop_rx.clone(), stats.clone());
                let t = limits.header_timeout;
                tokio::spawn(async move {
                    stats.open.fetch_add(1, Ordering::Relaxed);
                    let peer = io.peer();
                    serve_connection(io, peer, router, t, stop, &stats).await;
                    stats.open.fetch_sub(1, Ordering::Relaxed);
                    drop(slot);
                });
            }
            Err(_) => {
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                if let Ok(r) = rejecters.clone().try_acquire_owned() {
                    let key = limits.cap_key;
                    tokio::spawn(async move {
                        reject(io, key).await;
                        drop(r);
                    });
                }
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = slots.acquire_many(limits.max_connections as u32).await;
}

/// Answers 503 and closes, reading (and discarding) what the client sent meanwhile, briefly,
/// so that the close does not turn into a reset that loses the answer.
async fn reject<I: AsyncRead + AsyncWrite + Unpin>(mut io: I, key: &str) {
    let answer = ApiError::too_many_connections(key).raw_response();
    let _ = tokio::time::timeout(REJECT_LINGER, async {
        io.write_all(&answer).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024;
        while left > 0 {
            match io.read(&mut sink).await? {
                0 => break,
                n => left -= n.min(left),
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// The kernel's word on who is at the other end of a connection.
pub trait PeerOf {
    fn peer(&self) -> Peer;
}

impl PeerOf for tokio::net::UnixStream {
    fn peer(&self) -> Peer {
        // A peer whose credentials cannot be read (never on Linux) is nobody, not root.
        match self.peer_cred() {
            Ok(c) => Peer::Unix {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid().unwrap_or(0),
            },
            Err(_) => Peer::Unix {
                uid: u32::MAX,
                gid: u32::MAX,
                pid: 0,
            },
        }
    }
}

impl PeerOf for tokio::net::TcpStream {
    fn peer(&self) -> Peer {
        Peer::Tcp {
            addr: self
                .peer_addr()
                .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
        }
    }
}

async fn serve_connection<I>(
    io: I,
    peer: Peer,
    router: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    stats: &ConnStats,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tower = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        req.extensions_mut().insert(peer.clone());
        Box::pin(hyper::service::Service::call(&tower, req))
    });
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_BUF)
        .serve_connection(TokioIo::new(io), service)
        // WebSockets (`shell`, `forward`): an upgraded connection leaves this function and
        // lives on in its handler's task, bounded by that handler's own limits.
        .with_upgrades();
    let mut stopping = *stop.borrow();
    if stopping {
        std::pin::Pin::new(&mut conn).graceful_shutdown();
    }
    // A header timeout ends the connection with an error, without shutting the socket down,
    // so that it can still be answered on it.
    let result = loop {
        tokio::select! {
            r = &mut conn => break r,
            _ = stop.changed(), if !stopping => {
                stopping = true;
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    let timed_out = matches!(&result, Err(e) if e.is_timeout());
    if let Err(e) = &result {
        tracing::debug!(error = %e, "API connection ended");
    }
    let Some(parts) = conn.into_parts() else {
        return; // upgraded: the socket belongs to the WebSocket's handler now
    };
    let mut io = parts.io.into_inner();
    if timed_out && parts.read_buf.is_empty() {
        stats.idle_closed.fetch_add(1, Ordering::Relaxed);
    } else if timed_out {
        stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
        let answer = ApiError::header_timeout().raw_response();
        let _ = tokio::time::timeout(WRITE_408, io.write_all(&answer)).await;
    }
    let _ = tokio::time::timeout(WRITE_408, io.shutdown()).await;
}
