//! `bulkhead vm exec`: runs a command in a node and relays its output as it streams (NDJSON
//! frames), its stdin when asked, and its exit status as this process's.

use anyhow::{bail, Context};
use bulkhead_api::client::{enc, full_body, ReqBody};
use bulkhead_api::{Client, ExecFrame};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ExecArgs {
    node: String,
    /// Send this process's stdin to the command
    #[arg(short, long)]
    interactive: bool,
    #[arg(long, default_value_t = 0)]
    uid: u32,
    #[arg(long, default_value_t = 0)]
    gid: u32,
    #[arg(long)]
    cwd: Option<String>,
    /// KEY=VALUE (repeatable)
    #[arg(long, short)]
    env: Vec<String>,
    /// Kill the command after this long, e.g. 30s
    #[arg(long)]
    timeout: Option<String>,
    /// Run it in the background (the daemon keeps it and its output); prints its exec id
    #[arg(long, conflicts_with = "interactive")]
    bg: bool,
    /// With --bg: the output ring's size in bytes (default 1 MiB)
    #[arg(long, requires = "bg")]
    ring_bytes: Option<u64>,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn exec(client: &Client, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let ExecArgs {
        node,
        interactive,
        uid,
        gid,
        cwd,
        env,
        timeout,
        bg,
        ring_bytes,
        command,
    } = a;
    let node = node.as_str();
    // base64 frames: binary output reaches stdout byte for byte.
    let mut q = format!(
        "/vm/{}/exec?cmd={}&uid={uid}&gid={gid}&stdio=base64",
        enc(node),
        enc(&command[0])
    );
    for a in &command[1..] {
        q += &format!("&args={}", enc(a));
    }
    for e in &env {
        q += &format!("&env={}", enc(e));
    }
    if let Some(c) = cwd {
        q += &format!("&cwd={}", enc(&c));
    }
    if let Some(t) = timeout {
        q += &format!("&timeout={}", enc(&t));
    }
    if bg {
        // The daemon keeps the command: print its id (`vm bg ...` takes it from there).
        q += "&background=true";
        if let Some(r) = ring_bytes {
            q += &format!("&ring_bytes={r}");
        }
        let s: bulkhead_api::BgExecStarted = client.json(Method::POST, &q, None).await?;
        println!("{}", s.exec_id);
        return Ok(ExitCode::SUCCESS);
    }
    let body: ReqBody = if interactive {
        q += "&stdin=true";
        let (tx, rx) =
            tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(8);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut stdin = std::io::stdin().lock();
            loop {
                match std::io::Read::read(&mut stdin, &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx
                            .blocking_send(Ok(hyper::body::Frame::data(Bytes::copy_from_slice(
                                &buf[..n],
                            ))))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed()
    } else {
        full_body(Bytes::new())
    };
    let resp = match client.send_ok(Method::POST, &q, body, None).await {
        Ok(r) => r,
        // The shell's conventions, so scripts can tell "not found" from the command failing.
        Err(e) if matches!(e.code(), Some("command_not_found") | Some("exec_failed")) => {
            eprintln!("bulkhead: {e}");
            return Ok(ExitCode::from(if e.code() == Some("command_not_found") {
                127
            } else {
                126
            }));
        }
        Err(e) => return Err(e.into()),
    };
    let mut body = resp.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(frame) = body.frame().await {
        let frame = frame.context("exec stream broke")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            match serde_json::from_slice::<ExecFrame>(&line).context("malformed exec frame")? {
                ExecFrame::Stdout { data, encoding } => {
                    out.write_all(&output_bytes(data, encoding)?)?;
                    out.flush()?;
                }
                ExecFrame::Stderr { data, encoding } => {
                    err.write_all(&output_bytes(data, encoding)?)?;
                    err.flush()?;
                }
                ExecFrame::Exit {
                    exit_code,
                    timed_out,
                    ..
                } => {
                    if timed_out {
                        eprintln!("bulkhead: command timed out and was killed");
                    }
                    return Ok(ExitCode::from(exit_code.clamp(0, 255) as u8));
                }
                ExecFrame::Error { error, code } => bail!("exec failed: {error} ({code})"),
                ExecFrame::Started { .. } | ExecFrame::Gap { .. } => {}
            }
        }
    }
    bail!("exec stream ended without an exit status")
}

/// One output frame's bytes: base64 frames decoded, text as it came.
pub(super) fn output_bytes(data: String, encoding: Option<String>) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    match encoding.as_deref() {
        None | Some("text") => Ok(data.into_bytes()),
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(data)
            .context("exec frame is not valid base64"),
        Some(e) => bail!("exec frame has an unknown encoding {e:?}"),
    }
}
