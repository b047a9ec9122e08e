//! Directory watches of `filesystem.Filesystem`, over the agent's inotify watch (the one
//! Slicer's `/vm/{node}/fs/watch` uses): `WatchDir`'s stream ([`pump`]) and the watchers the
//! SDKs poll (`CreateWatcher`, `GetWatcherEvents`, `RemoveWatcher`: [`create`], [`take`],
//! [`remove`]).
//!
//! Event names are relative to the watched directory, as envd's. Bounds: at most
//! [`MAX_PER_NODE`] polled watchers per node and [`MAX_EVENTS`] unread events each (later
//! ones are dropped until the next poll); a watcher whose watch ended (node gone) is forgotten
//! [`FORGET_AFTER`] later. A watcher is found only through its own tenant and node (another
//! node's id answers `not_found`, like a missing one).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bulkhead_agent::client::FsChange;
use bulkhead_core::{Code, DomainError};
use bulkhead_e2b::connect::{self, ConnectError};
use bulkhead_e2b::filesystem as pb;

use super::connect::ServerStream;
use crate::http::body::TenantApp;
use crate::tenant::{NodeRef, Tenant};

/// A watch in a node over its agent's socket (`Tenant::fs_watch`'s).
type UnixWatch = bulkhead_agent::client::FsWatch<
    tokio::io::ReadHalf<tokio::net::UnixStream>,
    tokio::io::WriteHalf<tokio::net::UnixStream>,
>;

pub const MAX_PER_NODE: usize = 64;
pub const MAX_EVENTS: usize = 10_000;
pub const FORGET_AFTER: Duration = Duration::from_secs(300);

/// Starts watching `dir` (a directory) in the node.
pub async fn open(
    t: &Tenant,
    n: &NodeRef,
    dir: &str,
    recursive: bool,
) -> Result<UnixWatch, DomainError> {
    match t.fs_stat(n, dir).await {
        Ok(i) if i.kind == "directory" => {}
        Ok(_) => {
            return Err(DomainError::invalid(format!(
                "path {dir} is not a directory: watch a directory"
            )))
        }
        Err(e) if e.code == Code::PathNotFound => {
            return Err(DomainError::new(
                Code::PathNotFound,
                format!("path not found: {dir}"),
            ))
        }
        Err(e) => return Err(e),
    }
    t.fs_watch(n, vec![dir.to_string()], recursive).await
}

/// A change as envd reports it; `None` for what it does not report (an overflow).
pub fn event_of(c: &FsChange, dir: &str) -> Option<pb::FilesystemEvent> {
    let kind = match c.kind.as_str() {
        "create" => pb::EventType::Create,
        "write" => pb::EventType::Write,
        "remove" => pb::EventType::Remove,
        "rename" => pb::EventType::Rename,
        "chmod" => pb::EventType::Chmod,
        _ => return None,
    };
    let name = match c.path.strip_prefix(dir) {
        Some(rest) if dir == "/" => rest.to_string(),
        Some(rest) => rest.strip_prefix('/').unwrap_or(rest).to_string(),
        None => c.path.clone(),
    };
    Some(pb::FilesystemEvent {
        name,
        r#type: kind as i32,
        entry: None,
    })
}

