//! The token store against real SQLite files: create, check, revoke, expire, reopen, and the
//! auth database's own migrations.

use super::*;

fn new(name: &str, ttl_secs: u64) -> NewToken {
    NewToken {
        name: name.into(),
        tenant: Some("a3cf".into()),
        role: "developer".into(),
        ttl_secs,
        created_by: "token".into(),
        e2b: false,
    }
}

/// #15, A: an E2B-form secret is `e2b_` and 64 hex digits, and checks like any other.
#[test]
fn e2b_form_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let s = TokenStore::open(&dir.path().join("auth.db")).unwrap();
    let mut n = new("sdk", 60);
    n.e2b = true;
    let (row, secret) = s.create(n).unwrap();
    let hex = secret.expose().strip_prefix(E2B_PREFIX).unwrap();
    assert_eq!(hex.len(), 64);
    assert!(hex
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(s.check(secret.expose(), now_secs()).unwrap().id, row.id);
}

#[test]
fn create_check_revoke_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let s = TokenStore::open(&dir.path().join("auth.db")).unwrap();
    let (row, secret) = s.create(new("ci", 60)).unwrap();
    let secret = secret.expose().to_string();
    assert!(secret.starts_with("bh_"), "{secret}");
    assert_eq!(
        secret.len(),
        3 + 43,
        "32 bytes, URL-safe base64 without padding"
    );
    assert!(secret[3..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let now = now_secs();
    assert_eq!(s.check(&secret, now).unwrap().id, row.id);
    assert_eq!(s.check("bh_nope", now), Err(Refusal::Unknown));
    // A second token never has the same secret.
    let (_, other) = s.create(new("ci2", 60)).unwrap();
    assert_ne!(other.expose(), secret);
    // Expiry is a time check.
    assert!(matches!(
        s.check(&secret, row.expires_at),
        Err(Refusal::Expired(_))
    ));
    assert!(s.check(&secret, row.expires_at - 1).is_ok());
    // Revocation is in memory at once; revoking twice keeps the first time.
    let r = s.revoke(&row.id, now).unwrap().unwrap();
    assert_eq!(r.revoked_at, Some(now));
    assert!(matches!(s.check(&secret, now), Err(Refusal::Revoked(_))));
    assert_eq!(
        s.revoke(&row.id, now + 5).unwrap().unwrap().revoked_at,
        Some(now)
    );
    assert!(s.revoke(&TokenId::new(), now).unwrap().is_none());
    assert_eq!(s.list().len(), 2);
    assert_eq!(s.get(&row.id).unwrap().state(now), TokenState::Revoked);
    // Debug never shows the secret nor the hash.
    let dbg = format!("{:?} {:?}", s.get(&row.id).unwrap(), other);
    assert!(
        !dbg.contains(&secret[3..]) && !dbg.contains("hash"),
        "{dbg}"
    );
}

#[test]
fn reopen_keeps_rows_and_stores_only_the_hash() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("auth.db");
    let (id, secret, revoked) = {
        let s = TokenStore::open(&p).unwrap();
        let (row, secret) = s.create(new("ci", 3600)).unwrap();
        let (r2, _) = s.create(new("gone", 3600)).unwrap();
        s.revoke(&r2.id, now_secs()).unwrap();
        (row.id, secret.expose().to_string(), r2.id)
    };
    let s = TokenStore::open(&p).unwrap();
    let row = s.check(&secret, now_secs()).unwrap();
    assert_eq!((row.id, row.name.as_str()), (id, "ci"));
    assert_eq!(row.tenant.as_deref(), Some("a3cf"));
    assert_eq!(
        s.get(&revoked).unwrap().state(now_secs()),
        TokenState::Revoked
    );
    // The file holds no secret: neither the whole nor its random part.
    drop(s);
    let mut bytes = std::fs::read(&p).unwrap();
    for ext in ["-wal", "-shm"] {
        bytes.extend(std::fs::read(format!("{}{ext}", p.display())).unwrap_or_default());
    }
    let hay = String::from_utf8_lossy(&bytes);
    assert!(!hay.contains(&secret[3..]), "the secret is in the file");
}

#[test]
fn old_rows_are_pruned_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("auth.db");
    let s = TokenStore::open(&p).unwrap();
    let (old, _) = s.create(new("old", 1)).unwrap();
    let (recent, _) = s.create(new("recent", 1)).unwrap();
    let (live, _) = s.create(new("live", 3600)).unwrap();
    drop(s);
    let conn = rusqlite::Connection::open(&p).unwrap();
    let long_ago = (now_secs() - GRACE - 10) as i64;
    conn.execute(
        "UPDATE tokens SET expires_at=?1 WHERE id=?2",
        rusqlite::params![long_ago, old.id.to_string()],
    )
    .unwrap();
    drop(conn);
    let s = TokenStore::open(&p).unwrap();
    assert!(s.get(&old.id).is_none(), "pruned");
    assert!(s.get(&recent.id).is_some(), "still listed as expired");
    assert!(s.get(&live.id).is_some());
}

#[test]
fn migrations_number_the_file_and_refuse_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("auth.db");
    drop(TokenStore::open(&p).unwrap());
    let conn = rusqlite::Connection::open(&p).unwrap();
    assert_eq!(crate::schema::version(&conn).unwrap(), AUTH_SCHEMA_VERSION);
    conn.pragma_update(None, "user_version", AUTH_SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let e = TokenStore::open(&p).err().unwrap().to_string();
    assert!(
        e.contains("auth database") && e.contains(&p.display().to_string()),
        "{e}"
    );
    // Opening twice (a restart) applies nothing again.
    let q = dir.path().join("again.db");
    drop(TokenStore::open(&q).unwrap());
    drop(TokenStore::open(&q).unwrap());
}
