//! Node lists over HTTP (`GET /nodes`, `GET /hostgroup/{g}/nodes`): the whole list as Slicer
//! has it, or pages with `limit` and `cursor`.
//!
//! Invariants:
//! - lists come from the store's in-memory snapshot: no SQLite, no lock held while serialising;
//! - without `limit` the body is exactly what `Json(Vec<Node>)` makes (Slicer compatibility);
//!   the unfiltered full list is serialised once per change of the tenant's nodes and shared;
//! - serialising more than [`INLINE_ROWS`] rows that are not already serialised runs on a
//!   blocking thread, so a large list never holds an async worker for long;
//! - a page's `X-Next-Cursor` is present exactly when nodes matching the query follow it.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use bulkhead_api::Node;
use bulkhead_core::DomainError;
use bulkhead_store::{Cursor, NodeRow, Snapshot};
use bytes::Bytes;
use std::sync::Arc;

use super::query::Query;
use crate::app::App;
use crate::error::ApiError;
use crate::tenant::Tenant;

/// Largest page.
pub const MAX_LIMIT: u32 = 1000;
/// The response header that carries the next page's cursor.
pub const NEXT_CURSOR: &str = "x-next-cursor";
/// Rows serialised on the async worker itself; more go to a blocking thread.
const INLINE_ROWS: usize = 128;

/// What a list request asks for.
struct ListQuery {
    tag: Option<String>,
    prefix: Option<String>,
    /// `Some` for a page.
    limit: Option<usize>,
    cursor: Option<Cursor>,
}

fn parse(q: Option<&str>) -> Result<ListQuery, DomainError> {
    let q = Query::parse(q, &["tag", "tag_prefix", "limit", "cursor"])?;
    let tag = q.one("tag")?;
    let prefix = q.one("tag_prefix")?;
    if tag.is_some() && prefix.is_some() {
        return Err(DomainError::invalid("give tag or tag_prefix, not both"));
    }
    let limit = match q.one("limit")? {
        None => None,
        Some(v) => match v.parse::<u32>() {
            Ok(n @ 1..=MAX_LIMIT) => Some(n as usize),
            _ => {
                return Err(DomainError::invalid(format!(
                    "query parameter \"limit\" must be an integer from 1 to {MAX_LIMIT}, not {v:?}"
                )))
            }
        },
    };
    let cursor = match q.one("cursor")? {
        None => None,
        Some(_) if limit.is_none() => return Err(DomainError::invalid(
            "query parameter \"cursor\" needs \"limit\": pass the limit of the previous page too",
        )),
        Some(c) => Some(Cursor::decode(&c).map_err(|e| DomainError::invalid(e.to_string()))?),
    };
    Ok(ListQuery {
        tag,
        prefix,
        limit,
        cursor,
    })
}

fn render(rows: &[&Arc<NodeRow>]) -> Bytes {
    let nodes: Vec<Node> = rows.iter().map(|r| Tenant::to_api(r)).collect();
    // What axum's `Json` writes, byte for byte.
    Bytes::from(serde_json::to_vec(&nodes).unwrap_or_else(|_| b"[]".to_vec()))
}

/// Serialises `pick(snapshot)`'s rows, on a blocking thread when they are many.
async fn render_off_worker(
    snap: Arc<Snapshot>,
    pick: impl FnOnce(&Snapshot) -> (Bytes, Option<Cursor>) + Send + 'static,
    many: bool,
) -> Result<(Bytes, Option<Cursor>), DomainError> {
    if !many {
        return Ok(pick(&snap));
    }
    tokio::task::spawn_blocking(move || pick(&snap))
        .await
        .map_err(|e| DomainError::internal(format!("listing nodes: {e}")))
}

/// The answer to a list request over `group` (or all groups).
pub async fn list(
    tenant: &Tenant,
    group: Option<String>,
    q: Option<String>,
) -> Result<Response, ApiError> {
    let q = parse(q.as_deref())?;
    let snap = tenant.list();
    let filtered = q.tag.is_some() || q.prefix.is_some();
    let (body, next) = match (q.limit, group, filtered) {
        // The whole list, as Slicer has it: made once per change and shared by every reader.
        (None, None, false) => {
            let body = match snap.memoised() {
                Some(b) => b,
                None => {
                    let many = snap.len() > INLINE_ROWS;
                    let pick = |s: &Snapshot| {
                        let b = s.memo(|rows| render(&rows.iter().collect::<Vec<_>>()));
                        (b, None)
                    };
                    render_off_worker(snap, pick, many).await?.0
                }
            };
            (body, None)
        }
        (limit, group, _) => {
            let in_scope = match &group {
                Some(g) => snap.group(g).len(),
                None => snap.len(),
            };
            let many = limit.unwrap_or(in_scope).min(in_scope) > INLINE_ROWS;
            let pick = move |s: &Snapshot| {
                let keep = |r: &NodeRow| {
                    q.tag.as_ref().is_none_or(|t| r.tags.contains(t))
                        && q.prefix
                            .as_ref()
                            .is_none_or(|p| r.tags.iter().any(|t| t.starts_with(p.as_str())))
                };
                let page = s.page(
                    group.as_deref(),
                    q.cursor.as_ref(),
                    limit.unwrap_or(usize::MAX),
                    keep,
                );
                (render(&page.rows), page.next)
            };
            render_off_worker(snap, pick, many).await?
        }
    };
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(c) = next {
        if let Ok(v) = c.encode().parse() {
            resp.headers_mut().insert(NEXT_CURSOR, v);
        }
    }
    Ok(resp)
}

