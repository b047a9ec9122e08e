//! envd's `GET /files` (download one file) and `POST /files` (upload one or several, as
//! `multipart/form-data` parts named `file` or as one `application/octet-stream` body; either
//! may be `Content-Encoding: gzip`), through the node's agent like Slicer's `cp`.
//!
//! Paths follow E2B's rule (`user::resolve_path`): relative to the user's home, `~` expanded.
//! A multipart part without the `path` query parameter goes where its file name says. Parent
//! directories an upload needs are made, owned by the user, and the file is written as the
//! user's (an existing file keeps its mode). A missing file is 404, a directory 400, a full
//! node 507; answers are `[{"name", "type": "file", "path"}]`.
//!
//! `signature`/`signature_expiration` (E2B's signed URLs) are accepted and not checked: every
//! request here already carries the sandbox's access token, which the E2B listener checks.

use std::collections::HashSet;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bulkhead_agent::client::{CopyInRequest, MkdirRequest};
use bulkhead_core::{Code, DomainError};
use futures_util::{Stream, StreamExt};
use serde::Serialize;

use super::rest::EnvdError;
use super::user::{self, EnvdUser};
use crate::http::body::Scoped;
use crate::http::query::Query;
use crate::tenant::{NodeRef, Tenant, Turn, UnixCopyOut};

const KEYS: &[&str] = &["path", "username", "signature", "signature_expiration"];

/// One written file, as the SDKs read it.
#[derive(Debug, Serialize, PartialEq)]
pub struct WriteInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub path: String,
}

/// `GET /files?path=&username=`
pub async fn download(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, EnvdError> {
    let q = Query::parse(q.as_deref(), KEYS)?;
    let n = app.tenant.running_node(&node)?;
    let turn = app.tenant.agent_turn(&n).await?;
    let u = user::resolve(&app.tenant, &n, q.one("username")?.as_deref()).await?;
    let path = user::resolve_path(&q.one("path")?.unwrap_or_default(), &u)?;
    match app.tenant.fs_stat(&n, &path).await {
        Ok(i) if i.kind == "directory" => {
            return Err(DomainError::new(
                Code::IsADirectory,
                format!("path '{path}' is a directory: list it with filesystem.ListDir"),
            )
            .into())
        }
        Ok(_) => {}
        Err(e) if e.code == Code::PathNotFound => {
            return Err(DomainError::new(
                Code::PathNotFound,
                format!("path '{path}' does not exist"),
            )
            .into())
        }
        Err(e) => return Err(e.into()),
    }
    let dl = app.tenant.copy_out(&n, &path, false).await?;
    Ok(stream(dl, turn))
}

/// The download as the response (the body streamed as Slicer's `cp` streams it).
fn stream(dl: UnixCopyOut, turn: Turn) -> Response {
    let mut r = crate::http::cp::download_body(dl, turn).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

/// How an upload's body is sent.
#[derive(Debug, PartialEq, Eq)]
enum Form {
    Raw,
    Multipart(String),
}

fn form_of(h: &HeaderMap) -> Result<Form, DomainError> {
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/octet-stream" {
        return Ok(Form::Raw);
    }
    if essence.starts_with("multipart/") {
        let b = multer::parse_boundary(ct).map_err(|e| {
            DomainError::invalid(format!("multipart content type without a boundary: {e}"))
        })?;
        return Ok(Form::Multipart(b));
    }
    Err(DomainError::invalid(format!(
        "unsupported content type {ct:?}: send multipart/form-data or application/octet-stream"
    )))
}

/// Whether the body is gzip-encoded (`Content-Encoding: gzip`); other encodings are refused.
fn gzipped(h: &HeaderMap) -> Result<bool, DomainError> {
    match h
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => Ok(false),
        Some("gzip") => Ok(true),
        Some(e) => Err(DomainError::invalid(format!(
            "unsupported Content-Encoding {e:?}: send gzip or none"
        ))),
    }
}

type ByteStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// The request body, gunzipped as it arrives when `gzip`.
fn body_stream(body: Body, gzip: bool) -> ByteStream {
    let raw = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    if !gzip {
        return Box::pin(raw);
    }
    use std::io::Write;
    let dec = flate2::write::GzDecoder::new(Vec::new());
    Box::pin(futures_util::stream::unfold(
        (Box::pin(raw), Some(dec)),
        |(mut raw, mut dec)| async move {
            loop {
                let d = dec.as_mut()?;
                match raw.next().await {
                    Some(Ok(c)) => {
                        if let Err(e) = d.write_all(&c) {
                            return Some((Err(bad_gzip(e)), (raw, None)));
                        }
                        let out = std::mem::take(d.get_mut());
                        if !out.is_empty() {
                            return Some((Ok(Bytes::from(out)), (raw, dec)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (raw, None))),
                    None => {
                        let mut d = dec.take()?;
                        return match d.try_finish() {
                            Ok(()) => {
                                let out = std::mem::take(d.get_mut());
                                if out.is_empty() {
                                    None
                                } else {
                                    Some((Ok(Bytes::from(out)), (raw, None)))
                                }
                            }
                            Err(e) => Some((Err(bad_gzip(e)), (raw, None))),
                        };
                    }
                }
            }
        },
    ))
}

fn bad_gzip(e: std::io::Error) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the gzip body does not decode: {e}"),
    )
}

/// `POST /files?path=&username=`
pub async fn upload(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Vec<WriteInfo>>, EnvdError> {
    let q = Query::parse(q.as_deref(), KEYS)?;
    let form = form_of(&headers)?;
    let gzip = gzipped(&headers)?;
    let n = app.tenant.running_node(&node)?;
    let _turn = app.tenant.agent_turn(&n).await?;
    let u = user::resolve(&app.tenant, &n, q.one("username")?.as_deref()).await?;
    // admission policy (#12): exec_as_root false makes no root-owned files
    app.tenant.admission.write(Some(u.uid), Some(u.gid), None)?;
    let qpath = q.one("path")?.filter(|p| !p.is_empty());
    let mut body = body_stream(body, gzip);
    let mut out = Vec::new();
    match form {
        Form::Raw => {
            let p = qpath.ok_or_else(|| {
                DomainError::invalid(
                    "the path query parameter is required for an application/octet-stream upload",
                )
            })?;
            let path = user::resolve_path(&p, &u)?;
            write_one(&app.tenant, &n, &u, &path, &mut body).await?;
            out.push(info(path));
        }
        Form::Multipart(boundary) => {
            let mut mp = multer::Multipart::new(body, boundary);
            let mut seen = HashSet::new();
            while let Some(mut field) = mp.next_field().await.map_err(bad_multipart)? {
                if field.name() != Some("file") {
                    continue;
                }
                let p = match (&qpath, field.file_name()) {
                    (Some(p), _) => p.clone(),
                    (None, Some(f)) if !f.is_empty() => f.to_string(),
                    _ => {
                        return Err(DomainError::invalid(
                            "a file part without a file name needs the path query parameter",
                        )
                        .into())
                    }
                };
                let path = user::resolve_path(&p, &u)?;
                if !seen.insert(path.clone()) {
                    return Err(DomainError::invalid(format!(
                        "two files for the same path '{path}' in one upload: only the first was written"
                    ))
                    .into());
                }
                let mut chunks = futures_util::stream::poll_fn(|cx| {
                    std::pin::Pin::new(&mut field)
                        .poll_next(cx)
                        .map(|o| o.map(|r| r.map_err(std::io::Error::other)))
                });
                write_one(&app.tenant, &n, &u, &path, &mut chunks).await?;
                out.push(info(path));
            }
            if out.is_empty() {
                return Err(
                    DomainError::invalid("the multipart body has no part named \"file\"").into(),
                );
            }
        }
    }
    Ok(Json(out))
}

fn bad_multipart(e: multer::Error) -> DomainError {
    DomainError::invalid(format!("cannot read the multipart body: {e}"))
}

fn info(path: String) -> WriteInfo {
    let name = path.rsplit('/').next().unwrap_or("").to_string();
    WriteInfo {
        name,
        kind: "file",
        path,
    }
}

/// Makes `path`'s missing parents as `u`'s, then writes the chunks to it as `u`'s file.
pub(super) async fn write_one<S>(
    tenant: &Tenant,
    n: &NodeRef,
    u: &EnvdUser,
    path: &str,
    chunks: &mut S,
) -> Result<(), DomainError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    if path == "/" {
        return Err(DomainError::new(
            Code::IsADirectory,
            "path '/' is a directory",
        ));
    }
    let mode = match tenant.fs_stat(n, path).await {
        Ok(i) if i.kind == "directory" => {
            return Err(DomainError::new(
                Code::IsADirectory,
                format!("path '{path}' is a directory"),
            ))
        }
        Ok(i) if i.kind == "file" => i.mode & 0o777,
        Ok(_) => 0o644,
        Err(e) if e.code == Code::PathNotFound || e.code == Code::NotADirectory => 0o644,
        Err(e) => return Err(e),
    };
    ensure_parent(tenant, n, u, path).await?;
    let req = CopyInRequest {
        path: path.to_string(),
        tar: false,
        uid: Some(u.uid),
        gid: Some(u.gid),
        mode: Some(mode),
        no_setid: tenant.admission.no_setid(),
        owners: false,
        tmpfs_only: false,
    };
    let mut up = tenant.copy_in(n, req).await?;
    while let Some(c) = chunks.next().await {
        match c {
            Ok(c) => {
                if up.write(&c).await.is_err() {
                    break; // the agent stopped reading: its answer below says why
                }
            }
            Err(e) => {
                // Without the final frame the agent discards the partial file.
                drop(up);
                return Err(DomainError::invalid(format!(
                    "upload of '{path}' was cut off: {e}; nothing was written"
                )));
            }
        }
    }
    up.finish().await.map_err(|e| tenant.agent_failed(n, e))?;
    Ok(())
}

