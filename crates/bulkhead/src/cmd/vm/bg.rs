//! `bulkhead vm exec --bg` and `bulkhead vm bg list|info|logs|kill|wait|rm`: background
//! execs, which the daemon runs and keeps the output of (a bounded ring) after the client
//! leaves. `logs` writes the command's bytes to stdout and stderr as they were (base64 on
//! the wire) and notes a gap on stderr; `wait` exits with the command's exit code.

use anyhow::{bail, Context};
use bulkhead_api::client::{enc, full_body};
use bulkhead_api::{
    BgDeleted, BgExecInfo, BgKillResponse, BgWaitExit, Client, ExecFrame, LogFrame,
};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum BgCmd {
    /// List a node's background execs
    List { node: String },
    /// Show one background exec
    Info { node: String, exec_id: String },
    /// Print a background exec's output (from its ring)
    Logs {
        node: String,
        exec_id: String,
        /// Keep printing new output until the command ends
        #[arg(short, long)]
        follow: bool,
        /// Start at this frame id (the `next_id` of an earlier look)
        #[arg(long, default_value_t = 0)]
        from_id: u64,
    },
    /// Signal a background exec (SIGKILL follows after the grace)
    Kill {
        node: String,
        exec_id: String,
        /// TERM, SIGINT, 9, ...
        #[arg(long, short, default_value = "TERM")]
        signal: String,
        #[arg(long, default_value_t = 5000)]
        grace_ms: u64,
    },
    /// Wait for a background exec to end; exits with its exit code (124 on timeout)
    Wait {
        node: String,
        exec_id: String,
        /// Seconds
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Forget an exited background exec and its output
    Rm { node: String, exec_id: String },
}

fn path(node: &str, id: &str, tail: &str) -> String {
    format!("/vm/{}/exec/{}{tail}", enc(node), enc(id))
}

pub async fn run(client: &Client, json: bool, c: BgCmd) -> anyhow::Result<ExitCode> {
    match c {
        BgCmd::List { node } => {
            let v: Vec<BgExecInfo> = client.get(&format!("/vm/{}/exec", enc(&node))).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<36} {:>7} {:<8} {:>6} {:>10}  COMMAND",
                    "EXEC_ID", "PID", "STATE", "EXIT", "BYTES"
                );
                for e in v {
                    println!(
                        "{:<36} {:>7} {:<8} {:>6} {:>10}  {} {}",
                        e.exec_id,
                        e.pid,
                        if e.running { "running" } else { "exited" },
                        e.exit_code.map(|c| c.to_string()).unwrap_or("-".into()),
                        e.bytes_written,
                        e.command,
                        e.args.join(" ")
                    );
                }
            }
        }
        BgCmd::Info { node, exec_id } => {
            let i: BgExecInfo = client.get(&path(&node, &exec_id, "")).await?;
            println!("{}", serde_json::to_string_pretty(&i)?);
        }
        BgCmd::Logs {
            node,
            exec_id,
            follow,
            from_id,
        } => {
            let q = format!("?follow={follow}&from_id={from_id}");
            return logs(client, &path(&node, &exec_id, &format!("/logs{q}"))).await;
        }
        BgCmd::Kill {
            node,
            exec_id,
            signal,
            grace_ms,
        } => {
            let body = serde_json::json!({"signal": signal, "grace_ms": grace_ms});
            let k: BgKillResponse = client
                .json(Method::POST, &path(&node, &exec_id, "/kill"), Some(&body))
                .await?;
            if k.running {
                println!("sent {} to {exec_id}", k.signal_sent);
            } else {
                println!("{exec_id} had already ended");
            }
        }
        BgCmd::Wait {
            node,
            exec_id,
            timeout,
        } => {
            let w: BgWaitExit = client
                .get(&path(
                    &node,
                    &exec_id,
                    &format!("/wait-exit?timeout={timeout}"),
                ))
                .await?;
            if w.timed_out {
                eprintln!("bulkhead: {exec_id} still runs after {timeout}s");
                return Ok(ExitCode::from(124));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&w)?);
            }
            let code = w.exit_code.unwrap_or(1);
            return Ok(ExitCode::from(code.clamp(0, 255) as u8));
        }
        BgCmd::Rm { node, exec_id } => {
            let _: BgDeleted = client
                .json(Method::DELETE, &path(&node, &exec_id, ""), None)
                .await?;
            println!("removed {exec_id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Relays a log stream's output to stdout and stderr.
async fn logs(client: &Client, path: &str) -> anyhow::Result<ExitCode> {
    let resp = client
        .send_ok(Method::GET, path, full_body(Bytes::new()), None)
        .await?;
    let mut body = resp.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    while let Some(frame) = body.frame().await {
        let frame = frame.context("log stream broke")?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        pending.extend_from_slice(data);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            let f: LogFrame = serde_json::from_slice(&line).context("malformed log frame")?;
            match f.frame {
                ExecFrame::Stdout { data, encoding } => {
                    out.write_all(&super::exec::output_bytes(data, encoding)?)?;
                    out.flush()?;
                }
                ExecFrame::Stderr { data, encoding } => {
                    err.write_all(&super::exec::output_bytes(data, encoding)?)?;
                    err.flush()?;
                }
                ExecFrame::Gap { message, .. } => eprintln!("bulkhead: {message}"),
                ExecFrame::Error { error, code } => eprintln!("bulkhead: {error} ({code})"),
                ExecFrame::Started { .. } | ExecFrame::Exit { .. } => {}
            }
        }
    }
    if !pending.is_empty() {
        bail!("log stream ended in the middle of a frame");
    }
    Ok(ExitCode::SUCCESS)
}
