//! Go-style durations (`300ms`, `1m30s`, `5m`), as Slicer's `timeout` query takes them.

use std::time::Duration;

/// Parses a Go duration string. A bare number is rejected: a unit is required, as in Go.
pub fn parse(s: &str) -> Result<Duration, String> {
    parse_up_to(s, Duration::from_secs(7 * 86400), "a week")
}

/// Like [`parse`], with another upper bound (`max`, called `max_name` in the error).
pub fn parse_up_to(s: &str, max: Duration, max_name: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("empty duration: use a number with a unit, e.g. 30s or 5m".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} lacks a unit: use ns, us, ms, s, m or h"))?;
        if num_len == 0 {
            return Err(format!("duration {s:?} is not of the form 1h2m3s"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("duration {s:?} has a bad number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => {
                return Err(format!(
                    "duration {s:?} has unknown unit {u:?}: use ns, us, ms, s, m or h"
                ))
            }
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > max.as_secs_f64() {
        return Err(format!("duration {s:?} is longer than {max_name}"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn rejects_bad_durations() {
        for bad in ["", "5", "5x", "m", "1h-2m", "9999h"] {
            assert!(parse(bad).is_err(), "{bad} should fail");
        }
        let year = Duration::from_secs(365 * 86400);
        assert_eq!(parse_up_to("8760h", year, "a year").unwrap(), year);
        assert!(parse_up_to("8761h", year, "a year")
            .unwrap_err()
            .contains("longer than a year"));
    }
}
