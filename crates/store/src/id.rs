//! Typed ids for bulkhead's objects: ULIDs (48 bits of milliseconds, 80 random bits), written
//! as 26 characters of Crockford base32, so their text sorts like their creation time.
//!
//! Invariants:
//! - ids made by one process sort strictly in the order they were made, even within one
//!   millisecond: a new id is never below the last one;
//! - the part after the time is never predictable from an earlier id: within one millisecond
//!   the next id is the last one plus a random step (at least 1, up to 2^64), not plus one;
//! - an `Id<Node>` never type-checks where an `Id<Volume>` is wanted.

use std::marker::PhantomData;
use std::sync::Mutex;
use ulid::Ulid;

/// The kind of object an id names; `NAME` appears in errors ("node id ... is not a ULID").
pub trait Kind {
    const NAME: &'static str;
}

/// Marker for nodes' ids.
#[derive(Debug)]
pub enum Node {}
impl Kind for Node {
    const NAME: &'static str = "node";
}

pub type NodeId = Id<Node>;

/// Marker for API tokens' ids (`tokens.rs`).
#[derive(Debug)]
pub enum Token {}
impl Kind for Token {
    const NAME: &'static str = "token";
}

pub type TokenId = Id<Token>;

// ---- volumes and their snapshots (#13, volumes) ----
/// Marker for volumes' ids (`volumes.rs`).
#[derive(Debug)]
pub enum Volume {}
impl Kind for Volume {
    const NAME: &'static str = "volume";
}

pub type VolumeId = Id<Volume>;

/// Marker for volume snapshots' ids (`volumes.rs`).
#[derive(Debug)]
pub enum Snapshot {}
impl Kind for Snapshot {
    const NAME: &'static str = "snapshot";
}

pub type SnapshotId = Id<Snapshot>;
// ---- end volumes ----
/// Marker for commits' ids (`commits.rs`, #13 commit and fork).
#[derive(Debug)]
pub enum Commit {}
impl Kind for Commit {
    const NAME: &'static str = "commit";
}

pub type CommitId = Id<Commit>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{kind} id {given:?} is not an id: give the 26 characters bulkhead printed (Crockford base32)")]
    Invalid { kind: &'static str, given: String },
}

pub struct Id<K: Kind> {
    ulid: Ulid,
    kind: PhantomData<fn() -> K>,
}

impl<K: Kind> Id<K> {
    /// A new id, above every id this process made before.
    #[allow(clippy::new_without_default)] // a default id would be a fresh random one: say `new`
    pub fn new() -> Self {
        Self::from_ulid(next_ulid())
    }

    pub fn parse(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::Invalid {
            kind: K::NAME,
            given: s.chars().take(64).collect(),
        };
        let ulid = Ulid::from_string(s).map_err(|_| bad())?;
        // Only the canonical text: the decoder accepts lowercase (fine) but also a first
        // character above 7, silently dropping the bits beyond 128 (two texts, one id).
        if !ulid.to_string().eq_ignore_ascii_case(s) {
            return Err(bad());
        }
        Ok(Self::from_ulid(ulid))
    }

    pub fn from_ulid(ulid: Ulid) -> Self {
        Id {
            ulid,
            kind: PhantomData,
        }
    }

    pub fn ulid(&self) -> Ulid {
        self.ulid
    }

    /// Milliseconds since the Unix epoch when the id was made.
    pub fn timestamp_ms(&self) -> u64 {
        self.ulid.timestamp_ms()
    }
}

// By hand: derives would ask `K` for the same traits, and kinds are uninhabited markers.
impl<K: Kind> Clone for Id<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K: Kind> Copy for Id<K> {}
impl<K: Kind> PartialEq for Id<K> {
    fn eq(&self, o: &Self) -> bool {
        self.ulid == o.ulid
    }
}
impl<K: Kind> Eq for Id<K> {}
impl<K: Kind> PartialOrd for Id<K> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<K: Kind> Ord for Id<K> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.ulid.cmp(&o.ulid)
    }
}
impl<K: Kind> std::hash::Hash for Id<K> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.ulid.hash(h)
    }
}
impl<K: Kind> std::fmt::Display for Id<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut buf = [0u8; ulid::ULID_LEN];
        f.write_str(self.ulid.array_to_str(&mut buf))
    }
}
impl<K: Kind> std::fmt::Debug for Id<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{self}", K::NAME)
    }
}
impl<K: Kind> std::str::FromStr for Id<K> {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::parse(s)
    }
}

/// The last id this process made (of any kind): the floor for the next.
static LAST: Mutex<Ulid> = Mutex::new(Ulid::nil());

fn random_u128() -> u128 {
    let mut b = [0u8; 16];
    // The kernel's getrandom(2) does not fail once the pool is initialised, which happens
    // during boot, long before a daemon starts; an id without randomness would be guessable.
    getrandom::fill(&mut b).expect("the kernel's random source is unavailable");
    u128::from_le_bytes(b)
}

fn next_ulid() -> Ulid {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let r = random_u128();
    let candidate = Ulid::from_parts(ms, r >> 48);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    let next = if candidate > *last {
        candidate
    } else {
        // Same millisecond (or a clock step back): a random step above the last id. A carry
        // into the time bits moves the id less than a millisecond ahead; order still holds.
        let step = u128::from(r as u64) + 1;
        Ulid(last.0.saturating_add(step))
    };
    *last = next;
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_sort_in_creation_order_and_never_repeat() {
        let ids: Vec<NodeId> = (0..20_000).map(|_| NodeId::new()).collect();
        for w in ids.windows(2) {
            assert!(w[0] < w[1], "{:?} then {:?}", w[0], w[1]);
            assert!(w[0].to_string() < w[1].to_string(), "text sorts like ids");
        }
        let set: HashSet<_> = ids.iter().collect();
        assert_eq!(set.len(), ids.len());
    }

    #[test]
    fn ids_from_many_threads_are_unique() {
        let all: Vec<NodeId> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| (0..2000).map(|_| NodeId::new()).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let set: HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), 16_000);
    }

    #[test]
    fn the_next_id_is_not_the_last_plus_one() {
        // Within a millisecond a counter would make the next id guessable from this one.
        let ids: Vec<NodeId> = (0..1000).map(|_| NodeId::new()).collect();
        let plus_one = ids
            .windows(2)
            .filter(|w| w[1].ulid().0 == w[0].ulid().0 + 1)
            .count();
        assert_eq!(plus_one, 0);
    }

    #[test]
    fn text_round_trips_and_bad_text_is_named() {
        let id = NodeId::new();
        let s = id.to_string();
        assert_eq!(s.len(), 26);
        assert_eq!(NodeId::parse(&s).unwrap(), id);
        assert_eq!(NodeId::parse(&s.to_lowercase()).unwrap(), id);
        assert!(id.timestamp_ms() > 1_700_000_000_000);
        let e = NodeId::parse("not-an-id").unwrap_err();
        assert!(e.to_string().starts_with("node id \"not-an-id\""), "{e}");
        assert!(NodeId::parse("").is_err());
        assert!(
            NodeId::parse(&"Z".repeat(26)).is_err(),
            "overflowing the 128 bits"
        );
    }
}
