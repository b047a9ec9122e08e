//! A persistent jail node's writable layer (#13, persistent nodes). The supervisor (root, the
//! host's mount namespace) opens the node's `layer.img` before its clone: a detached mount of
//! the image's fscrypt-encrypted `data` directory (`bulkhead_storage::ext4img::open_data`: a
//! loop device with autoclear, the layer's key added, `nodev,nosuid`; `noexec` cleared, since
//! this is the node's root filesystem, which a tmpfs layer never had). The clone copies the
//! descriptor into the node's init, which moves the mount onto its scratch directory where a
//! tmpfs would go; the overlay's upper and work directories then live in the encrypted
//! directory and survive the node's processes.
//!
//! Overlayfs (userxattr, in the node's user namespace) takes an upper directory on an
//! fscrypt-encrypted ext4 directory mounted from outside the namespace (checked on 6.18:
//! writes, whiteouts and a remount keep the content; the image holds only ciphertext).
//!
//! A node made from a commit (#13 commit and fork) gets the commit's tree the same way, read
//! only ([`open_commit`]): the init moves it onto `scratch/lower` and the overlay takes it as
//! its lower instead of the tenant's image.
//!
//! Invariants: nothing of the layer (or a commit) is mounted in the host's mount namespace; when the node's
//! mount namespace goes (its processes are gone and the supervisor dropped its descriptor),
//! the superblock goes, and the loop device frees itself. The key is never in the spec.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;

use bulkhead_driver::instruction::VolumeKeys;
use bulkhead_driver::NodeSpec;
use bulkhead_storage::mountapi;

use crate::JailError;

/// In the supervisor, before the clone: the detached mount of the spec's layer, if it has one.
pub(crate) fn open(spec: &NodeSpec, keys: &VolumeKeys) -> Result<Option<OwnedFd>, JailError> {
    let Some(layer) = &spec.persistent_layer else {
        return Ok(None);
    };
    let failed = |e: &dyn std::fmt::Display| {
        JailError::Setup(format!(
            "opening the persistent layer {}: {e}",
            layer.image.display()
        ))
    };
    let key = keys
        .get(&layer.key_id)
        .ok_or_else(|| failed(&"no key came from the daemon"))?;
    let secret = bulkhead_storage::Secret::<64>::from_slice(key.bytes())
        .ok_or_else(|| failed(&"a key of the wrong length"))?;
    let fd = bulkhead_storage::ext4img::open_data(&layer.image, &secret, false)
        .map_err(|e| failed(&e))?;
    drop(secret);
    // The root filesystem runs the image's programs: exec stays allowed (nodev,nosuid remain).
    mountapi::set_attr(fd.as_fd(), 0, mountapi::ATTR_NOEXEC, None).map_err(|e| failed(&e))?;
    Ok(Some(fd))
}

/// In the supervisor, before the clone: the detached read-only mount of the commit the node
/// starts from (#13 commit and fork), if its spec names one: the `data` tree of the commit's
/// encrypted image (`ro,norecovery` on a read-only loop device shared by every node of the
/// commit, its key added), `nodev,nosuid`; exec allowed (it is the overlay's lower, the
/// node's programs). The init moves it into place ([`attach`]).
pub(crate) fn open_commit(
    spec: &NodeSpec,
    keys: &VolumeKeys,
) -> Result<Option<OwnedFd>, JailError> {
    let Some(commit) = &spec.commit_image else {
        return Ok(None);
    };
    let failed = |e: &dyn std::fmt::Display| {
        JailError::Setup(format!(
            "opening the commit's image {}: {e}",
            commit.image.display()
        ))
    };
    let key = keys
        .get(&commit.key_id)
        .ok_or_else(|| failed(&"no key came from the daemon"))?;
    let secret = bulkhead_storage::Secret::<64>::from_slice(key.bytes())
        .ok_or_else(|| failed(&"a key of the wrong length"))?;
    let fd = bulkhead_storage::ext4img::open_data(&commit.image, &secret, true)
        .map_err(|e| failed(&e))?;
    drop(secret);
    mountapi::set_attr(fd.as_fd(), 0, mountapi::ATTR_NOEXEC, None).map_err(|e| failed(&e))?;
    Ok(Some(fd))
}

/// In the node's init, before the overlay: moves a detached mount onto the directory `at`
/// (the layer where a tmpfs layer would be mounted; a commit's tree where the overlay takes
/// its lower from).
pub(crate) fn attach(mnt: &OwnedFd, at: &Path) -> Result<(), String> {
    let c = std::ffi::CString::new(at.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} holds a NUL byte", at.display()))?;
    // SAFETY: `c` is NUL-terminated; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(format!(
            "opening {}: {}",
            at.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: a descriptor open just returned, owned by nobody else.
    let dir = unsafe { OwnedFd::from_raw_fd(fd) };
    mountapi::move_mount(mnt.as_fd(), dir.as_fd(), "")
        .map_err(|e| format!("mounting {}: {e}", at.display()))?;
    // The init's copy of the descriptor closes at its exec (`exec_agent` marks every
    // descriptor above 3 close-on-exec).
    Ok(())
}
