//! `google.protobuf.Timestamp` with the proto3 JSON mapping as the SDKs' parsers want it:
//! RFC 3339 in UTC with a `Z` suffix and 0, 3, 6 or 9 fractional digits
//! (`2023-11-14T22:13:20.5Z` is written `2023-11-14T22:13:20.500Z`). pbjson-types writes
//! `+00:00` instead, which the JavaScript SDK's parser refuses once there is a fraction.
//! Reading accepts `Z` or a `±hh:mm` offset and 1 to 9 fractional digits.
//!
//! Invariant: a value read from JSON is within years 0001..=9999 and has `0 <= nanos < 1e9`.

use std::fmt::Write;

/// Seconds and nanoseconds since the Unix epoch (the well-known type's fields and numbers).
#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl From<std::time::SystemTime> for Timestamp {
    fn from(t: std::time::SystemTime) -> Timestamp {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp {
                seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
            },
            Err(e) => {
                let d = e.duration();
                let mut seconds = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                let mut nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
                if nanos > 0 {
                    seconds -= 1;
                    nanos = 1_000_000_000 - nanos;
                }
                Timestamp { seconds, nanos }
            }
        }
    }
}

// Days since 1970-01-01 of a proleptic Gregorian date, and back (H. Hinnant's algorithms).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Timestamp {
    /// The RFC 3339 text (UTC, `Z`).
    pub fn to_rfc3339(&self) -> String {
        let nanos = i64::from(self.nanos).clamp(0, 999_999_999);
        let (y, m, d) = civil_from_days(self.seconds.div_euclid(86_400));
        let s = self.seconds.rem_euclid(86_400);
        let mut out = format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            s / 3600,
            s / 60 % 60,
            s % 60
        );
        if nanos != 0 {
            let frac = if nanos % 1_000_000 == 0 {
                format!("{:03}", nanos / 1_000_000)
            } else if nanos % 1_000 == 0 {
                format!("{:06}", nanos / 1_000)
            } else {
                format!("{nanos:09}")
            };
            let _ = write!(out, ".{frac}");
        }
        out.push('Z');
        out
    }

    /// Parses RFC 3339 (`Z` or `±hh:mm`, 1 to 9 fractional digits).
    pub fn parse_rfc3339(s: &str) -> Option<Timestamp> {
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let t = b.get(r)?;
            if t.is_empty() || !t.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(t).ok()?.parse().ok()
        };
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
            return None;
        }
        if b[13] != b':' || b[16] != b':' {
            return None;
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let mdays = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        if !(1..=9999).contains(&y) || !(1..=12).contains(&mo) || h > 23 || mi > 59 || sec > 59 {
            return None;
        }
        if d < 1 || d > mdays[usize::try_from(mo - 1).ok()?] {
            return None;
        }
        let mut i = 19;
        let mut nanos = 0i64;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            let mut end = start;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            let digits = end - start;
            if digits == 0 || digits > 9 {
                return None;
            }
            nanos = num(start..end)? * 10i64.pow(u32::try_from(9 - digits).ok()?);
            i = end;
        }
        let offset = match b.get(i..)? {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if oh > 23 || om > 59 {
                    return None;
                }
                let o = oh * 3600 + om * 60;
                if *sign == b'+' {
                    o
                } else {
                    -o
                }
            }
            _ => return None,
        };
        let seconds = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
        Some(Timestamp {
            seconds,
            nanos: i32::try_from(nanos).ok()?,
        })
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid timestamp {s:?}: write RFC 3339, like 2024-01-02T03:04:05Z"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Timestamp;

    #[test]
    fn writes_utc_with_z_and_reads_offsets() {
        let t = Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        };
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20Z");
        let t = Timestamp {
            seconds: 1_700_000_000,
            nanos: 500_000_000,
        };
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.500Z");
        let t = Timestamp {
            seconds: -1,
            nanos: 1_000,
        };
        assert_eq!(t.to_rfc3339(), "1969-12-31T23:59:59.000001Z");
        for (text, secs, nanos) in [
            ("2023-11-14T22:13:20Z", 1_700_000_000, 0),
            ("2023-11-14T22:13:20.5Z", 1_700_000_000, 500_000_000),
            ("2023-11-15T00:13:20.000000001+02:00", 1_700_000_000, 1),
            ("1970-01-01T00:00:00Z", 0, 0),
            ("2000-02-29T00:00:00Z", 951_782_400, 0),
        ] {
            let t = Timestamp::parse_rfc3339(text).unwrap();
            assert_eq!((t.seconds, t.nanos), (secs, nanos), "{text}");
            let back = Timestamp::parse_rfc3339(&t.to_rfc3339()).unwrap();
            assert_eq!(back, t);
        }
        for bad in [
            "",
            "2023-11-14",
            "2023-13-14T22:13:20Z",
            "2023-02-29T00:00:00Z",
            "2023-11-14T24:00:00Z",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20.1234567890Z",
            "2023-11-14T22:13:20+0200",
            "2023-11-14T22:13:20",
            "２023-11-14T22:13:20Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), None, "{bad}");
        }
    }
}
