//! A node's root disk: an ext4 image made from the image's tree with `mkfs.ext4 -d` (no
//! mount, no loop device, no root needed), sparse, as large as the group's `storage_size`.
//! No journal (the disk lives and dies with its node) and owned by QEMU's uid.
//!
//! A persistent node's disk (#13) is encrypted at rest instead: [`make_encrypted`] makes the
//! same ext4 (with a journal: it outlives hard stops) in a plaintext scratch file, converts it
//! with `qemu-img` into a LUKS image (QEMU's own block encryption: the host has no dm-crypt),
//! the key passed on a pipe, never in a file or an argument, and wipes the scratch file.

use crate::VmError;
use std::path::Path;
use std::process::Command;

/// A persistent node's root disk as QEMU opens it.
pub const LUKS_DISK: &str = "disk.luks";

pub fn make(tree: &Path, out: &Path, size_bytes: u64, owner: u32) -> Result<(), VmError> {
    make_ext4(tree, out, size_bytes, &["-O", "^has_journal"])?;
    own(out, owner)
}

/// The key as QEMU's secret for LUKS: hex text (its LUKS driver wants a UTF-8 passphrase; 512
/// random bits need no stretching, hence the minimal `iter-time`).
pub fn key_text(key: &[u8; 64]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes `out` (`disk.luks`): the image's tree as ext4 in `<out>.plain` (a scratch file next
/// to it, root's), converted into a LUKS image under `key`, the scratch wiped and removed.
pub fn make_encrypted(
    tree: &Path,
    out: &Path,
    size_bytes: u64,
    owner: u32,
    key: &[u8; 64],
) -> Result<(), VmError> {
    let plain = out.with_extension("plain");
    let r = (|| {
        make_ext4(tree, &plain, size_bytes, &[])?;
        let mut child = Command::new("qemu-img")
            .args([
                "convert",
                "-q",
                "--object",
                "secret,id=k,file=/dev/fd/0,format=raw",
            ])
            .args(["-f", "raw", "-O", "luks", "-o", "key-secret=k,iter-time=10"])
            .arg(&plain)
            .arg(out)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| VmError::Io {
                what: "running qemu-img (install qemu-utils)".into(),
                source,
            })?;
        if let Some(mut i) = child.stdin.take() {
            use std::io::Write;
            let mut text = key_text(key).into_bytes();
            let _ = i.write_all(&text);
            text.iter_mut().for_each(|b| *b = 0);
        }
        let o = child.wait_with_output().map_err(|source| VmError::Io {
            what: "waiting for qemu-img".into(),
            source,
        })?;
        if !o.status.success() {
            let _ = std::fs::remove_file(out);
            return Err(VmError::Disk(format!(
                "qemu-img convert to LUKS failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )));
        }
        own(out, owner)
    })();
    // Whatever happened above (#13: the scratch is never unlinked unwiped; one that cannot
    // be wiped stays, for the node directory's wipe when the failed node goes).
    wipe_if_any(&plain)
        .map_err(|e| VmError::Disk(format!("wiping the plaintext scratch disk: {e}")))?;
    r
}

/// Wipes `path` (zeros over its allocated blocks, synced, then unlinked) if it is there.
fn wipe_if_any(path: &Path) -> Result<(), bulkhead_storage::wipe::WipeError> {
    match bulkhead_storage::wipe::wipe_file(path) {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

fn make_ext4(tree: &Path, out: &Path, size_bytes: u64, extra: &[&str]) -> Result<(), VmError> {
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
        .args(["-q", "-F"])
        .args(extra)
        .args(["-E", "nodiscard", "-d"])
        .arg(tree)
        .arg(out)
        .output()
        .map_err(|source| VmError::Io {
            what: "running mkfs.ext4 (install e2fsprogs)".into(),
            source,
        })?;
    if !o.status.success() {
        // A partial image of the tree: wiped like any node disk (left, if that fails, for the
        // node directory's wipe).
        let _ = wipe_if_any(out);
        return Err(VmError::Disk(format!(
            "mkfs.ext4 failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )));
    }
    Ok(())
}

/// QEMU's uid owns the disk, 0600.
fn own(out: &Path, owner: u32) -> Result<(), VmError> {
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
