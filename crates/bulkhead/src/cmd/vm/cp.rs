//! `bulkhead vm cp`: copies a file or a tree into or out of a node (`NODE:/path`), as a tar
//! stream; trees that come out are unpacked as untrusted input (`cmd/untar.rs`).

use anyhow::{bail, Context};
use bulkhead_api::client::{enc, full_body};
use bulkhead_api::Client;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use std::path::{Path, PathBuf};

/// `NODE:/path` names a path in a node; anything else is local.
fn remote(s: &str) -> Option<(&str, &str)> {
    let (node, path) = s.split_once(':')?;
    (bulkhead_api::names::validate_label("node", node).is_ok() && path.starts_with('/'))
        .then_some((node, path))
}

pub async fn cp(
    client: &Client,
    src: &str,
    dst: &str,
    uid: Option<u32>,
    gid: Option<u32>,
    no_symlinks: bool,
) -> anyhow::Result<()> {
    if no_symlinks && remote(src).is_none() {
        bail!("--no-symlinks applies to downloads (cp NODE:/path DEST); uploads never follow local symlinks");
    }
    let owner = uid.map(|u| format!("&uid={u}")).unwrap_or_default()
        + &gid.map(|g| format!("&gid={g}")).unwrap_or_default();
    match (remote(src), remote(dst)) {
        (None, Some((node, path))) => {
            let local = Path::new(src);
            let md = std::fs::metadata(local).with_context(|| format!("cannot read {src}"))?;
            let (mode, body, perm) = if md.is_dir() {
                let mut b = tar::Builder::new(Vec::new());
                b.follow_symlinks(false);
                b.append_dir_all(".", local)
                    .with_context(|| format!("archiving {src}"))?;
                ("tar", b.into_inner()?, String::new())
            } else {
                use std::os::unix::fs::PermissionsExt;
                let perm = format!("&permissions={:o}", md.permissions().mode() & 0o7777);
                (
                    "binary",
                    std::fs::read(local).with_context(|| format!("reading {src}"))?,
                    perm,
                )
            };
            let q = format!(
                "/vm/{}/cp?path={}&mode={mode}{perm}{owner}",
                enc(node),
                enc(path)
            );
            let r: bulkhead_api::CopyInResult = {
                let resp = client
                    .send_ok(
                        Method::POST,
                        &q,
                        full_body(body),
                        Some("application/octet-stream"),
                    )
                    .await?;
                serde_json::from_slice(&resp.into_body().collect().await?.to_bytes())?
            };
            eprintln!("copied {} bytes to {node}:{}", r.bytes, r.path);
        }
        (Some((node, path)), None) => {
            let get =
                |mode: &'static str| format!("/vm/{}/cp?path={}&mode={mode}", enc(node), enc(path));
            match client
                .send_ok(Method::GET, &get("binary"), full_body(Bytes::new()), None)
                .await
            {
                Ok(resp) => {
                    let data = body_bytes(resp).await?;
                    let mut target = PathBuf::from(dst);
                    if target.is_dir() {
                        target.push(
                            Path::new(path)
                                .file_name()
                                .context("remote path has no file name")?,
                        );
                    }
                    std::fs::write(&target, &data)
                        .with_context(|| format!("writing {}", target.display()))?;
                    eprintln!("copied {} bytes to {}", data.len(), target.display());
                }
                Err(e) if e.code() == Some("is_a_directory") => {
                    let resp = client
                        .send_ok(Method::GET, &get("tar"), full_body(Bytes::new()), None)
                        .await?;
                    let data = body_bytes(resp).await?;
                    std::fs::create_dir_all(dst).with_context(|| format!("creating {dst}"))?;
                    let u = crate::cmd::untar::unpack(&data, Path::new(dst), no_symlinks)
                        .with_context(|| format!("unpacking into {dst}"))?;
                    crate::cmd::untar::report(&u, dst);
                    eprintln!("copied {node}:{path} to {dst}");
                }
                Err(e) => return Err(e.into()),
            }
        }
        (Some(_), Some(_)) => bail!("copy between two nodes is not supported: copy out, then in"),
        (None, None) => bail!("one side must be NODE:/absolute/path"),
    }
    Ok(())
}

/// Reads a whole response body; a body that breaks off is an error, never a short file.
async fn body_bytes(resp: hyper::Response<hyper::body::Incoming>) -> anyhow::Result<Bytes> {
    Ok(resp
        .into_body()
        .collect()
        .await
        .context("copy broke off")?
        .to_bytes())
}
