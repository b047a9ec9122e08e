//! API tokens (`bulkhead token create`, ADR 0022): their rows in the daemon's own SQLite file
//! (`auth.db`, with its own numbered migrations, ADR 0013), and an in-memory map by the
//! secret's SHA-256 that answers every request.
//!
//! Invariants:
//! - the secret (`bh_` + 32 random bytes, URL-safe base64) is returned once by [`TokenStore::create`]
//!   and never stored, logged or printed by `Debug`: only its SHA-256 is kept;
//! - a request never touches SQLite: [`TokenStore::check`] reads the map, which a write changes
//!   only after its transaction committed; a revocation is in the map when `revoke` returns, so
//!   the next request with that token is refused, without a restart;
//! - expiry is a time check at every use; expired and revoked rows stay listed (as such) for
//!   [`GRACE`] and are deleted at the next open after that.

use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use crate::id::TokenId;
use crate::schema::{Migration, SchemaError};

/// Every secret starts with this, so an authenticator knows a token is an API token.
pub const PREFIX: &str = "bh_";
/// #15, A: the form E2B's SDKs accept as an API key (`e2b_` and 64 hex digits), for tokens
/// made with `e2b` set. Otherwise the same token: same store, hash, expiry and revocation.
pub const E2B_PREFIX: &str = "e2b_";

/// How long an expired or revoked token stays listed before it is pruned (at open).
pub const GRACE: u64 = 7 * 86400;

const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    what: "API tokens",
    apply: v1_tokens,
}];

/// The auth database's schema version this build writes.
pub const AUTH_SCHEMA_VERSION: u32 = 1;

fn v1_tokens(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    tenant     TEXT,
    role       TEXT NOT NULL,
    hash       BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    created_by TEXT NOT NULL
);",
    )
}

#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    #[error("auth database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("auth database {path}: {source}")]
    Schema {
        path: String,
        #[source]
        source: SchemaError,
    },
    #[error("the auth database's lock was poisoned by a panic: restart the daemon")]
    Poisoned,
}

/// A token as stored: everything but the secret. Times are seconds since the Unix epoch.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: TokenId,
    /// A label the creator chose (`ci`).
    pub name: String,
    /// `None`: every tenant (a `global-admin` token only).
    pub tenant: Option<String>,
    pub role: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub revoked_at: Option<u64>,
    /// The principal that created it (`token`, `uid:0`, `token:01J…`).
    pub created_by: String,
    hash: [u8; 32],
}

impl std::fmt::Debug for TokenRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRow")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// Where a token stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    Active,
    Expired,
    Revoked,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Expired => "expired",
            TokenState::Revoked => "revoked",
        }
    }
}

impl TokenRow {
    /// Revoked wins over expired: it says what someone did.
    pub fn state(&self, now: u64) -> TokenState {
        if self.revoked_at.is_some() {
            TokenState::Revoked
        } else if now >= self.expires_at {
            TokenState::Expired
        } else {
            TokenState::Active
        }
    }
}

/// Why a presented secret is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Unknown,
    Expired(Arc<TokenRow>),
    Revoked(Arc<TokenRow>),
}

/// What a new token is.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub tenant: Option<String>,
    pub role: String,
    /// Seconds from now.
    pub ttl_secs: u64,
    pub created_by: String,
    /// #15, A: the secret in E2B's key form (`e2b_<hex>`) instead of `bh_…`.
    pub e2b: bool,
}

/// The secret of a token just made: shown once, never stored. `Debug` does not print it.
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[derive(Default)]
struct Maps {
    by_hash: HashMap<[u8; 32], Arc<TokenRow>>,
    by_id: HashMap<TokenId, Arc<TokenRow>>,
}

impl Maps {
    fn put(&mut self, row: Arc<TokenRow>) {
        self.by_hash.insert(row.hash, row.clone());
        self.by_id.insert(row.id, row);
    }
}

/// The daemon's API tokens. Cheap to clone; clones share the connection and the map. Writes
/// block on SQLite (call them from `spawn_blocking`); reads never do.
#[derive(Clone)]
pub struct TokenStore {
    conn: Arc<Mutex<Connection>>,
    maps: Arc<RwLock<Maps>>,
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hash(secret: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut h = [0u8; 32];
    h.copy_from_slice(d.as_ref());
    h
}

fn new_secret(e2b: bool) -> String {
    use base64::Engine;
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("the kernel's random source is unavailable");
    if e2b {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        return format!("{E2B_PREFIX}{hex}"); // #15, A
    }
    format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    )
}

const COLS: &str = "id, name, tenant, role, hash, created_at, expires_at, revoked_at, created_by";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    let bad = |i, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
    };
    let id: String = r.get(0)?;
    let h: Vec<u8> = r.get(4)?;
    let hash: [u8; 32] = h
        .try_into()
        .map_err(|_| bad(4, "a token hash is not 32 bytes".into()))?;
    Ok(TokenRow {
        id: TokenId::parse(&id).map_err(|e| bad(0, e.into()))?,
        name: r.get(1)?,
        tenant: r.get(2)?,
        role: r.get(3)?,
        hash,
        created_at: r.get::<_, i64>(5)? as u64,
        expires_at: r.get::<_, i64>(6)? as u64,
        revoked_at: r.get::<_, Option<i64>>(7)?.map(|t| t as u64),
        created_by: r.get(8)?,
    })
}

