//! Reads a tar stream as Go's `archive/tar` means it. Go's writer keeps a directory's (or a
//! link's, a device's, a fifo's) `Size` in its header but writes no data for it, as POSIX
//! says of these header-only types; a reader that skips `Size` bytes after such a header
//! (the `tar` crate does) would then read the next headers as data. [`HeaderOnly`] sits in
//! front of the tar reader and rewrites such a header's size to zero (fixing its checksum),
//! which is what GNU tar and Go's reader do anyway. Everything else passes through unchanged.
//!
//! It tracks where headers are: after a header come `size` bytes of data rounded up to 512,
//! where a preceding pax header's `size=` record, when there is one, gives the size.

use std::io::{self, Read};

const BLOCK: usize = 512;
/// A pax header's data is kept (to find `size=`) only up to this size; bigger ones pass
/// through and their `size=` is not seen.
const MAX_PAX: u64 = 64 * 1024;

pub(crate) struct HeaderOnly<R> {
    inner: R,
    out: Vec<u8>,
    pos: usize,
    /// Data bytes (padding included) still to pass through before the next header.
    data_left: u64,
    /// Collecting a pax header's data, to read its `size=` record.
    pax: Option<Vec<u8>>,
    /// The size the last pax header gave the next entry.
    pax_size: Option<u64>,
}

impl<R: Read> HeaderOnly<R> {
    pub(crate) fn new(inner: R) -> Self {
        HeaderOnly {
            inner,
            out: Vec::with_capacity(64 * 1024),
            pos: 0,
            data_left: 0,
            pax: None,
            pax_size: None,
        }
    }

    /// Reads up to `want` bytes into `out`; 0 at the end of the stream.
    fn fill(&mut self, want: usize) -> io::Result<usize> {
        self.out.resize(want, 0);
        let mut got = 0;
        while got < want {
            match self.inner.read(&mut self.out[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.truncate(got);
        self.pos = 0;
        Ok(got)
    }

    fn next_part(&mut self) -> io::Result<usize> {
        if self.data_left > 0 {
            let n = self.fill(self.data_left.min(64 * 1024) as usize)?;
            self.data_left -= n as u64;
            if let Some(p) = &mut self.pax {
                p.extend_from_slice(&self.out);
                if self.data_left == 0 {
                    self.pax_size = pax_size(p);
                    self.pax = None;
                }
            }
            return Ok(n);
        }
        let n = self.fill(BLOCK)?;
        if n < BLOCK || self.out.iter().all(|b| *b == 0) {
            return Ok(n); // the end blocks, or a short stream the tar reader will refuse
        }
        let kind = self.out[156];
        let size = self
            .pax_size
            .take()
            .or_else(|| parse_size(&self.out[124..136]));
        let Some(size) = size else {
            return Ok(n); // a bad size field: the tar reader says so
        };
        if matches!(kind, b'1'..=b'6') {
            if size != 0
                || self.out[124..136]
                    .iter()
                    .any(|b| !matches!(b, b'0' | 0 | b' '))
            {
                self.out[124..135].copy_from_slice(b"00000000000");
                self.out[135] = 0;
                fix_checksum(&mut self.out);
            }
            return Ok(n);
        }
        self.data_left = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        if kind == b'x' && size <= MAX_PAX {
            self.pax = Some(Vec::with_capacity(size as usize));
        }
        Ok(n)
    }
}

impl<R: Read> Read for HeaderOnly<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.out.len() && self.next_part()? == 0 {
            return Ok(0);
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// A header's size field: octal digits (spaces and NULs around them), or base-256 when its
/// first byte has the high bit set.
fn parse_size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        if f[0] & 0x40 != 0 || f[1..4].iter().any(|b| *b != 0) {
            return None; // negative, or beyond 2^64
        }
        return Some(f[4..].iter().fold(0u64, |a, b| (a << 8) | *b as u64));
    }
    let s: Vec<u8> = f
        .iter()
        .copied()
        .skip_while(|b| *b == b' ' || *b == 0)
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

/// The `size=` record of a pax header's data (records are `LEN key=value\n`).
fn pax_size(data: &[u8]) -> Option<u64> {
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp || len > rest.len() {
            return None;
        }
        let rec = &rest[sp + 1..len];
        if let Some(v) = rec.strip_prefix(b"size=") {
            let v = v.strip_suffix(b"\n").unwrap_or(v);
            return std::str::from_utf8(v).ok()?.parse().ok();
        }
        rest = &rest[len..];
    }
    None
}

fn fix_checksum(h: &mut [u8]) {
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|b| *b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header as Go's `archive/tar` writes it for a directory: `Size` 4096, no data.
    fn go_header(name: &str, kind: u8, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000755\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        fix_checksum(&mut h);
        h
    }

    #[test]
    fn a_directory_with_a_size_reads_as_go_means_it() {
        let mut a = go_header("d/", b'5', 4096);
        a.extend(go_header("d/f", b'0', 5));
        let mut data = b"hello".to_vec();
        data.resize(BLOCK, 0);
        a.extend(data);
        a.extend(vec![0u8; 2 * BLOCK]);

        // Straight into the tar crate: the file is lost in the directory's "data".
        let plain: Vec<String> = tar::Archive::new(&a[..])
            .entries()
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path().unwrap().display().to_string()))
            .collect();
        assert_ne!(plain, ["d", "d/f"]);

        let mut ar = tar::Archive::new(HeaderOnly::new(&a[..]));
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            seen.push((e.path().unwrap().display().to_string(), s));
        }
        assert_eq!(
            seen,
            [("d/".into(), "".into()), ("d/f".into(), "hello".into())]
        );
    }

    #[test]
    fn a_pax_size_and_gnu_archives_pass_unchanged() {
        // A GNU-style archive from the tar crate itself: byte for byte the same.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_cksum();
        b.append_data(&mut h, "x", &b"abc"[..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, "dir/", &b""[..]).unwrap();
        let raw = b.into_inner().unwrap();
        let mut through = Vec::new();
        HeaderOnly::new(&raw[..]).read_to_end(&mut through).unwrap();
        assert_eq!(through, raw);
        assert_eq!(pax_size(b"12 size=100\n"), Some(100));
        assert_eq!(pax_size(b"9 path=a\n10 size=7\n"), Some(7));
        assert_eq!(
            parse_size(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Some(256)
        );
    }
}
