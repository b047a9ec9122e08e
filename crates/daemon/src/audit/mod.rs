//! The audit trail (#14, part A; ADR 0031): one JSON line per decision, allowed or denied,
//! hash-chained, with signed checkpoints; files `audit-<n>.jsonl` in `<tenant dir>/audit/`
//! (a shared daemon's own trail, for requests no tenant can be named for, in
//! `<state>/shared/audit/`), and the trail's Ed25519 public key in `audit.pub` beside them.
//!
//! The request pipeline records every request's decision (`http/audit_layer.rs`, filled by
//! authentication and authorization through the request's [`slot::AuditSlot`]); the daemon
//! records the lifecycle changes it makes by itself through
//! [`crate::tenant::Tenant::by_daemon`]. Nothing else writes audit lines.
//!
//! Invariants: [`Audit::record`] never waits for the disk (a bounded channel to the trail's
//! writer thread, `writer.rs`; a full channel is counted and written as an `audit_dropped`
//! line); a line never holds request bodies, tokens, query strings or secret values, only the
//! fields of [`Record`]; the signing key is derived from the tenant's data key and never
//! written anywhere.

pub mod line;
pub mod query;
mod record;
pub mod slot;
pub mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bulkhead_core::config::audit::AuditConfig;

pub use record::{AuditError, Record};
pub use writer::{file_name, file_number, Stats};

/// The public key's file beside a trail's files (hex of the Ed25519 public key).
pub const PUBLIC_KEY_FILE: &str = "audit.pub";
/// The directory of a trail under its tenant's (or the shared daemon's) directory.
pub const DIR: &str = "audit";
/// The owner name of a shared daemon's own trail (its key is the keyring's `_daemon` key).
pub const DAEMON_TRAIL: &str = "_daemon";
/// Records the writer may be behind by before lines are dropped (and counted).
const QUEUE: usize = 65_536;

struct Inner {
    tx: SyncSender<writer::Msg>,
    dir: PathBuf,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A trail. `Default` is a trail that records nothing (`audit.enabled: false`).
#[derive(Default)]
pub struct Audit {
    inner: Option<Inner>,
    stats: Arc<Stats>,
    public_key: Option<String>,
}

impl Audit {
    /// Opens (or continues) the trail in `<dir>/audit` of `owner`, signing with a key derived
    /// from `key` (the tenant's data key), and starts its writer.
    pub fn open(
        dir: &Path,
        owner: &str,
        key: &bulkhead_storage::TenantKey,
        cfg: &AuditConfig,
    ) -> Result<Audit, AuditError> {
        if !cfg.enabled {
            return Ok(Audit::default());
        }
        let seed = key.derive("audit", "ed25519");
        let pair = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed[..32])
            .map_err(|e| AuditError::Key(e.to_string()))?;
        Audit::start(&dir.join(DIR), owner, pair, cfg)
    }

    /// Starts a trail in `dir` (the audit directory itself) with `pair` as its signing key.
    pub fn start(
        dir: &Path,
        owner: &str,
        pair: ring::signature::Ed25519KeyPair,
        cfg: &AuditConfig,
    ) -> Result<Audit, AuditError> {
        use ring::signature::KeyPair;
        let public_key = line::hex(pair.public_key().as_ref());
        let stats = Arc::new(Stats::default());
        let w = writer::Writer::open(dir, owner, pair, cfg, stats.clone())?;
        let pub_file = dir.join(PUBLIC_KEY_FILE);
        crate::fsutil::write_private(&pub_file, format!("{public_key}\n").as_bytes()).map_err(
            |source| AuditError::Io {
                what: format!("writing {}", pub_file.display()),
                source,
            },
        )?;
        // The public key is public: readable by the operator's verifying tools.
        let _ = std::fs::set_permissions(
            &pub_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        );
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name(format!("audit-{owner}"))
            .spawn(move || w.run(rx))
            .map_err(|source| AuditError::Io {
                what: "starting the writer thread".into(),
                source,
            })?;
        Ok(Audit {
            inner: Some(Inner {
                tx,
                dir: dir.to_path_buf(),
                thread: Mutex::new(Some(thread)),
            }),
            stats,
            public_key: Some(public_key),
        })
    }

