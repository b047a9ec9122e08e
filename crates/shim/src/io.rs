//! A process's stdio between containerd's FIFOs and the daemon's background exec (#16).
//!
//! Output: `GET /vm/{node}/exec/{id}/logs?follow=true` (NDJSON frames, base64 data) is decoded
//! into the stdout and stderr FIFOs (a terminal's one stream goes to stdout) through the
//! crate's `IoTasks` (which holds the FIFOs so a containerd restart does not break them).
//! Input: the stdin FIFO is streamed as the body of `POST .../stdin?close=true`; CloseIO lets
//! go of the shim's hold on the FIFO, the body ends and the process's stdin closes.
//!
//! Invariant: [`attach`]'s task ends with the exit status once the exit frame came and every
//! output byte before it was handed to the FIFO copies; or, when nobody reads the FIFOs (or the
//! log cannot be followed), 2 s after `wait-exit` says the process ended: an exit is never
//! held back by output waiting for a reader.

use base64::Engine;
use bulkhead_api::{ExecFrame, LogFrame};
use bytes::Bytes;
use http_body_util::BodyExt;
use log::{debug, warn};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::client::{chan_body, Daemon};
use crate::task::Proc;

/// Bytes buffered between the log reader and a FIFO copy.
const PIPE: usize = 64 * 1024;

/// Why stdio could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("stdio fifo: {0}")]
    Fifo(String),
}

/// Connects `p`'s FIFOs to its background exec `bg` on `node` and follows its output. The
/// task answers the exit status (128 + signal for a signal, as a shell's `$?`).
pub fn attach(
    p: &Proc,
    daemon: Daemon,
    node: String,
    bg: String,
) -> Result<tokio::task::JoinHandle<u32>, IoError> {
    let fifo = |e: containerd_shim::Error| IoError::Fifo(e.to_string());
    let mut out: Option<DuplexStream> = None;
    let mut err: Option<DuplexStream> = None;
    if !p.stdio.stdout.is_empty() {
        let (w, r) = tokio::io::duplex(PIPE);
        p.io.copy_to_fifo(r, &p.stdio.stdout).map_err(fifo)?;
        out = Some(w);
    }
    if !p.stdio.stderr.is_empty() && !p.stdio.terminal {
        let (w, r) = tokio::io::duplex(PIPE);
        p.io.copy_to_fifo(r, &p.stdio.stderr).map_err(fifo)?;
        err = Some(w);
    }
    if !p.stdio.stdin.is_empty() {
        let (w, r) = tokio::io::duplex(PIPE);
        p.io.copy_from_fifo(&p.stdio.stdin, w).map_err(fifo)?;
        tokio::spawn(stdin(daemon.clone(), node.clone(), bg.clone(), r));
    }
    Ok(tokio::spawn(output(daemon, node, bg, out, err)))
}

/// Streams what the stdin FIFO gives into the exec's stdin until the FIFO ends.
async fn stdin(daemon: Daemon, node: String, bg: String, mut r: DuplexStream) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let pump = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx
                        .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    if let Err(e) = daemon.stdin(&node, &bg, chan_body(rx)).await {
        debug!("stdin of exec {bg} on {node} ended: {e}");
    }
    pump.abort();
}

/// Follows the exec's log into the output pipes; answers the exit status. The log's exit
/// frame ends it after all output; `wait-exit` beside it ends it when the output cannot keep
/// up (nobody reads the FIFOs, e.g. after `ctr run -d`): the exit is then not held back by
/// output that waits for a reader.
async fn output(
    daemon: Daemon,
    node: String,
    bg: String,
    out: Option<DuplexStream>,
    err: Option<DuplexStream>,
) -> u32 {
    let follow = follow(&daemon, &node, &bg, out, err);
    tokio::pin!(follow);
    tokio::select! {
        biased;
        r = &mut follow => match r {
            Some(code) => code,
            None => gone(&daemon, &node, &bg).await,
        },
        code = ended(&daemon, &node, &bg) => {
            match tokio::time::timeout(std::time::Duration::from_secs(2), &mut follow).await {
                Ok(Some(c)) => c,
                _ => code,
            }
        }
    }
}

