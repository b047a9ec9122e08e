//! Encrypted ext4 volume images: `format_encrypted` makes a sparse image whose directory
//! `data` is encrypted with fscrypt under a 64-byte key; `open_data` hands out a detached clone
//! of that directory, the only way a node ever sees the volume.
//!
//! Invariants: images are mounted only as detached mounts (loop device + fsmount), never on a
//! host path; one image has one loop device and one superblock (`loopdev::attach` shares it);
//! `open_data` refuses a key whose id is not the `data` policy's (a wrong key gets an error,
//! not a directory of encrypted names). Everything the tenant writes lives under `data`, so
//! on disk it is ciphertext (contents and names); the filesystem metadata (sizes, times) is not.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fscrypt::{self, FscryptError};
use crate::loopdev::{self, LoopDevice, LoopError};
use crate::mountapi::{
    self, FsContext, MountError, ATTR_NODEV, ATTR_NOEXEC, ATTR_NOSUID, ATTR_RDONLY,
};
use crate::secret::Secret;

/// The encrypted directory at the root of every volume image.
pub const DATA_DIR: &str = "data";

/// What can go wrong with a volume image.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{0} already exists; refusing to format over it")]
    Exists(PathBuf),
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mkfs.ext4 failed for {path}: {stderr}")]
    Mkfs { path: PathBuf, stderr: String },
    #[error("the key does not match the encryption policy of {0}")]
    WrongKey(PathBuf),
    #[error("{path} is already attached {held} and cannot be opened {asked} beside it: detach its other users (stop the nodes that hold it) first")]
    SharedMode {
        path: PathBuf,
        held: &'static str,
        asked: &'static str,
    },
    #[error(transparent)]
    Loop(#[from] LoopError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error(transparent)]
    Fscrypt(#[from] FscryptError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { what, path, source }
}

/// Mounts the ext4 on `image` as a detached mount with `attrs`; the loop device is returned
/// too and may be dropped once the mount exists. `read_only` attaches the loop device
/// read-only and makes the superblock `ro,norecovery`: no journal replay, no superblock write,
/// the image's bytes stay as they are. A superblock already shared in the other mode is refused
/// (the kernel would hand back the existing one whatever was asked).
pub(crate) fn mount_image(
    image: &Path,
    attrs: u64,
    read_only: bool,
) -> Result<(LoopDevice, OwnedFd), ImageError> {
    let dev = loopdev::attach(image, read_only)?;
    if dev.read_only() != read_only {
        let mode = |ro| if ro { "read-only" } else { "read-write" };
        return Err(ImageError::SharedMode {
            path: image.to_path_buf(),
            held: mode(dev.read_only()),
            asked: mode(read_only),
        });
    }
    let ctx = FsContext::open("ext4")?;
    ctx.set_string("source", &dev.path().to_string_lossy())?;
    if read_only {
        ctx.set_flag("ro")?;
        ctx.set_flag("norecovery")?;
    }
    let mnt = ctx.mount(attrs)?;
    Ok((dev, mnt))
}

pub(crate) fn openat(dir: &OwnedFd, name: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is NUL-terminated and `dir` open; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by openat and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes a sparse `size_bytes` image with `inodes` inodes, its root owned by `uid:gid`, and an
/// empty `data` directory (owner `uid:gid`, 0755) encrypted under `key`.
pub fn format_encrypted(
    image: &Path,
    size_bytes: u64,
    inodes: u64,
    uid: u32,
    gid: u32,
    key: &Secret<64>,
) -> Result<(), ImageError> {
    format(
        image,
        size_bytes,
        inodes,
        (uid, gid),
        key,
        &["-O", "encrypt"],
    )
}

/// As [`format_encrypted`], for an image written once and then only read (a commit's tree,
/// #13): no journal (nothing to replay: a write that did not finish discards the image), no
/// blocks reserved for root, 4 KiB blocks whatever the size (callers size it in blocks).
pub fn format_write_once(
    image: &Path,
    size_bytes: u64,
    inodes: u64,
    uid: u32,
    gid: u32,
    key: &Secret<64>,
) -> Result<(), ImageError> {
    let opts = ["-O", "encrypt,^has_journal", "-m", "0", "-b", "4096"];
    format(image, size_bytes, inodes, (uid, gid), key, &opts)
}

fn format(
    image: &Path,
    size_bytes: u64,
    inodes: u64,
    (uid, gid): (u32, u32),
    key: &Secret<64>,
    features: &[&str],
) -> Result<(), ImageError> {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(image)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                ImageError::Exists(image.to_path_buf())
            } else {
                io_err("creating", image)(e)
            }
        })?;
    f.set_len(size_bytes).map_err(io_err("sizing", image))?;
    drop(f);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .args(features)
        .args(["-N", &inodes.to_string(), "-E"])
        .arg(format!("root_owner={uid}:{gid},nodiscard"))
        .arg(image)
        .output()
        .map_err(io_err("running mkfs.ext4 for", image))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(image);
        return Err(ImageError::Mkfs {
            path: image.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let r = (|| {
        let (_dev, mnt) = mount_image(image, ATTR_NODEV | ATTR_NOSUID | ATTR_NOEXEC, false)?;
        // fsmount gives an O_PATH descriptor, which ioctls refuse: open the root for real.
        let root = openat(&mnt, ".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(io_err("opening the root of", image))?;
        let id = fscrypt::add_key(root.as_fd(), key)?;
        let c = CString::new(DATA_DIR).expect("no NUL");
        // SAFETY: mkdirat/fchownat on an open directory with a NUL-terminated name.
        let r = unsafe { libc::mkdirat(mnt.as_raw_fd(), c.as_ptr(), 0o755) };
        if r != 0 {
            return Err(io_err("making data in", image)(io::Error::last_os_error()));
        }
        let data = openat(&mnt, DATA_DIR, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .map_err(io_err("opening data in", image))?;
        // SAFETY: fchown on a descriptor we own.
        if unsafe { libc::fchown(data.as_raw_fd(), uid, gid) } != 0 {
            return Err(io_err("chowning data in", image)(io::Error::last_os_error()));
        }
        fscrypt::set_policy(data.as_fd(), id)?;
        // SAFETY: syncfs on a descriptor we own.
        unsafe { libc::syncfs(root.as_raw_fd()) };
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(image);
    }
    r
}

/// A detached mount of the image's `data` directory, unlocked with `key`, mounted
/// nodev,nosuid,noexec (and read-only when asked). A node's init `move_mount`s it into place;
/// `mountapi::set_attr` can clear noexec where the tenant's policy allows exec.
pub fn open_data(image: &Path, key: &Secret<64>, read_only: bool) -> Result<OwnedFd, ImageError> {
    let mut attrs = ATTR_NODEV | ATTR_NOSUID | ATTR_NOEXEC;
    if read_only {
        attrs |= ATTR_RDONLY;
    }
    let (_dev, mnt) = mount_image(image, attrs, read_only)?;
    let data = openat(&mnt, DATA_DIR, libc::O_RDONLY | libc::O_DIRECTORY, 0)
        .map_err(io_err("opening data in", image))?;
    let want = fscrypt::policy_of(data.as_fd())?;
    let id = fscrypt::add_key(data.as_fd(), key)?;
    if id != want {
        let _ = fscrypt::remove_key(data.as_fd(), id);
        return Err(ImageError::WrongKey(image.to_path_buf()));
    }
    Ok(mountapi::clone_tree(mnt.as_fd(), DATA_DIR)?)
}

#[cfg(test)]
#[path = "ext4img_tests.rs"]
mod tests;
