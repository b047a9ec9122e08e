//! Port forwards: the only way into a node from outside. The daemon listens on a host port
//! and relays each connection to one port of one node (from the host's side of the node's
//! veth, so the node sees its gateway as the peer and the tenant's rules let the replies
//! through as `established`).
//!
//! A forward may accept a PROXY protocol v2 header, but only from peers inside its
//! `trusted_proxies`: from them the header is parsed and removed, and the original client
//! address is recorded as information (logs, `last_client`). From anyone else the same
//! bytes are relayed to the node as ordinary data. Nothing is ever authorized by the address
//! inside a header; only the connection's real peer is checked, and only against the list.
//!
//! Each forward relays at most `config.forward_max_connections` connections at once (so a
//! flood through one port leaves a node's other forwards alone), and all of the tenant's forwards at most [`MAX_TENANT_CONNECTIONS`]; a connection
//! beyond either is accepted and closed at once (these are arbitrary TCP protocols: there is no
//! error message to send), so a flood costs the daemon no descriptors. Relays belong to their forward: closing
//! it (the node's delete) ends every connection it relays, so none outlives its node (a dead
//! microVM sends no FIN). A trusted upstream has
//! `config.forward_proxy_timeout` to send its header. The relay's buffers are fixed (8 KiB each
//! way, the PROXY header at most 2 KiB), so memory per connection is bounded. Relayed
//! connections have no idle timeout: long-lived quiet protocols (ssh, databases) are the point
//! of a forward; the cap is what bounds them.
//!
//! Forwards are recorded with the node in the store, reopened when a daemon re-adopts the
//! node, and closed when the node is deleted.

use bulkhead_api::{Forward, ForwardRequest};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Connections all of a tenant's forwards relay at a time, so that a flood through many
/// forwards (or many nodes) cannot exhaust the daemon's descriptors and stall its API.
pub const MAX_TENANT_CONNECTIONS: usize = 2048;

use bulkhead_core::{Code, DomainError};

/// The file in a node's directory that recorded its forwards before the store did; read once
/// at start to import nodes created by an older release (`upgrade.rs`).
pub const FORWARDS_FILE: &str = "forwards.json";
/// Per node; each forward is a listening socket and a task.
pub const MAX_PER_NODE: usize = 16;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The PROXY protocol v2 signature.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// What the first bytes of a connection are.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// Not a PROXY v2 header: relay everything as data.
    NotProxy,
    /// Could still be one: read more.
    Incomplete,
    /// A header of `len` bytes; `client` is the original source (None for LOCAL or
    /// address families other than TCP over IPv4/IPv6).
    Proxy {
        len: usize,
        client: Option<SocketAddr>,
    },
    /// The signature, then something that is not a valid v2 header.
    Invalid(&'static str),
}

/// Parses a PROXY protocol v2 header at the start of `buf`.
pub fn parse_v2(buf: &[u8]) -> Header {
    let n = buf.len().min(SIGNATURE.len());
    if buf[..n] != SIGNATURE[..n] {
        return Header::NotProxy;
    }
    if buf.len() < 16 {
        return Header::Incomplete;
    }
    let (ver_cmd, fam) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Header::Invalid("version is not 2");
    }
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if len > 2048 {
        return Header::Invalid("header longer than 2048 bytes");
    }
    if buf.len() < 16 + len {
        return Header::Incomplete;
    }
    let body = &buf[16..16 + len];
    let client = match (ver_cmd & 0x0f, fam) {
        (0, _) => None, // LOCAL: the upstream's own connection (health checks)
        (1, 0x11) if len >= 12 => Some(SocketAddr::new(
            IpAddr::from([body[0], body[1], body[2], body[3]]),
            u16::from_be_bytes([body[8], body[9]]),
        )),
        (1, 0x21) if len >= 36 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&body[..16]);
            Some(SocketAddr::new(
                IpAddr::from(a),
                u16::from_be_bytes([body[32], body[33]]),
            ))
        }
        (1, 0x11 | 0x21) => return Header::Invalid("address block too short"),
        (1, _) => None,
        _ => return Header::Invalid("unknown command"),
    };
    Header::Proxy {
        len: 16 + len,
        client,
    }
}

/// A forward as recorded with the node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardSpec {
    pub node: String,
    pub node_ip: Ipv4Addr,
    pub listen: SocketAddr,
    pub node_port: u16,
    pub proxy_protocol: bool,
    pub trusted_proxies: Vec<IpNet>,
}

#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    /// Connections closed at once because the forward or tenant relayed its maximum already.
    refused: AtomicU64,
    last_peer: Mutex<Option<String>>,
    last_client: Mutex<Option<String>>,
}

struct Open {
    spec: ForwardSpec,
    stats: Arc<Stats>,
    task: tokio::task::JoinHandle<()>,
}

