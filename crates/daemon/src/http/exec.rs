//! `POST /vm/{node}/exec`: the query parsed into an [`ExecQuery`], a turn at the node's agent,
//! an [`ExecSession`](bulkhead_agent::client::ExecSession) through the tenant, the request
//! body fed to stdin from a task of its own, and one loop ([`relay`]) that passes the
//! command's output on to either answer: one JSON document at the end (`buffered=true`,
//! [`Buffered`]) or NDJSON frames as they come ([`Frames`]).
//!
//! The exec ends with the connection to the agent: the stdin task keeps its half until the
//! body ends, the loop keeps the other until the exit, or until the HTTP client goes away,
//! and the agent kills the command's process group once both are dropped.
//!
//! Shapes are Slicer's (ADR 0016): the exit's `exit_code` is always there (128 + the signal
//! when one killed the command, `signal` naming it), and a command that cannot start is an
//! exit code (127 or 126, `exec_wire.rs`). `background=true` goes to `exec_bg.rs`.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, RawQuery};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bulkhead_agent::client::{AgentError, ExecEvent, ExecOutput, ExitStatus};
use bulkhead_api::{BufferedExec, ExecFrame};
use bulkhead_core::{Code, DomainError};
use futures_util::stream;
use futures_util::StreamExt;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::body::{Scoped, TenantApp};
use super::exec_query::{ExecQuery, Stdio};
use super::exec_wire::{line, not_started, Encoders};
use crate::admission::ExecMode;
use crate::auth::Principal;
use crate::bg::exit_fields;
use crate::error::ApiError;
use crate::fsutil::now_rfc3339;
use crate::tenant::agent_error;

/// Output kept by `buffered=true` execs, per stream.
const MAX_BUFFERED: usize = 16 << 20;

const AGENT_LOST: &str = "the node's agent went away during the exec";

pub async fn exec(
    Scoped(app): Scoped,
    Extension(who): Extension<Principal>,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    Ok(exec_node(app, &who, node, q, body).await?)
}

async fn exec_node(
    app: TenantApp,
    who: &Principal,
    node: String,
    q: Option<String>,
    body: Body,
) -> Result<Response, DomainError> {
    let mut q = ExecQuery::parse(q.as_deref())?;
    let n = app.tenant.running_node(&node)?;
    // #16 B1: `container=<cid>` runs chrooted in that container's root (404 if absent).
    if let Some(cid) = &q.container {
        q.request.root = Some(super::exec_container::container_root(&app, &node, cid)?);
    }
    // admission policy (#12): foreground and background execs
    let mode = match q.background {
        Some(_) => ExecMode::Background,
        None => ExecMode::Foreground,
    };
    q.request = (app.tenant.admission)
        .exec(&who.id, &node, mode, q.request)
        .await?;
    if let Some(ring) = q.background {
        return super::exec_bg::start(&app, &n, &q, ring).await;
    }
    let stdin = q.request.stdin;
    let turn = app.tenant.agent_turn(&n).await?;
    let session = match q.request.tty {
        // #16 B1: a terminal (the agent is asked first whether it has terminals)
        Some(_) => app.tenant.exec_tty(&n, q.request.clone()).await,
        None => app.tenant.exec(&n, q.request.clone()).await,
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => match not_started(&e) {
            Some(code) => return Ok(not_started_answer(&q, code, &e.message)),
            None => return Err(e),
        },
    };
    app.tenant.counters.execs.fetch_add(1, Ordering::Relaxed);
    app.tenant.usage.exec(&node); // #14 usage
    let pid = session.pid();
    let started_at = now_rfc3339();
    let (mut input, mut output) = session.split();
    // The input half lives as long as this task (its result): the exec ends with it.
    let stdin_task = tokio::spawn(async move {
        if stdin {
            let mut data = body.into_data_stream();
            while let Some(Ok(chunk)) = data.next().await {
                if input.write_stdin(&chunk).await.is_err() {
                    return input;
                }
            }
            let _ = input.close_stdin().await;
        }
        input
    });

    if q.buffered {
        let mut sink = Buffered::default();
        relay(&mut output, &q, &mut sink).await;
        drop((stdin_task, turn));
        let mut answer = sink.answer(q.stdio)?;
        answer.pid = Some(pid);
        answer.started_at = Some(started_at);
        return Ok(Json(answer).into_response());
    }

    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let _ = tx.send(line(&ExecFrame::Started { pid, started_at })).await;
    tokio::spawn(async move {
        let _keep_stdin_open = stdin_task;
        let _turn = turn;
        let mut sink = Frames::new(tx, q.stdio);
        relay(&mut output, &q, &mut sink).await;
    });
    Ok(ndjson(Body::from_stream(ReceiverStream::new(rx))))
}

fn ndjson(body: Body) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    resp
}

/// A command that could not start, answered as a shell would: its reason on stderr and an
/// exit code, in the shape the request asked for.
fn not_started_answer(q: &ExecQuery, exit_code: i32, why: &str) -> Response {
    let msg = format!("bulkhead: {why}\n");
    let ended_at = now_rfc3339();
    if q.buffered {
        let stderr = match q.stdio {
            Stdio::Text => msg,
            Stdio::Base64 => B64.encode(msg),
        };
        return Json(BufferedExec {
            stdout: String::new(),
            stderr,
            encoding: q.stdio.encoding(),
            exit_code,
            signal: None,
            timed_out: false,
            pid: None,
            started_at: None,
            ended_at: Some(ended_at),
        })
        .into_response();
    }
    let mut frames = Vec::new();
    if q.stderr {
        frames.push(line(&Encoders::new(q.stdio).frame(true, msg.as_bytes())));
    }
    frames.push(line(&ExecFrame::Exit {
        exit_code,
        signal: None,
        timed_out: false,
        ended_at,
    }));
    ndjson(Body::from_stream(stream::iter(frames)))
}

