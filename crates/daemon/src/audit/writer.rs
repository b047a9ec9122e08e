//! The audit trail's writer: one thread per trail that owns its files. Requests hand it
//! records through a bounded channel and never wait for the disk; it appends them (one
//! `write` per batch), rotates files by size or age, and signs checkpoints at the interval,
//! at rotation and at stop.
//!
//! Invariants: only this thread writes the trail's files; `head` is the hash of the last line
//! written and `seq` its number, so every line links to the one before it, across files (a new
//! file's first line links to the previous file's last, a checkpoint); a file is closed only
//! after a checkpoint; lines the channel could not take are never silent: the next line
//! written is an `audit_dropped` record counting them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bulkhead_core::config::audit::AuditConfig;
use ring::signature::Ed25519KeyPair;

use super::line::{self, Checkpoint, Head, GENESIS};
use super::{AuditError, Record};

/// What the trail's thread is asked to do.
pub(crate) enum Msg {
    Line(Box<Record>, SystemTime),
    /// Answered once everything sent before is written.
    Flush(Sender<()>),
    /// A checkpoint now (if anything is unsigned), then the answer.
    Checkpoint(Sender<()>),
    /// A last checkpoint, then the thread ends.
    Stop(Sender<()>),
}

/// What the trail counts (metrics).
#[derive(Default)]
pub struct Stats {
    pub lines: AtomicU64,
    /// Lines the channel was full for (the writer fell behind).
    pub dropped: AtomicU64,
    /// Dropped lines not yet reported by an `audit_dropped` line.
    pub(crate) unreported: AtomicU64,
    pub write_errors: AtomicU64,
    pub checkpoints: AtomicU64,
}

