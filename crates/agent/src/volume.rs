//! Volumes in a microVM guest (#13, attach; capability `volumes`): the host hands each volume
//! image to QEMU as a virtio disk with a `serial`, and the daemon asks the guest's agent to
//! mount it once the agent answers ([`crate::proto::Request::MountVolume`]). The agent finds
//! the disk by its serial (`/sys/block/vd*/serial`), mounts its ext4 on a private directory
//! (`nodev,nosuid,noexec`; read-only with `noload` when asked, so a journal another writer left
//! is not replayed), adds the volume's fscrypt key to that file system, binds its `data`
//! directory at the asked path with the asked flags, and detaches the private mount (the bind
//! keeps the file system, and the key on it, alive).
//!
//! Only the guest's agent (PID 1 of the guest kernel, [`crate::guest::boot`]) does this: a
//! jail's agent has no such power and answers that it does not. The key is zeroed after use.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::proto::{Event, MountVolume, IN_GUEST, MOUNT_FAILED};

/// Where a volume's file system is mounted on its way to its path (a tmpfs of the agent's).
const PRIVATE: &str = "/run/bulkhead/.volumes";

/// `FS_IOC_ADD_ENCRYPTION_KEY`: `_IOWR('f', 23, struct fscrypt_add_key_arg)` (80 bytes).
const FS_IOC_ADD_ENCRYPTION_KEY: libc::c_ulong = 0xc050_6617;
/// `FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER`: a v2 policy's key, named by its identifier.
const KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;

fn failed(what: impl std::fmt::Display) -> Event {
    Event::error(MOUNT_FAILED, what.to_string())
}

fn cstr(p: &Path) -> Result<CString, Event> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| failed("path holds a NUL byte"))
}