/// The tenant's open forwards, by node.
pub struct Forwards {
    open: Mutex<HashMap<String, Vec<Open>>>,
    /// The tenant-wide connection budget ([`MAX_TENANT_CONNECTIONS`]).
    budget: Arc<Semaphore>,
    max_connections: usize,
    proxy_timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Forwards {
    /// `max_connections` relayed at once per forward; `proxy_timeout` for a PROXY v2 header.
    pub fn new(max_connections: usize, proxy_timeout: Duration) -> Self {
        Forwards {
            open: Default::default(),
            budget: Arc::new(Semaphore::new(MAX_TENANT_CONNECTIONS)),
            max_connections,
            proxy_timeout,
        }
    }

    /// A connection of the tenant's budget ([`MAX_TENANT_CONNECTIONS`]), which the `forward`
    /// WebSocket's tunnels (`http/ws_forward.rs`) share with the forwards; `None` when spent.
    pub fn tenant_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.budget.clone().try_acquire_owned().ok()
    }

    /// Validates a request for `node` (whose address is `node_ip`) into a spec.
    pub fn validate(
        node: &str,
        node_ip: Ipv4Addr,
        r: &ForwardRequest,
    ) -> Result<ForwardSpec, DomainError> {
        if r.node_port == 0 {
            return Err(DomainError::invalid(
                "node_port must be between 1 and 65535",
            ));
        }
        let bind: IpAddr = match &r.bind {
            None => Ipv4Addr::LOCALHOST.into(),
            Some(b) => b.parse().map_err(|_| {
                DomainError::invalid(format!(
                    "bind {b:?} is not an IP address, e.g. 127.0.0.1 or 0.0.0.0"
                ))
            })?,
        };
        if !r.proxy_protocol && !r.trusted_proxies.is_empty() {
            return Err(DomainError::invalid(
                "trusted_proxies only applies with proxy_protocol: true",
            ));
        }
        if r.proxy_protocol && r.trusted_proxies.is_empty() {
            return Err(DomainError::invalid(
                "proxy_protocol: true needs trusted_proxies (the CIDRs of your load balancers); a PROXY header from anyone else is relayed as data",
            ));
        }
        if r.trusted_proxies.len() > 64 {
            return Err(DomainError::invalid("at most 64 trusted_proxies"));
        }
        let trusted = r
            .trusted_proxies
            .iter()
            .map(|c| {
                c.parse::<IpNet>()
                    .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        DomainError::invalid(format!(
                            "trusted_proxies: {c:?} is not a CIDR or address"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(ForwardSpec {
            node: node.to_string(),
            node_ip,
            listen: SocketAddr::new(bind, r.host_port),
            node_port: r.node_port,
            proxy_protocol: r.proxy_protocol,
            trusted_proxies: trusted,
        })
    }

    /// Opens the forward: binds its host port and starts relaying.
    pub async fn open(&self, mut spec: ForwardSpec) -> Result<Forward, DomainError> {
        if lock(&self.open).get(&spec.node).map_or(0, Vec::len) >= MAX_PER_NODE {
            return Err(DomainError::new(
                Code::TooManyForwards,
                format!(
                    "node {:?} has {MAX_PER_NODE} forwards already: remove one first",
                    spec.node
                ),
            ));
        }
        let l = TcpListener::bind(spec.listen).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => DomainError::new(Code::PortInUse,
                format!("{} is already in use on the host: pick another host_port", spec.listen),
            ),
            std::io::ErrorKind::AddrNotAvailable => DomainError::invalid(format!(
                "{} is not an address of this host: use bind 127.0.0.1, 0.0.0.0 or one of the host's addresses",
                spec.listen.ip()
            )),
            std::io::ErrorKind::PermissionDenied => DomainError::invalid(format!(
                "binding {} was refused: {e}", spec.listen
            )),
            _ => DomainError::internal(format!("binding {}: {e}", spec.listen)),
        })?;
        if let Ok(a) = l.local_addr() {
            spec.listen = a;
        }
        let stats = Arc::new(Stats::default());
        let slots = Arc::new(Semaphore::new(self.max_connections));
        let task = tokio::spawn(serve(
            l,
            spec.clone(),
            stats.clone(),
            (slots, self.budget.clone()),
            self.proxy_timeout,
        ));
        let open = Open { spec, stats, task };
        let info = describe(&open);
        lock(&self.open)
            .entry(open.spec.node.clone())
            .or_default()
            .push(open);
        Ok(info)
    }

    pub fn list(&self, node: &crate::tenant::node_ref::NodeRef) -> Vec<Forward> {
        let node = node.name();
        lock(&self.open)
            .get(node)
            .map(|v| v.iter().map(describe).collect())
            .unwrap_or_default()
    }

    pub fn specs(&self, node: &str) -> Vec<ForwardSpec> {
        lock(&self.open)
            .get(node)
            .map(|v| v.iter().map(|o| o.spec.clone()).collect())
            .unwrap_or_default()
    }

    /// Closes the node's forward on `host_port`; false when there is none.
    pub fn close(&self, node: &str, host_port: u16) -> bool {
        let mut open = lock(&self.open);
        let Some(v) = open.get_mut(node) else {
            return false;
        };
        let before = v.len();
        v.retain(|o| {
            let hit = o.spec.listen.port() == host_port;
            if hit {
                o.task.abort();
            }
            !hit
        });
        before != v.len()
    }

    /// Closes every forward of the node (it is being deleted).
    pub fn close_node(&self, node: &str) {
        for o in lock(&self.open).remove(node).unwrap_or_default() {
            o.task.abort();
        }
    }

    /// The node's open forwards as their record (a JSON array).
    pub fn record(&self, node: &str) -> String {
        serde_json::to_string(&self.specs(node)).unwrap_or_else(|_| "[]".into())
    }
}

/// The forwards recorded for a node, for re-adoption.
pub fn parse_record(record: &str) -> Vec<ForwardSpec> {
    serde_json::from_str(record).unwrap_or_default()
}

fn describe(o: &Open) -> Forward {
    Forward {
        node: o.spec.node.clone(),
        listen: o.spec.listen.to_string(),
        node_port: o.spec.node_port,
        proxy_protocol: o.spec.proxy_protocol,
        trusted_proxies: o
            .spec
            .trusted_proxies
            .iter()
            .map(|c| c.to_string())
            .collect(),
        connections: o.stats.connections.load(Ordering::Relaxed),
        last_peer: lock(&o.stats.last_peer).clone(),
        last_client: lock(&o.stats.last_client).clone(),
    }
}

/// Accepts and relays. Each connection takes a permit of its forward and one of the tenant's
/// budget; without both it is closed at once, so a flood costs the daemon no descriptors. The
/// relays
/// live in a set owned by this task: closing the forward (which aborts the task) ends every
/// connection it relays.
async fn serve(
    l: TcpListener,
    spec: ForwardSpec,
    stats: Arc<Stats>,
    (own, tenant): (Arc<Semaphore>, Arc<Semaphore>),
    proxy_timeout: Duration,
) {
    let spec = Arc::new(spec);
    let mut relays = tokio::task::JoinSet::new();
    loop {
        while relays.try_join_next().is_some() {}
        let accepted = tokio::select! {
            a = l.accept() => a,
            Some(_) = relays.join_next(), if !relays.is_empty() => continue,
        };
        let (c, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(listen = %spec.listen, error = %e, "forward accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permits = own
            .clone()
            .try_acquire_owned()
            .and_then(|a| tenant.clone().try_acquire_owned().map(|b| (a, b)));
        let Ok(permits) = permits else {
            // Closed at once: the peer sees the connection end, and the node is not reached.
            // Logged on the first refusal and every thousandth after.
            if stats
                .refused
                .fetch_add(1, Ordering::Relaxed)
                .checked_rem(1000)
                == Some(0)
            {
                tracing::warn!(node = %spec.node, listen = %spec.listen, %peer, "relaying the maximum of connections (config.forward_max_connections per forward, {MAX_TENANT_CONNECTIONS} per tenant); refusing more");
            }
            drop(c);
            continue;
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        *lock(&stats.last_peer) = Some(peer.to_string());
        let (spec, stats) = (spec.clone(), stats.clone());
        relays.spawn(async move {
            let _permits = permits;
            if let Err(e) = relay(c, peer, &spec, &stats, proxy_timeout).await {
                tracing::debug!(node = %spec.node, %peer, error = %e, "forwarded connection ended");
            }
        });
    }
}

fn trusted(spec: &ForwardSpec, peer: IpAddr) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    spec.trusted_proxies.iter().any(|c| c.contains(&peer))
}

async fn relay(
    mut c: TcpStream,
    peer: SocketAddr,
    spec: &ForwardSpec,
    stats: &Stats,
    proxy_timeout: Duration,
) -> std::io::Result<()> {
    let mut pending = Vec::new();
    if spec.proxy_protocol && trusted(spec, peer.ip()) {
        let mut buf = [0u8; 512];
        let read_header = async {
            loop {
                match parse_v2(&pending) {
                    Header::Incomplete => {
                        let n = c.read(&mut buf).await?;
                        if n == 0 {
                            return Ok::<_, std::io::Error>(None);
                        }
                        pending.extend_from_slice(&buf[..n]);
                    }
                    h => return Ok(Some(h)),
                }
            }
        };
        match tokio::time::timeout(proxy_timeout, read_header).await {
            Ok(Ok(Some(Header::Proxy { len, client }))) => {
                pending.drain(..len);
                if let Some(client) = client {
                    tracing::info!(node = %spec.node, %peer, %client, "forwarded connection (PROXY v2 client, information only)");
                    *lock(&stats.last_client) = Some(client.to_string());
                }
            }
            Ok(Ok(Some(Header::Invalid(why)))) => {
                tracing::warn!(node = %spec.node, %peer, why, "malformed PROXY v2 header from a trusted upstream; connection closed");
                return Ok(());
            }
            Ok(Ok(_)) | Err(_) => {} // no header: what was read is data
            Ok(Err(e)) => return Err(e),
        }
    }
    let mut up = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((spec.node_ip, spec.node_port)),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting to the node"))??;
    up.write_all(&pending).await?;
    tokio::io::copy_bidirectional(&mut c, &mut up).await?;
    Ok(())
}

#[cfg(test)]
mod tests;
