//! `GET /vm/{node}/fs/watch`: file-system events of a node as Server-Sent Events, in the shape
//! Slicer's SDKs read (`id:` line, `event: watch`, `data:` JSON with `id`, `type`, `path`,
//! `timestamp`, `size`, `isDir`, `message`), comment heartbeats between.
//!
//! The agent watches with inotify (bounded there); here the stream is filtered (`events`,
//! `patterns`), coalesced (`debounce`) and ended (`one_shot`, `max_events`, `timeout`). It
//! holds one turn at the node's agent while it lasts, and ends as soon as the client goes:
//! the next event or heartbeat that cannot be sent drops the watch, which closes the agent's
//! stream, which ends the watch in the node.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bulkhead_agent::client::FsChange;
use bulkhead_agent::glob;
use bulkhead_core::DomainError;
use tokio_stream::wrappers::ReceiverStream;

use super::body::Scoped;
use super::fs::rfc3339;
use super::query::Query;
use crate::error::ApiError;

const KINDS: [&str; 5] = ["create", "write", "remove", "rename", "chmod"];
/// Paths one watch may name.
const MAX_PATHS: usize = 64;
/// A comment line this often, so a client that went away is noticed without events.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// `(type, path)` pairs remembered for `debounce`.
const DEBOUNCE_MEMORY: usize = 4096;

/// A watch's query, parsed.
#[derive(Debug)]
struct WatchQuery {
    paths: Vec<String>,
    patterns: Vec<String>,
    events: Vec<String>,
    recursive: bool,
    one_shot: bool,
    debounce: Option<Duration>,
    timeout: Option<Duration>,
    max_events: Option<u64>,
}

fn parse(raw: Option<&str>, headers: &HeaderMap) -> Result<WatchQuery, DomainError> {
    let q = Query::parse(
        raw,
        &[
            "paths",
            "patterns",
            "events",
            "uid",
            "recursive",
            "one_shot",
            "debounce",
            "timeout",
            "max_events",
        ],
    )?;
    let uid = q.u32("uid")?.unwrap_or(0);
    let mut paths = Vec::new();
    for p in q
        .all("paths")
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
    {
        // `~` is the home of `uid`; root's is the only one known without the node's passwd.
        let p = match p.strip_prefix('~') {
            Some(rest) if uid == 0 && (rest.is_empty() || rest.starts_with('/')) => {
                format!("/root{rest}")
            }
            Some(_) => {
                return Err(DomainError::invalid(format!(
                    "path {p:?}: use an absolute path (~ is known only for uid 0)"
                )))
            }
            None => p.to_string(),
        };
        let t = p.trim_end_matches('/');
        let t = if t.is_empty() { "/" } else { t };
        bulkhead_api::names::validate_node_path(t).map_err(DomainError::invalid)?;
        paths.push(t.to_string());
    }
    if paths.is_empty() {
        return Err(DomainError::invalid(
            "query parameter paths is required, e.g. ?paths=/work",
        ));
    }
    if paths.len() > MAX_PATHS {
        return Err(DomainError::invalid(format!(
            "at most {MAX_PATHS} paths per watch"
        )));
    }
    let events: Vec<String> = q
        .all("events")
        .iter()
        .map(|e| e.trim().to_string())
        .collect();
    if let Some(e) = events.iter().find(|e| !KINDS.contains(&e.as_str())) {
        return Err(DomainError::invalid(format!(
            "unknown event type {e:?}: use {}",
            KINDS.join(", ")
        )));
    }
    let max_events = match q.one("max_events")?.filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as u64),
            Ok(_) => None,
            Err(_) => {
                return Err(DomainError::invalid(format!(
                    "max_events {v:?} must be an integer"
                )))
            }
        },
    };
    if let Some(id) = headers.get("last-event-id") {
        let ok = id
            .to_str()
            .ok()
            .is_some_and(|s| s.trim().parse::<u64>().is_ok());
        if !ok {
            return Err(DomainError::invalid(
                "header Last-Event-ID must be an unsigned integer (events are not replayed)",
            ));
        }
    }
    let dur = |k: &str| -> Result<Option<Duration>, DomainError> {
        match q.one(k)?.filter(|v| !v.trim().is_empty()) {
            None => Ok(None),
            Some(_) => q.duration(k).map(|d| d.filter(|d| !d.is_zero())),
        }
    };
    Ok(WatchQuery {
        patterns: glob::normalize(&q.all("patterns")),
        events,
        recursive: q.bool("recursive")?,
        one_shot: q.bool("one_shot")?,
        debounce: dur("debounce")?,
        timeout: dur("timeout")?,
        max_events,
        paths,
    })
}