/// `audit-<n>.jsonl`'s number.
pub fn file_number(name: &str) -> Option<u64> {
    name.strip_prefix("audit-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

pub fn file_name(n: u64) -> String {
    format!("audit-{n}.jsonl")
}

/// The trail's files in chain order.
pub fn files(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(n) = e.file_name().to_str().and_then(file_number) {
            v.push((n, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

pub(crate) struct Writer {
    dir: PathBuf,
    owner: String,
    key: Ed25519KeyPair,
    cfg: AuditConfig,
    stats: Arc<Stats>,
    /// The current file's number, and the file once opened.
    n: u64,
    file: Option<File>,
    size: u64,
    /// When the current file's first line was written.
    started: Option<SystemTime>,
    lines_in_file: u64,
    seq: u64,
    head: String,
    /// Lines written since the last checkpoint.
    dirty: bool,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> AuditError {
    move |source| AuditError::Io { what, source }
}

impl Writer {
    /// Opens the trail in `dir`: where the chain stands in its last file. A last file cut in
    /// the middle of a line (a crash) is left as it is, for `audit verify` to show, and the
    /// chain goes on in a new file from its last whole line.
    pub(crate) fn open(
        dir: &Path,
        owner: &str,
        key: Ed25519KeyPair,
        cfg: &AuditConfig,
        stats: Arc<Stats>,
    ) -> Result<Writer, AuditError> {
        crate::fsutil::ensure_dir(dir, 0o700).map_err(io(format!("creating {}", dir.display())))?;
        let mut w = Writer {
            dir: dir.to_path_buf(),
            owner: owner.to_string(),
            key,
            cfg: cfg.clone(),
            stats,
            n: 1,
            file: None,
            size: 0,
            started: None,
            lines_in_file: 0,
            seq: 0,
            head: GENESIS.to_string(),
            dirty: false,
        };
        let files = files(dir).map_err(io(format!("listing {}", dir.display())))?;
        let Some((n, path)) = files.last() else {
            return Ok(w);
        };
        let text = std::fs::read(path).map_err(io(format!("reading {}", path.display())))?;
        w.n = *n;
        w.size = text.len() as u64;
        let torn = text.last().is_some_and(|b| *b != b'\n');
        let whole: Vec<&[u8]> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let whole = if torn {
            &whole[..whole.len() - 1]
        } else {
            &whole[..]
        };
        w.lines_in_file = whole.len() as u64;
        w.started = whole
            .first()
            .and_then(|l| serde_json::from_slice::<Head>(l).ok())
            .and_then(|h| line::parse_time(&h.time))
            .map(line::from_ms);
        // The chain goes on from the last line that reads (normally the last line).
        let mut damaged = torn;
        for (i, l) in whole.iter().enumerate().rev() {
            if let Ok(h) = serde_json::from_slice::<Head>(l) {
                w.seq = h.seq;
                w.head = line::hash(l);
                w.dirty = h.checkpoint.is_none();
                damaged |= i + 1 != whole.len();
                break;
            }
            damaged = true;
        }
        if damaged {
            tracing::warn!(file = %path.display(), "the audit file ends in a damaged line (a crash?): it is kept as it is and the trail goes on in a new file");
            w.n += 1;
            w.dirty = true;
            w.size = 0;
            w.lines_in_file = 0;
            w.started = None;
        }
        Ok(w)
    }

    fn file(&mut self) -> std::io::Result<&mut File> {
        if self.file.is_none() {
            let p = self.dir.join(file_name(self.n));
            let f = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&p)?;
            self.file = Some(f);
        }
        Ok(self.file.as_mut().expect("just opened"))
    }

    /// Appends whole lines (each without its newline) in one write.
    fn append(&mut self, lines: &[String]) {
        if lines.is_empty() {
            return;
        }
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            buf.extend_from_slice(l.as_bytes());
            buf.push(b'\n');
        }
        let r = self.file().and_then(|f| f.write_all(&buf));
        match r {
            Ok(()) => self.size += buf.len() as u64,
            Err(e) => {
                let n = self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                if n.is_multiple_of(1000) {
                    tracing::error!(trail = %self.owner, error = %e, "cannot write the audit trail");
                }
                // Reopen on the next write; a partial line shows up in `audit verify`.
                self.file = None;
            }
        }
    }

    /// The next line of the chain: numbered, linked, counted.
    fn chain(&mut self, make: impl FnOnce(u64, &str) -> String) -> String {
        self.seq += 1;
        let l = make(self.seq, &self.head);
        self.head = line::hash(l.as_bytes());
        self.lines_in_file += 1;
        l
    }

    fn record_line(&mut self, r: &Record, at: SystemTime) -> String {
        if self.started.is_none() {
            self.started = Some(at);
        }
        let time = line::format_time(at);
        self.stats.lines.fetch_add(1, Ordering::Relaxed);
        self.dirty = true;
        self.chain(|seq, prev| line::record_line(seq, &time, r, prev))
    }

    fn checkpoint_line(&mut self) -> String {
        let time = line::format_time(SystemTime::now());
        let c = Checkpoint {
            tenant: self.owner.clone(),
            file: self.n,
            lines: self.lines_in_file,
        };
        self.dirty = false;
        self.stats.checkpoints.fetch_add(1, Ordering::Relaxed);
        let key = &self.key;
        // Split borrow: `chain` needs &mut self, the key is read inside.
        let seq = self.seq + 1;
        let l = line::checkpoint_line(key, seq, &time, &c, &self.head);
        self.chain(|_, _| l)
    }

    /// Signs the head if anything is unsigned, and makes the file durable.
    fn checkpoint(&mut self, pending: &mut Vec<String>) {
        if self.dirty {
            let l = self.checkpoint_line();
            pending.push(l);
        }
        self.append(pending);
        pending.clear();
        if let Some(f) = &self.file {
            let _ = f.sync_data();
        }
    }

    fn rotate_due(&self, now: SystemTime) -> bool {
        if self.lines_in_file == 0 {
            return false;
        }
        self.size >= self.cfg.rotate_size
            || self
                .started
                .and_then(|s| now.duration_since(s).ok())
                .is_some_and(|age| age >= self.cfg.rotate_age)
    }

    /// Closes the current file with a checkpoint and begins the next.
    fn rotate(&mut self, pending: &mut Vec<String>) {
        self.dirty = true; // a closed file always ends with a checkpoint
        self.checkpoint(pending);
        self.file = None;
        self.n += 1;
        self.size = 0;
        self.lines_in_file = 0;
        self.started = None;
    }

    fn add(&mut self, r: &Record, at: SystemTime, pending: &mut Vec<String>) {
        // The size counts what is pending too, so a large batch still rotates in time.
        let pending_bytes: u64 = pending.iter().map(|l| l.len() as u64 + 1).sum();
        self.size += pending_bytes;
        let due = self.rotate_due(at);
        self.size -= pending_bytes;
        if due {
            self.rotate(pending);
        }
        let dropped = self.stats.unreported.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let note = Record {
                request_id: "daemon".into(),
                principal: "daemon".into(),
                via: "internal".into(),
                tenant: r.tenant.clone(),
                action: "audit_dropped".into(),
                object: "-".into(),
                outcome: "failed".into(),
                reason: format!(
                    "{dropped} lines were not recorded: the audit writer fell behind (the disk is slow or full)"
                ),
            };
            let l = self.record_line(&note, at);
            pending.push(l);
        }
        let l = self.record_line(r, at);
        pending.push(l);
    }

    /// The thread's loop: batches of records, checkpoints on time, until stopped.
    pub(crate) fn run(mut self, rx: Receiver<Msg>) {
        let interval = self.cfg.checkpoint_interval;
        let mut next_cp = Instant::now() + interval;
        let mut pending: Vec<String> = Vec::new();
        loop {
            let wait = next_cp.saturating_duration_since(Instant::now());
            let first = match rx.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    self.checkpoint(&mut pending);
                    next_cp = Instant::now() + interval;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.checkpoint(&mut pending);
                    return;
                }
            };
            // Everything queued behind it goes in the same write.
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m {
                    Msg::Line(r, at) => self.add(&r, at, &mut pending),
                    Msg::Flush(ack) => {
                        self.append(&pending);
                        pending.clear();
                        let _ = ack.send(());
                    }
                    Msg::Checkpoint(ack) => {
                        self.checkpoint(&mut pending);
                        next_cp = Instant::now() + interval;
                        let _ = ack.send(());
                    }
                    Msg::Stop(ack) => {
                        self.checkpoint(&mut pending);
                        let _ = ack.send(());
                        return;
                    }
                }
                if pending.len() < 1024 {
                    next = rx.try_recv().ok();
                }
            }
            self.append(&pending);
            pending.clear();
            if Instant::now() >= next_cp {
                self.checkpoint(&mut pending);
                next_cp = Instant::now() + interval;
            }
        }
    }
}