/// Makes the parents of `path` that are missing, owned by `u` (an agent older than #15
/// owns only the last one by `u`).
async fn ensure_parent(
    tenant: &Tenant,
    n: &NodeRef,
    u: &EnvdUser,
    path: &str,
) -> Result<(), DomainError> {
    let parent = match path.rsplit_once('/') {
        Some(("", _)) | None => return Ok(()),
        Some((p, _)) => p,
    };
    let req = MkdirRequest {
        path: parent.to_string(),
        recursive: true,
        mode: Some(0o755),
        uid: Some(u.uid),
        gid: Some(u.gid),
    };
    tenant.fs_mkdir(n, req).await.map_err(|e| match e.code {
        Code::AlreadyExists | Code::NotADirectory => DomainError::new(
            Code::NotADirectory,
            format!("cannot write '{path}': a part of '{parent}' is a file, not a directory"),
        ),
        _ => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_and_encodings() {
        let mut h = HeaderMap::new();
        assert!(form_of(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        assert_eq!(form_of(&h).unwrap(), Form::Raw);
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=abc"),
        );
        assert_eq!(form_of(&h).unwrap(), Form::Multipart("abc".into()));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let e = form_of(&h).unwrap_err();
        assert!(e.message.contains("multipart/form-data"), "{}", e.message);
        assert!(!gzipped(&h).unwrap());
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(gzipped(&h).unwrap());
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert!(gzipped(&h).is_err());
        assert_eq!(
            serde_json::to_value(info("/home/user/a.txt".into())).unwrap(),
            serde_json::json!({"name": "a.txt", "type": "file", "path": "/home/user/a.txt"})
        );
    }

    #[tokio::test]
    async fn gzip_bodies_decode_as_they_arrive() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        enc.write_all(&data).unwrap();
        let gz = enc.finish().unwrap();
        let mut s = body_stream(Body::from(gz), true);
        let mut got = Vec::new();
        while let Some(c) = s.next().await {
            got.extend_from_slice(&c.unwrap());
        }
        assert_eq!(got, data);
        let mut s = body_stream(Body::from(&b"not gzip at all"[..]), true);
        let mut failed = false;
        while let Some(c) = s.next().await {
            failed |= c.is_err();
        }
        assert!(failed);
    }
}
