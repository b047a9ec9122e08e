//! Chunked AEAD for large streams (commits, snapshots): never the whole thing in memory.
//!
//! Format: header `version (1) ‖ prefix (7 random bytes)`, then chunks of 64 KiB plaintext
//! each sealed with AES-256-GCM (+16-byte tag). Chunk `i`'s nonce is
//! `prefix ‖ i (u32 big-endian) ‖ last (1 byte: 1 on the final chunk, else 0)`; the AAD is
//! `version ‖ caller's aad`. Every chunk but the last is full, the last may be empty.
//!
//! Invariants: a reordered chunk fails (counter in the nonce), a dropped tail fails (the new
//! final chunk was sealed with last = 0), appended bytes fail (the real final chunk is then
//! opened with last = 0), an edit fails (tag). `open_stream` writes plaintext as chunks verify:
//! on error the caller must discard what was written (write to a temporary, rename on success).

use std::io::{self, Read, Write};

use ring::aead::{Aad, Nonce};

use crate::keys::{KeyError, TenantKey, SEAL_VERSION};

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
const TAG: usize = 16;
const PREFIX: usize = 7;

fn nonce(prefix: &[u8; PREFIX], counter: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[..PREFIX].copy_from_slice(prefix);
    n[PREFIX..PREFIX + 4].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn aad(aad: &[u8]) -> Vec<u8> {
    let mut v = vec![SEAL_VERSION];
    v.extend_from_slice(aad);
    v
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn bad(e: KeyError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn next_counter(c: u32) -> io::Result<u32> {
    c.checked_add(1)
        .ok_or_else(|| io::Error::other("stream too long for one sealed file (256 TiB)"))
}

impl TenantKey {
    /// Seals `reader` into `writer`; returns the plaintext bytes sealed.
    pub fn seal_stream(
        &self,
        aad_: &[u8],
        mut reader: impl Read,
        mut writer: impl Write,
    ) -> io::Result<u64> {
        let key = self.aead_key("stream");
        let aad = aad(aad_);
        let mut prefix = [0u8; PREFIX];
        getrandom::fill(&mut prefix).map_err(io::Error::other)?;
        writer.write_all(&[SEAL_VERSION])?;
        writer.write_all(&prefix)?;
        let mut cur = vec![0u8; CHUNK + TAG];
        let mut next = vec![0u8; CHUNK + TAG];
        let mut n = read_full(&mut reader, &mut cur[..CHUNK])?;
        let mut counter = 0u32;
        let mut total = 0u64;
        loop {
            // Read ahead to know whether `cur` is the final chunk.
            let m = if n == CHUNK {
                read_full(&mut reader, &mut next[..CHUNK])?
            } else {
                0
            };
            let last = m == 0;
            let tag = key
                .seal_in_place_separate_tag(
                    nonce(&prefix, counter, last),
                    Aad::from(&aad[..]),
                    &mut cur[..n],
                )
                .map_err(|_| io::Error::other("sealing a chunk failed"))?;
            writer.write_all(&cur[..n])?;
            writer.write_all(tag.as_ref())?;
            total += n as u64;
            if last {
                break;
            }
            counter = next_counter(counter)?;
            std::mem::swap(&mut cur, &mut next);
            n = m;
        }
        crate::secret::wipe_bytes(&mut cur);
        crate::secret::wipe_bytes(&mut next);
        writer.flush()?;
        Ok(total)
    }

    /// Opens what `seal_stream` made into `writer`; returns the plaintext bytes written.
    /// Fails with `InvalidData` on a wrong key or aad, truncation, reorder or any edit.
    pub fn open_stream(
        &self,
        aad_: &[u8],
        mut reader: impl Read,
        mut writer: impl Write,
    ) -> io::Result<u64> {
        let key = self.aead_key("stream");
        let aad = aad(aad_);
        let mut header = [0u8; 1 + PREFIX];
        if read_full(&mut reader, &mut header)? != header.len() || header[0] != SEAL_VERSION {
            return Err(bad(KeyError::Format));
        }
        let prefix: [u8; PREFIX] = header[1..].try_into().expect("prefix length");
        let mut buf = vec![0u8; CHUNK + TAG];
        let mut n = read_full(&mut reader, &mut buf)?;
        let mut counter = 0u32;
        let mut total = 0u64;
        loop {
            if n < TAG {
                return Err(bad(KeyError::Format));
            }
            // One byte of look-ahead tells whether this chunk is the final one.
            let mut peek = [0u8; 1];
            let more = n == CHUNK + TAG && read_full(&mut reader, &mut peek)? == 1;
            let plain = key
                .open_in_place(
                    nonce(&prefix, counter, !more),
                    Aad::from(&aad[..]),
                    &mut buf[..n],
                )
                .map_err(|_| bad(KeyError::Open))?;
            writer.write_all(plain)?;
            total += plain.len() as u64;
            if !more {
                break;
            }
            counter = next_counter(counter)?;
            buf[0] = peek[0];
            n = 1 + read_full(&mut reader, &mut buf[1..])?;
        }
        crate::secret::wipe_bytes(&mut buf);
        writer.flush()?;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Keyring;

    fn key() -> (tempfile::TempDir, TenantKey) {
        let d = tempfile::tempdir().unwrap();
        let k = Keyring::open(&d.path().join("keys"))
            .unwrap()
            .tenant("t")
            .unwrap();
        (d, k)
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn seal(k: &TenantKey, p: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        assert_eq!(k.seal_stream(b"ctx", p, &mut out).unwrap(), p.len() as u64);
        out
    }

    fn open(k: &TenantKey, s: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        k.open_stream(b"ctx", s, &mut out).map(|_| out)
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        let (_d, k) = key();
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5] {
            let p = data(len);
            let s = seal(&k, &p);
            let chunks = len.div_ceil(CHUNK).max(1);
            assert_eq!(s.len(), 8 + len + chunks * TAG, "len {len}");
            assert_eq!(open(&k, &s).unwrap(), p, "len {len}");
            if len >= 64 {
                assert!(!s.windows(64).any(|w| w == &p[..64]), "plaintext visible");
            }
        }
    }

    #[test]
    fn truncation_at_a_chunk_boundary_is_detected() {
        let (_d, k) = key();
        let p = data(3 * CHUNK + 10);
        let s = seal(&k, &p);
        for cut in [
            8 + (CHUNK + TAG),
            8 + 2 * (CHUNK + TAG),
            8 + 3 * (CHUNK + TAG),
            s.len() - 1,
            5,
        ] {
            let e = open(&k, &s[..cut]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "cut {cut}");
        }
    }

    #[test]
    fn reordered_chunks_are_detected() {
        let (_d, k) = key();
        let s = seal(&k, &data(3 * CHUNK + 10));
        let c = CHUNK + TAG;
        let mut r = s[..8].to_vec();
        r.extend_from_slice(&s[8 + c..8 + 2 * c]);
        r.extend_from_slice(&s[8..8 + c]);
        r.extend_from_slice(&s[8 + 2 * c..]);
        assert_eq!(r.len(), s.len());
        assert_eq!(open(&k, &r).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn edits_appends_wrong_aad_and_wrong_key_are_detected() {
        let (d, k) = key();
        let s = seal(&k, &data(2 * CHUNK + 3));
        for i in [0, 3, 8, 8 + CHUNK + 20, s.len() - 1] {
            let mut e = s.clone();
            e[i] ^= 0x40;
            assert!(open(&k, &e).is_err(), "edit at {i}");
        }
        let mut app = s.clone();
        app.push(0);
        assert!(open(&k, &app).is_err());
        let mut out = Vec::new();
        assert!(k.open_stream(b"other", &s[..], &mut out).is_err());
        let other = Keyring::open(&d.path().join("keys"))
            .unwrap()
            .tenant("u")
            .unwrap();
        assert!(open(&other, &s).is_err());
        // Two seals of the same data differ (random prefix).
        assert_ne!(seal(&k, b"same"), seal(&k, b"same"));
    }
}