fn sys_mount(
    src: &Path,
    dst: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), Event> {
    let (s, d) = (cstr(src)?, cstr(dst)?);
    let t = fstype.map(|t| CString::new(t).unwrap_or_default());
    let o = data.map(|o| CString::new(o).unwrap_or_default());
    // SAFETY: valid NUL-terminated strings (or null) for the call's duration.
    let r = unsafe {
        libc::mount(
            s.as_ptr(),
            d.as_ptr(),
            t.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            o.as_ref().map_or(std::ptr::null(), |o| o.as_ptr().cast()),
        )
    };
    if r < 0 {
        return Err(failed(format!(
            "mount {} on {}: {}",
            src.display(),
            dst.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// A serial as QEMU's `serial=` carries it: 1 to 20 of `[A-Za-z0-9_-]`.
pub fn valid_serial(s: &str) -> bool {
    (1..=20).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An absolute path, not `/`, with no `.` or `..` components.
pub fn valid_path(p: &str) -> bool {
    let within = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
    p.starts_with('/')
        && p.len() > 1
        && p.len() <= 4096
        && !p.contains('\0')
        && p[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
        && !RESERVED.iter().any(|r| within(p, r) || within(r, p))
}

/// Paths a volume never goes on, under or above: a copy of `bulkhead_driver`'s
/// `RESERVED_VOLUME_PATHS` (the agent depends on no other bulkhead crate; a daemon test pins
/// the two equal).
pub const RESERVED: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/.bulkhead",
    "/run/bulkhead",
    "/run/secrets",
];

/// The block device whose virtio serial is `serial`.
pub(crate) fn disk_of(serial: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir("/sys/block").ok()?.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with("vd") {
            continue;
        }
        if std::fs::read_to_string(e.path().join("serial")).is_ok_and(|s| s.trim() == serial) {
            return Some(Path::new("/dev").join(name));
        }
    }
    None
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 128 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn wipe(b: &mut [u8]) {
    for x in b.iter_mut() {
        // SAFETY: a valid, exclusive reference to one byte.
        unsafe { std::ptr::write_volatile(x, 0) };
    }
}

/// Adds a v2 fscrypt key to the file system of `dir`.
fn add_key(dir: &Path, key: &[u8]) -> Result<(), Event> {
    let f =
        std::fs::File::open(dir).map_err(|e| failed(format!("opening {}: {e}", dir.display())))?;
    // struct fscrypt_add_key_arg: key_spec {u32 type, u32 reserved, u8 u[32]}, u32 raw_size,
    // u32 key_id, u32 reserved[8], then the raw key.
    let mut arg = vec![0u8; 80 + key.len()];
    arg[0..4].copy_from_slice(&KEY_SPEC_TYPE_IDENTIFIER.to_ne_bytes());
    arg[40..44].copy_from_slice(&(key.len() as u32).to_ne_bytes());
    arg[80..].copy_from_slice(key);
    // SAFETY: the buffer is the ioctl's argument struct followed by `raw_size` key bytes.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_ADD_ENCRYPTION_KEY, arg.as_mut_ptr()) };
    let e = std::io::Error::last_os_error();
    wipe(&mut arg);
    if r < 0 {
        return Err(failed(format!("adding the volume's key: {e}")));
    }
    Ok(())
}

/// Serves a `mount_volume` request.
pub(crate) fn mount(req: &MountVolume) -> Result<(), Event> {
    if !IN_GUEST.load(Ordering::Relaxed) {
        return Err(Event::error(
            "unsupported",
            "only a microVM guest's agent mounts volumes",
        ));
    }
    if !valid_serial(&req.serial) {
        return Err(Event::error("invalid_request", "bad volume serial"));
    }
    if !valid_path(&req.path) {
        return Err(Event::error(
            "invalid_request",
            format!(
                "{:?} is not a normalised absolute path off the reserved ones ({})",
                req.path,
                RESERVED.join(", ")
            ),
        ));
    }
    let mut key = unhex(&req.key).ok_or_else(|| {
        Event::error("invalid_request", "the volume's key is not 64 bytes of hex")
    })?;
    let r = mount_with(req, &key);
    wipe(&mut key);
    r
}

fn mount_with(req: &MountVolume, key: &[u8]) -> Result<(), Event> {
    let mut dev = disk_of(&req.serial);
    for _ in 0..100 {
        if dev.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        dev = disk_of(&req.serial);
    }
    let dev = dev.ok_or_else(|| failed(format!("no disk with serial {}", req.serial)))?;
    let private = Path::new(PRIVATE);
    if !private.join(".tmpfs").exists() {
        std::fs::create_dir_all(private).map_err(|e| failed(format!("{PRIVATE}: {e}")))?;
        sys_mount(
            Path::new("tmpfs"),
            private,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some("size=64k,mode=0700"),
        )?;
        let _ = std::fs::write(private.join(".tmpfs"), b"");
    }
    let fs_dir = private.join(&req.serial);
    std::fs::create_dir_all(&fs_dir).map_err(|e| failed(format!("{}: {e}", fs_dir.display())))?;
    let base = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_NOATIME;
    let (flags, data) = if req.read_only {
        (base | libc::MS_RDONLY, Some("noload"))
    } else {
        (base, None)
    };
    sys_mount(&dev, &fs_dir, Some("ext4"), flags, data)?;
    let detach = || {
        let p = cstr(&fs_dir).unwrap_or_default();
        // SAFETY: a valid path; detaching the private mount (the bind keeps the fs alive).
        unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&fs_dir);
    };
    let r = (|| {
        add_key(&fs_dir, key)?;
        let data_dir = fs_dir.join("data");
        let target = Path::new(&req.path);
        std::fs::create_dir_all(target)
            .map_err(|e| failed(format!("creating {}: {e}", target.display())))?;
        sys_mount(&data_dir, target, None, libc::MS_BIND, None)?;
        let mut f = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV;
        if !req.exec {
            f |= libc::MS_NOEXEC;
        }
        if req.read_only {
            f |= libc::MS_RDONLY;
        }
        sys_mount(Path::new("none"), target, None, f, None).inspect_err(|_| {
            let t = cstr(target).unwrap_or_default();
            // SAFETY: a valid path; undoing the bind whose flags could not be set.
            unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
        })
    })();
    detach();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_and_paths_are_checked() {
        assert!(valid_serial("01hx2abcdefghjkmnpqr"));
        assert!(!valid_serial(""));
        assert!(!valid_serial("a/b"));
        assert!(!valid_serial(&"a".repeat(21)));
        assert!(valid_path("/data"));
        assert!(valid_path("/mnt/vol-1"));
        assert!(valid_path("/run/data"));
        for bad in [
            "/",
            "data",
            "/a/../etc",
            "/a/./b",
            "",
            "/run",
            "/run/bulkhead",
            "/run/secrets/x",
            "/proc",
            "/dev/shm",
            "/.bulkhead",
            "/data/",
        ] {
            assert!(!valid_path(bad), "{bad}");
        }
        assert_eq!(unhex(&"ab".repeat(64)).unwrap(), vec![0xab; 64]);
        assert!(unhex("abcd").is_none());
        assert!(unhex(&"zz".repeat(64)).is_none());
    }

    #[test]
    fn a_jails_agent_mounts_nothing() {
        let req = MountVolume {
            serial: "v1".into(),
            path: "/data".into(),
            read_only: false,
            exec: false,
            key: "00".repeat(64),
        };
        match mount(&req) {
            Err(Event::Error { code, .. }) => assert_eq!(code, "unsupported"),
            r => panic!("{r:?}"),
        }
    }
}