/// The log into the pipes until its exit frame (`None`: the stream could not be followed).
async fn follow(
    daemon: &Daemon,
    node: &str,
    bg: &str,
    mut out: Option<DuplexStream>,
    mut err: Option<DuplexStream>,
) -> Option<u32> {
    let mut from = Frames::default();
    // A broken stream is followed again from the next frame (a few times).
    for attempt in 0..5u64 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
        }
        from.restart();
        let mut body = match daemon.logs(node, bg, from.next_id()).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() => break,
            Err(e) => {
                warn!("cannot follow the log of exec {bg} on {node}: {e}");
                continue;
            }
        };
        loop {
            match body.frame().await {
                Some(Ok(f)) => {
                    let Ok(data) = f.into_data() else { continue };
                    for frame in from.push(&data) {
                        match frame {
                            Out::Stdout(b) => write(&mut out, &b).await,
                            Out::Stderr(b) => write(&mut err, &b).await,
                            Out::Exit(code) => {
                                close(out, err).await;
                                return Some(code);
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    warn!("log stream of exec {bg} on {node} broke: {e}");
                    break;
                }
                None => break,
            }
        }
    }
    close(out, err).await;
    None
}

/// The exit status once `wait-exit` says the exec ended; never, while the daemon does not
/// know it (then the log decides).
async fn ended(daemon: &Daemon, node: &str, bg: &str) -> u32 {
    loop {
        match daemon.wait_exit(node, bg).await {
            Ok(w) if !w.running => return w.exit_code.unwrap_or(255) as u32,
            Ok(_) => continue,
            Err(e) if e.is_not_found() => std::future::pending::<()>().await,
            Err(e) => {
                debug!("wait-exit of exec {bg} on {node}: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// The exit status after the log could not be followed: the daemon's word, else 255 (a
/// daemon restart ends background execs).
async fn gone(daemon: &Daemon, node: &str, bg: &str) -> u32 {
    for _ in 0..5 {
        match daemon.wait_exit(node, bg).await {
            Ok(w) if !w.running => return w.exit_code.unwrap_or(255) as u32,
            Ok(_) => continue,
            Err(e) if e.is_not_found() => break,
            Err(e) => {
                warn!("wait-exit of exec {bg} on {node}: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
    255
}

async fn write(w: &mut Option<DuplexStream>, b: &[u8]) {
    if let Some(s) = w {
        if s.write_all(b).await.is_err() {
            *w = None; // the FIFO copy ended (containerd went): drop the rest
        }
    }
}

async fn close(out: Option<DuplexStream>, err: Option<DuplexStream>) {
    for mut s in [out, err].into_iter().flatten() {
        let _ = s.shutdown().await;
    }
}

/// What a log frame means for the FIFOs.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    Exit(u32),
}

/// Splits the NDJSON log stream into frames.
#[derive(Default)]
pub struct Frames {
    buf: Vec<u8>,
    /// The id of the last whole frame read.
    last: u64,
}

impl Frames {
    /// A new stream: a partial line of the old one is dropped (it comes again whole).
    pub fn restart(&mut self) {
        self.buf.clear();
    }

    /// The id to resume from.
    pub fn next_id(&self) -> u64 {
        self.last + 1
    }

    pub fn push(&mut self, data: &[u8]) -> Vec<Out> {
        self.buf.extend_from_slice(data);
        let mut outs = Vec::new();
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let line = &line[..line.len() - 1];
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<LogFrame>(line) {
                Ok(f) => {
                    self.last = self.last.max(f.id);
                    outs.extend(decode(f.frame))
                }
                Err(e) => warn!("a log frame the shim does not know: {e}"),
            }
        }
        outs
    }
}

fn decode(f: ExecFrame) -> Option<Out> {
    let bytes = |data: String, encoding: Option<String>| match encoding.as_deref() {
        Some("base64") => base64::engine::general_purpose::STANDARD
            .decode(data.as_bytes())
            .unwrap_or_else(|e| {
                warn!("undecodable output chunk: {e}");
                Vec::new()
            }),
        _ => data.into_bytes(),
    };
    match f {
        ExecFrame::Stdout { data, encoding } => Some(Out::Stdout(bytes(data, encoding))),
        ExecFrame::Stderr { data, encoding } => Some(Out::Stderr(bytes(data, encoding))),
        ExecFrame::Exit { exit_code, .. } => Some(Out::Exit(exit_code as u32)),
        ExecFrame::Gap { message, .. } => {
            warn!("{message}");
            None
        }
        ExecFrame::Error { error, code } => {
            warn!("exec error ({code}): {error}");
            None
        }
        ExecFrame::Started { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_chunks_decode_in_order() {
        let mut f = Frames::default();
        let text = concat!(
            r#"{"id":1,"type":"started","pid":7,"started_at":"x"}"#,
            "\n",
            r#"{"id":2,"type":"stdout","data":"aGk=","encoding":"base64"}"#,
            "\n",
            r#"{"id":3,"type":"stderr","data":"oops"}"#,
            "\n",
            r#"{"id":4,"type":"exit","exit_code":137,"signal":"SIGKILL","ended_at":"y"}"#,
            "\n"
        );
        let (a, b) = text.as_bytes().split_at(70);
        let mut got = f.push(a);
        got.extend(f.push(b));
        assert_eq!(
            got,
            vec![
                Out::Stdout(b"hi".to_vec()),
                Out::Stderr(b"oops".to_vec()),
                Out::Exit(137)
            ]
        );
        assert_eq!(f.next_id(), 5);
        assert!(f.push(b"{\"id\":5,\"type\":\"gap\"").is_empty());
        assert_eq!(f.next_id(), 5, "a partial line is not read yet");
    }
}
