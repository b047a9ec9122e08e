//! `GET /audit?since=&until=&action=&outcome=&tenant=&limit=` (#14, part A; ADR 0031): the
//! audit lines of the tenants the caller may read the trail of (a tenant-admin its tenant, a
//! global-admin every tenant and the shared daemon's own trail), as NDJSON: each line exactly
//! as written (with its `seq` and `prev`), checkpoints left out, oldest first, trail by trail
//! in config order (the daemon's own last).
//!
//! `since`/`until`: RFC 3339 or UNIX seconds, inclusive. `action`: a snake_case action
//! (`create_node`). `outcome`: `allowed`, `denied` or `failed`. `tenant`: one of the caller's
//! tenants, or `-` for the daemon's own trail. `limit`: at most this many lines (default
//! 10000, at most 100000); a cut answer says so in `x-audit-truncated: true`.

use axum::extract::RawQuery;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bulkhead_core::DomainError;

use super::body::{AppState, Visible};
use super::query::Query;
use crate::audit::query::Filter;
use crate::auth::Principal;
use crate::error::ApiError;

pub const DEFAULT_LIMIT: usize = 10_000;
pub const MAX_LIMIT: usize = 100_000;

fn time(q: &Query, key: &str) -> Result<Option<i64>, DomainError> {
    match q.one(key)? {
        None => Ok(None),
        Some(v) => crate::audit::line::parse_time(&v).map(Some).ok_or_else(|| {
            DomainError::invalid(format!(
                "{key}={v:?} is not a time: give RFC 3339 (2026-01-31T12:00:00Z) or UNIX seconds"
            ))
        }),
    }
}

pub async fn audit(
    axum::extract::State(daemon): axum::extract::State<AppState>,
    Visible(tenants): Visible,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(
        q.as_deref(),
        &["since", "until", "action", "outcome", "tenant", "limit"],
    )?;
    let outcome = q.one("outcome")?;
    if let Some(o) = &outcome {
        if !matches!(o.as_str(), "allowed" | "denied" | "failed") {
            return Err(DomainError::invalid(format!(
                "outcome={o:?} is not an outcome: use allowed, denied or failed"
            ))
            .into());
        }
    }
    let limit = match q.one("limit")? {
        None => DEFAULT_LIMIT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                DomainError::invalid(format!("limit={v:?}: give a number from 1 to {MAX_LIMIT}"))
            })?,
    };
    let filter = Filter {
        since: time(&q, "since")?,
        until: time(&q, "until")?,
        action: q.one("action")?,
        outcome,
        limit,
    };
    // The daemon's own trail: a global-admin's, on a shared daemon.
    let own = daemon.audit.is_some() && who.is_global_admin();
    let picked = q.one("tenant")?;
    let mut apps = tenants.clone();
    let mut with_own = own;
    if let Some(t) = &picked {
        if t == "-" && own {
            apps.clear();
        } else {
            apps.retain(|a| a.tenant.name == *t);
            with_own = false;
            if apps.is_empty() {
                return Err(DomainError::not_found(format!(
                    "tenant {t:?} not found among the tenants whose audit trail you may read"
                ))
                .into());
            }
        }
    }
    let d = daemon.clone();
    let (body, truncated) = tokio::task::spawn_blocking(move || {
        let (mut out, mut count) = (Vec::new(), 0usize);
        let mut cut = false;
        for a in &apps {
            cut |= a.tenant.audit.read(&filter, &mut out, &mut count);
        }
        if with_own {
            if let Some(own) = &d.audit {
                cut |= own.read(&filter, &mut out, &mut count);
            }
        }
        (out, cut)
    })
    .await
    .map_err(|e| DomainError::internal(format!("reading the audit trail failed: {e}")))?;
    let mut r = ([(CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    if truncated {
        r.headers_mut().insert(
            "x-audit-truncated",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    Ok(r)
}
