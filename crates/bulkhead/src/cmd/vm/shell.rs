//! `bulkhead vm shell NODE`: an interactive shell in the node over the `shell` WebSocket
//! (Slicer's framing, `bulkhead_api::shell`). On a terminal, this one goes raw while the
//! session lasts (restored on every way out) and its size follows `SIGWINCH`; without one,
//! stdin is typed into the shell as it is, and its end types end-of-file (`^D`). Exits with
//! the shell's exit status.

use anyhow::Context;
use bulkhead_api::client::enc;
use bulkhead_api::shell::Frame;
use bulkhead_api::Client;
use futures_util::{SinkExt, StreamExt};
use std::io::Write;
use std::process::ExitCode;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args)]
pub struct ShellArgs {
    node: String,
    #[arg(long)]
    uid: Option<u32>,
    #[arg(long)]
    gid: Option<u32>,
    /// The shell to run, default /bin/sh
    #[arg(long)]
    shell: Option<String>,
    #[arg(long)]
    cwd: Option<String>,
}

/// The session's path and query, as Slicer's SDKs build it.
pub fn shell_path(a: &ShellArgs) -> String {
    let mut q = Vec::new();
    if let Some(s) = &a.shell {
        q.push(format!("shell={}", enc(s)));
    }
    if let Some(u) = a.uid {
        q.push(format!("uid={u}"));
    }
    if let Some(g) = a.gid {
        q.push(format!("gid={g}"));
    }
    if let Some(c) = &a.cwd {
        q.push(format!("cwd={}", enc(c)));
    }
    let mut p = format!("/vm/{}/shell", enc(&a.node));
    if !q.is_empty() {
        p += "?";
        p += &q.join("&");
    }
    p
}

/// This terminal in raw mode until dropped.
struct Raw(libc::termios);

impl Raw {
    fn enter() -> Option<Raw> {
        // SAFETY: isatty and tcgetattr only read the state of fd 0 into `t`.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::isatty(0) } != 1 || unsafe { libc::tcgetattr(0, &mut t) } != 0 {
            return None;
        }
        let saved = t;
        // SAFETY: cfmakeraw edits the struct in place; tcsetattr applies it to fd 0.
        unsafe {
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(0, libc::TCSANOW, &t);
        }
        Some(Raw(saved))
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read from fd 0 in `enter`.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.0) };
    }
}

/// This terminal's size, when stdout is one.
fn size() -> Option<(u32, u32)> {
    // SAFETY: TIOCGWINSZ fills a winsize struct; the result is checked before use.
    let mut w: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let r = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut w) };
    (r == 0 && w.ws_col > 0).then_some((w.ws_col as u32, w.ws_row as u32))
}

fn bin(f: Frame) -> Message {
    Message::Binary(f.encode().into())
}

pub async fn shell(client: &Client, a: ShellArgs) -> anyhow::Result<ExitCode> {
    let ws = client.websocket(&shell_path(&a), &[]).await?;
    let raw = Raw::enter();
    let end = session(ws).await;
    drop(raw);
    let _ = std::io::stdout().flush();
    // The stdin task may sit in a blocking read of the terminal that cannot be cancelled (a
    // runtime shutting down would wait for a key press): leave at once, either way.
    match end {
        Ok(code) => std::process::exit(code.clamp(0, 255)),
        Err(e) => {
            eprintln!("bulkhead: {e:#}");
            std::process::exit(1)
        }
    }
}

/// Relays until the shell's end; its exit status.
async fn session(ws: bulkhead_api::ws::Socket) -> anyhow::Result<i32> {
    let (mut tx, mut rx) = ws.split();
    if let Some((cols, rows)) = size() {
        tx.send(bin(Frame::WindowSize { cols, rows })).await?;
    }
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<Frame>(16);
    let typing = in_tx.clone();
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 4096];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    // End of input: end-of-file for the shell (canonical mode).
                    let _ = typing.send(Frame::Data(vec![4])).await;
                    return;
                }
                Ok(n) => {
                    if typing.send(Frame::Data(buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .context("watching the terminal's size")?;
    let mut status = None;
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            Some(f) = in_rx.recv() => {
                if tx.send(bin(f)).await.is_err() {
                    break;
                }
            }
            Some(()) = winch.recv() => {
                if let Some((cols, rows)) = size() {
                    let _ = tx.send(bin(Frame::WindowSize { cols, rows })).await;
                }
            }
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) => match Frame::decode(&b) {
                    Ok(Frame::Data(d)) => {
                        stdout.write_all(&d)?;
                        stdout.flush()?;
                    }
                    Ok(Frame::SessionClose(code)) => status = code.or(Some(0)),
                    _ => {}
                },
                Some(Ok(Message::Close(c))) => {
                    if status.is_none() {
                        let why = c.map(|c| c.reason.to_string()).unwrap_or_default();
                        anyhow::bail!("the session ended without the shell's exit status: {why}");
                    }
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => anyhow::bail!("shell session: {e}"),
                None => break,
            }
        }
    }
    status.context("the session ended without the shell's exit status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_carries_what_the_sdks_send() {
        let a = ShellArgs {
            node: "g-1".into(),
            uid: Some(1000),
            gid: None,
            shell: Some("/bin/bash".into()),
            cwd: Some("/tmp".into()),
        };
        assert_eq!(
            shell_path(&a),
            "/vm/g%2D1/shell?shell=%2Fbin%2Fbash&uid=1000&cwd=%2Ftmp"
        );
    }
}
