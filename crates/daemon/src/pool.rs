//! The pool of standby supervisors (docs/adr/0006-standby-supervisors.md). A standby already
//! sits in a fresh cgroup, so handing it a node's spec moves no process between cgroups on the
//! create path. The pool refills in the background and drains at shutdown; a standby whose
//! stdin closes removes its cgroup and exits, so a daemon that dies takes its pool along.
//!
//! The pool is a service of the tenant context, not of the host: a standby already sits in a
//! cgroup under the tenant's and binds its socket in the tenant's state, so each tenant a
//! daemon serves has a pool of its own.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

/// Standby supervisors kept ready per tenant (see `bulkhead_driver::supervisor::run_standby`).
pub const STANDBY_POOL: usize = 4;
/// How long a refill waits after the create that triggered it.
pub const REFILL_DELAY: Duration = Duration::from_millis(15);

/// A supervisor that waits, already inside a fresh cgroup, for the spec of its node.
pub struct Standby {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
    pub(crate) cgroup: String,
}

pub(crate) fn random_id() -> String {
    let mut b = [0u8; 6];
    // SAFETY: valid buffer.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    format!(
        "c{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

/// Ends a standby: EOF on its stdin makes it remove its cgroup and exit.
pub(crate) async fn end_standby(sb: Standby) {
    let Standby {
        mut child, stdin, ..
    } = sb;
    drop(stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
}

/// The standby supervisors of one tenant.
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    standbys: tokio::sync::Mutex<Vec<Standby>>,
    refilling: AtomicBool,
    /// Set at shutdown: no standby may join the pool any more.
    closing: AtomicBool,
    supervisor_bin: PathBuf,
    tenant: String,
    /// Where standbys bind their agent sockets before they know their node.
    dir: PathBuf,
}

impl Pool {
    pub fn new(supervisor_bin: PathBuf, tenant: String, dir: PathBuf) -> Self {
        Pool {
            inner: Arc::new(Inner {
                standbys: Default::default(),
                refilling: AtomicBool::new(false),
                closing: AtomicBool::new(false),
                supervisor_bin,
                tenant,
                dir,
            }),
        }
    }

    /// Where standbys bind their agent sockets before they know their node.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Takes a standby for a node, if one is ready; the pool refills in the background.
    pub async fn take(&self) -> Option<Standby> {
        let sb = self.inner.standbys.lock().await.pop();
        self.refill();
        sb
    }

    /// The cgroup ids the pool's standbys sit in (reconciliation keeps them).
    pub async fn cgroups(&self) -> Vec<String> {
        self.inner
            .standbys
            .lock()
            .await
            .iter()
            .map(|s| s.cgroup.clone())
            .collect()
    }

    /// Gives a standby its node's spec; returns its answer line and its pid.
    pub async fn hand_over(
        &self,
        mut sb: Standby,
        spec_path: &Path,
        instruction: &bulkhead_driver::instruction::Line,
    ) -> Result<(String, u32), String> {
        let pid = sb.child.id().ok_or("standby already exited")?;
        use tokio::io::AsyncWriteExt;
        let mut msg = spec_path.as_os_str().as_encoded_bytes().to_vec();
        msg.push(b'\n');
        sb.stdin.write_all(&msg).await.map_err(|e| e.to_string())?;
        // The daemon's instruction (#13): the spec's digest and its volumes' keys.
        sb.stdin
            .write_all(instruction.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        sb.stdin.flush().await.map_err(|e| e.to_string())?;
        let mut line = String::new();
        // Dropping `sb` afterwards closes its stdin and detaches the child; tokio reaps it.
        match tokio::time::timeout(Duration::from_secs(60), sb.stdout.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 => Ok((line, pid)),
            Ok(Ok(_)) => Err("standby exited".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("standby did not answer within 60s".into()),
        }
    }

    /// Tops the standby pool up in the background.
    pub fn refill(&self) {
        let p = &self.inner;
        if p.closing.load(Ordering::SeqCst) || p.refilling.swap(true, Ordering::SeqCst) {
            return;
        }
        let p = p.clone();
        tokio::spawn(async move {
            // Let the create that emptied the slot finish first: spawning standbys costs CPU
            // that the create in flight needs more.
            tokio::time::sleep(REFILL_DELAY).await;
            loop {
                let missing = STANDBY_POOL.saturating_sub(p.standbys.lock().await.len());
                if missing == 0 || p.closing.load(Ordering::SeqCst) {
                    break;
                }
                // Started together, their cgroup moves wait out one grace period, not several.
                let spawned =
                    futures_util::future::join_all((0..missing).map(|_| p.spawn_standby())).await;
                let mut failed = false;
                for r in spawned {
                    match r {
                        Ok(sb) if p.closing.load(Ordering::SeqCst) => end_standby(sb).await,
                        Ok(sb) => p.standbys.lock().await.push(sb),
                        Err(e) => {
                            tracing::warn!(error = %e, "standby pool not refilled");
                            failed = true;
                        }
                    }
                }
                if failed {
                    break;
                }
            }
            p.refilling.store(false, Ordering::SeqCst);
        });
    }

    /// Closes the pool: waits for a refill under way, then ends every standby (each removes
    /// its cgroup) and waits for them.
    pub async fn drain(&self) {
        let p = &self.inner;
        p.closing.store(true, Ordering::SeqCst);
        let until = Instant::now() + Duration::from_secs(30);
        while p.refilling.load(Ordering::SeqCst) && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let pool: Vec<Standby> = std::mem::take(&mut *p.standbys.lock().await);
        for sb in pool {
            end_standby(sb).await;
        }
    }
}

impl Inner {
    async fn spawn_standby(&self) -> Result<Standby, String> {
        let cgroup = random_id();
        let mut child = tokio::process::Command::new(&self.supervisor_bin)
            .arg("--standby")
            .arg(&self.tenant)
            .arg(&cgroup)
            .arg(&self.dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting a standby supervisor: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        match tokio::time::timeout(Duration::from_secs(60), stdout.read_line(&mut line)).await {
            Ok(Ok(_)) if line.trim() == "standby" => Ok(Standby {
                child,
                stdin,
                stdout,
                cgroup,
            }),
            _ => Err(format!("standby supervisor did not start: {}", line.trim())),
        }
    }
}
