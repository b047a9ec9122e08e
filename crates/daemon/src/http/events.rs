//! `GET /events?since=<cursor>&follow=<bool>&tenant=<name>` (#14, part B; ADR 0032): the
//! tenant's event stream as NDJSON, one [`crate::events::Event`] per line, each with its
//! cursor. `since` (default 0: from the oldest kept) resumes after a cursor; `follow`
//! (default true) keeps the response open and sends new events as they come, `follow=false`
//! sends what is kept and ends. The route names no node or group: the tenant is the caller's
//! only one (where it may read events), else `?tenant=` picks it (400 naming them when
//! missing; a tenant that is none of the caller's is 404, whether it exists or not).
//!
//! Invariants: a follower never misses or repeats an event: it subscribes before it reads
//! what is kept, and skips any cursor it sent; if it falls behind the live channel it reads
//! the gap from the kept events. The stream ends when the daemon stops or the client goes.

use axum::body::{Body, Bytes};
use axum::extract::RawQuery;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use bulkhead_core::DomainError;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::body::{TenantApp, Visible};
use super::query::Query;
use crate::error::ApiError;
use crate::events::Event;

struct EventsQuery {
    since: u64,
    follow: bool,
}

fn parse(visible: &[TenantApp], raw: Option<&str>) -> Result<(TenantApp, EventsQuery), ApiError> {
    let q = Query::parse(raw, &["since", "follow", "tenant"])?;
    let since = match q.one("since")? {
        None => 0,
        Some(s) => s.parse::<u64>().map_err(|_| {
            DomainError::invalid(format!(
                "query parameter \"since\" must be a cursor (a non-negative integer from an event), not {s:?}"
            ))
        })?,
    };
    let follow = match q.one("follow")?.as_deref() {
        None | Some("") | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(v) => {
            return Err(DomainError::invalid(format!(
                "query parameter \"follow\" must be true or false, not {v:?}"
            ))
            .into())
        }
    };
    let names = || {
        visible
            .iter()
            .map(|a| a.tenant.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let app = match q.one("tenant")? {
        Some(t) => visible
            .iter()
            .find(|a| a.tenant.name == t)
            .cloned()
            .ok_or_else(|| {
                ApiError::from(DomainError::not_found(format!(
                    "tenant {t:?} is none of yours for this action: you may read the events of {}",
                    names()
                )))
            })?,
        None if visible.len() == 1 => visible[0].clone(),
        None => {
            return Err(DomainError::invalid(format!(
                "you may read the events of several tenants ({}): say which with ?tenant=NAME (cursors are per tenant)",
                names()
            ))
            .into())
        }
    };
    Ok((app, EventsQuery { since, follow }))
}

fn line(e: &Event) -> Result<Bytes, std::io::Error> {
    let mut v = serde_json::to_vec(e).unwrap_or_default();
    v.push(b'\n');
    Ok(Bytes::from(v))
}

pub async fn events(
    Visible(visible): Visible,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let (app, q) = parse(&visible, q.as_deref())?;
    let ev = &app.tenant.events;
    // Subscribe first: whatever is emitted after the kept events are read comes live.
    let mut live = ev.subscribe();
    let mut closing = ev.closing();
    let kept = ev.since(q.since);
    let body = if !q.follow {
        Body::from_stream(tokio_stream::iter(
            kept.iter().map(line).collect::<Vec<_>>(),
        ))
    } else {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
        let app = app.clone();
        tokio::spawn(async move {
            let mut last = q.since;
            for e in kept {
                last = e.cursor;
                if tx.send(line(&e)).await.is_err() {
                    return;
                }
            }
            loop {
                if *closing.borrow() {
                    return;
                }
                let got = tokio::select! {
                    r = live.recv() => r,
                    _ = closing.changed() => return,
                    _ = tx.closed() => return,
                };
                let batch = match got {
                    Ok(e) => vec![e],
                    // Fell behind the live channel: the gap from the kept events.
                    Err(broadcast::error::RecvError::Lagged(_)) => app.tenant.events.since(last),
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for e in batch {
                    if e.cursor <= last {
                        continue;
                    }
                    last = e.cursor;
                    if tx.send(line(&e)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Body::from_stream(ReceiverStream::new(rx))
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}
