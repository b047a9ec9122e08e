//! E2B's `process.Process` service (#15, C; ADR 0038), Connect-RPC under
//! `/envd/{node}/process.Process/<Method>`: a process is a background exec of the daemon's
//! registry (`crate::bg`, shared with Slicer's `?background=true`), started through the
//! node's agent on both drivers.
//!
//! - `Start` (server stream): the command as `user` or `root` (`Authorization: Basic`, else
//!   the node's default, `user.rs`), the sandbox's default environment under the request's
//!   `envs`, `cwd` by E2B's path rule (default: the user's home), an optional terminal, stdin
//!   unless `stdin: false`; the admission policy judges it as any exec (`exec_as_root` ...);
//!   `Connect-Timeout-Ms` is the command's own timeout (the agent kills it then), as envd has
//!   it. Events: start (the pid in the node), data (stdout/stderr, or pty), end.
//! - `Connect` (server stream): attaches to a running process by pid or tag: start, then the
//!   output from now on, then the end; `Connect-Timeout-Ms` bounds only the stream.
//! - `List`, `SendInput`, `StreamInput` (client stream), `SendSignal` (SIGTERM, SIGKILL: no
//!   escalation), `CloseStdin`, `Update` (terminal size).
//!
//! Streams send a keepalive event every `Keepalive-Ping-Interval` seconds while silent; a
//! client that goes away ends only its stream, never the process (as envd).

use axum::body::Body;
use axum::extract::{Extension, Path};
use axum::http::HeaderMap;
use axum::response::Response;
use bulkhead_agent::proto::{ExecRequest, WinSize};
use bulkhead_core::DomainError;
use bulkhead_e2b::connect::{Code, ConnectError};
use bulkhead_e2b::process::{
    process_input, process_selector, stream_input_request, CloseStdinRequest, CloseStdinResponse,
    ConnectRequest, ListRequest, ListResponse, ProcessConfig, ProcessInfo, ProcessInput,
    ProcessSelector, SendInputRequest, SendInputResponse, SendSignalRequest, SendSignalResponse,
    Signal, StartRequest, StreamInputRequest, StreamInputResponse, UpdateRequest, UpdateResponse,
};
use std::sync::Arc;

use super::connect::{self as rpc, from_domain, ClientStream};
use super::process_stream::{follow, From};
use super::user;
use crate::admission::ExecMode;
use crate::auth::Principal;
use crate::bg::control::Selector;
use crate::bg::options::Options;
use crate::bg::{BgExec, Launch};
use crate::http::body::{Scoped, TenantApp};

/// A process's output ring (as a Slicer background exec's default, `ring_bytes` 1 MiB): a
/// stream that falls further behind than this misses output.
const RING_BYTES: u64 = 1 << 20;

fn domain(e: DomainError) -> ConnectError {
    from_domain(e)
}

/// A terminal size from E2B's `PTY.Size` (0 is taken as 1, more than `u16` as its most).
fn win_size(cols: u32, rows: u32) -> WinSize {
    let c = |v: u32| u16::try_from(v.max(1)).unwrap_or(u16::MAX);
    WinSize {
        cols: c(cols),
        rows: c(rows),
    }
}

fn check_env(k: &str, v: &str) -> Result<(), ConnectError> {
    if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
        return Err(ConnectError::invalid_argument(format!(
            "environment variable {k:?}: a name is not empty and has no '=' or NUL, a value no NUL"
        )));
    }
    Ok(())
}