/// Reads the watch on a task of its own (a read is not cut off halfway by a select), handing
/// changes to the returned channel; the watch ends when the channel's receiver is dropped.
fn reader(mut w: UnixWatch) -> tokio::sync::mpsc::Receiver<Result<FsChange, String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = w.next() => {
                    let end = r.is_err();
                    if tx.send(r.map_err(|e| e.to_string())).await.is_err() || end {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

/// `WatchDir`'s stream: its start event, changes, keepalives, then an end-of-stream.
pub async fn pump(w: UnixWatch, dir: String, out: ServerStream) {
    let call = out.call();
    let mut changes = reader(w);
    let deadline = call.timeout.map(|t| tokio::time::Instant::now() + t);
    let keepalive = call.keepalive.unwrap_or(Duration::from_secs(3600));
    let msg = |e: pb::watch_dir_response::Event| pb::WatchDirResponse { event: Some(e) };
    let start = msg(pb::watch_dir_response::Event::Start(
        pb::watch_dir_response::StartEvent {},
    ));
    if !out.send(&start).await {
        return;
    }
    let end = loop {
        let until = deadline.unwrap_or_else(|| tokio::time::Instant::now() + keepalive * 2);
        tokio::select! {
            c = changes.recv() => match c {
                Some(Ok(c)) => {
                    if let Some(ev) = event_of(&c, &dir) {
                        if !out.send(&msg(pb::watch_dir_response::Event::Filesystem(ev))).await {
                            return;
                        }
                    }
                }
                Some(Err(e)) => break Some(ConnectError::new(
                    connect::Code::Unavailable,
                    format!("the watch of {dir} ended: {e}"),
                )),
                None => break None,
            },
            _ = tokio::time::sleep(keepalive), if call.keepalive.is_some() => {
                let k = msg(pb::watch_dir_response::Event::Keepalive(
                    pb::watch_dir_response::KeepAlive {},
                ));
                if !out.send(&k).await {
                    return;
                }
            }
            _ = tokio::time::sleep_until(until), if deadline.is_some() => {
                break Some(ConnectError::new(
                    connect::Code::DeadlineExceeded,
                    "the call's deadline (connect-timeout-ms) passed",
                ));
            }
            _ = out.closed() => return,
        }
    };
    out.end(end).await;
}

struct Watcher {
    tenant: String,
    node_id: String,
    events: Vec<pb::FilesystemEvent>,
    /// Why the watch ended, and when.
    ended: Option<(String, Instant)>,
    task: tokio::task::AbortHandle,
}

fn registry() -> &'static Mutex<HashMap<String, Watcher>> {
    static R: OnceLock<Mutex<HashMap<String, Watcher>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<String, Watcher>> {
    registry().lock().unwrap_or_else(|p| p.into_inner())
}

fn new_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `CreateWatcher`: a watch whose events wait for [`take`].
pub async fn create(
    app: &TenantApp,
    n: &NodeRef,
    dir: &str,
    recursive: bool,
) -> Result<String, DomainError> {
    let node_id = n.row().id.to_string();
    let tenant = app.tenant.name.clone();
    {
        let mut r = lock();
        r.retain(|_, w| match &w.ended {
            Some((_, t)) => t.elapsed() <= FORGET_AFTER,
            None => true,
        });
        let mine = r
            .values()
            .filter(|w| w.tenant == tenant && w.node_id == node_id)
            .count();
        if mine >= MAX_PER_NODE {
            return Err(DomainError::new(
                Code::TooManyExecs,
                format!(
                    "sandbox {} has {MAX_PER_NODE} watchers already: remove one (RemoveWatcher) first",
                    n.name()
                ),
            ));
        }
    }
    let w = open(&app.tenant, n, dir, recursive).await?;
    let id = new_id();
    let mut changes = reader(w);
    let (key, d) = (id.clone(), dir.to_string());
    // Held until the watcher is in: its task looks itself up under this lock.
    let mut r = lock();
    let task = tokio::spawn(async move {
        while let Some(c) = changes.recv().await {
            let mut r = lock();
            let Some(w) = r.get_mut(&key) else { return };
            match c {
                Ok(c) => {
                    if let Some(ev) = event_of(&c, &d) {
                        if w.events.len() < MAX_EVENTS {
                            w.events.push(ev);
                        }
                    }
                }
                Err(e) => {
                    w.ended = Some((e, Instant::now()));
                    return;
                }
            }
        }
    });
    r.insert(
        id.clone(),
        Watcher {
            tenant,
            node_id,
            events: Vec::new(),
            ended: None,
            task: task.abort_handle(),
        },
    );
    Ok(id)
}

fn not_found(id: &str) -> DomainError {
    DomainError::new(Code::NotFound, format!("watcher {id:?} not found"))
}

/// `GetWatcherEvents`: the events since the last call. A watcher whose watch ended answers
/// what it still holds, then the reason.
pub fn take(tenant: &str, n: &NodeRef, id: &str) -> Result<Vec<pb::FilesystemEvent>, DomainError> {
    let node_id = n.row().id.to_string();
    let mut r = lock();
    let w = r
        .get_mut(id)
        .filter(|w| w.tenant == tenant && w.node_id == node_id)
        .ok_or_else(|| not_found(id))?;
    if w.events.is_empty() {
        if let Some((e, _)) = &w.ended {
            return Err(DomainError::new(
                Code::AgentLost,
                format!("the watcher's watch ended: {e}"),
            ));
        }
    }
    Ok(std::mem::take(&mut w.events))
}

/// `RemoveWatcher`: ends the watch.
pub fn remove(tenant: &str, n: &NodeRef, id: &str) -> Result<(), DomainError> {
    let node_id = n.row().id.to_string();
    let mut r = lock();
    match r.get(id) {
        Some(w) if w.tenant == tenant && w.node_id == node_id => {
            w.task.abort();
            r.remove(id);
            Ok(())
        }
        _ => Err(not_found(id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: &str, path: &str) -> FsChange {
        FsChange {
            kind: kind.into(),
            path: path.into(),
            is_dir: false,
            size: 0,
        }
    }

    #[test]
    fn changes_as_envd_names_them() {
        let e = event_of(&change("create", "/home/user/d/a.txt"), "/home/user/d").unwrap();
        assert_eq!(
            (e.name.as_str(), e.r#type),
            ("a.txt", pb::EventType::Create as i32)
        );
        let e = event_of(&change("write", "/home/user/d/s/b"), "/home/user/d").unwrap();
        assert_eq!(e.name, "s/b");
        assert_eq!(event_of(&change("remove", "/x"), "/").unwrap().name, "x");
        assert!(event_of(&change("overflow", "lost"), "/").is_none());
    }
}
