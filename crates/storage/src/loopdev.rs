//! Loop devices for volume images: attach with `LO_FLAGS_AUTOCLEAR` (LOOP_CTL_GET_FREE +
//! LOOP_CONFIGURE) so the device frees itself when its last user (our descriptor, then the
//! mounts of its superblock) goes away, or reuse the device that already backs the image.
//!
//! Invariant: one image has at most one loop device, hence one ext4 superblock: two
//! superblocks on one image would corrupt it. Attaching holds an exclusive `flock` on the image
//! while it looks for an existing device and configures a new one, and a found device is
//! checked (LOOP_GET_STATUS64: same device and inode) after opening it, because it may have
//! been auto-cleared in between.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What can go wrong with a loop device.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no free loop device after several tries (is /dev/loop-control there and are loop devices left?)")]
    NoneFree,
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

fn zeroed_info() -> LoopInfo64 {
    // SAFETY: LoopInfo64 is plain integers and byte arrays: all-zero is a valid value.
    unsafe { std::mem::zeroed() }
}

/// An open loop device. Keep it until the filesystem on it is mounted (the mount then holds
/// the device); with autoclear the device detaches when the last holder goes.
#[derive(Debug)]
pub struct LoopDevice {
    file: File,
    path: PathBuf,
    read_only: bool,
}

impl LoopDevice {
    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the device is read-only (`LO_FLAGS_READ_ONLY`): a shared device keeps the mode
    /// of whoever attached it first, which may not be the one asked for.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The open device.
    pub fn file(&self) -> &File {
        &self.file
    }
}

fn ioctl(fd: &File, req: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<libc::c_int> {
    // SAFETY: callers pass a request whose argument type matches `arg` (checked per call site).
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r)
}

fn status(dev: &File) -> io::Result<LoopInfo64> {
    let mut info = zeroed_info();
    ioctl(
        dev,
        LOOP_GET_STATUS64,
        (&mut info as *mut LoopInfo64).cast(),
    )?;
    Ok(info)
}

/// The loop device currently backed by `image` (compared by device and inode), if any.
pub fn find_backing(image: &Path) -> io::Result<Option<PathBuf>> {
    let md = std::fs::metadata(image)?;
    for e in std::fs::read_dir("/sys/block")? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        else {
            continue;
        };
        let backing = backing.trim_end_matches('\n');
        let same = std::fs::metadata(backing)
            .map(|b| b.dev() == md.dev() && b.ino() == md.ino())
            .unwrap_or(false);
        if same {
            return Ok(Some(PathBuf::from(format!("/dev/{name}"))));
        }
    }
    Ok(None)
}

fn open_dev(path: &Path, read_only: bool) -> io::Result<File> {
    OpenOptions::new().read(true).write(!read_only).open(path)
}

/// A loop device backed by `image`: the existing one if there is one, else a new one with
/// autoclear (and read-only when `read_only`). An existing device is shared whatever its mode.
pub fn attach(image: &Path, read_only: bool) -> Result<LoopDevice, LoopError> {
    let io_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| LoopError::Io { what, path, source }
    };
    let backing = open_dev(image, read_only).map_err(io_err("opening", image))?;
    let md = backing.metadata().map_err(io_err("inspecting", image))?;
    // The lock is on its own open file description: `backing`'s lives on inside the loop
    // device, and a lock on it would outlive this call.
    let lock = File::open(image).map_err(io_err("opening", image))?;
    // SAFETY: flock on a descriptor we own; released when `lock` closes at return.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_err("locking", image)(io::Error::last_os_error()));
    }
    if let Some(dev) =
        find_backing(image).map_err(io_err("looking for the loop device of", image))?
    {
        // Opened read-only if the device itself is (a read-only device refuses O_RDWR).
        let file = open_dev(&dev, read_only).or_else(|_| open_dev(&dev, true));
        if let Ok(file) = file {
            if let Ok(info) = status(&file) {
                if info.lo_device == md.dev() && info.lo_inode == md.ino() {
                    let read_only = info.lo_flags & LO_FLAGS_READ_ONLY != 0;
                    return Ok(LoopDevice {
                        file,
                        path: dev,
                        read_only,
                    });
                }
            }
        }
        // Cleared in between: attach a new one below.
    }
    let ctl_path = Path::new("/dev/loop-control");
    let ctl = File::open(ctl_path).map_err(io_err("opening", ctl_path))?;
    for _ in 0..16 {
        let n = ioctl(&ctl, LOOP_CTL_GET_FREE, std::ptr::null_mut())
            .map_err(io_err("asking for a free loop device on", ctl_path))?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let file = open_dev(&path, read_only).map_err(io_err("opening", &path))?;
        let mut info = zeroed_info();
        info.lo_flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        let name = image.as_os_str().as_encoded_bytes();
        let k = name.len().min(63);
        info.lo_file_name[..k].copy_from_slice(&name[..k]);
        let mut cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        match ioctl(&file, LOOP_CONFIGURE, (&mut cfg as *mut LoopConfig).cast()) {
            Ok(_) => {
                return Ok(LoopDevice {
                    file,
                    path,
                    read_only,
                })
            }
            // Another process took it between GET_FREE and CONFIGURE: try the next.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => return Err(io_err("configuring", &path)(e)),
        }
    }
    Err(LoopError::NoneFree)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits up to 3 s for `image` to have no loop device (autoclear runs asynchronously).
    pub(crate) fn wait_detached(image: &Path) -> bool {
        for _ in 0..300 {
            if find_backing(image).unwrap().is_none() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn attach_shares_one_device_and_autoclears() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("img");
        File::create(&img).unwrap().set_len(4 << 20).unwrap();
        let a = attach(&img, false).unwrap();
        assert_eq!(find_backing(&img).unwrap().as_deref(), Some(a.path()));
        let b = attach(&img, true).unwrap();
        assert_eq!(a.path(), b.path(), "one image, one device");
        let size = std::fs::read_to_string(format!(
            "/sys/block/{}/size",
            a.path().file_name().unwrap().to_string_lossy()
        ))
        .unwrap();
        assert_eq!(size.trim(), (8192).to_string());
        drop(a);
        assert!(find_backing(&img).unwrap().is_some(), "b still holds it");
        drop(b);
        assert!(wait_detached(&img), "autoclear did not free the device");
    }
}
