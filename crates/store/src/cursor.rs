//! Cursors for paged node lists. A cursor is the sort key of the last node a page returned
//! (host group, creation time, name: the list's order since the first release), so the next
//! page starts at the first node above it. That makes paging stable while nodes come and go:
//! a node present from the first page to the last is returned exactly once; one created or
//! deleted meanwhile appears at most once.
//!
//! The text form is opaque to callers (base64url of a versioned record) and checked on the
//! way in: anything that does not decode to a well-formed key is an error, never a guess.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::node::{key, NodeRow};

/// Prefix of the record inside the base64: a cursor format version, for later change.
const FORMAT: &str = "n1";
/// Longer text than any real cursor (three labels of at most 63 bytes and a timestamp).
const MAX_TEXT: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    // Field order is the sort order: derived Ord compares them in this order.
    pub hostgroup: String,
    pub created_at: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("cursor {0:?} is not one this server gave out: pass the X-Next-Cursor header of the previous page unchanged, or leave cursor out to start from the first page")]
    Invalid(String),
}

impl Cursor {
    pub fn of(row: &NodeRow) -> Self {
        Cursor {
            hostgroup: row.hostgroup.clone(),
            created_at: row.created_at.clone(),
            name: row.name.clone(),
        }
    }

    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{FORMAT}\0{}\0{}\0{}",
            self.hostgroup, self.created_at, self.name
        ))
    }

    pub fn decode(text: &str) -> Result<Self, CursorError> {
        let bad = || CursorError::Invalid(text.chars().take(64).collect());
        if text.is_empty() || text.len() > MAX_TEXT {
            return Err(bad());
        }
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let raw = String::from_utf8(raw).map_err(|_| bad())?;
        let mut parts = raw.split('\0');
        let (Some(FORMAT), Some(g), Some(c), Some(n), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        if g.is_empty() || c.is_empty() || n.is_empty() {
            return Err(bad());
        }
        Ok(Cursor {
            hostgroup: g.into(),
            created_at: c.into(),
            name: n.into(),
        })
    }

    /// Whether `row` sorts after this cursor (belongs on a later page).
    pub fn before(&self, row: &NodeRow) -> bool {
        (
            self.hostgroup.as_str(),
            self.created_at.as_str(),
            self.name.as_str(),
        ) < key(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let c = Cursor {
            hostgroup: "g".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            name: "g-10".into(),
        };
        let t = c.encode();
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(Cursor::decode(&t).unwrap(), c);
        for bad in [
            "",
            "!!!",
            "Zm9v",                                   // "foo"
            &URL_SAFE_NO_PAD.encode("n1\0g\0c"),      // a field short
            &URL_SAFE_NO_PAD.encode("n2\0g\0c\0n"),   // another format
            &URL_SAFE_NO_PAD.encode("n1\0\0c\0n"),    // empty group
            &URL_SAFE_NO_PAD.encode("n1\0g\0c\0n\0"), // a field too many
            &"A".repeat(600),
        ] {
            let e = Cursor::decode(bad).unwrap_err();
            assert!(e.to_string().starts_with("cursor "), "{e}");
        }
    }
}
