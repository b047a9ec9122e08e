//! The daemon's side of the control channel: one request per connection, blocking
//! ([`request`]) or async ([`request_async`]), and [`liveness`], which is what the daemon asks
//! of a node ("does it run, and if not, how did it end").
//!
//! A node started by a supervisor older than the control channel has no `supervisor.sock`;
//! its liveness then comes from `supervisor.json` (pid and start time), as before.

use super::{render_request, Phase, Reply, Request, State, MAX_LINE};
use crate::spec::files;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a `state` or `kill` may take: the supervisor answers from memory at once unless
/// it is stopped or gone.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nothing listens on the socket: the supervisor is gone.
    #[error("no supervisor answers on {}: {source}", path.display())]
    NoSupervisor {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("control channel {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the supervisor did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the supervisor refused the request: {0}")]
    Refused(String),
    #[error("the supervisor answered {0:?}, which is not a control reply")]
    Protocol(String),
}

/// The control socket of the node in `node_dir`.
pub fn socket(node_dir: &Path) -> PathBuf {
    node_dir.join(files::CONTROL_SOCKET)
}

fn connect_error(path: &Path, source: std::io::Error) -> ControlError {
    match source.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NoSupervisor {
                path: path.into(),
                source,
            }
        }
        _ => ControlError::Io {
            path: path.into(),
            source,
        },
    }
}

fn decode(line: &str) -> Result<State, ControlError> {
    match serde_json::from_str::<Reply>(line.trim()) {
        Ok(Reply::State(s)) => Ok(s),
        Ok(Reply::Error { error }) => Err(ControlError::Refused(error)),
        Err(_) => Err(ControlError::Protocol(line.chars().take(200).collect())),
    }
}

/// Sends one request to the node's supervisor and reads its answer. `timeout`: `None` waits
/// as long as it takes (a `wait`).
pub fn request(
    node_dir: &Path,
    req: Request,
    timeout: Option<Duration>,
) -> Result<State, ControlError> {
    use std::io::{BufRead, Write};
    let path = socket(node_dir);
    let s = bulkhead_agent::unix_path::connect(&path).map_err(|e| connect_error(&path, e))?;
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    s.set_read_timeout(timeout).map_err(io)?;
    (&s).write_all(&render_request(&req)).map_err(io)?;
    let mut line = String::new();
    match std::io::BufReader::new(std::io::Read::take(&s, MAX_LINE as u64 * 4)).read_line(&mut line)
    {
        Ok(_) => decode(&line),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(ControlError::Timeout(timeout.unwrap_or_default()))
        }
        Err(e) => Err(io(e)),
    }
}

/// [`request`] for async callers.
pub async fn request_async(
    node_dir: &Path,
    req: Request,
    timeout: Option<Duration>,
) -> Result<State, ControlError> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let path = socket(node_dir);
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    let exchange = async {
        let mut s = bulkhead_agent::unix_path::connect_async(&path)
            .await
            .map_err(|e| connect_error(&path, e))?;
        s.write_all(&render_request(&req)).await.map_err(io)?;
        let mut line = String::new();
        tokio::io::BufReader::new((&mut s).take(MAX_LINE as u64 * 4))
            .read_line(&mut line)
            .await
            .map_err(io)?;
        decode(&line)
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, exchange)
            .await
            .map_err(|_| ControlError::Timeout(t))?,
        None => exchange.await,
    }
}

/// Whether a node runs, as the daemon needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The init runs (`None`: known only from the supervisor's process, which did not say
    /// more: an older supervisor, or one too busy to answer in time).
    Running(Option<State>),
    /// The init exited; the supervisor still holds its status.
    Exited(State),
    /// No supervisor: the node is lost.
    Gone,
}

impl Liveness {
    pub fn is_running(&self) -> bool {
        matches!(self, Liveness::Running(_))
    }
}

/// Asks the node's supervisor whether its init runs.
pub async fn liveness(node_dir: &Path) -> Liveness {
    match request_async(node_dir, Request::State, Some(ANSWER_TIMEOUT)).await {
        Ok(s) => match s.phase {
            Phase::Running => Liveness::Running(Some(s)),
            Phase::Exited { .. } => Liveness::Exited(s),
        },
        // A supervisor that is alive but does not answer (stopped, busy): not lost.
        Err(ControlError::Timeout(_)) => Liveness::Running(None),
        Err(_) if !socket(node_dir).exists() => legacy(node_dir),
        Err(_) => Liveness::Gone,
    }
}

/// A supervisor without a control channel: alive or not, from `supervisor.json`.
fn legacy(node_dir: &Path) -> Liveness {
    match crate::spec::read_supervisor_state(node_dir) {
        Some(s) if crate::spec::supervisor_alive(&s) => Liveness::Running(None),
        _ => Liveness::Gone,
    }
}
