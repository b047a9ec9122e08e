//! Volumes a microVM guest wrote (#13): a read-write attach to a node whose driver attaches
//! in the guest gives the guest raw block writes to the image, so the image may be crafted to
//! attack an ext4 parser. The host kernel never mounts such an image: a later attach to a node
//! whose supervisor mounts on the host (a jail) is refused with 409 `conflict`.
//!
//! The mark is a file beside the image (`volumes/<id>.img.guest-written`) or the sealed
//! snapshot (`snapshots/<id>.sealed.guest-written`); a snapshot of a marked volume is marked, a
//! volume restored from a marked snapshot is marked. The mark is set before the node starts
//! (so a crash never leaves a guest-written image unmarked) and is never cleared while the
//! image exists; reconciliation's sweep keeps it beside its image.

use std::path::{Path, PathBuf};

use bulkhead_api::volumes::VolumeAttach as AttachReq;
use bulkhead_core::{Code, DomainError};
use bulkhead_driver::VolumeAttach;

use super::volume_disk as disk;
use super::Tenant;

/// The suffix of a mark file.
pub(super) const SUFFIX: &str = ".guest-written";

/// The mark of the file `of` (an image or a sealed snapshot).
pub(super) fn mark_of(of: &Path) -> PathBuf {
    let mut s = of.as_os_str().to_owned();
    s.push(SUFFIX);
    PathBuf::from(s)
}

/// Whether `of` carries the mark.
pub(super) fn is_marked(of: &Path) -> bool {
    mark_of(of).exists()
}

/// Marks `of` (durably: the file, then its directory, synced).
pub(super) fn mark(of: &Path) -> std::io::Result<()> {
    let m = mark_of(of);
    std::fs::File::create(&m)?.sync_all()?;
    if let Some(d) = m.parent() {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}

/// Whether a sweep keeps `name`: a kept file, or the mark of one.
pub(super) fn keep(name: &str, kept: impl Fn(&str) -> bool) -> bool {
    kept(name) || name.strip_suffix(SUFFIX).is_some_and(kept)
}

/// The refusal of a host mount of a guest-written volume.
pub(super) fn refusal(id: &str) -> DomainError {
    DomainError::new(
        Code::Conflict,
        format!("volume {id}: this volume was written by a microVM guest; the host kernel does not mount guest-written file systems: attach it to microVM nodes only"),
    )
}

impl Tenant {
    /// For a create in `group` attaching `req` (checked): a driver that attaches in the guest
    /// marks every read-write volume; one that mounts on the host refuses a marked volume.
    pub(super) fn guard_guest_written(
        &self,
        group: &str,
        req: &[AttachReq],
    ) -> Result<(), DomainError> {
        let in_guest = self.driver_for(group).volume_attach() == VolumeAttach::GuestAgent;
        for a in req {
            let id = self.volume_row(&a.id)?.id.to_string();
            let image = disk::image(&self.dir, &id);
            if in_guest {
                if !a.read_only {
                    mark(&image).map_err(|e| {
                        DomainError::internal(format!("marking volume {id} guest-written: {e}"))
                    })?;
                }
            } else if is_marked(&image) {
                return Err(refusal(&id));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_kept_beside_their_file_and_refusals_are_conflicts() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("a.img");
        std::fs::write(&img, b"x").unwrap();
        assert!(!is_marked(&img));
        mark(&img).unwrap();
        assert!(is_marked(&img));
        let kept = |n: &str| n == "a.img";
        assert!(keep("a.img.guest-written", kept));
        assert!(!keep("b.img.guest-written", kept));
        let e = refusal("01X");
        assert_eq!(e.code, Code::Conflict);
        assert!(e.message.contains("microVM nodes only"));
    }
}
