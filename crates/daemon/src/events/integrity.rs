//! Integrity of the daemon's own files (#14): at start the SHA-256 of `bulkhead` (the running
//! executable's path), `bulkhead-supervisor` and `bulkhead-agent` beside it, and of the config
//! file; every `detection.integrity_interval` the same paths are hashed again. A digest that
//! differs from the last one seen raises `integrity.changed` in every tenant of the daemon;
//! `bulkhead_integrity_changed{file}` is 1 while a file differs from its digest at start, and
//! `GET /info` shows the digests.
//!
//! Invariants: the paths are fixed at start (a binary renamed over keeps its path, so the
//! replacement is what is hashed); a file that cannot be read counts as changed (its digest is
//! `unreadable: <why>`); hashing streams the file (binaries are large) on a blocking thread.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use bulkhead_api::types::IntegrityFile;

/// The SHA-256 of a file, lowercase hex, or `unreadable: <why>`.
pub fn digest(path: &Path) -> String {
    let r = (|| -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        Ok(ctx
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    })();
    r.unwrap_or_else(|e| format!("unreadable: {e}"))
}

/// One watched file.
pub struct File {
    /// `bulkhead`, `bulkhead-supervisor`, `bulkhead-agent` or `config`.
    pub name: &'static str,
    pub path: PathBuf,
    /// Its digest at start.
    pub at_start: String,
    /// The digest last seen.
    last: Mutex<String>,
    changed: AtomicBool,
}

impl File {
    /// Whether the file differs from its digest at start (as last checked).
    pub fn changed(&self) -> bool {
        self.changed.load(Ordering::Relaxed)
    }

    pub fn last(&self) -> String {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A change seen by a check: which file, its digest at start, before and now.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub file: &'static str,
    pub path: PathBuf,
    pub at_start: String,
    pub before: String,
    pub now: String,
}

impl Change {
    pub fn detail(&self) -> serde_json::Value {
        serde_json::json!({
            "file": self.file,
            "path": self.path.display().to_string(),
            "sha256_at_start": self.at_start,
            "sha256_before": self.before,
            "sha256_now": self.now,
            "changed_since_start": self.now != self.at_start,
        })
    }
}

/// The daemon's watched files: empty until their digests at start are [`Integrity::set`]
/// (hashing runs beside the tenants' start, so it adds nothing to it).
#[derive(Default)]
pub struct Integrity {
    files: OnceLock<Vec<File>>,
}

/// Hashes `files` (blocking).
fn hash_files(files: Vec<(&'static str, PathBuf)>) -> Vec<File> {
    files
        .into_iter()
        .map(|(name, path)| {
            let d = digest(&path);
            File {
                name,
                path,
                last: Mutex::new(d.clone()),
                at_start: d,
                changed: AtomicBool::new(false),
            }
        })
        .collect()
}

impl Integrity {
    /// `files`, hashed now (blocking).
    pub fn hash(files: Vec<(&'static str, PathBuf)>) -> Integrity {
        let i = Integrity::default();
        i.set(hash_files(files));
        i
    }

    /// Starts hashing the daemon's binaries (`self_exe` and its companions) and its config on
    /// a blocking thread; the digests at start, for [`Integrity::set`].
    pub fn start(self_exe: &Path, config: &Path) -> tokio::task::JoinHandle<Vec<File>> {
        let files = vec![
            ("bulkhead", self_exe.to_path_buf()),
            (
                "bulkhead-supervisor",
                self_exe.with_file_name("bulkhead-supervisor"),
            ),
            ("bulkhead-agent", self_exe.with_file_name("bulkhead-agent")),
            (
                "config",
                std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf()),
            ),
        ];
        tokio::task::spawn_blocking(move || hash_files(files))
    }

    /// Records the digests at start (once; a second call changes nothing).
    pub fn set(&self, files: Vec<File>) {
        let _ = self.files.set(files);
    }

    pub fn files(&self) -> &[File] {
        self.files.get().map_or(&[], Vec::as_slice)
    }

    /// Hashes every file again (blocking); the files whose digest differs from the last seen.
    pub fn check(&self) -> Vec<Change> {
        let mut out = Vec::new();
        for f in self.files() {
            let now = digest(&f.path);
            let mut last = f.last.lock().unwrap_or_else(|p| p.into_inner());
            f.changed.store(now != f.at_start, Ordering::Relaxed);
            if *last != now {
                out.push(Change {
                    file: f.name,
                    path: f.path.clone(),
                    at_start: f.at_start.clone(),
                    before: last.clone(),
                    now: now.clone(),
                });
                *last = now;
            }
        }
        out
    }

    /// What `GET /info` shows; paths only when `paths` (global-admin).
    pub fn report(&self, paths: bool) -> Vec<IntegrityFile> {
        self.files()
            .iter()
            .map(|f| {
                let last = f.last();
                IntegrityFile {
                    file: f.name.into(),
                    path: paths.then(|| f.path.display().to_string()),
                    sha256: f.at_start.clone(),
                    changed: f.changed(),
                    sha256_now: (last != f.at_start).then_some(last),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_file_is_seen_once_and_stays_changed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin");
        std::fs::write(&p, b"abc").unwrap();
        let i = Integrity::hash(vec![("bulkhead", p.clone())]);
        assert_eq!(
            i.files()[0].at_start,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(i.check().is_empty());
        // Renamed over, as an attacker (or an upgrade) would.
        let tmp = dir.path().join("bin.new");
        std::fs::write(&tmp, b"abd").unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        let c = i.check();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].file, "bulkhead");
        assert!(i.files()[0].changed());
        assert!(i.check().is_empty(), "one event per change");
        assert!(i.files()[0].changed(), "still differs from start");
        let r = i.report(false);
        assert!(r[0].changed && r[0].path.is_none() && r[0].sha256_now.is_some());
        std::fs::remove_file(&p).unwrap();
        let c = i.check();
        assert!(c[0].now.starts_with("unreadable: "), "{:?}", c[0]);
    }
}
