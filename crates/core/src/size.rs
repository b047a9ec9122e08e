//! Byte sizes as people write them in configs: `25G`, `512Mi`, `4096`.

/// Parses a size. `K`, `M`, `G`, `T` (optionally followed by `i` or `B`) are powers of 1024,
/// as Slicer's `storage_size: 25G` means.
pub fn parse(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(format!(
            "size {s:?} must start with a number, e.g. 512M or 25G"
        ));
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("size {s:?} is too large"))?;
    let unit = t[digits..]
        .trim()
        .trim_end_matches(['B', 'b'])
        .trim_end_matches('i');
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        u => {
            return Err(format!(
                "size {s:?} has unknown unit {u:?}: use K, M, G or T"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::parse("25G").unwrap(), 25 << 30);
        assert_eq!(super::parse("512Mi").unwrap(), 512 << 20);
        assert_eq!(super::parse("1GB").unwrap(), 1 << 30);
        assert_eq!(super::parse("4096").unwrap(), 4096);
        for bad in ["", "G", "12Q", "-1G", "99999999999999999999T"] {
            assert!(super::parse(bad).is_err(), "{bad}");
        }
    }
}
