//! Path patterns as Slicer's SDKs write them (`exclude` of a copy, `patterns` of a watch):
//! `/`-separated segments, each matched like Go's `path.Match` (`*`, `?`, `[...]`, `\`
//! escapes), and a `**` segment matching any number of segments. A pattern without `/` also
//! matches a path's last segment alone, so `*.log` leaves out `a/b/x.log`.
//!
//! Pure and bounded: matching is recursive over segments only (a `**` tries each split), with
//! the number of segments of both sides limited by the caller's path length.

/// Patterns after Slicer's normalisation: trimmed, no leading `./` or `/`, no trailing `/`,
/// empty ones dropped.
pub fn normalize(patterns: &[String]) -> Vec<String> {
    patterns
        .iter()
        .filter_map(|p| {
            let p = p.trim();
            let p = p.strip_prefix("./").unwrap_or(p);
            let p = p.trim_start_matches('/').trim_end_matches('/');
            (!p.is_empty()).then(|| p.to_string())
        })
        .collect()
}

/// Whether the relative path `rel` is matched by any of the (normalised) `patterns`.
pub fn excluded(rel: &str, patterns: &[String]) -> bool {
    if rel.is_empty() {
        return false;
    }
    let base = rel.rsplit('/').next().unwrap_or(rel);
    patterns.iter().any(|p| {
        path_match(p, rel) || (!p.contains('/') && segment_match(p.as_bytes(), base.as_bytes()))
    })
}

/// `pattern` against `candidate`, segment by segment, `**` spanning segments.
pub fn path_match(pattern: &str, candidate: &str) -> bool {
    let p: Vec<&str> = pattern
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let c: Vec<&str> = candidate
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if p.is_empty() || c.is_empty() {
        return false;
    }
    segments(&p, &c)
}

fn segments(p: &[&str], c: &[&str]) -> bool {
    match p.first() {
        None => c.is_empty(),
        Some(&"**") => (0..=c.len()).any(|i| segments(&p[1..], &c[i..])),
        Some(seg) => {
            !c.is_empty()
                && segment_match(seg.as_bytes(), c[0].as_bytes())
                && segments(&p[1..], &c[1..])
        }
    }
}

/// One segment, like Go's `path.Match` without `/`: `*` any run, `?` one byte, `[a-z]` and
/// `[^...]` classes, `\` escapes. A malformed class matches nothing.
pub fn segment_match(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => (0..=s.len()).any(|i| segment_match(&p[1..], &s[i..])),
        Some(b'?') => !s.is_empty() && segment_match(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some((ok, rest)) = class(&p[1..], s.first().copied()) else {
                return false;
            };
            ok && segment_match(rest, &s[1..])
        }
        Some(b'\\') if p.len() > 1 => s.first() == Some(&p[1]) && segment_match(&p[2..], &s[1..]),
        Some(c) => s.first() == Some(c) && segment_match(&p[1..], &s[1..]),
    }
}

/// A `[...]` class (after its `[`) against `c`: whether it matches, and the pattern after `]`.
fn class(p: &[u8], c: Option<u8>) -> Option<(bool, &[u8])> {
    let c = c?;
    let (neg, mut p) = match p.first() {
        Some(b'^') => (true, &p[1..]),
        _ => (false, p),
    };
    let mut hit = false;
    let mut first = true;
    loop {
        match p.first() {
            None => return None,
            Some(b']') if !first => return Some((hit != neg, &p[1..])),
            _ => {}
        }
        first = false;
        let (lo, rest) = class_char(p)?;
        p = rest;
        let hi = if p.first() == Some(&b'-') && p.get(1) != Some(&b']') {
            let (hi, rest) = class_char(&p[1..])?;
            p = rest;
            hi
        } else {
            lo
        };
        hit |= lo <= c && c <= hi;
    }
}

fn class_char(p: &[u8]) -> Option<(u8, &[u8])> {
    match p {
        [b'\\', c, rest @ ..] => Some((*c, rest)),
        [c, rest @ ..] => Some((*c, rest)),
        [] => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(rel: &str, pats: &[&str]) -> bool {
        let pats: Vec<String> = pats.iter().map(|s| s.to_string()).collect();
        excluded(rel, &normalize(&pats))
    }

    #[test]
    fn like_the_sdks_exclude() {
        assert!(ex("a/b/x.log", &["*.log"]));
        assert!(!ex("a/b/x.txt", &["*.log"]));
        assert!(ex("node_modules", &["node_modules"]));
        assert!(ex("a/node_modules", &["node_modules"]));
        assert!(ex("a/b/c.go", &["a/**/*.go"]));
        assert!(ex("a/c.go", &["a/**/*.go"]));
        assert!(!ex("b/c.go", &["a/**/*.go"]));
        assert!(ex("bin/x", &["./bin/*"]));
        assert!(!ex("src/bin/x", &["bin/*"]));
        assert!(ex("f1", &["f[0-9]"]));
        assert!(!ex("fa", &["f[0-9]"]));
        assert!(ex("fa", &["f[^0-9]"]));
        assert!(!ex("f1", &["f["]));
        assert!(!ex("", &["*"]));
        assert!(ex("a?c", &["a\\?c"]));
        assert!(!ex("abc", &["a\\?c"]));
    }
}
