//! The seam to the storage crate's keys and wipe (#13, helper K's `bulkhead-storage`):
//! everything commits need of it, in one place.
//!
//! TEMPORARY until `bulkhead-storage` lands on main: a chunked AES-256-GCM of the same shape
//! (64 KiB chunks, nonce = random prefix ‖ counter ‖ last flag) under a per-tenant key file,
//! and a wipe that zeroes a file's bytes before unlinking it. Replaced by
//! `TenantKey::seal_stream`/`open_stream` and `bulkhead_storage::wipe` at rebase.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;

/// A tenant's sealing key for commits.
#[derive(Clone)]
pub struct Key(std::sync::Arc<LessSafeKey>);

/// The tenant's key (made on first use).
pub fn tenant_key(tenant_dir: &Path) -> io::Result<Key> {
    let dir = tenant_dir.join("commits");
    crate::fsutil::ensure_dir(&dir, 0o700)?;
    let p = dir.join(".key");
    let bytes = match fs::read(&p) {
        Ok(b) if b.len() == 32 => b,
        _ => {
            let mut b = vec![0u8; 32];
            getrandom::fill(&mut b).map_err(io::Error::other)?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&p)?;
            f.write_all(&b)?;
            f.sync_all()?;
            b
        }
    };
    let k = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| io::Error::other("bad key"))?;
    Ok(Key(std::sync::Arc::new(LessSafeKey::new(k))))
}

fn nonce(prefix: &[u8; 7], n: u32, last: bool) -> Nonce {
    let mut b = [0u8; 12];
    b[..7].copy_from_slice(prefix);
    b[7..11].copy_from_slice(&n.to_be_bytes());
    b[11] = last as u8;
    Nonce::assume_unique_for_key(b)
}

fn fill(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Seals `r` into `w`; returns the plaintext's length.
pub fn seal_stream(key: &Key, aad: &[u8], mut r: impl Read, mut w: impl Write) -> io::Result<u64> {
    let mut prefix = [0u8; 7];
    getrandom::fill(&mut prefix).map_err(io::Error::other)?;
    w.write_all(&[1])?;
    w.write_all(&prefix)?;
    let mut buf = vec![0u8; CHUNK + 1];
    let mut have = fill(&mut r, &mut buf)?;
    let (mut total, mut n) = (0u64, 0u32);
    loop {
        let last = have <= CHUNK;
        let take = have.min(CHUNK);
        let mut c = buf[..take].to_vec();
        key.0
            .seal_in_place_append_tag(nonce(&prefix, n, last), Aad::from(aad), &mut c)
            .map_err(|_| io::Error::other("seal"))?;
        w.write_all(&c)?;
        total += take as u64;
        if last {
            return Ok(total);
        }
        buf.copy_within(CHUNK..have, 0);
        have = have - CHUNK + fill(&mut r, &mut buf[have - CHUNK..])?;
        n += 1;
    }
}

/// Opens what [`seal_stream`] made into `w`; fails on any edit, truncation or reorder.
pub fn open_stream(key: &Key, aad: &[u8], mut r: impl Read, mut w: impl Write) -> io::Result<u64> {
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the sealed stream does not open",
        )
    };
    let mut head = [0u8; 8];
    if fill(&mut r, &mut head)? != 8 || head[0] != 1 {
        return Err(bad());
    }
    let prefix: [u8; 7] = head[1..].try_into().expect("7 bytes");
    let mut buf = vec![0u8; CHUNK + TAG + 1];
    let mut have = fill(&mut r, &mut buf)?;
    let (mut total, mut n) = (0u64, 0u32);
    loop {
        let last = have <= CHUNK + TAG;
        let take = have.min(CHUNK + TAG);
        let mut c = buf[..take].to_vec();
        let p = key
            .0
            .open_in_place(nonce(&prefix, n, last), Aad::from(aad), &mut c)
            .map_err(|_| bad())?;
        w.write_all(p)?;
        total += p.len() as u64;
        if last {
            return Ok(total);
        }
        buf.copy_within(CHUNK + TAG..have, 0);
        have = have - CHUNK - TAG + fill(&mut r, &mut buf[have - CHUNK - TAG..])?;
        n += 1;
    }
}

/// Overwrites a file's bytes with zeros, syncs, unlinks (never through a symlink).
pub fn wipe_file(p: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(p)?;
    if md.is_file() {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)?;
        let zeros = vec![0u8; 1 << 20];
        let mut left = md.len();
        f.rewind()?;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        f.sync_data()?;
    }
    fs::remove_file(p)
}

/// Wipes every regular file of a tree (no symlink followed), then removes it.
pub fn wipe_tree(p: &Path) -> io::Result<()> {
    let md = fs::symlink_metadata(p)?;
    if !md.is_dir() {
        return wipe_file(p);
    }
    for e in fs::read_dir(p)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            wipe_tree(&e.path())?;
        } else if ft.is_file() {
            wipe_file(&e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
    }
    fs::remove_dir(p)
}