/// `POST /envd/{node}/process.Process/Start`.
pub async fn start(
    Scoped(app): Scoped,
    Extension(who): Extension<Principal>,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (call, req) = match rpc::stream_request::<StartRequest>(&app, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match launch(&app, &who, &node, &headers, req, call.timeout).await {
        Ok(e) => {
            let (stream, resp) = rpc::ServerStream::open(call);
            tokio::spawn(follow(e, stream, From::Start, None));
            resp
        }
        Err(e) => rpc::failed_stream(call, e),
    }
}

async fn launch(
    app: &TenantApp,
    who: &Principal,
    node: &str,
    headers: &HeaderMap,
    req: StartRequest,
    timeout: Option<std::time::Duration>,
) -> Result<Arc<BgExec>, ConnectError> {
    let n = app.tenant.running_node(node).map_err(domain)?;
    let name = user::from_authorization(headers).map_err(domain)?;
    let u = user::resolve(&app.tenant, &n, name.as_deref())
        .await
        .map_err(domain)?;
    let p = req.process.unwrap_or_default();
    if p.cmd.is_empty() {
        return Err(ConnectError::invalid_argument(
            "process.cmd is empty: name the program to run",
        ));
    }
    let cwd = user::resolve_path(p.cwd.as_deref().unwrap_or("~"), &u).map_err(domain)?;
    let mut env = vec![
        format!("HOME={}", u.home),
        format!("USER={}", u.name),
        format!("LOGNAME={}", u.name),
    ];
    for (k, v) in crate::e2b::sandbox_env(app, node) {
        check_env(&k, &v)?;
        env.push(format!("{k}={v}"));
    }
    let mut asked: Vec<(String, String)> = p.envs.clone().into_iter().collect();
    asked.sort();
    for (k, v) in &asked {
        check_env(k, v)?;
        env.push(format!("{k}={v}"));
    }
    let tty = req.pty.map(|t| {
        t.size
            .map_or(win_size(80, 24), |s| win_size(s.cols, s.rows))
    });
    // envd: stdin unless the request says `false` (older SDKs do not say); a terminal's input
    // is always open.
    let stdin = tty.is_some() || req.stdin.unwrap_or(true);
    let request = ExecRequest {
        cmd: p.cmd.clone(),
        args: p.args.clone(),
        env,
        cwd: Some(cwd),
        uid: u.uid,
        gid: u.gid,
        stdin,
        timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        tty,
        ..Default::default()
    };
    // The admission policy (#12): exec_as_root, allowed commands, the webhook.
    let request = (app.tenant.admission)
        .exec(&who.id, node, ExecMode::Background, request)
        .await
        .map_err(domain)?;
    let launch = Launch {
        command: p.cmd,
        args: p.args,
        cwd: p.cwd,
        uid: request.uid,
        ring_bytes: RING_BYTES,
        base64: true,
        opts: Options {
            stdin,
            tty: tty.is_some(),
            tag: req.tag,
            env: asked,
            gid: request.gid,
            forget_on_exit: true,
            container: None, // #16 B2
        },
    };
    crate::http::exec_bg::run(app, &n, launch, request, false)
        .await
        .map_err(|e| match e.code {
            // envd: a process that cannot start is the caller's argument.
            bulkhead_core::Code::CommandNotFound | bulkhead_core::Code::ExecFailed => {
                ConnectError::invalid_argument(e.message)
            }
            _ => domain(e),
        })
}

/// The running process a selector names.
fn find(
    app: &TenantApp,
    node: &str,
    sel: Option<ProcessSelector>,
) -> Result<Arc<BgExec>, ConnectError> {
    let n = app.tenant.node(node).map_err(domain)?;
    let sel = match sel.and_then(|s| s.selector) {
        Some(process_selector::Selector::Pid(p)) => {
            let pid = i32::try_from(p)
                .map_err(|_| ConnectError::not_found(format!("process with pid {p} not found")))?;
            Selector::Pid(pid)
        }
        Some(process_selector::Selector::Tag(ref t)) => {
            return app
                .tenant
                .bg
                .find(n.name(), Selector::Tag(t))
                .map_err(domain)
        }
        None => {
            return Err(ConnectError::invalid_argument(
                "process: name the process by pid or tag",
            ))
        }
    };
    app.tenant.bg.find(n.name(), sel).map_err(domain)
}

/// `POST /envd/{node}/process.Process/Connect`.
pub async fn connect(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (call, req) = match rpc::stream_request::<ConnectRequest>(&app, &headers, body).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    match find(&app, &node, req.process) {
        Ok(e) => {
            let (stream, resp) = rpc::ServerStream::open(call);
            tokio::spawn(follow(e, stream, From::Now, call.timeout));
            resp
        }
        Err(e) => rpc::failed_stream(call, e),
    }
}

/// `POST /envd/{node}/process.Process/List`: the running processes (and Slicer's running
/// background execs: one registry).
pub async fn list(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let a = app.clone();
    rpc::unary(&app, &headers, body, |_: ListRequest| async move {
        let n = a.tenant.node(&node).map_err(domain)?;
        let processes = a
            .tenant
            .bg
            .running(n.name())
            .iter()
            .map(|e| ProcessInfo {
                config: Some(ProcessConfig {
                    cmd: e.launch.command.clone(),
                    args: e.launch.args.clone(),
                    envs: e.launch.opts.env.iter().cloned().collect(),
                    cwd: e.launch.cwd.clone(),
                }),
                pid: u32::try_from(e.pid).unwrap_or(0),
                tag: e.launch.opts.tag.clone(),
            })
            .collect();
        Ok(ListResponse { processes })
    })
    .await
}

/// Input for a process: stdin for one without a terminal, `pty` for one with.
async fn input(e: &BgExec, i: Option<ProcessInput>) -> Result<(), ConnectError> {
    match i.and_then(|i| i.input) {
        Some(process_input::Input::Stdin(d)) if e.tty() => {
            let _ = d;
            Err(ConnectError::new(
                Code::FailedPrecondition,
                "this process runs on a terminal: send its input as pty, not stdin",
            ))
        }
        Some(process_input::Input::Pty(_)) if !e.tty() => Err(ConnectError::new(
            Code::FailedPrecondition,
            "this process has no terminal: send its input as stdin, not pty",
        )),
        Some(process_input::Input::Stdin(d) | process_input::Input::Pty(d)) => {
            e.write_stdin(&d).await.map_err(|x| match x.code {
                bulkhead_core::Code::InvalidRequest => {
                    ConnectError::new(Code::FailedPrecondition, x.message)
                }
                _ => domain(x),
            })
        }
        None => Err(ConnectError::invalid_argument(
            "input: send stdin or pty bytes",
        )),
    }
}

/// `POST /envd/{node}/process.Process/SendInput`.
pub async fn send_input(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let a = app.clone();
    rpc::unary(&app, &headers, body, |r: SendInputRequest| async move {
        let e = find(&a, &node, r.process)?;
        input(&e, r.input).await?;
        Ok(SendInputResponse {})
    })
    .await
}

/// `POST /envd/{node}/process.Process/StreamInput` (client stream): a start naming the
/// process, then data in order; keepalives are skipped.
pub async fn stream_input(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut s = match ClientStream::open(&headers, body) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let call = s.call();
    let run = async {
        let mut target: Option<Arc<BgExec>> = None;
        while let Some(m) = s.next::<StreamInputRequest>().await? {
            match m.event {
                Some(stream_input_request::Event::Start(st)) => {
                    target = Some(find(&app, &node, st.process)?);
                }
                Some(stream_input_request::Event::Data(d)) => {
                    let e = target.as_ref().ok_or_else(|| {
                        ConnectError::invalid_argument(
                            "the input stream must start with a start event naming the process",
                        )
                    })?;
                    input(e, d.input).await?;
                }
                Some(stream_input_request::Event::Keepalive(_)) => {}
                None => {
                    return Err(ConnectError::invalid_argument(
                        "an input stream event is start, data or keepalive",
                    ))
                }
            }
        }
        Ok(StreamInputResponse {})
    };
    let result = match call.timeout {
        None => run.await,
        Some(t) => tokio::time::timeout(t, run)
            .await
            .unwrap_or_else(|_| Err(rpc::deadline(t))),
    };
    ClientStream::respond(call, result)
}

/// `POST /envd/{node}/process.Process/SendSignal`: SIGTERM or SIGKILL to the process group.
pub async fn send_signal(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let a = app.clone();
    rpc::unary(&app, &headers, body, |r: SendSignalRequest| async move {
        let sig = match Signal::try_from(r.signal) {
            Ok(Signal::Sigterm) => libc::SIGTERM,
            Ok(Signal::Sigkill) => libc::SIGKILL,
            _ => {
                return Err(ConnectError::invalid_argument(format!(
                    "signal {} is not supported: send SIGNAL_SIGTERM or SIGNAL_SIGKILL",
                    r.signal
                )))
            }
        };
        let e = find(&a, &node, r.process)?;
        e.signal(sig).await.map_err(domain)?;
        Ok(SendSignalResponse {})
    })
    .await
}

/// `POST /envd/{node}/process.Process/CloseStdin`: end of input (not for a terminal).
pub async fn close_stdin(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let a = app.clone();
    rpc::unary(&app, &headers, body, |r: CloseStdinRequest| async move {
        let e = find(&a, &node, r.process)?;
        if e.tty() {
            return Err(ConnectError::new(
                Code::FailedPrecondition,
                "this process runs on a terminal: send Ctrl-D (0x04) as pty input instead",
            ));
        }
        e.close_stdin().await.map_err(domain)?;
        Ok(CloseStdinResponse {})
    })
    .await
}

/// `POST /envd/{node}/process.Process/Update`: a terminal's new size.
pub async fn update(
    Scoped(app): Scoped,
    Path(node): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let a = app.clone();
    rpc::unary(&app, &headers, body, |r: UpdateRequest| async move {
        let e = find(&a, &node, r.process)?;
        if let Some(size) = r.pty.and_then(|p| p.size) {
            if !e.tty() {
                return Err(ConnectError::new(
                    Code::FailedPrecondition,
                    "this process has no terminal to resize",
                ));
            }
            e.resize(win_size(size.cols, size.rows))
                .await
                .map_err(domain)?;
        }
        Ok(UpdateResponse {})
    })
    .await
}
