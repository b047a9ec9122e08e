//! `/vm/{node}/fs/{readdir,stat,mkdir,remove}`: small file-system operations in a node, with
//! the shapes of Slicer's SDKs (`SlicerFSInfo`: `name`, `type`, `size`, `mtime` as RFC 3339,
//! `mode` as octal text such as `0644`). A missing path is 404 (`path_not_found`), which the
//! SDKs' `stat`/`exists` read as "no such file"; a node whose agent is older than protocol
//! version 3 gets 400 `unsupported`. The watch stream is `fs_watch.rs`.

use axum::extract::{Path, RawQuery};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_agent::client::MkdirRequest;
use bulkhead_agent::proto::FsInfo;
use bulkhead_api::names;
use bulkhead_core::DomainError;
use serde::{Deserialize, Serialize};

use super::body::{json_body, Scoped};
use super::query::Query;
use crate::error::ApiError;

/// One entry as Slicer's SDKs read it.
#[derive(Debug, Serialize, PartialEq)]
pub struct FsEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    pub mtime: String,
    pub mode: String,
}

impl From<FsInfo> for FsEntry {
    fn from(i: FsInfo) -> Self {
        FsEntry {
            name: i.name,
            kind: i.kind,
            size: i.size,
            mtime: rfc3339(i.mtime_s, i.mtime_ns),
            mode: format!("{:04o}", i.mode),
        }
    }
}

/// RFC 3339 in UTC with nanoseconds when there are any (what Go's `time.Time` reads).
pub fn rfc3339(secs: i64, nanos: u32) -> String {
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil-from-days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let frac = if nanos == 0 {
        String::new()
    } else {
        format!(".{nanos:09}").trim_end_matches('0').to_string()
    };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{frac}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The `path` of a query: required, absolute, no `.`/`..` (a trailing `/` is dropped).
pub fn node_path(q: &Query) -> Result<String, DomainError> {
    let p = q.one("path")?.ok_or_else(|| {
        DomainError::invalid("query parameter path is required, e.g. ?path=/work")
    })?;
    checked(&p)
}

fn checked(p: &str) -> Result<String, DomainError> {
    let t = p.trim_end_matches('/');
    let t = if t.is_empty() && p.starts_with('/') {
        "/"
    } else {
        t
    };
    names::validate_node_path(t).map_err(DomainError::invalid)?;
    Ok(t.to_string())
}

pub async fn readdir(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<Vec<FsEntry>>, ApiError> {
    let q = Query::parse(q.as_deref(), &["path"])?;
    let path = node_path(&q)?;
    let n = app.tenant.running_node(&node)?;
    let _turn = app.tenant.agent_turn(&n).await?;
    let list = app.tenant.fs_read_dir(&n, &path).await?;
    Ok(Json(list.into_iter().map(FsEntry::from).collect()))
}

pub async fn stat(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<FsEntry>, ApiError> {
    let q = Query::parse(q.as_deref(), &["path"])?;
    let path = node_path(&q)?;
    let n = app.tenant.running_node(&node)?;
    let _turn = app.tenant.agent_turn(&n).await?;
    Ok(Json(app.tenant.fs_stat(&n, &path).await?.into()))
}

/// The body of `POST fs/mkdir` (Slicer's `SlicerFSMkdirRequest`); unknown keys are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkdirBody {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
    /// Octal text, e.g. `0755` (the default).
    #[serde(default)]
    pub mode: Option<String>,
}

/// Octal permission bits of a request (`0755`, `755`), at most `07777`.
pub fn octal_mode(key: &str, m: &str) -> Result<u32, DomainError> {
    u32::from_str_radix(m, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| DomainError::invalid(format!("{key} {m:?} must be octal, e.g. 0755")))
}

pub async fn mkdir(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let b: MkdirBody = json_body(&app, body).await?;
    let path = checked(&b.path)?;
    let mode = b
        .mode
        .as_deref()
        .filter(|m| !m.is_empty())
        .map(|m| octal_mode("mode", m))
        .transpose()?;
    let n = app.tenant.running_node(&node)?;
    // admission policy (#12): no setuid/setgid directories under exec_as_root false
    app.tenant
        .admission
        .write(None, None, mode.map(|m| ("mode", m)))?;
    let _turn = app.tenant.agent_turn(&n).await?;
    let req = MkdirRequest {
        path,
        recursive: b.recursive,
        mode,
        ..Default::default()
    };
    app.tenant.fs_mkdir(&n, req).await?;
    Ok(axum::http::StatusCode::OK.into_response())
}

pub async fn remove(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(q.as_deref(), &["path", "recursive"])?;
    let path = node_path(&q)?;
    let recursive = q.bool("recursive")?;
    let n = app.tenant.running_node(&node)?;
    let _turn = app.tenant.agent_turn(&n).await?;
    app.tenant.fs_remove(&n, &path, recursive).await?;
    Ok(axum::http::StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_entries_as_go_reads_them() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_700_000_000, 5_000_000),
            "2023-11-14T22:13:20.005Z"
        );
        assert_eq!(rfc3339(-1, 0), "1969-12-31T23:59:59Z");
        let e = FsEntry::from(FsInfo {
            name: "f".into(),
            kind: "file".into(),
            size: 3,
            mtime_s: 0,
            mtime_ns: 0,
            mode: 0o644,
            uid: None,
            gid: None,
            link: None,
        });
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name":"f","type":"file","size":3,"mtime":"1970-01-01T00:00:00Z","mode":"0644"})
        );
        assert_eq!(checked("/tmp/").unwrap(), "/tmp");
        assert_eq!(checked("/").unwrap(), "/");
        assert!(checked("tmp").is_err());
        assert!(octal_mode("mode", "0999").is_err());
        assert_eq!(octal_mode("mode", "755").unwrap(), 0o755);
    }
}