impl TokenStore {
    /// Opens (creating or upgrading) the auth database at `path`, prunes rows past their
    /// [`GRACE`], and loads the rest into memory. Blocks on SQLite.
    pub fn open(path: &Path) -> Result<TokenStore, TokenStoreError> {
        let mut conn = Connection::open(path)?;
        // Hashes of credentials and who holds which role: root only (WAL files inherit it).
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        crate::schema::run(&mut conn, MIGRATIONS).map_err(|source| TokenStoreError::Schema {
            path: path.display().to_string(),
            source,
        })?;
        let cutoff = now_secs().saturating_sub(GRACE) as i64;
        let pruned = conn.execute(
            "DELETE FROM tokens WHERE expires_at < ?1 OR revoked_at < ?1",
            params![cutoff],
        )?;
        if pruned > 0 {
            tracing::info!(
                tokens = pruned,
                "pruned API tokens expired or revoked over a week ago"
            );
        }
        let mut maps = Maps::default();
        {
            let mut st = conn.prepare(&format!("SELECT {COLS} FROM tokens"))?;
            let rows = st.query_map([], row)?;
            for r in rows {
                maps.put(Arc::new(r?));
            }
        }
        Ok(TokenStore {
            conn: Arc::new(Mutex::new(conn)),
            maps: Arc::new(RwLock::new(maps)),
        })
    }

    /// Records a new token; returns its row and its secret (the only time it exists).
    pub fn create(&self, new: NewToken) -> Result<(Arc<TokenRow>, Secret), TokenStoreError> {
        let secret = new_secret(new.e2b);
        let now = now_secs();
        let row = TokenRow {
            id: TokenId::new(),
            name: new.name,
            tenant: new.tenant,
            role: new.role,
            hash: hash(&secret),
            created_at: now,
            expires_at: now.saturating_add(new.ttl_secs),
            revoked_at: None,
            created_by: new.created_by,
        };
        {
            let conn = self.conn.lock().map_err(|_| TokenStoreError::Poisoned)?;
            conn.execute(
                &format!("INSERT INTO tokens({COLS}) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    row.id.to_string(),
                    row.name,
                    row.tenant,
                    row.role,
                    &row.hash[..],
                    row.created_at as i64,
                    row.expires_at as i64,
                    None::<i64>,
                    row.created_by
                ],
            )?;
        }
        let row = Arc::new(row);
        self.maps
            .write()
            .map_err(|_| TokenStoreError::Poisoned)?
            .put(row.clone());
        Ok((row, Secret(secret)))
    }

    /// The token whose secret this is, if it is active at `now`; else why not.
    pub fn check(&self, secret: &str, now: u64) -> Result<Arc<TokenRow>, Refusal> {
        let h = hash(secret);
        let row = {
            let maps = self.maps.read().map_err(|_| Refusal::Unknown)?;
            maps.by_hash.get(&h).cloned()
        };
        let row = row.ok_or(Refusal::Unknown)?;
        match row.state(now) {
            TokenState::Active => Ok(row),
            TokenState::Expired => Err(Refusal::Expired(row)),
            TokenState::Revoked => Err(Refusal::Revoked(row)),
        }
    }

    pub fn get(&self, id: &TokenId) -> Option<Arc<TokenRow>> {
        self.maps.read().ok()?.by_id.get(id).cloned()
    }

    /// Every token (active, expired or revoked within [`GRACE`]), oldest first.
    pub fn list(&self) -> Vec<Arc<TokenRow>> {
        let Ok(maps) = self.maps.read() else {
            return Vec::new();
        };
        let mut v: Vec<_> = maps.by_id.values().cloned().collect();
        v.sort_by_key(|r| r.id);
        v
    }

    /// Revokes a token at `now`; `None` when there is no such token. Revoking a revoked token
    /// changes nothing (it keeps its first revocation time).
    pub fn revoke(&self, id: &TokenId, now: u64) -> Result<Option<Arc<TokenRow>>, TokenStoreError> {
        let Some(old) = self.get(id) else {
            return Ok(None);
        };
        if old.revoked_at.is_some() {
            return Ok(Some(old));
        }
        {
            let conn = self.conn.lock().map_err(|_| TokenStoreError::Poisoned)?;
            let n = conn.execute(
                "UPDATE tokens SET revoked_at=?2 WHERE id=?1 AND revoked_at IS NULL",
                params![id.to_string(), now as i64],
            )?;
            if n == 0 {
                // Revoked meanwhile by another caller: report what is stored.
                let at: Option<Option<i64>> = conn
                    .query_row(
                        "SELECT revoked_at FROM tokens WHERE id=?1",
                        params![id.to_string()],
                        |r| r.get(0),
                    )
                    .optional()?;
                if at.is_none() {
                    return Ok(None);
                }
            }
        }
        let mut maps = self.maps.write().map_err(|_| TokenStoreError::Poisoned)?;
        let cur = maps.by_id.get(id).cloned().unwrap_or(old);
        if cur.revoked_at.is_some() {
            return Ok(Some(cur));
        }
        let mut new = (*cur).clone();
        new.revoked_at = Some(now);
        let new = Arc::new(new);
        maps.put(new.clone());
        Ok(Some(new))
    }
}

#[cfg(test)]
#[path = "tests/tokens.rs"]
mod tests;