    /// Appends `r` to the trail (stamped with the time now and the previous line's hash).
    /// Never waits: when the writer is far behind the line is counted as dropped.
    pub fn record(&self, r: Record) {
        let Some(i) = &self.inner else { return };
        match i
            .tx
            .try_send(writer::Msg::Line(Box::new(r), SystemTime::now()))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.stats.unreported.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn ask(&self, make: impl FnOnce(mpsc::Sender<()>) -> writer::Msg) {
        let Some(i) = &self.inner else { return };
        let (tx, rx) = mpsc::channel();
        if i.tx.send(make(tx)).is_ok() {
            let _ = rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Waits until every line recorded before is written (blocking; a few microseconds).
    pub fn flush(&self) {
        self.ask(writer::Msg::Flush);
    }

    /// Signs the chain's head now (if anything is unsigned); blocking.
    pub fn checkpoint(&self) {
        self.ask(writer::Msg::Checkpoint);
    }

    /// The last checkpoint (at stop) and the writer's end; blocking. Lines recorded after it
    /// are dropped.
    pub fn close(&self) {
        self.ask(writer::Msg::Stop);
        if let Some(i) = &self.inner {
            if let Some(t) = i.thread.lock().map(|mut t| t.take()).unwrap_or(None) {
                let _ = t.join();
            }
        }
    }

    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The trail's directory (`None` when disabled).
    pub fn dir(&self) -> Option<&Path> {
        self.inner.as_ref().map(|i| i.dir.as_path())
    }

    /// Hex of the trail's Ed25519 public key.
    pub fn public_key(&self) -> Option<&str> {
        self.public_key.as_deref()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The trail's record lines matching `filter`, appended to `out` (blocking: flushes
    /// first, then reads the files). Returns whether `filter.limit` cut it short.
    pub fn read(&self, filter: &query::Filter, out: &mut Vec<u8>, count: &mut usize) -> bool {
        let Some(i) = &self.inner else { return false };
        self.flush();
        query::read(&i.dir, filter, out, count)
    }
}

/// A shared daemon's own trail in `<dir>/audit`, signed with a key derived from the keyring's
/// [`DAEMON_TRAIL`] key (tenant names are DNS labels: no tenant can have it); `None` for a
/// one-tenant daemon (its trail is its tenant's) or when `audit.enabled` is false.
pub fn open_daemon_trail(
    shared: bool,
    dir: &Path,
    keyring: &bulkhead_storage::Keyring,
    cfg: &AuditConfig,
) -> Result<Option<Audit>, String> {
    if !shared || !cfg.enabled {
        return Ok(None);
    }
    let key = keyring
        .tenant(DAEMON_TRAIL)
        .map_err(|e| format!("the daemon's audit key: {e}"))?;
    Audit::open(dir, DAEMON_TRAIL, &key, cfg)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// `CreateNode` → `create_node`: actions as they are written in lines.
pub fn action_name(debug: &str) -> String {
    let mut s = String::with_capacity(debug.len() + 4);
    for (i, c) in debug.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

/// The trails' metrics, one family per figure, a sample per trail.
pub fn metrics<'a>(trails: impl Iterator<Item = (&'a str, &'a Audit)> + Clone) -> String {
    type Family = (&'static str, &'static str, fn(&Stats) -> u64);
    let families: [Family; 4] = [
        (
            "bulkhead_audit_lines_total",
            "Audit lines written (decisions and the daemon's own changes).",
            |s| s.lines.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_audit_dropped_total",
            "Audit lines not written because the writer fell behind (each gap is recorded as an audit_dropped line).",
            |s| s.dropped.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_audit_write_errors_total",
            "Failed writes to the audit trail's files.",
            |s| s.write_errors.load(Ordering::Relaxed),
        ),
        (
            "bulkhead_audit_checkpoints_total",
            "Signed checkpoints written.",
            |s| s.checkpoints.load(Ordering::Relaxed),
        ),
    ];
    let mut out = String::new();
    for (name, help, get) in families {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
        for (t, a) in trails.clone().filter(|(_, a)| a.enabled()) {
            out.push_str(&format!("{name}{{tenant=\"{t}\"}} {}\n", get(a.stats())));
        }
    }
    out
}

#[cfg(test)]
mod tests;