/// The union of several tenants' lists (a shared daemon, a caller with roles in several
/// tenants). One order across them: tenants in config order, each in its own list order.
/// A page's cursor is the last node it returned, whose host group names its tenant (host
/// groups are unique across a daemon's tenants), so the next page resumes in that tenant.
pub async fn list_many(tenants: &[Arc<App>], q: Option<String>) -> Result<Response, ApiError> {
    let q = parse(q.as_deref())?;
    let start = match &q.cursor {
        None => 0,
        Some(c) => tenants
            .iter()
            .position(|a| a.tenant.cfg.group(&c.hostgroup).is_some())
            .ok_or_else(|| {
                DomainError::invalid(
                    "cursor names no node you may list: pass the X-Next-Cursor header of the previous page unchanged, or leave cursor out",
                )
            })?,
    };
    let snaps: Vec<Arc<Snapshot>> = tenants.iter().map(|a| a.tenant.list()).collect();
    let limit = q.limit.unwrap_or(usize::MAX);
    let many = limit.min(snaps.iter().map(|s| s.len()).sum()) > INLINE_ROWS;
    let pick = move || {
        let keep = |r: &NodeRow| {
            q.tag.as_ref().is_none_or(|t| r.tags.contains(t))
                && q.prefix
                    .as_ref()
                    .is_none_or(|p| r.tags.iter().any(|t| t.starts_with(p.as_str())))
        };
        let mut rows: Vec<&Arc<NodeRow>> = Vec::new();
        let mut next = None;
        for (i, s) in snaps.iter().enumerate().skip(start) {
            let after = if i == start { q.cursor.as_ref() } else { None };
            let page = s.page(None, after, limit - rows.len(), keep);
            rows.extend(page.rows);
            if page.next.is_some() {
                next = page.next;
                break;
            }
            if rows.len() == limit {
                let more = snaps[i + 1..]
                    .iter()
                    .any(|s| !s.page(None, None, 1, keep).rows.is_empty());
                if more {
                    next = rows.last().map(|r| Cursor::of(r));
                }
                break;
            }
        }
        (render(&rows), next)
    };
    let (body, next) = if many {
        tokio::task::spawn_blocking(pick)
            .await
            .map_err(|e| DomainError::internal(format!("listing nodes: {e}")))?
    } else {
        pick()
    };
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(c) = next {
        if let Ok(v) = c.encode().parse() {
            resp.headers_mut().insert(NEXT_CURSOR, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_and_cursor_are_checked() {
        assert!(parse(None).unwrap().limit.is_none());
        assert_eq!(parse(Some("limit=1000")).unwrap().limit, Some(1000));
        for bad in ["limit=0", "limit=1001", "limit=-1", "limit=ten", "limit="] {
            let e = parse(Some(bad)).err().unwrap();
            assert_eq!(e.code.as_str(), "invalid_request");
            assert!(e.message.contains("from 1 to 1000"), "{}", e.message);
        }
        let e = parse(Some("limit=5&cursor=bogus")).err().unwrap();
        assert_eq!(e.code.as_str(), "invalid_request");
        assert!(e.message.starts_with("cursor \"bogus\""), "{}", e.message);
        let e = parse(Some("cursor=abc")).err().unwrap();
        assert!(e.message.contains("needs \"limit\""), "{}", e.message);
        assert!(parse(Some("limit=1&limit=2")).is_err());
    }

    #[test]
    fn the_full_list_is_what_json_of_nodes_makes() {
        let row = Arc::new(NodeRow {
            id: bulkhead_store::NodeId::new(),
            tenant: "t".into(),
            name: "g-1".into(),
            hostgroup: "g".into(),
            status: bulkhead_core::NodeState::Running,
            ip: "169.254.100.2".into(),
            cpus: 1,
            ram_bytes: 1 << 29,
            tags: vec!["a=\"b\"".into()],
            persistent: false,
            created_at: "2026-01-01T00:00:00Z".into(),
            cgroup: Some("c1".into()),
            network: Some("{}".into()),
            forwards: "[]".into(),
            userdata: None,
            userdata_exit: None,
            storage_bytes: None,
            spec: None,
            expiry: None,
        });
        let want = axum::Json(vec![Tenant::to_api(&row)]).into_response();
        let want_type = want.headers()[header::CONTENT_TYPE].clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let want = rt
            .block_on(axum::body::to_bytes(want.into_body(), usize::MAX))
            .unwrap();
        assert_eq!(render(&[&row]), want);
        assert_eq!(want_type, "application/json");
    }
}
