//! ext4 native encryption (fscrypt, policy v2) through its ioctls: add a 64-byte key to a
//! filesystem, set a directory's policy (AES-256-XTS contents, AES-256-CTS names, 32-byte name
//! padding), read it back, remove the key.
//!
//! Invariants: the raw key is copied only into an ioctl buffer that is zeroed right after the
//! call. A key added by `add_key` lives in the filesystem's keyring until `remove_key` or until
//! the superblock goes away (last mount of the volume released), so callers sharing one
//! superblock must not remove it while another holder uses it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use crate::secret::{wipe_bytes, Secret};

/// What can go wrong with fscrypt.
#[derive(Debug, thiserror::Error)]
pub enum FscryptError {
    #[error("{call}: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the directory has no fscrypt v2 policy")]
    NoPolicy,
}

/// The 16-byte identifier the kernel computes for a v2 key (HKDF of the key).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    /// Lowercase hex, as `fscryptctl` prints it.
    pub fn hex(&self) -> String {
        crate::fsutil::hex(&self.0)
    }
}

const fn iowr(nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | ((b'f' as u64) << 8) | nr
}
const FS_IOC_SET_ENCRYPTION_POLICY: u64 = (2 << 30) | (12 << 16) | ((b'f' as u64) << 8) | 19;
const FS_IOC_GET_ENCRYPTION_POLICY_EX: u64 = iowr(22, 9);
const FS_IOC_ADD_ENCRYPTION_KEY: u64 = iowr(23, 80);
const FS_IOC_REMOVE_ENCRYPTION_KEY: u64 = iowr(24, 64);
const KEY_SPEC_TYPE_IDENTIFIER: u32 = 2;
const POLICY_V2: u8 = 2;
const MODE_AES_256_XTS: u8 = 1;
const MODE_AES_256_CTS: u8 = 4;
const POLICY_FLAGS_PAD_32: u8 = 0x03;

#[repr(C)]
struct KeySpec {
    kind: u32,
    reserved: u32,
    u: [u8; 32],
}

#[repr(C)]
struct AddKeyArg {
    spec: KeySpec,
    raw_size: u32,
    key_id: u32,
    reserved: [u32; 8],
    raw: [u8; 64],
}

#[repr(C)]
struct RemoveKeyArg {
    spec: KeySpec,
    removal_status_flags: u32,
    reserved: [u32; 5],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct PolicyV2 {
    version: u8,
    contents: u8,
    filenames: u8,
    flags: u8,
    reserved: [u8; 4],
    identifier: [u8; 16],
}

#[repr(C)]
struct GetPolicyEx {
    size: u64,
    policy: PolicyV2,
}

fn ioctl<T>(
    fd: BorrowedFd<'_>,
    req: u64,
    arg: &mut T,
    call: &'static str,
) -> Result<(), FscryptError> {
    // SAFETY: each call site pairs `req` with the `repr(C)` argument type the kernel expects;
    // `arg` is valid and writable for the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        return Err(FscryptError::Sys {
            call,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Adds `key` to the filesystem holding `fd` (FS_IOC_ADD_ENCRYPTION_KEY, v2); returns its id.
pub fn add_key(fd: BorrowedFd<'_>, key: &Secret<64>) -> Result<KeyId, FscryptError> {
    let mut arg = AddKeyArg {
        spec: KeySpec {
            kind: KEY_SPEC_TYPE_IDENTIFIER,
            reserved: 0,
            u: [0; 32],
        },
        raw_size: 64,
        key_id: 0,
        reserved: [0; 8],
        raw: [0; 64],
    };
    arg.raw.copy_from_slice(key.expose());
    let r = ioctl(
        fd,
        FS_IOC_ADD_ENCRYPTION_KEY,
        &mut arg,
        "adding the fscrypt key",
    );
    wipe_bytes(&mut arg.raw);
    r?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&arg.spec.u[..16]);
    Ok(KeyId(id))
}

/// Sets a v2 policy (AES-256-XTS/AES-256-CTS, PAD_32) for key `id` on the empty directory `dir`.
pub fn set_policy(dir: BorrowedFd<'_>, id: KeyId) -> Result<(), FscryptError> {
    let mut p = PolicyV2 {
        version: POLICY_V2,
        contents: MODE_AES_256_XTS,
        filenames: MODE_AES_256_CTS,
        flags: POLICY_FLAGS_PAD_32,
        reserved: [0; 4],
        identifier: id.0,
    };
    ioctl(
        dir,
        FS_IOC_SET_ENCRYPTION_POLICY,
        &mut p,
        "setting the fscrypt policy",
    )
}

/// The key id of `dir`'s v2 policy.
pub fn policy_of(dir: BorrowedFd<'_>) -> Result<KeyId, FscryptError> {
    let mut arg = GetPolicyEx {
        size: std::mem::size_of::<PolicyV2>() as u64,
        policy: PolicyV2 {
            version: 0,
            contents: 0,
            filenames: 0,
            flags: 0,
            reserved: [0; 4],
            identifier: [0; 16],
        },
    };
    match ioctl(
        dir,
        FS_IOC_GET_ENCRYPTION_POLICY_EX,
        &mut arg,
        "reading the fscrypt policy",
    ) {
        Err(FscryptError::Sys { source, .. }) if source.raw_os_error() == Some(libc::ENODATA) => {
            return Err(FscryptError::NoPolicy)
        }
        r => r?,
    }
    if arg.policy.version != POLICY_V2 {
        return Err(FscryptError::NoPolicy);
    }
    Ok(KeyId(arg.policy.identifier))
}

/// Removes this user's claim to key `id` from the filesystem holding `fd`; files stay
/// unreadable from then on (once no other user holds a claim).
pub fn remove_key(fd: BorrowedFd<'_>, id: KeyId) -> Result<(), FscryptError> {
    let mut u = [0u8; 32];
    u[..16].copy_from_slice(&id.0);
    let mut arg = RemoveKeyArg {
        spec: KeySpec {
            kind: KEY_SPEC_TYPE_IDENTIFIER,
            reserved: 0,
            u,
        },
        removal_status_flags: 0,
        reserved: [0; 5],
    };
    ioctl(
        fd,
        FS_IOC_REMOVE_ENCRYPTION_KEY,
        &mut arg,
        "removing the fscrypt key",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_and_sizes_match_the_uapi() {
        assert_eq!(FS_IOC_SET_ENCRYPTION_POLICY, 0x800c_6613);
        assert_eq!(FS_IOC_GET_ENCRYPTION_POLICY_EX, 0xc009_6616);
        assert_eq!(FS_IOC_ADD_ENCRYPTION_KEY, 0xc050_6617);
        assert_eq!(FS_IOC_REMOVE_ENCRYPTION_KEY, 0xc040_6618);
        assert_eq!(std::mem::size_of::<KeySpec>(), 40);
        assert_eq!(std::mem::size_of::<AddKeyArg>(), 80 + 64);
        assert_eq!(std::mem::size_of::<RemoveKeyArg>(), 64);
        assert_eq!(std::mem::size_of::<PolicyV2>(), 24);
    }
    // The ioctls against a real ext4 are exercised in ext4img.rs's tests.
}
