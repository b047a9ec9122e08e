//! A jail node's volumes (#13, attach). The supervisor (root, the host's mount namespace)
//! opens each volume of the spec before its clone: a detached mount of the image's encrypted
//! `data` directory (`bulkhead_storage::ext4img::open_data`: a loop device with autoclear, the
//! volume's fscrypt key added, `nodev,nosuid,noexec`, read-only if asked; `noexec` cleared
//! only for a volume whose spec says `exec`). The clone copies the descriptors into the node's
//! init, which, after its overlay and before pivot_root, makes each mount point inside the
//! rootfs without following any symlink the image planted, and `move_mount`s the volume
//! there.
//!
//! Invariants: nothing of a volume is ever mounted in the host's mount namespace (a detached
//! mount lives in no namespace until the init moves it into the node's); when the node's
//! mount namespace goes, its volume mounts go, and the loop device frees itself. The node
//! never holds CAP_SYS_ADMIN in its mount namespace's owner, so it cannot change the flags;
//! a nested user namespace copies the mounts with their flags locked.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use bulkhead_driver::instruction::{VolumeKeys, VOLUME_MOUNT_FAILED};
use bulkhead_driver::{check_volume_path, NodeSpec};
use bulkhead_storage::mountapi;

use crate::JailError;

/// One volume, open and ready to be moved into the node.
pub(crate) struct OpenVolume {
    pub fd: OwnedFd,
    pub path: String,
}

/// In the supervisor, before the clone: the detached mounts of the spec's volumes.
pub(crate) fn open(spec: &NodeSpec, keys: &VolumeKeys) -> Result<Vec<OpenVolume>, JailError> {
    let failed = |id: &str, e: &dyn std::fmt::Display| {
        JailError::Setup(format!("{VOLUME_MOUNT_FAILED}: volume {id}: {e}"))
    };
    let mut out = Vec::with_capacity(spec.volumes.len());
    for v in &spec.volumes {
        check_volume_path(&v.path).map_err(|e| failed(&v.id, &e))?;
        let key = keys
            .get(&v.key_id)
            .ok_or_else(|| failed(&v.id, &"no key came from the daemon"))?;
        let secret = bulkhead_storage::Secret::<64>::from_slice(key.bytes())
            .ok_or_else(|| failed(&v.id, &"a key of the wrong length"))?;
        let fd = bulkhead_storage::ext4img::open_data(&v.image, &secret, v.read_only)
            .map_err(|e| failed(&v.id, &e))?;
        drop(secret);
        if v.exec {
            mountapi::set_attr(fd.as_fd(), 0, mountapi::ATTR_NOEXEC, None)
                .map_err(|e| failed(&v.id, &e))?;
        }
        out.push(OpenVolume {
            fd,
            path: v.path.clone(),
        });
    }
    Ok(out)
}

fn c(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} holds a NUL byte"))
}

fn open_path(dir: &OwnedFd, name: &str) -> std::io::Result<OwnedFd> {
    let n = c(name).map_err(std::io::Error::other)?;
    // SAFETY: `dir` is open and `n` NUL-terminated; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor openat just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The directory `path` (absolute, checked) inside the tree of `root`, made where missing
/// (0755, the node's root as owner), one component at a time and never through a symlink or
/// a non-directory: a symlink the image planted cannot send the mount out of the node.
pub(crate) fn mount_point(root: &Path, path: &str) -> Result<OwnedFd, String> {
    check_volume_path(path)?;
    let r = c(&root.to_string_lossy())?;
    // SAFETY: `r` is NUL-terminated; the result is checked.
    let fd = unsafe {
        libc::open(
            r.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!(
            "opening {}: {}",
            root.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor open just returned, owned by nobody else.
    let mut cur = unsafe { OwnedFd::from_raw_fd(fd) };
    for comp in path[1..].split('/') {
        let next = match open_path(&cur, comp) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let n = c(comp)?;
                // SAFETY: `cur` is open and `n` NUL-terminated; the result is checked.
                if unsafe { libc::mkdirat(cur.as_raw_fd(), n.as_ptr(), 0o755) } < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(format!("making {comp:?} of volume path {path}: {e}"));
                    }
                }
                open_path(&cur, comp)
            }
            r => r,
        };
        cur = next.map_err(|e| match e.raw_os_error() {
            Some(libc::ENOTDIR) | Some(libc::ELOOP) => format!(
                "volume path {path}: {comp:?} in the image is a symlink or not a directory; pick another path"
            ),
            _ => format!("volume path {path}: {comp:?}: {e}"),
        })?;
    }
    Ok(cur)
}

/// In the node's init, after the overlay and before pivot_root: moves each volume onto its
/// path inside `rootfs`, then closes the init's copies.
pub(crate) fn attach(rootfs: &Path, volumes: &mut Vec<OpenVolume>) -> Result<(), String> {
    for v in volumes.drain(..) {
        let at = mount_point(rootfs, &v.path).map_err(|e| format!("{VOLUME_MOUNT_FAILED}: {e}"))?;
        mountapi::move_mount(v.fd.as_fd(), at.as_fd(), "").map_err(|e| {
            format!(
                "{VOLUME_MOUNT_FAILED}: mounting a volume at {}: {e}",
                v.path
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn mount_points_are_made_inside_and_never_through_symlinks() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        mount_point(root.path(), "/data/deep").unwrap();
        assert!(root.path().join("data/deep").is_dir());
        // An existing directory is used as it is.
        mount_point(root.path(), "/data").unwrap();
        // A planted symlink (absolute or relative) is refused, and nothing is made beyond it.
        symlink(outside.path(), root.path().join("evil")).unwrap();
        let e = mount_point(root.path(), "/evil/x").unwrap_err();
        assert!(e.contains("symlink"), "{e}");
        symlink("../../..", root.path().join("up")).unwrap();
        assert!(mount_point(root.path(), "/up/tmp").is_err());
        assert!(mount_point(root.path(), "/evil").is_err());
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
        // A file is not a mount point for a volume.
        std::fs::write(root.path().join("f"), b"").unwrap();
        assert!(mount_point(root.path(), "/f").is_err());
        // Paths are checked first.
        assert!(mount_point(root.path(), "/a/../b").is_err());
        assert!(mount_point(root.path(), "/proc/x").is_err());
    }
}
