//! An encrypted image's `data` tree reached by a path, but from one thread only (#13: a
//! commit's tree while it is unpacked into its image, or while a microVM's disk is made from
//! it). The tree is mounted in a mount namespace of its own, made for a thread that lives for
//! the call.
//!
//! Invariants:
//! - the mount never shows in the host's mount namespace (or any other): the thread unshares
//!   its mount namespace and makes every mount in it private before it mounts anything, so
//!   nothing propagates out; only the thread and the processes it starts (which inherit its
//!   namespace: `mkfs.ext4 -d`) see the tree;
//! - the namespace, and the mount with it, ends with the thread however the call ends: a
//!   panic, or the daemon's death (a process that dies takes its threads' namespaces along);
//!   the loop device then frees itself (autoclear). Nothing is left for a reconciliation but
//!   the image file;
//! - a read-write call syncs the file system, unmounts it and returns only once no loop
//!   device backs the image any more, so that the image can be renamed into place and opened
//!   read-only after it (a read-write loop device would otherwise be shared).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::ext4img::{open_data, ImageError};
use crate::{loopdev, mountapi, Secret};

/// How long a read-write call waits for its loop device to go after the unmount.
const DETACH_WAIT: Duration = Duration::from_secs(10);

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { what, path, source }
}

fn cpath(p: &Path) -> Result<CString, ImageError> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| {
        io_err("a NUL byte in", p)(std::io::Error::from(std::io::ErrorKind::InvalidInput))
    })
}

/// Runs `f` with the `data` tree of `image` (unlocked with `key`) mounted at `at` (an existing
/// empty directory), `nodev,nosuid,noexec`, read-only when asked, in a mount namespace of a
/// thread of its own; `f` gets `at`. See the module's invariants.
pub fn with_data_at<T: Send>(
    image: &Path,
    key: &Secret<64>,
    read_only: bool,
    at: &Path,
    f: impl FnOnce(&Path) -> T + Send,
) -> Result<T, ImageError> {
    let r = std::thread::scope(|s| {
        s.spawn(|| in_own_namespace(image, key, read_only, at, f))
            .join()
    });
    let r = r.unwrap_or_else(|p| std::panic::resume_unwind(p));
    if !read_only {
        // The unmount released the superblock; the loop device goes right after.
        let until = Instant::now() + DETACH_WAIT;
        while matches!(loopdev::find_backing(image), Ok(Some(_))) {
            if Instant::now() > until {
                return Err(ImageError::Io {
                    what: "waiting for the loop device to leave",
                    path: image.to_path_buf(),
                    source: std::io::Error::from(std::io::ErrorKind::TimedOut),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    r
}

fn in_own_namespace<T>(
    image: &Path,
    key: &Secret<64>,
    read_only: bool,
    at: &Path,
    f: impl FnOnce(&Path) -> T,
) -> Result<T, ImageError> {
    // SAFETY: unshare with CLONE_NEWNS affects only the calling thread (it gets its own
    // fs_struct too); the result is checked.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(io_err("unsharing a mount namespace to mount", image)(
            std::io::Error::last_os_error(),
        ));
    }
    let root = c"/";
    // SAFETY: a NUL-terminated path and null optional arguments; the result is checked.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io_err("making the mounts private to mount", image)(
            std::io::Error::last_os_error(),
        ));
    }
    let tree = open_data(image, key, read_only)?;
    let c = cpath(at)?;
    // SAFETY: a NUL-terminated path; the result is checked and owned below.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io_err("opening", at)(std::io::Error::last_os_error()));
    }
    // SAFETY: a descriptor open just returned, owned by nobody else.
    let target = unsafe { OwnedFd::from_raw_fd(fd) };
    mountapi::move_mount(tree.as_fd(), target.as_fd(), "")?;
    drop((tree, target));
    let out = f(at);
    if !read_only {
        let dir = std::fs::File::open(at).map_err(io_err("opening", at))?;
        // SAFETY: syncfs on a descriptor we own; the result is checked.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io_err("syncing", image)(std::io::Error::last_os_error()));
        }
    }
    // SAFETY: a NUL-terminated path; the result is checked.
    if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: as above; the namespace goes with the thread in any case.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        if !read_only {
            return Err(io_err("unmounting", image)(e));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4img::format_write_once;

    const MARK: &[u8] = b"PRIVMOUNT-PLAINTEXT-MARKER-51c2";

    /// Mounts the calling thread sees (`/proc/self` is the main thread's view).
    fn mounts() -> usize {
        std::fs::read_to_string("/proc/thread-self/mountinfo")
            .unwrap()
            .lines()
            .count()
    }

    #[test]
    fn a_tree_written_and_read_through_a_private_mount_is_ciphertext_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("tree.img");
        let at = d.path().join("mnt");
        std::fs::create_dir(&at).unwrap();
        let key = Secret::<64>::from_slice(&[7; 64]).unwrap();
        format_write_once(&img, 64 << 20, 256, 1000, 1000, &key).unwrap();
        let before = mounts();
        let seen_inside = with_data_at(&img, &key, false, &at, |p| {
            std::fs::write(p.join("marker"), MARK.repeat(100)).unwrap();
            let m = mounts();
            // A child process sees the tree too (it inherits the thread's namespace).
            let out = std::process::Command::new("cat")
                .arg(p.join("marker"))
                .output()
                .unwrap();
            assert!(out.stdout.starts_with(MARK));
            m
        })
        .unwrap();
        assert_eq!(seen_inside, before + 1, "mounted in the thread's namespace");
        assert_eq!(
            mounts(),
            before,
            "the mount showed in the process's namespace"
        );
        assert!(
            loopdev::find_backing(&img).unwrap().is_none(),
            "loop device left"
        );
        assert_eq!(std::fs::read_dir(&at).unwrap().count(), 0);
        let raw = std::fs::read(&img).unwrap();
        assert!(
            !raw.windows(MARK.len()).any(|w| w == MARK),
            "plaintext on disk"
        );
        // Read-only: the content, and no write.
        let back = with_data_at(&img, &key, true, &at, |p| {
            let w = std::fs::write(p.join("other"), b"x");
            (std::fs::read(p.join("marker")).unwrap(), w.is_err())
        })
        .unwrap();
        assert_eq!(back, (MARK.repeat(100), true));
        // A wrong key opens nothing.
        let wrong = Secret::<64>::from_slice(&[8; 64]).unwrap();
        assert!(with_data_at(&img, &wrong, true, &at, |_| ()).is_err());
        assert_eq!(mounts(), before);
    }
}
