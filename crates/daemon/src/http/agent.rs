//! Routes that reach into a node through its agent: exec, copy in and out, logs, health.

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bulkhead_agent::client::{self as agent, AgentError};
use bulkhead_agent::proto::{Event, ExecRequest, Kind, Request, MAX_FRAME};
use bulkhead_api::{names, BufferedExec, CopyInResult, ExecFrame, Health};
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use tokio_stream::wrappers::ReceiverStream;

use bulkhead_core::{Code, DomainError};

use super::body::AppState;
use super::query::Query;
use crate::error::ApiError;
use crate::fsutil::now_rfc3339;
use crate::tenant::{agent_error, NodeRef, Tenant};

/// Output kept by `buffered=true` execs, per stream.
const MAX_BUFFERED: usize = 16 << 20;

/// How an exec's stdout and stderr travel (`stdio=`): UTF-8 text (lossy for binary output),
/// or base64 (exact), as Slicer's API offers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stdio {
    Text,
    Base64,
}

impl Stdio {
    fn parse(q: &Query) -> Result<Self, DomainError> {
        match q.one("stdio")?.as_deref() {
            None | Some("text") => Ok(Stdio::Text),
            Some("base64") => Ok(Stdio::Base64),
            Some(v) => Err(DomainError::invalid(format!(
                "stdio {v:?} is not supported: use text (the default) or base64"
            ))),
        }
    }
    fn encoding(self) -> Option<String> {
        (self == Stdio::Base64).then(|| "base64".to_string())
    }
}

/// Encodes one output stream's chunks for the wire.
struct Encoder(Stdio, Utf8Carry);

impl Encoder {
    fn new(s: Stdio) -> Self {
        Encoder(s, Utf8Carry::default())
    }
    fn push(&mut self, data: &[u8]) -> String {
        match self.0 {
            Stdio::Text => self.1.push(data),
            Stdio::Base64 => B64.encode(data),
        }
    }
}

/// Turns byte chunks into UTF-8 text without splitting a character across frames.
#[derive(Default)]
struct Utf8Carry(Vec<u8>);

impl Utf8Carry {
    fn push(&mut self, data: &[u8]) -> String {
        self.0.extend_from_slice(data);
        let valid = match std::str::from_utf8(&self.0) {
            Ok(_) => self.0.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.0.len(),
        };
        let rest = self.0.split_off(valid);
        let text = String::from_utf8_lossy(&self.0).into_owned();
        self.0 = rest;
        text
    }
}

fn exec_request(q: &Query) -> Result<ExecRequest, DomainError> {
    let cmd = q.one("cmd")?.ok_or_else(|| {
        DomainError::invalid("query parameter cmd is required, e.g. ?cmd=uname&args=-a")
    })?;
    if cmd.is_empty() {
        return Err(DomainError::invalid("cmd is empty"));
    }
    let mut args = q.all("args");
    let env = q.all("env");
    for e in &env {
        if !e.contains('=') || e.starts_with('=') {
            return Err(DomainError::invalid(format!(
                "env entry {e:?} must be KEY=VALUE"
            )));
        }
    }
    let cwd = q.one("cwd")?;
    if let Some(c) = &cwd {
        names::validate_node_path(c).map_err(|m| DomainError::invalid(format!("cwd: {m}")))?;
    }
    let (cmd, args) = match q.one("shell")?.as_deref() {
        None | Some("false") | Some("0") => (cmd, args),
        Some(sh) => {
            let shell = if matches!(sh, "" | "true" | "1") {
                "/bin/sh".to_string()
            } else {
                sh.to_string()
            };
            let mut line = cmd;
            for a in args.drain(..) {
                line.push(' ');
                line.push_str(&a);
            }
            (shell, vec!["-c".to_string(), line])
        }
    };
    if q.bool("background")? {
        return Err(DomainError::invalid(
            "background execs are not supported by this build yet",
        ));
    }
    if q.one("ring_bytes")?.is_some() {
        return Err(DomainError::invalid(
            "ring_bytes applies to background execs, which this build does not support yet",
        ));
    }
    let timeout_ms = q.duration("timeout")?.map(|d| d.as_millis().max(1) as u64);
    Ok(ExecRequest {
        cmd,
        args,
        env,
        cwd,
        uid: q.u32("uid")?.unwrap_or(0),
        gid: q.u32("gid")?.unwrap_or(0),
        stdin: q.bool("stdin")?,
        timeout_ms,
        tty: None,
    })
}

