//! `GET|POST /vm/{node}/cp`: copies out of and into a node, in every mode Slicer's SDKs send
//! (`docs/adr/0017-agent-fs-operations.md`).
//!
//! - `binary` (the default) and `tar`: one file as raw bytes, a tree as a tar archive.
//! - `cp-v1-binary`, `cp-v1-tar`, `cp-v1-recursive` (download only), with `copy_semantics=cp-v1`,
//!   `source_name`, `source_type`, `copy_contents`: `cp`'s own rules. An upload into an
//!   existing directory lands in it under `source_name` (unless `copy_contents`, or a path
//!   ending in `/.`); a download says what it sent in `X-Slicer-Source-Type` and
//!   `X-Slicer-Source-Name-Base64`. These need an agent with the `fs` capability (version 3);
//!   an older one is answered with Slicer's exact `invalid mode: cp-v1-…`, on which the SDKs
//!   fall back to `binary`/`tar`.
//!
//! A tar download names its entries relative to the tree (never `./`), which the SDKs need.
//! `permissions` of a download and `exclude` of an upload are applied by the client and
//! ignored here; `X-Slicer-Unpacked-Size` is not needed (the node's own limits bound the
//! upload).

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use bulkhead_agent::client::CopyInRequest;
use bulkhead_api::{names, CopyInResult};
use futures_util::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use bulkhead_core::{Code, DomainError};

use super::body::{Scoped, TenantApp};
use super::query::Query;
use crate::error::ApiError;
use crate::tenant::{NodeRef, Tenant, UnixCopyOut};

/// The copy modes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Binary,
    Tar,
    V1Binary,
    V1Tar,
    V1Recursive,
}

impl Wire {
    fn v1(self) -> bool {
        matches!(self, Wire::V1Binary | Wire::V1Tar | Wire::V1Recursive)
    }

    fn name(self) -> &'static str {
        match self {
            Wire::Binary => "binary",
            Wire::Tar => "tar",
            Wire::V1Binary => "cp-v1-binary",
            Wire::V1Tar => "cp-v1-tar",
            Wire::V1Recursive => "cp-v1-recursive",
        }
    }
}

/// A copy's query, parsed.
#[derive(Debug)]
struct Cp {
    /// The path without a trailing `/` or `/.`.
    path: String,
    wire: Wire,
    /// Copy a tree's contents rather than the tree (`copy_contents=true` or a `/.` suffix).
    contents: bool,
    /// The path ended in `/` (a destination that must be a directory).
    slash: bool,
    source_name: Option<String>,
    /// Checked against the mode; the mode decides.
    #[allow(dead_code)]
    source_type: Option<String>,
    exclude: Vec<String>,
    q: Query,
}

const GET_KEYS: &[&str] = &["path", "mode", "permissions", "copy_semantics", "exclude"];
const POST_KEYS: &[&str] = &[
    "path",
    "mode",
    "uid",
    "gid",
    "permissions",
    "copy_semantics",
    "source_name",
    "source_type",
    "copy_contents",
    "exclude",
];

