//! Secrets (#13): the tenant's named secrets, as the daemon hands them over, sealed.
//!
//! Invariants:
//! - this module never sees a secret's plaintext: `sealed` is what the daemon's
//!   `TenantKey::seal` made (AAD = tenant and name), so neither this database, its WAL nor a
//!   backup of it holds a secret in clear; a row moved to another name or tenant does not open;
//! - listing returns metadata only ([`SecretMeta`]), never the sealed bytes;
//! - every write is one statement on the writer thread, so a create of a taken name is refused
//!   atomically (the caller gets `Ok(false)`), never overwritten.

use rusqlite::{params, OptionalExtension};

use crate::error::StoreError;
use crate::store::Store;

/// What `GET /secrets` shows of a secret: never its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMeta {
    pub name: String,
    /// The plaintext's length in bytes.
    pub size: u64,
    /// The file mode the secret gets in a node (`0o400`, ...).
    pub permissions: u32,
    pub uid: u32,
    pub gid: u32,
    pub created_at: String,
    pub updated_at: String,
}

/// A secret as stored: its metadata and its sealed content.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretRow {
    pub meta: SecretMeta,
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("meta", &self.meta)
            .field("sealed", &format_args!("{} bytes", self.sealed.len()))
            .finish()
    }
}

/// What a `PATCH /secrets/{name}` changes; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct SecretPatch {
    /// New sealed content and its plaintext size.
    pub content: Option<(Vec<u8>, u64)>,
    pub permissions: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub updated_at: String,
}

const COLS: &str = "name, size, permissions, uid, gid, created_at, updated_at";

fn meta(r: &rusqlite::Row<'_>) -> rusqlite::Result<SecretMeta> {
    Ok(SecretMeta {
        name: r.get(0)?,
        size: r.get::<_, i64>(1)? as u64,
        permissions: r.get(2)?,
        uid: r.get(3)?,
        gid: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

impl Store {
    /// The tenant's secrets, by name, metadata only.
    pub async fn secrets(&self) -> Result<Vec<SecretMeta>, StoreError> {
        self.call(|w| {
            let mut st = w
                .conn
                .prepare_cached(&format!("SELECT {COLS} FROM secrets ORDER BY name"))?;
            let rows = st.query_map([], meta)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await?
    }

    /// The secrets called `names` that exist (with their sealed content), in `names`' order.
    pub async fn secrets_named(&self, names: Vec<String>) -> Result<Vec<SecretRow>, StoreError> {
        self.call(move |w| {
            let mut st = w.conn.prepare_cached(&format!(
                "SELECT {COLS}, sealed FROM secrets WHERE name = ?1"
            ))?;
            let mut out = Vec::with_capacity(names.len());
            for n in &names {
                let row = st
                    .query_row([n], |r| {
                        Ok(SecretRow {
                            meta: meta(r)?,
                            sealed: r.get(7)?,
                        })
                    })
                    .optional()?;
                out.extend(row);
            }
            Ok(out)
        })
        .await?
    }

    /// Records a new secret; `Ok(false)` when the name is taken (nothing changes then).
    pub async fn insert_secret(&self, row: SecretRow) -> Result<bool, StoreError> {
        self.call(move |w| {
            let m = &row.meta;
            let n = w.conn.execute(
                "INSERT INTO secrets(name, sealed, size, permissions, uid, gid, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT(name) DO NOTHING",
                params![
                    m.name,
                    row.sealed,
                    m.size as i64,
                    m.permissions,
                    m.uid,
                    m.gid,
                    m.created_at,
                    m.updated_at
                ],
            )?;
            Ok(n == 1)
        })
        .await?
    }

    /// Changes a secret; `Ok(None)` when there is no such secret.
    pub async fn update_secret(
        &self,
        name: &str,
        p: SecretPatch,
    ) -> Result<Option<SecretMeta>, StoreError> {
        let name = name.to_string();
        self.call(move |w| {
            let tx = w.conn.transaction()?;
            let n = match &p.content {
                Some((sealed, size)) => tx.execute(
                    "UPDATE secrets SET sealed = ?2, size = ?3, updated_at = ?4 WHERE name = ?1",
                    params![name, sealed, *size as i64, p.updated_at],
                )?,
                None => tx.execute(
                    "UPDATE secrets SET updated_at = ?2 WHERE name = ?1",
                    params![name, p.updated_at],
                )?,
            };
            if n == 0 {
                return Ok(None);
            }
            for (col, v) in [
                ("permissions", p.permissions),
                ("uid", p.uid),
                ("gid", p.gid),
            ] {
                if let Some(v) = v {
                    tx.execute(
                        &format!("UPDATE secrets SET {col} = ?2 WHERE name = ?1"),
                        params![name, v],
                    )?;
                }
            }
            let m = tx.query_row(
                &format!("SELECT {COLS} FROM secrets WHERE name = ?1"),
                [&name],
                meta,
            )?;
            tx.commit()?;
            Ok(Some(m))
        })
        .await?
    }

    /// Removes a secret; `Ok(false)` when there was none.
    pub async fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        let name = name.to_string();
        self.call(move |w| {
            Ok(w.conn
                .execute("DELETE FROM secrets WHERE name = ?1", [&name])?
                == 1)
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, sealed: &[u8]) -> SecretRow {
        SecretRow {
            meta: SecretMeta {
                name: name.into(),
                size: 3,
                permissions: 0o400,
                uid: 0,
                gid: 0,
                created_at: "2026-01-01T00:00:00Z".into(),
                updated_at: "2026-01-01T00:00:00Z".into(),
            },
            sealed: sealed.to_vec(),
        }
    }

    #[tokio::test]
    async fn create_list_patch_delete() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("s.db"), "t").unwrap();
        assert!(s.insert_secret(row("b", b"xb")).await.unwrap());
        assert!(s.insert_secret(row("a", b"xa")).await.unwrap());
        assert!(
            !s.insert_secret(row("a", b"other")).await.unwrap(),
            "a taken name is refused"
        );
        let names: Vec<_> = s
            .secrets()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        let got = s
            .secrets_named(vec!["b".into(), "zz".into(), "a".into()])
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].meta.name.as_str(), got[0].sealed.as_slice()),
            ("b", &b"xb"[..])
        );
        assert_eq!(got[1].sealed, b"xa", "the first insert stays");
        let m = s
            .update_secret(
                "a",
                SecretPatch {
                    permissions: Some(0o440),
                    gid: Some(7),
                    updated_at: "2026-01-02T00:00:00Z".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((m.permissions, m.uid, m.gid, m.size), (0o440, 0, 7, 3));
        let m = s
            .update_secret(
                "a",
                SecretPatch {
                    content: Some((b"new".to_vec(), 9)),
                    updated_at: "2026-01-03T00:00:00Z".into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!((m.permissions, m.size), (0o440, 9));
        assert_eq!(m.updated_at, "2026-01-03T00:00:00Z");
        let got = s.secrets_named(vec!["a".into()]).await.unwrap();
        assert_eq!(got[0].sealed, b"new");
        assert!(s
            .update_secret("zz", SecretPatch::default())
            .await
            .unwrap()
            .is_none());
        assert!(s.delete_secret("a").await.unwrap());
        assert!(!s.delete_secret("a").await.unwrap());
        // Reopened: the rows are durable.
        drop(s);
        let s = Store::open(&d.path().join("s.db"), "t").unwrap();
        assert_eq!(s.secrets().await.unwrap().len(), 1);
    }
}