/// Where an exec's output goes. `Break` from a method ends the exec.
trait Sink {
    async fn output(&mut self, stderr: bool, data: Vec<u8>) -> ControlFlow<()>;
    /// An error the agent reported while the command ran.
    async fn agent_error(&mut self, code: String, message: String) -> ControlFlow<()>;
    async fn exit(&mut self, status: ExitStatus);
    /// The connection to the agent broke or carried nonsense.
    async fn lost(&mut self, e: AgentError);
    /// Resolves when nobody will read the output any more.
    async fn gone(&self);
}

/// The one loop from the agent's output to an answer.
async fn relay<R: AsyncRead + Unpin>(out: &mut ExecOutput<R>, q: &ExecQuery, sink: &mut impl Sink) {
    loop {
        // Waiting on the agent alone would not notice a client that left while the command
        // is silent.
        let event = tokio::select! {
            e = out.next() => e,
            _ = sink.gone() => return,
        };
        let flow = match event {
            Ok(Some(ExecEvent::Stdout(d))) if q.stdout => sink.output(false, d).await,
            Ok(Some(ExecEvent::Stderr(d))) if q.stderr => sink.output(true, d).await,
            Ok(Some(ExecEvent::Exit(s))) => return sink.exit(s).await,
            Ok(Some(_)) => ControlFlow::Continue(()),
            Ok(None) => return sink.lost(AgentError::Closed).await,
            Err(AgentError::Remote { code, message }) => sink.agent_error(code, message).await,
            Err(e) => return sink.lost(e).await,
        };
        if flow.is_break() {
            return;
        }
    }
}

/// `buffered=true`: raw bytes, encoded once at the end (base64 of the whole, not of each
/// chunk), or the error that ended the exec.
#[derive(Default)]
struct Buffered {
    out: Vec<u8>,
    err: Vec<u8>,
    end: Option<Result<ExitStatus, DomainError>>,
}

impl Sink for Buffered {
    async fn output(&mut self, stderr: bool, data: Vec<u8>) -> ControlFlow<()> {
        let buf = if stderr { &mut self.err } else { &mut self.out };
        if buf.len() < MAX_BUFFERED {
            buf.extend_from_slice(&data);
        }
        ControlFlow::Continue(())
    }
    async fn agent_error(&mut self, code: String, message: String) -> ControlFlow<()> {
        self.end = Some(Err(DomainError::from_agent(&code, message)));
        ControlFlow::Break(())
    }
    async fn exit(&mut self, status: ExitStatus) {
        self.end = Some(Ok(status));
    }
    async fn lost(&mut self, e: AgentError) {
        self.end = Some(Err(match e {
            AgentError::Closed => DomainError::new(Code::AgentLost, AGENT_LOST),
            e => agent_error(e),
        }));
    }
    async fn gone(&self) {
        std::future::pending().await
    }
}

impl Buffered {
    fn answer(self, stdio: Stdio) -> Result<BufferedExec, DomainError> {
        let st = self
            .end
            .unwrap_or_else(|| Err(DomainError::new(Code::AgentLost, AGENT_LOST)))?;
        let (stdout, stderr) = match stdio {
            Stdio::Text => (
                String::from_utf8_lossy(&self.out).into_owned(),
                String::from_utf8_lossy(&self.err).into_owned(),
            ),
            Stdio::Base64 => (B64.encode(&self.out), B64.encode(&self.err)),
        };
        let (exit_code, signal) = exit_fields(st.code, st.signal);
        Ok(BufferedExec {
            stdout,
            stderr,
            encoding: stdio.encoding(),
            exit_code,
            signal,
            timed_out: st.timed_out,
            pid: None,
            started_at: None,
            ended_at: Some(now_rfc3339()),
        })
    }
}

/// The NDJSON answer: one frame per chunk, as it comes.
struct Frames {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    enc: Encoders,
}

impl Frames {
    fn new(tx: mpsc::Sender<Result<Bytes, std::io::Error>>, stdio: Stdio) -> Self {
        Frames {
            tx,
            enc: Encoders::new(stdio),
        }
    }

    /// A client that went away drops the receiver: then the exec ends.
    async fn send(&self, f: &ExecFrame) -> ControlFlow<()> {
        match self.tx.send(line(f)).await {
            Ok(()) => ControlFlow::Continue(()),
            Err(_) => ControlFlow::Break(()),
        }
    }
}

impl Sink for Frames {
    async fn output(&mut self, stderr: bool, data: Vec<u8>) -> ControlFlow<()> {
        let frame = self.enc.frame(stderr, &data);
        self.send(&frame).await
    }
    async fn agent_error(&mut self, code: String, message: String) -> ControlFlow<()> {
        self.send(&ExecFrame::Error {
            error: message,
            code,
        })
        .await
    }
    async fn exit(&mut self, st: ExitStatus) {
        let (exit_code, signal) = exit_fields(st.code, st.signal);
        let _ = self
            .send(&ExecFrame::Exit {
                exit_code,
                signal,
                timed_out: st.timed_out,
                ended_at: now_rfc3339(),
            })
            .await;
    }
    async fn lost(&mut self, _: AgentError) {
        let _ = self
            .send(&ExecFrame::Error {
                error: AGENT_LOST.into(),
                code: Code::AgentLost.as_str().into(),
            })
            .await;
    }
    async fn gone(&self) {
        self.tx.closed().await
    }
}