fn parse(raw: Option<String>, keys: &[&str], upload: bool) -> Result<Cp, DomainError> {
    let q = Query::parse(raw.as_deref(), keys)?;
    let raw_path = q.one("path")?.ok_or_else(|| {
        DomainError::invalid("query parameter path is required, e.g. ?path=/work/file.txt")
    })?;
    let mut path = raw_path.trim_end_matches('/').to_string();
    let mut contents = false;
    if path == "/." || path.ends_with("/.") {
        contents = true;
        path = path[..path.len() - 2].trim_end_matches('/').to_string();
    }
    let slash = raw_path.ends_with('/') && path.len() > 1;
    if path.is_empty() && raw_path.starts_with('/') {
        path = "/".into();
    }
    names::validate_node_path(&path).map_err(DomainError::invalid)?;
    let wire = match q.one("mode")?.as_deref() {
        None | Some("") | Some("binary") => Wire::Binary,
        Some("tar") => Wire::Tar,
        Some("cp-v1-binary") => Wire::V1Binary,
        Some("cp-v1-tar") => Wire::V1Tar,
        Some("cp-v1-recursive") if !upload => Wire::V1Recursive,
        Some(m) => {
            return Err(DomainError::invalid(format!(
                "invalid mode: {m}: use binary (one file), tar (a tree) or their cp-v1- forms{}",
                if upload { "" } else { ", or cp-v1-recursive" }
            )))
        }
    };
    match q.one("copy_semantics")?.as_deref() {
        None | Some("") | Some("cp-v1") => {}
        Some(s) => {
            return Err(DomainError::invalid(format!(
                "copy_semantics {s:?} is not supported: use cp-v1"
            )))
        }
    }
    contents |= q.bool("copy_contents")?;
    let source_name = q.one("source_name")?.filter(|s| !s.is_empty());
    if let Some(n) = &source_name {
        if n == "." || n == ".." || n.contains('/') || n.contains('\\') || n.contains('\0') {
            return Err(DomainError::invalid(format!(
                "source_name {n:?} must be a plain file name, without / or ."
            )));
        }
    }
    let source_type = q.one("source_type")?.filter(|s| !s.is_empty());
    let want = match wire {
        Wire::V1Binary => Some("file"),
        Wire::V1Tar => Some("directory"),
        _ => None,
    };
    if let (Some(t), Some(w)) = (&source_type, want) {
        if t != w {
            return Err(DomainError::invalid(format!(
                "source_type {t:?} does not fit mode {}: it needs source_type={w}",
                wire.name()
            )));
        }
    }
    let exclude = q.all("exclude");
    Ok(Cp {
        path,
        wire,
        contents,
        slash,
        source_name,
        source_type,
        exclude,
        q,
    })
}

/// A cp-v1 mode needs an agent with `fs`; an older one gets Slicer's own refusal text, on
/// which the SDKs retry with the plain modes.
async fn check_v1(tenant: &Tenant, n: &NodeRef, wire: Wire) -> Result<(), DomainError> {
    if wire.v1() && !tenant.agent_has_fs(n).await? {
        return Err(DomainError::new(
            Code::Unsupported,
            format!(
                "invalid mode: {}: the node's agent is older than cp-v1 copies (protocol \
                 version 3); use mode=binary or mode=tar, or recreate the node",
                wire.name()
            ),
        ));
    }
    Ok(())
}

/// A tar upload under `exec_as_root: false` needs an agent that strips setuid/setgid bits
/// from the archive's entries (`no_setid`); an older one is refused rather than trusted.
async fn check_no_setid(tenant: &Tenant, n: &NodeRef) -> Result<(), DomainError> {
    if !tenant
        .agent_info(n)
        .await?
        .has(bulkhead_agent::proto::CAP_NO_SETID)
    {
        return Err(DomainError::new(
            Code::PolicyDenied,
            "policy.exec_as_root: this node's agent cannot strip setuid/setgid bits from a tar \
             upload, so tar uploads are refused in this tenant: copy single files \
             (mode=binary), or recreate the node with a newer agent",
        ));
    }
    Ok(())
}

/// The directory (or file) `path` is, if anything.
async fn kind_of(tenant: &Tenant, n: &NodeRef, path: &str) -> Result<Option<String>, DomainError> {
    match tenant.fs_stat(n, path).await {
        Ok(i) => Ok(Some(i.kind)),
        Err(e) if e.code == Code::PathNotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

pub async fn copy_out(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Ok(copy_out_node(app, node, q).await?)
}

async fn copy_out_node(
    app: TenantApp,
    node: String,
    q: Option<String>,
) -> Result<Response, DomainError> {
    let cp = parse(q, GET_KEYS, false)?;
    let n = app.tenant.running_node(&node)?;
    let turn = app.tenant.agent_turn(&n).await?;
    check_v1(&app.tenant, &n, cp.wire).await?;
    let tar = match cp.wire {
        Wire::Binary | Wire::V1Binary => false,
        Wire::Tar => true,
        Wire::V1Tar | Wire::V1Recursive => {
            let dir = kind_of(&app.tenant, &n, &cp.path).await?.ok_or_else(|| {
                DomainError::new(
                    Code::PathNotFound,
                    format!("{} does not exist in the node", cp.path),
                )
            })? == "directory";
            if !dir && cp.wire == Wire::V1Tar {
                return Err(DomainError::new(
                    Code::NotADirectory,
                    format!(
                        "{} is not a directory: copy it with mode=cp-v1-binary or cp-v1-recursive",
                        cp.path
                    ),
                ));
            }
            dir
        }
    };
    let download = if tar {
        app.tenant
            .copy_out_excluding(&n, &cp.path, cp.exclude.clone())
            .await?
    } else {
        app.tenant.copy_out(&n, &cp.path, false).await?
    };
    let mut resp = stream(download, turn, tar);
    if cp.wire.v1() {
        let h = resp.headers_mut();
        let kind = if tar { "directory" } else { "file" };
        h.insert("x-slicer-source-type", HeaderValue::from_static(kind));
        let name = base_name(&cp.path);
        if !name.is_empty() {
            let enc = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(name);
            if let Ok(v) = HeaderValue::from_str(&enc) {
                h.insert("x-slicer-source-name-base64", v);
            }
        }
    }
    Ok(resp)
}

/// A download from a node as a response body; its turn at the agent lasts as long as the
/// stream. A transfer that breaks midway ends the body with an error, so the client sees a
/// broken transfer rather than a short file (Slicer's `cp` and E2B's `GET /files`).
pub(crate) fn download_body(mut download: UnixCopyOut, turn: crate::tenant::Turn) -> Body {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let _turn = turn;
        loop {
            match download.next_chunk().await {
                Ok(None) => return,
                Ok(Some(d)) => {
                    if tx.send(Ok(Bytes::from(d))).await.is_err() {
                        return;
                    }
                }
                Err(_) => {
                    let _ = tx
                        .send(Err(std::io::Error::other("copy failed inside the node")))
                        .await;
                    return;
                }
            }
        }
    });
    Body::from_stream(ReceiverStream::new(rx))
}

