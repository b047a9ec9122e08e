//! `GET /usage?from=&to=&group_by=tenant|node&tenant=` (#14, part E; ADR 0035): what the
//! visible tenants' nodes used. A route over the daemon: the authorization layer hands over
//! the tenants where the caller may read usage ([`Visible`]): a tenant's principals see their
//! own, global-admin every tenant's; `?tenant=` narrows to one (a tenant the caller may not
//! read is the same 404 whether it exists or not).
//!
//! `from` and `to` are RFC 3339 (`2026-11-30T14:00:00Z`, an offset, fractions ignored) or
//! UNIX seconds; a figure counts when its bucket (`bulkhead_store::usage::BUCKET_SECS`)
//! starts in `[from, to)`.

use axum::extract::RawQuery;
use axum::Json;
use bulkhead_api::usage::UsageReport;
use bulkhead_core::DomainError;

use super::query::Query;
use super::scope::Visible;
use crate::error::ApiError;
use crate::tenant::usage::GroupBy;

pub async fn usage(
    Visible(tenants): Visible,
    RawQuery(q): RawQuery,
) -> Result<Json<UsageReport>, ApiError> {
    let q = Query::parse(q.as_deref(), &["from", "to", "group_by", "tenant"])?;
    let from = q.one("from")?.map(|v| time("from", &v)).transpose()?;
    let to = q.one("to")?.map(|v| time("to", &v)).transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(DomainError::invalid(format!(
                "from ({f}) must be before to ({t}): give a window that is not empty"
            ))
            .into());
        }
    }
    let group_by = match q.one("group_by")?.as_deref() {
        None | Some("tenant") => GroupBy::Tenant,
        Some("node") => GroupBy::Node,
        Some(o) => {
            return Err(DomainError::invalid(format!(
                "group_by {o:?} is not known: use tenant or node"
            ))
            .into())
        }
    };
    let picked: Vec<_> = match q.one("tenant")? {
        None => tenants,
        Some(t) => {
            let one: Vec<_> = tenants.into_iter().filter(|a| a.tenant.name == t).collect();
            if one.is_empty() {
                return Err(DomainError::not_found(format!(
                    "tenant {t:?} is none of yours to read usage of"
                ))
                .into());
            }
            one
        }
    };
    let mut usage = Vec::new();
    for a in &picked {
        usage.extend(a.tenant.usage_report(from, to, group_by).await?);
    }
    Ok(Json(UsageReport {
        from: from.map(|s| crate::fsutil::rfc3339(s.max(0) as u64)),
        to: to.map(|s| crate::fsutil::rfc3339(s.max(0) as u64)),
        group_by: match group_by {
            GroupBy::Tenant => "tenant",
            GroupBy::Node => "node",
        }
        .into(),
        bucket_seconds: bulkhead_store::usage::BUCKET_SECS as u64,
        usage,
    }))
}

/// A time of the query: UNIX seconds or RFC 3339.
fn time(key: &str, v: &str) -> Result<i64, DomainError> {
    if let Ok(n) = v.parse::<i64>() {
        return Ok(n);
    }
    parse_rfc3339(v).ok_or_else(|| {
        DomainError::invalid(format!(
            "{key} {v:?} is not a time: use RFC 3339 (2026-11-30T14:00:00Z) or UNIX seconds"
        ))
    })
}

/// UNIX seconds of an RFC 3339 time (`Z` or `±HH:MM`; fractions of a second dropped).
pub fn parse_rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) && &o[3..4] == ":" => {
            let h: i64 = o[1..3].parse().ok()?;
            let mi: i64 = o[4..6].parse().ok()?;
            let s = (h * 60 + mi) * 60;
            if o.starts_with('-') {
                -s
            } else {
                s
            }
        }
        _ => return None,
    };
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_unix_seconds() {
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01Z"), Some(86401));
        assert_eq!(parse_rfc3339("2026-11-30T01:48:04Z"), Some(1_796_003_284));
        assert_eq!(
            parse_rfc3339("2026-11-30T01:48:04.123Z"),
            Some(1_796_003_284)
        );
        assert_eq!(
            parse_rfc3339("2026-11-30T03:48:04+02:00"),
            Some(1_796_003_284)
        );
        for bad in [
            "junk",
            "2026-11-30",
            "2026-13-30T01:48:04Z",
            "2026-11-30T01:48:04",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        assert_eq!(time("from", "1700000000").unwrap(), 1_700_000_000);
        let e = time("from", "yesterday").unwrap_err();
        assert!(e.message.contains("from") && e.message.contains("RFC 3339"));
        assert_eq!(
            crate::fsutil::rfc3339(parse_rfc3339("2026-11-30T01:48:04Z").unwrap() as u64),
            "2026-11-30T01:48:04Z"
        );
    }
}