impl WatchQuery {
    /// Whether a change passes the `events` and `patterns` filters.
    fn wants(&self, c: &FsChange) -> bool {
        if c.kind == "overflow" {
            return true;
        }
        if !self.events.is_empty() && !self.events.contains(&c.kind) {
            return false;
        }
        if self.patterns.is_empty() {
            return true;
        }
        let full = c.path.trim_start_matches('/');
        glob::excluded(full, &self.patterns)
            || self.paths.iter().any(|root| {
                c.path
                    .strip_prefix(root.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    .is_some_and(|rel| glob::excluded(rel, &self.patterns))
            })
    }
}

/// One event as an SSE block.
fn sse(id: u64, c: &FsChange) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut v = serde_json::json!({
        "id": id,
        "type": c.kind,
        "path": c.path,
        "timestamp": rfc3339(now.as_secs() as i64, now.subsec_nanos()),
        "size": c.size,
        "isDir": c.is_dir,
    });
    if c.kind == "overflow" {
        v["message"] = serde_json::Value::String(c.path.clone());
        v["path"] = serde_json::Value::String(String::new());
    }
    format!("id: {id}\nevent: watch\ndata: {v}\n\n")
}

pub async fn watch(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let wq = parse(q.as_deref(), &headers)?;
    let n = app.tenant.running_node(&node)?;
    let turn = app.tenant.agent_turn(&n).await?;
    let mut w = app
        .tenant
        .fs_watch(&n, wq.paths.clone(), wq.recursive)
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let _turn = turn;
        let deadline = wq.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut sent = 0u64;
        let mut last: HashMap<(String, String), Instant> = HashMap::new();
        // The stream opens with a comment, so the client sees its headers at once.
        if tx
            .send(Ok(Bytes::from_static(b": watching\n\n")))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, w.next()).await.ok(),
                    None => Some(w.next().await),
                }
            };
            let change = tokio::select! {
                c = next => c,
                // The client left: end the watch (and give its agent turn back) now, even
                // when every event since is filtered out and nothing is ever written.
                _ = tx.closed() => return,
                _ = tokio::time::sleep(HEARTBEAT) => {
                    if tx.send(Ok(Bytes::from_static(b": keep-alive\n\n"))).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let c = match change {
                None => return, // timeout
                Some(Ok(c)) => c,
                Some(Err(_)) => {
                    let e = FsChange {
                        kind: "error".into(),
                        path: String::new(),
                        is_dir: false,
                        size: 0,
                    };
                    let _ = tx.send(Ok(Bytes::from(sse(sent + 1, &e)))).await;
                    return;
                }
            };
            if !wq.wants(&c) {
                continue;
            }
            if let Some(window) = wq.debounce {
                let key = (c.kind.clone(), c.path.clone());
                let now = Instant::now();
                if last
                    .get(&key)
                    .is_some_and(|t| now.duration_since(*t) < window)
                {
                    continue;
                }
                if last.len() >= DEBOUNCE_MEMORY {
                    last.clear();
                }
                last.insert(key, now);
            }
            sent += 1;
            if tx.send(Ok(Bytes::from(sse(sent, &c)))).await.is_err() {
                return;
            }
            if wq.one_shot || wq.max_events.is_some_and(|m| sent >= m) {
                return;
            }
        }
    });
    let mut resp = Body::from_stream(ReceiverStream::new(rx)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str) -> Result<WatchQuery, DomainError> {
        parse(Some(q), &HeaderMap::new())
    }

    fn ch(kind: &str, path: &str) -> FsChange {
        FsChange {
            kind: kind.into(),
            path: path.into(),
            is_dir: false,
            size: 0,
        }
    }

    #[test]
    fn parses_and_filters_like_the_sdks_ask() {
        let w = p("paths=%2Fw&paths=~%2Fsrc&patterns=*.go&events=create&events=write&recursive=true&one_shot=true&debounce=100ms&timeout=5m&max_events=3").unwrap();
        assert_eq!(w.paths, ["/w", "/root/src"]);
        assert!(w.recursive && w.one_shot);
        assert_eq!(w.debounce, Some(Duration::from_millis(100)));
        assert_eq!(w.max_events, Some(3));
        assert!(w.wants(&ch("create", "/w/a/b.go")));
        assert!(!w.wants(&ch("create", "/w/a/b.txt")));
        assert!(!w.wants(&ch("remove", "/w/a/b.go")));
        let w = p("paths=%2Fw&patterns=bin%2F*").unwrap();
        assert!(w.wants(&ch("write", "/w/bin/x")));
        assert!(!w.wants(&ch("write", "/w/src/bin/x")));
        assert!(p("").is_err());
        assert!(p("paths=rel").is_err());
        assert!(p("paths=%2Fw&events=explode").is_err());
        assert!(p("paths=%2Fw&timeout=forever").is_err());
        assert!(p("paths=%2Fw&uid=1000&paths=~").is_err());
        let mut h = HeaderMap::new();
        h.insert("last-event-id", HeaderValue::from_static("abc"));
        assert!(parse(Some("paths=%2Fw"), &h).is_err());
        h.insert("last-event-id", HeaderValue::from_static("42"));
        assert!(parse(Some("paths=%2Fw"), &h).is_ok());
    }

    #[test]
    fn events_are_sse_blocks_the_sdks_parse() {
        let s = sse(7, &ch("create", "/w/f"));
        assert!(s.starts_with("id: 7\nevent: watch\ndata: {"));
        assert!(s.ends_with("}\n\n"));
        let data = s.lines().nth(2).unwrap().strip_prefix("data: ").unwrap();
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["type"], "create");
        assert_eq!(v["path"], "/w/f");
        assert_eq!(v["isDir"], false);
        assert_eq!(v["id"], 7);
    }
}
