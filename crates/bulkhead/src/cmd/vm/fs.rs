//! `bulkhead vm fs ls|stat|mkdir|rm|watch`: the node's file system through
//! `/vm/{node}/fs/*`, one request each; `watch` prints events as they come (until Ctrl-C,
//! `--count` events or `--timeout`).

use anyhow::Context;
use bulkhead_api::client::{enc, full_body};
use bulkhead_api::Client;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use std::io::Write;

#[derive(clap::Subcommand)]
pub enum FsCmd {
    /// List a directory: `ls NODE /path`
    Ls { node: String, path: String },
    /// One path's type, size, mode and modification time
    Stat { node: String, path: String },
    /// Make a directory (`-p`: with its parents, no error if it exists)
    Mkdir {
        node: String,
        path: String,
        #[arg(short = 'p', long)]
        parents: bool,
        /// Octal permission bits, default 0755
        #[arg(long)]
        mode: Option<String>,
    },
    /// Remove a file or an empty directory (`-r`: a whole tree)
    Rm {
        node: String,
        path: String,
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// Print file-system events under paths (one JSON object a line)
    Watch {
        node: String,
        paths: Vec<String>,
        /// Watch every directory below the paths too
        #[arg(short = 'r', long)]
        recursive: bool,
        /// Only these event types (create, write, remove, rename, chmod; repeatable)
        #[arg(long = "event")]
        events: Vec<String>,
        /// Only paths matching these patterns (e.g. '*.go'; repeatable)
        #[arg(long = "pattern")]
        patterns: Vec<String>,
        /// Stop after this many events
        #[arg(long)]
        count: Option<u64>,
        /// Stop after this long, e.g. 30s
        #[arg(long)]
        timeout: Option<String>,
    },
}

async fn body(
    client: &Client,
    m: Method,
    path: &str,
    b: Bytes,
    ct: Option<&str>,
) -> anyhow::Result<Bytes> {
    let resp = client.send_ok(m, path, full_body(b), ct).await?;
    Ok(resp.into_body().collect().await?.to_bytes())
}

fn line(e: &serde_json::Value) -> String {
    format!(
        "{:<9} {:>5} {:>12} {} {}",
        e["type"].as_str().unwrap_or("?"),
        e["mode"].as_str().unwrap_or("?"),
        e["size"].as_u64().unwrap_or(0),
        e["mtime"].as_str().unwrap_or("?"),
        e["name"].as_str().unwrap_or("?"),
    )
}

pub async fn run(client: &Client, c: FsCmd, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    match c {
        FsCmd::Ls { node, path } => {
            let b = body(
                client,
                Method::GET,
                &format!("/vm/{}/fs/readdir?path={}", enc(&node), enc(&path)),
                Bytes::new(),
                None,
            )
            .await?;
            let v: Vec<serde_json::Value> =
                serde_json::from_slice(&b).context("decoding the listing")?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                for e in &v {
                    writeln!(out, "{}", line(e))?;
                }
            }
        }
        FsCmd::Stat { node, path } => {
            let b = body(
                client,
                Method::GET,
                &format!("/vm/{}/fs/stat?path={}", enc(&node), enc(&path)),
                Bytes::new(),
                None,
            )
            .await?;
            let v: serde_json::Value = serde_json::from_slice(&b).context("decoding the status")?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                writeln!(out, "{}", line(&v))?;
            }
        }
        FsCmd::Mkdir {
            node,
            path,
            parents,
            mode,
        } => {
            let mut req = serde_json::json!({"path": path, "recursive": parents});
            if let Some(m) = mode {
                req["mode"] = m.into();
            }
            body(
                client,
                Method::POST,
                &format!("/vm/{}/fs/mkdir", enc(&node)),
                Bytes::from(serde_json::to_vec(&req)?),
                Some("application/json"),
            )
            .await?;
        }
        FsCmd::Rm {
            node,
            path,
            recursive,
        } => {
            body(
                client,
                Method::DELETE,
                &format!(
                    "/vm/{}/fs/remove?path={}&recursive={recursive}",
                    enc(&node),
                    enc(&path)
                ),
                Bytes::new(),
                None,
            )
            .await?;
        }
        FsCmd::Watch {
            node,
            paths,
            recursive,
            events,
            patterns,
            count,
            timeout,
        } => {
            let mut q: Vec<String> = paths.iter().map(|p| format!("paths={}", enc(p))).collect();
            q.extend(events.iter().map(|e| format!("events={}", enc(e))));
            q.extend(patterns.iter().map(|p| format!("patterns={}", enc(p))));
            if recursive {
                q.push("recursive=true".into());
            }
            if let Some(n) = count {
                q.push(format!("max_events={n}"));
            }
            if let Some(t) = timeout {
                q.push(format!("timeout={}", enc(&t)));
            }
            let path = format!("/vm/{}/fs/watch?{}", enc(&node), q.join("&"));
            let resp = client
                .send_ok(Method::GET, &path, full_body(Bytes::new()), None)
                .await?;
            let mut b = resp.into_body();
            let mut pending = Vec::new();
            while let Some(frame) = b.frame().await {
                let Ok(data) = frame?.into_data() else {
                    continue;
                };
                pending.extend_from_slice(&data);
                while let Some(i) = pending.iter().position(|c| *c == b'\n') {
                    let l: Vec<u8> = pending.drain(..=i).collect();
                    if let Some(d) = l.strip_prefix(b"data: ") {
                        out.write_all(d)?;
                        out.flush()?;
                    }
                }
            }
        }
    }
    Ok(())
}
