//! Cursor reservations (#14, part B; ADR 0032): events reach SQLite on the store's thread
//! without `emit` waiting, so a daemon killed mid-way may have streamed cursors it never kept.
//! To never give such a cursor again, the daemon reserves cursors in blocks: before it hands
//! out a cursor at or above the reservation, it records a new one ([`BLOCK`] further) in
//! `<tenant dir>/events.cursor`; a start continues after the larger of the last kept cursor and
//! the recorded reservation. A clean stop records the exact next cursor (after the store is
//! flushed), so cursors stay contiguous across ordinary restarts and jump only after a crash.

use std::path::{Path, PathBuf};

/// Cursors reserved at a time.
pub const BLOCK: u64 = 1000;

pub struct Reserve {
    path: PathBuf,
}

impl Reserve {
    pub fn new(tenant_dir: &Path) -> Reserve {
        Reserve {
            path: tenant_dir.join("events.cursor"),
        }
    }

    /// The recorded next-cursor bound; 0 when there is none (first start) or it is unreadable.
    pub fn read(&self) -> u64 {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Records that cursors below `upto` may have been given.
    pub fn write(&self, upto: u64) {
        let tmp = self.path.with_extension("cursor.tmp");
        let r = crate::fsutil::write_private(&tmp, format!("{upto}\n").as_bytes())
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = r {
            tracing::error!(path = %self.path.display(), error = %e, "cannot record the event cursor reservation; after a crash a cursor could be given twice");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_reads_back() {
        let d = tempfile::tempdir().unwrap();
        let r = Reserve::new(d.path());
        assert_eq!(r.read(), 0);
        r.write(1234);
        assert_eq!(r.read(), 1234);
    }
}
