//! The audit trail's line format (ADR 0031): what a line holds, its hash, what a checkpoint
//! signs, and the time stamps (RFC 3339 in UTC with milliseconds).
//!
//! A record line: `{"seq","time","request_id","principal","via","tenant","action","object",
//! "outcome","reason","prev"}`; a checkpoint line: `{"seq","time","checkpoint":{"tenant",
//! "file","lines"},"prev","sig"}`. `seq` counts every line of the chain from 1 across files;
//! `prev` is the hex SHA-256 of the previous line's bytes (without its newline), [`GENESIS`]
//! for the chain's first line. A checkpoint's `sig` is Ed25519 over [`signed_message`]:
//! the trail's owner, the file's number, the line's seq and time, the head it covers (`prev`)
//! and how many lines of its file come before it.

use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Record;

/// `prev` of the chain's very first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Hex of bytes, lowercase.
pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The hex SHA-256 of a line's bytes (without its newline): the next line's `prev`.
pub fn hash(line: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, line).as_ref())
}

#[derive(Serialize)]
struct RecordLine<'a> {
    seq: u64,
    time: &'a str,
    #[serde(flatten)]
    r: &'a Record,
    prev: &'a str,
}

/// A record's line (no newline).
pub fn record_line(seq: u64, time: &str, r: &Record, prev: &str) -> String {
    serde_json::to_string(&RecordLine { seq, time, r, prev }).unwrap_or_default()
}

/// What a checkpoint says about the chain.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// Whose trail (the tenant's name; `_daemon` for a shared daemon's own).
    pub tenant: String,
    /// The file's number (`audit-<file>.jsonl`).
    pub file: u64,
    /// Lines of this file before the checkpoint.
    pub lines: u64,
}

#[derive(Serialize)]
struct CheckpointLine<'a> {
    seq: u64,
    time: &'a str,
    checkpoint: &'a Checkpoint,
    prev: &'a str,
    sig: String,
}

/// The bytes a checkpoint's signature covers.
pub fn signed_message(seq: u64, time: &str, c: &Checkpoint, prev: &str) -> Vec<u8> {
    format!(
        "bulkhead-audit-checkpoint-v1\n{}\n{}\n{seq}\n{time}\n{prev}\n{}",
        c.tenant, c.file, c.lines
    )
    .into_bytes()
}

/// A signed checkpoint's line (no newline).
pub fn checkpoint_line(
    key: &ring::signature::Ed25519KeyPair,
    seq: u64,
    time: &str,
    c: &Checkpoint,
    prev: &str,
) -> String {
    let sig = hex(key.sign(&signed_message(seq, time, c, prev)).as_ref());
    serde_json::to_string(&CheckpointLine {
        seq,
        time,
        checkpoint: c,
        prev,
        sig,
    })
    .unwrap_or_default()
}

/// The fields every line has, as read back (unknown fields ignored).
#[derive(Debug, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub time: String,
    pub prev: String,
    #[serde(default)]
    pub checkpoint: Option<Checkpoint>,
    #[serde(default)]
    pub sig: Option<String>,
}

/// The time as written in lines: RFC 3339, UTC, milliseconds (`2026-01-31T12:00:00.123Z`).
pub fn format_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let s = crate::fsutil::rfc3339(d.as_secs());
    format!("{}.{:03}Z", s.trim_end_matches('Z'), d.subsec_millis())
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // H. Hinnant's days-from-civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the Unix epoch of an RFC 3339 time (`Z` or `±HH:MM`, optional
/// fraction), or of UNIX seconds (`1767225600`, `1767225600.5`).
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        let secs: f64 = s.parse().ok()?;
        return (secs.is_finite() && secs < 1e14).then_some((secs * 1000.0) as i64);
    }
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0i64;
    if let Some(f) = rest.strip_prefix('.') {
        let n = f.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let digits = &f[..n];
        ms = format!("{:0<3}", &digits[..n.min(3)]).parse().ok()?;
        rest = &f[n..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let hh: i64 = o[1..3].parse().ok()?;
            let mm: i64 = o[4..6].parse().ok()?;
            let v = hh * 60 + mm;
            if o.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + ms)
}

/// A [`SystemTime`] `ms` milliseconds after the epoch (for tests and the writer's age check).
pub fn from_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let t = from_ms(1_767_225_600_123);
        let s = format_time(t);
        assert_eq!(s, "2026-01-01T00:00:00.123Z");
        assert_eq!(parse_time(&s), Some(1_767_225_600_123));
        assert_eq!(
            parse_time("2026-01-01T01:00:00+01:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            parse_time("2026-01-01T00:00:00.5Z"),
            Some(1_767_225_600_500)
        );
        assert_eq!(parse_time("1767225600"), Some(1_767_225_600_000));
        assert_eq!(parse_time("1767225600.25"), Some(1_767_225_600_250));
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(
            unhex(&hex(&[0, 1, 254, 255])).unwrap(),
            vec![0, 1, 254, 255]
        );
        assert!(unhex("0g").is_none());
        assert!(unhex("abc").is_none());
    }
}