fn want(q: &Query, key: &str) -> Result<bool, DomainError> {
    Ok(q.one(key)?
        .as_deref()
        .is_none_or(|v| v != "false" && v != "0"))
}

pub async fn exec(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    Ok(exec_node(State(app), Path(node), RawQuery(q), body).await?)
}

async fn exec_node(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, DomainError> {
    let q = Query::parse(
        q.as_deref(),
        &[
            "cmd",
            "args",
            "env",
            "uid",
            "gid",
            "cwd",
            "shell",
            "stdin",
            "stdout",
            "stderr",
            "buffered",
            "background",
            "ring_bytes",
            "timeout",
            "stdio",
        ],
    )?;
    let req = exec_request(&q)?;
    let stdio = Stdio::parse(&q)?;
    let (want_out, want_err, buffered) = (
        want(&q, "stdout")?,
        want(&q, "stderr")?,
        q.bool("buffered")?,
    );
    let n = app.tenant.running_node(&node)?;
    let stdin = req.stdin;
    let turn = app.tenant.agent_turn(&n).await?;
    let stream = app.tenant.connect_agent(&n).await?;
    let (mut rd, mut wr) = stream.into_split();
    let started = app
        .tenant
        .open_op(&n, &mut rd, &mut wr, &Request::Exec(req))
        .await?;
    let pid = match started {
        Event::Started { pid, .. } => pid,
        e => {
            return Err(DomainError::internal(format!(
                "agent answered exec with {e:?}"
            )))
        }
    };
    app.tenant.counters.execs.fetch_add(1, Ordering::Relaxed);
    // The writer half stays alive as long as the exec: dropping it would close the stream and
    // the agent would kill the command.
    let stdin_task = tokio::spawn(async move {
        if stdin {
            let mut data = body.into_data_stream();
            while let Some(Ok(chunk)) = data.next().await {
                for part in chunk.chunks(MAX_FRAME) {
                    if agent::write_frame(&mut wr, Kind::Stdin, part)
                        .await
                        .is_err()
                    {
                        return wr;
                    }
                }
            }
            let _ = agent::write_frame(&mut wr, Kind::Stdin, &[]).await;
        }
        wr
    });

    if buffered {
        let mut out = BufferedExec {
            stdout: String::new(),
            stderr: String::new(),
            encoding: stdio.encoding(),
            exit_code: -1,
            signal: None,
            timed_out: false,
        };
        // Raw bytes, encoded once at the end (base64 of the whole, not of each chunk).
        let (mut bo, mut be) = (Vec::new(), Vec::new());
        loop {
            match agent::read_frame(&mut rd)
                .await
                .map_err(|e| agent_error(e.into()))?
            {
                Some((Kind::Stdout, d)) if want_out && bo.len() < MAX_BUFFERED => {
                    bo.extend_from_slice(&d)
                }
                Some((Kind::Stderr, d)) if want_err && be.len() < MAX_BUFFERED => {
                    be.extend_from_slice(&d)
                }
                Some((Kind::Event, p)) => match agent::parse_event(&p).map_err(agent_error)? {
                    Event::Exit {
                        code,
                        signal,
                        timed_out,
                    } => {
                        out.exit_code = code.unwrap_or(128 + signal.unwrap_or(0));
                        out.signal = signal;
                        out.timed_out = timed_out;
                        break;
                    }
                    Event::Error { code, message } => {
                        return Err(DomainError::from_agent(&code, message))
                    }
                    _ => {}
                },
                Some(_) => {}
                None => {
                    return Err(DomainError::new(
                        Code::AgentLost,
                        "the node's agent went away during the exec",
                    ))
                }
            }
        }
        drop((stdin_task, turn));
        (out.stdout, out.stderr) = match stdio {
            Stdio::Text => (
                String::from_utf8_lossy(&bo).into_owned(),
                String::from_utf8_lossy(&be).into_owned(),
            ),
            Stdio::Base64 => (B64.encode(&bo), B64.encode(&be)),
        };
        return Ok(Json(out).into_response());
    }

    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let line = |f: &ExecFrame| {
        let mut v = serde_json::to_vec(f).unwrap_or_default();
        v.push(b'\n');
        Ok(Bytes::from(v))
    };
    let _ = tx
        .send(line(&ExecFrame::Started {
            pid,
            started_at: now_rfc3339(),
        }))
        .await;
    tokio::spawn(async move {
        let _keep_stdin_open = stdin_task;
        let _turn = turn;
        let (mut co, mut ce) = (Encoder::new(stdio), Encoder::new(stdio));
        loop {
            // Waiting on the agent alone would not notice a client that left while the command
            // is silent: hyper drops the body (our receiver) when the client goes.
            let next = tokio::select! {
                f = agent::read_frame(&mut rd) => f,
                _ = tx.closed() => return,
            };
            let frame = match next {
                Ok(Some(f)) => f,
                Ok(None) | Err(_) => {
                    let _ = tx
                        .send(line(&ExecFrame::Error {
                            error: "the node's agent went away during the exec".into(),
                            code: "agent_lost".into(),
                        }))
                        .await;
                    return;
                }
            };
            let out = match frame {
                (Kind::Stdout, d) if want_out => ExecFrame::Stdout {
                    data: co.push(&d),
                    encoding: stdio.encoding(),
                },
                (Kind::Stderr, d) if want_err => ExecFrame::Stderr {
                    data: ce.push(&d),
                    encoding: stdio.encoding(),
                },
                (Kind::Event, p) => match agent::parse_event(&p) {
                    Ok(Event::Exit {
                        code,
                        signal,
                        timed_out,
                    }) => {
                        let _ = tx
                            .send(line(&ExecFrame::Exit {
                                exit_code: code,
                                signal,
                                timed_out,
                                ended_at: now_rfc3339(),
                            }))
                            .await;
                        return;
                    }
                    Ok(Event::Error { code, message }) => ExecFrame::Error {
                        error: message,
                        code,
                    },
                    _ => continue,
                },
                _ => continue,
            };
            // A client that went away drops the receiver; returning drops the agent stream,
            // and the agent kills the command's process group.
            if tx.send(line(&out)).await.is_err() {
                return;
            }
        }
    });
    let mut resp = Body::from_stream(ReceiverStream::new(rx)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

fn cp_query(q: Option<String>, allowed: &[&str]) -> Result<(Query, String, bool), DomainError> {
    let q = Query::parse(q.as_deref(), allowed)?;
    let path = q.one("path")?.ok_or_else(|| {
        DomainError::invalid("query parameter path is required, e.g. ?path=/work/file.txt")
    })?;
    names::validate_node_path(&path).map_err(DomainError::invalid)?;
    let tar = match q.one("mode")?.as_deref() {
        None | Some("binary") => false,
        Some("tar") => true,
        Some(m) => {
            return Err(DomainError::invalid(format!(
                "mode {m:?} is not supported: use binary (one file) or tar (a tree)"
            )))
        }
    };
    Ok((q, path, tar))
}

pub async fn copy_out(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Ok(copy_out_node(State(app), Path(node), RawQuery(q)).await?)
}

async fn copy_out_node(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, DomainError> {
    let (_, path, tar) = cp_query(q, &["path", "mode"])?;
    let n = app.tenant.running_node(&node)?;
    let turn = app.tenant.agent_turn(&n).await?;
    let s = app.tenant.connect_agent(&n).await?;
    let (mut rd, mut wr) = s.into_split();
    let first = app
        .tenant
        .open_op(&n, &mut rd, &mut wr, &Request::CopyOut { path, tar })
        .await?;
    let mode = match first {
        Event::File { mode, .. } => mode,
        e => {
            return Err(DomainError::internal(format!(
                "agent answered copy with {e:?}"
            )))
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let _keep = (turn, wr);
        loop {
            match agent::read_frame(&mut rd).await {
                Ok(Some((Kind::Data, d))) if d.is_empty() => return,
                Ok(Some((Kind::Data, d))) => {
                    if tx.send(Ok(Bytes::from(d))).await.is_err() {
                        return;
                    }
                }
                // Anything else mid-stream is a failure: end the body with an error so the
                // client sees a broken transfer rather than a short file.
                _ => {
                    let _ = tx
                        .send(Err(std::io::Error::other("copy failed inside the node")))
                        .await;
                    return;
                }
            }
        }
    });
    let mut resp = Body::from_stream(ReceiverStream::new(rx)).into_response();
    let ct = if tar {
        "application/x-tar"
    } else {
        "application/octet-stream"
    };
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    if let Ok(v) = HeaderValue::from_str(&format!("{mode:04o}")) {
        resp.headers_mut().insert("x-slicer-file-mode", v);
    }
    Ok(resp)
}

pub async fn copy_in(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Json<CopyInResult>, ApiError> {
    Ok(copy_in_node(State(app), Path(node), RawQuery(q), body).await?)
}

async fn copy_in_node(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Json<CopyInResult>, DomainError> {
    let (q, path, tar) = cp_query(q, &["path", "mode", "uid", "gid", "permissions"])?;
    let mode = q
        .one("permissions")?
        .map(|p| {
            u32::from_str_radix(&p, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .ok_or_else(|| {
                    DomainError::invalid(format!("permissions {p:?} must be octal, e.g. 0644"))
                })
        })
        .transpose()?;
    let (uid, gid) = (q.u32("uid")?, q.u32("gid")?);
    let n = app.tenant.running_node(&node)?;
    let _turn = app.tenant.agent_turn(&n).await?;
    let s = app.tenant.connect_agent(&n).await?;
    let (mut rd, mut wr) = s.into_split();
    let req = Request::CopyIn {
        path: path.clone(),
        tar,
        uid,
        gid,
        mode,
    };
    if let Err(e) = agent::send_request(&mut wr, &req).await {
        // The agent may have refused the connection at once (pids limit): say why.
        return Err(match agent::expect_event(&mut rd).await {
            Err(r @ AgentError::Remote { .. }) => app.tenant.explain(&n, agent_error(r)),
            _ => agent_error(AgentError::from(e)),
        });
    }
    let mut data = body.into_data_stream();
    let mut upload_err = None;
    while let Some(chunk) = data.next().await {
        match chunk {
            Ok(c) => {
                let mut sent = Ok(());
                for part in c.chunks(MAX_FRAME) {
                    sent = agent::write_frame(&mut wr, Kind::Data, part).await;
                    if sent.is_err() {
                        break;
                    }
                }
                if sent.is_err() {
                    break; // the agent stopped reading: its answer below says why
                }
            }
            Err(e) => {
                upload_err = Some(e.to_string());
                break;
            }
        }
    }
    if let Some(e) = upload_err {
        // Close without the final empty frame: the agent discards the partial upload.
        drop(wr);
        return Err(DomainError::invalid(format!(
            "upload was cut off: {e}; nothing was written"
        )));
    }
    let _ = agent::write_frame(&mut wr, Kind::Data, &[]).await;
    match agent::expect_event(&mut rd).await {
        Ok(Event::Done { bytes }) => Ok(Json(CopyInResult { path, bytes })),
        Ok(e) => Err(DomainError::internal(format!(
            "agent answered upload with {e:?}"
        ))),
        Err(e) => {
            let mut e = app.tenant.explain(&n, agent_error(e));
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
    let mib = |b: u64| b >> 20;
    if tenant.host.vm.is_some() {
        return format!(
            "the node's disk is full: it holds storage_size {} MiB of host group {:?}",
            mib(g.storage_bytes),
            g.name
        );
    }
    let layer = bulkhead_core::jail_layer_bytes(g.storage_bytes, row.ram_bytes);
    format!(
        "the node is full: its writable layer holds {} MiB (storage_size {} MiB of host group {:?}; the layer is kept in the node's memory, ram {} MiB, and holds at most ram less {} MiB kept for the agent and commands), and files written count against the node's ram",
        mib(layer),
        mib(g.storage_bytes),
        g.name,
        mib(row.ram_bytes),
        mib(bulkhead_core::layer_reserve(row.ram_bytes)),
    )
}

/// The node's console: what its init and agent printed. The last MiB at most.
pub async fn logs(
    State(app): State<AppState>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let n = app.tenant.node(&node)?;
    let data = tokio::fs::read(app.tenant.console_log(&n))
        .await
        .unwrap_or_default();
    let tail = data[data.len().saturating_sub(1 << 20)..].to_vec();
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], tail).into_response())
}

pub async fn health(
    State(app): State<AppState>,
    Path(node): Path<String>,
) -> Result<Response, ApiError> {
    let n = app.tenant.running_node(&node)?;
    let uptime = agent::ping(&app.tenant.agent_socket(&n))
        .await
        .map_err(|e| DomainError::new(Code::AgentUnhealthy, e.to_string()))?;
    Ok(Json(Health {
        hostname: node,
        agent: "ok".into(),
        uptime_ms: uptime,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::Utf8Carry;

    #[test]
    fn utf8_is_not_split_across_frames() {
        let s = "héllo ✓".as_bytes();
        let mut c = Utf8Carry::default();
        let mut out = String::new();
        for b in s {
            out.push_str(&c.push(&[*b]));
        }
        assert_eq!(out, "héllo ✓");
        assert_eq!(Utf8Carry::default().push(&[0xff, b'a']), "\u{fffd}a");
    }
}