/// The download as the response, with Slicer's content type and file mode headers.
fn stream(download: UnixCopyOut, turn: crate::tenant::Turn, tar: bool) -> Response {
    let mode = download.mode;
    let mut resp = download_body(download, turn).into_response();
    let ct = if tar {
        "application/x-tar"
    } else {
        "application/octet-stream"
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    if !tar {
        if let Ok(v) = HeaderValue::from_str(&format!("{mode:04o}")) {
            resp.headers_mut().insert("x-slicer-file-mode", v);
        }
    }
    resp
}

pub async fn copy_in(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Json<CopyInResult>, ApiError> {
    Ok(copy_in_node(app, node, q, body).await?)
}

/// A uid or gid of the query; Slicer's SDKs' "not given" (4294967295) is not given.
fn id(q: &Query, key: &str) -> Result<Option<u32>, DomainError> {
    Ok(q.u32(key)?.filter(|v| *v != u32::MAX))
}

/// Where a cp-v1 upload goes: into an existing directory under its source's name (`cp a d`
/// makes `d/a`), else to the path itself.
async fn v1_target(tenant: &Tenant, n: &NodeRef, cp: &Cp) -> Result<String, DomainError> {
    if cp.wire == Wire::V1Binary && cp.contents {
        return Err(DomainError::invalid(
            "copy_contents (or a path ending in /.) needs a directory source: use mode=cp-v1-tar",
        ));
    }
    if cp.contents {
        return Ok(cp.path.clone());
    }
    match kind_of(tenant, n, &cp.path).await?.as_deref() {
        Some("directory") => match &cp.source_name {
            Some(name) => Ok(if cp.path == "/" {
                format!("/{name}")
            } else {
                format!("{}/{name}", cp.path)
            }),
            None if cp.wire == Wire::V1Tar => Ok(cp.path.clone()),
            None => Err(DomainError::invalid(format!(
                "{} is a directory: give source_name, the name the file gets in it",
                cp.path
            ))),
        },
        None if cp.slash => Err(DomainError::new(
            Code::PathNotFound,
            format!(
                "destination directory {}/ does not exist: create it first",
                cp.path
            ),
        )),
        _ => Ok(cp.path.clone()),
    }
}

async fn copy_in_node(
    app: TenantApp,
    node: String,
    q: Option<String>,
    body: Body,
) -> Result<Json<CopyInResult>, DomainError> {
    let cp = parse(q, POST_KEYS, true)?;
    let mode =
        cp.q.one("permissions")?
            .filter(|p| !p.is_empty())
            .map(|p| {
                u32::from_str_radix(&p, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        DomainError::invalid(format!("permissions {p:?} must be octal, e.g. 0644"))
                    })
            })
            .transpose()?;
    let (uid, gid) = (id(&cp.q, "uid")?, id(&cp.q, "gid")?);
    let n = app.tenant.running_node(&node)?;
    // admission policy (#12): exec_as_root false makes no root-owned or setuid/setgid files
    let admission = &app.tenant.admission;
    admission.write(uid, gid, mode.map(|m| ("permissions", m)))?;
    let tar = matches!(cp.wire, Wire::Tar | Wire::V1Tar);
    let no_setid = admission.no_setid();
    let _turn = app.tenant.agent_turn(&n).await?;
    if no_setid && tar {
        check_no_setid(&app.tenant, &n).await?;
    }
    check_v1(&app.tenant, &n, cp.wire).await?;
    let path = if cp.wire.v1() {
        v1_target(&app.tenant, &n, &cp).await?
    } else {
        cp.path.clone()
    };
    let req = CopyInRequest {
        path: path.clone(),
        tar,
        uid,
        gid,
        mode,
        no_setid,
        owners: false,
        tmpfs_only: false,
    };
    let mut upload = app.tenant.copy_in(&n, req).await?;
    let mut data = body.into_data_stream();
    while let Some(chunk) = data.next().await {
        match chunk {
            Ok(c) => {
                if upload.write(&c).await.is_err() {
                    break; // the agent stopped reading: its answer below says why
                }
            }
            Err(e) => {
                // Closed without the final empty frame: the agent discards the partial upload.
                drop(upload);
                return Err(DomainError::invalid(format!(
                    "upload was cut off: {e}; nothing was written"
                )));
            }
        }
    }
    match upload.finish().await {
        Ok(bytes) => Ok(Json(CopyInResult { path, bytes })),
        Err(e) => {
            let mut e = app.tenant.agent_failed(&n, e);
            if e.code == Code::NoSpace {
                e.message = format!("{}; {}", e.message, storage_limit(&app.tenant, &n));
            }
            Err(e)
        }
    }
}

/// Names what bounds a node's writes, for a 507.
fn storage_limit(tenant: &Tenant, n: &NodeRef) -> String {
    let row = n.row();
    let Ok(g) = tenant.group(&row.hostgroup) else {
        return "the node is full".into();
    };
    tenant.driver_for(&g.name).storage_limit(g, row.ram_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(q: &str, upload: bool) -> Result<Cp, DomainError> {
        parse(
            Some(q.into()),
            if upload { POST_KEYS } else { GET_KEYS },
            upload,
        )
    }

    #[test]
    fn parses_what_the_sdks_send() {
        let c = p(
            "path=%2Ftmp%2Fd%2F.&mode=cp-v1-tar&copy_semantics=cp-v1",
            false,
        )
        .unwrap();
        assert_eq!(
            (c.path.as_str(), c.wire, c.contents),
            ("/tmp/d", Wire::V1Tar, true)
        );
        let c = p("path=%2F.&mode=cp-v1-recursive", false).unwrap();
        assert_eq!((c.path.as_str(), c.contents), ("/", true));
        let c = p(
            "path=%2Ftmp%2F&mode=cp-v1-binary&copy_semantics=cp-v1&source_name=a.txt&source_type=file&uid=4294967295",
            true,
        )
        .unwrap();
        assert_eq!((c.path.as_str(), c.slash), ("/tmp", true));
        assert_eq!(id(&c.q, "uid").unwrap(), None);
        let c = p("path=%2Fx", false).unwrap();
        assert_eq!(c.wire, Wire::Binary);
        let c = p(
            "path=%2Fx&mode=tar&exclude=*.log&exclude=node_modules&permissions=0644",
            false,
        )
        .unwrap();
        assert_eq!(c.exclude.len(), 2);
    }

    #[test]
    fn refuses_with_slicers_words() {
        let e = p("path=%2Fx&mode=cp-v1-recursive", true).unwrap_err();
        assert!(
            e.message.starts_with("invalid mode: cp-v1-recursive"),
            "{}",
            e.message
        );
        let e = p("path=%2Fx&mode=zip", false).unwrap_err();
        assert!(e.message.starts_with("invalid mode: zip"));
        assert!(p("path=%2Fx&mode=cp-v1-binary&source_type=directory", true).is_err());
        assert!(p("path=%2Fx&mode=cp-v1-binary&source_name=a%2Fb", true).is_err());
        assert!(p("path=%2Fx&copy_semantics=cp-v9", true).is_err());
        assert!(p("path=x", true).is_err());
        assert!(p("path=%2Fa%2F..%2Fb", true).is_err());
        assert!(p("mode=tar", true).is_err());
    }
}
