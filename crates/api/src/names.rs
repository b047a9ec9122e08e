//! Validation of the names and strings that clients choose: host groups, node hostnames,
//! tenants, tags and in-node paths. Every check returns a message that says how to fix it.

/// A DNS label: 1..=63 of `[a-z0-9-]`, not starting or ending with `-`. Used for tenants,
/// host groups and node hostnames, which also become directory and cgroup names.
pub fn validate_label(kind: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {kind} {s:?}: use 1 to 63 lowercase letters, digits or '-', not starting or ending with '-'"
        ))
    }
}

/// A tag: `key=value` or a bare word; printable ASCII without spaces, at most 128 bytes.
pub fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.bytes().all(|b| b.is_ascii_graphic())
        && !tag.starts_with('=');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tag {tag:?}: use up to 128 printable ASCII characters without spaces, e.g. user=alice"
        ))
    }
}

/// A path inside a node: absolute, no `..` or `.` components, no NUL, at most 4096 bytes.
/// The agent resolves it inside the node's own root, so symlinks cannot leave the node either.
pub fn validate_node_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "path {path:?} must be absolute, e.g. /work/file.txt"
        ));
    }
    if path.len() > 4096 || path.contains('\0') {
        return Err("path is longer than 4096 bytes or contains NUL".into());
    }
    if path.split('/').any(|c| c == ".." || c == ".") {
        return Err(format!(
            "path {path:?} must not contain '.' or '..' components"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(validate_label("node", "a3cf-1").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(validate_label("node", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags() {
        assert!(validate_tag("user=alice").is_ok());
        assert!(validate_tag("ci").is_ok());
        for bad in ["", "a b", "=x", "ü=1"] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn node_paths() {
        assert!(validate_node_path("/work/dir").is_ok());
        assert!(validate_node_path("/").is_ok());
        for bad in ["work", "/a/../b", "/a/./b", "/..", "/a\0b"] {
            assert!(validate_node_path(bad).is_err(), "{bad}");
        }
    }
}
