//! A node's root disk: an ext4 image made from the image's tree with `mkfs.ext4 -d` (no
//! mount, no loop device, no root needed), sparse, as large as the group's `storage_size`.
//! No journal (the disk lives and dies with its node) and owned by QEMU's uid.

use crate::VmError;
use std::path::Path;
use std::process::Command;

pub fn make(tree: &Path, out: &Path, size_bytes: u64, owner: u32) -> Result<(), VmError> {
    let f = std::fs::File::create(out).map_err(|source| VmError::Io {
        what: format!("creating {}", out.display()),
        source,
    })?;
    f.set_len(size_bytes).map_err(|source| VmError::Io {
        what: "sizing the node disk".into(),
        source,
    })?;
    drop(f);
    let o = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "^has_journal", "-E", "nodiscard", "-d"])
        .arg(tree)
        .arg(out)
        .output()
        .map_err(|source| VmError::Io {
            what: "running mkfs.ext4 (install e2fsprogs)".into(),
            source,
        })?;
    if !o.status.success() {
        let _ = std::fs::remove_file(out);
        return Err(VmError::Disk(format!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    std::os::unix::fs::chown(out, Some(owner), Some(owner)).map_err(|source| VmError::Io {
        what: "chown of the node disk".into(),
        source,
    })?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(out, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        VmError::Io {
            what: "chmod of the node disk".into(),
            source,
        }
    })
}
