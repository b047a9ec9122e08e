//! The event stream of `Start` and `Connect` (#15, C): a process's ring in the background
//! exec registry read as E2B's `ProcessEvent`s. First `start` with the pid in the node, then
//! `data` (stdout and stderr, or `pty` for a terminal) and finally `end`, whose fields say
//! what Go's `os.ProcessState` says in envd (`exited`, `status` like `exit status 2` or
//! `signal: killed`, `error` unless it exited 0). A keepalive event goes out whenever the
//! stream has been silent for the client's `Keepalive-Ping-Interval`.
//!
//! Invariants: the stream never ends the process (a client that leaves, or a `Connect`
//! whose deadline passes, only stops reading); output the ring dropped before this reader
//! got it is skipped (the ring's bound, `bg/ring.rs`), never invented.

use std::sync::Arc;
use std::time::Duration;

use bulkhead_e2b::connect::Msg;
use bulkhead_e2b::process::{process_event, ConnectResponse, ProcessEvent, StartResponse};
use tokio::time::Instant;

use super::connect::{deadline, ServerStream};
use crate::bg::ring::{End, Entry};
use crate::bg::BgExec;

/// Where a reader starts in the process's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    /// All of it (`Start`: the stream opens as the command starts).
    Start,
    /// What comes from now on (`Connect`, as envd attaches).
    Now,
}

/// `StartResponse` and `ConnectResponse`: the same event in two message types.
pub trait Wrap: Msg {
    fn wrap(event: process_event::Event) -> Self;
}

impl Wrap for StartResponse {
    fn wrap(event: process_event::Event) -> Self {
        StartResponse {
            event: Some(ProcessEvent { event: Some(event) }),
        }
    }
}

impl Wrap for ConnectResponse {
    fn wrap(event: process_event::Event) -> Self {
        ConnectResponse {
            event: Some(ProcessEvent { event: Some(event) }),
        }
    }
}

/// Go's name of a signal (`syscall.Signal.String()`), as envd's `status` says it.
fn go_signal_name(sig: i32) -> String {
    let s = match sig {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        _ => return format!("signal {sig}"),
    };
    s.to_string()
}

/// The `end` event of how an exec ended.
pub fn end_event(end: &End) -> process_event::EndEvent {
    if end.signal.is_some() {
        let status = format!("signal: {}", go_signal_name(end.exit_code - 128));
        return process_event::EndEvent {
            exit_code: -1,
            exited: false,
            status: status.clone(),
            error: Some(status),
        };
    }
    if end.exit_code < 0 {
        let why = "the node's agent went away during the process".to_string();
        return process_event::EndEvent {
            exit_code: -1,
            exited: false,
            status: "unknown".into(),
            error: Some(why),
        };
    }
    let status = format!("exit status {}", end.exit_code);
    process_event::EndEvent {
        exit_code: end.exit_code,
        exited: true,
        error: (end.exit_code != 0).then(|| status.clone()),
        status,
    }
}

/// Streams `e`'s events to the client until its end (or the client's leaving, or the
/// stream's `deadline`).
pub async fn follow(e: Arc<BgExec>, stream: ServerStream, from: From, limit: Option<Duration>) {
    match from {
        From::Start => run::<StartResponse>(e, stream, from, limit).await,
        From::Now => run::<ConnectResponse>(e, stream, from, limit).await,
    }
}

async fn run<M: Wrap>(e: Arc<BgExec>, stream: ServerStream, from: From, limit: Option<Duration>) {
    let pid = u32::try_from(e.pid).unwrap_or(0);
    let start = process_event::Event::Start(process_event::StartEvent { pid });
    if !stream.send(&M::wrap(start)).await {
        return;
    }
    let mut changed = e.subscribe();
    let mut cursor = match from {
        From::Start => 0,
        From::Now => e.info().next_id,
    };
    let tty = e.tty();
    let keepalive = stream.call().keepalive;
    let stop_at = limit.map(|d| Instant::now() + d);
    let mut quiet_since = Instant::now();
    loop {
        changed.borrow_and_update();
        let s = e.read(cursor);
        if let Some(g) = s.gap {
            tracing::debug!(
                pid,
                frames = g.frames,
                "a process stream missed output the ring dropped"
            );
        }
        for (_, entry) in s.frames {
            let event = match entry {
                Entry::Output { stderr, data } => {
                    use process_event::data_event::Output;
                    let out = match (tty, stderr) {
                        (true, _) => Output::Pty(data),
                        (false, true) => Output::Stderr(data),
                        (false, false) => Output::Stdout(data),
                    };
                    process_event::Event::Data(process_event::DataEvent { output: Some(out) })
                }
                Entry::Exit(end) => {
                    if stream
                        .send(&M::wrap(process_event::Event::End(end_event(&end))))
                        .await
                    {
                        stream.end(None).await;
                    }
                    return;
                }
                Entry::Started { .. } | Entry::Error { .. } => continue,
            };
            if !stream.send(&M::wrap(event)).await {
                return;
            }
            quiet_since = Instant::now();
        }
        cursor = cursor.max(s.next_id);
        let ping_at = keepalive.map(|k| quiet_since + k);
        tokio::select! {
            r = changed.changed() => {
                if r.is_err() {
                    // The exec is gone without an exit frame: say how it ended, if it did.
                    let end = e.end().map(|end| end_event(&end));
                    if let Some(end) = end {
                        let _ = stream.send(&M::wrap(process_event::Event::End(end))).await;
                    }
                    stream.end(None).await;
                    return;
                }
            }
            _ = stream.closed() => return,
            _ = sleep_until(ping_at) => {
                let ka = process_event::Event::Keepalive(process_event::KeepAlive {});
                if !stream.send(&M::wrap(ka)).await {
                    return;
                }
                quiet_since = Instant::now();
            }
            _ = sleep_until(stop_at) => {
                if let Some(d) = limit {
                    stream.end(Some(deadline(d))).await;
                }
                return;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(exit_code: i32, signal: Option<&str>) -> End {
        End {
            exit_code,
            signal: signal.map(str::to_string),
            timed_out: false,
            ended_at: String::new(),
        }
    }

    #[test]
    fn end_events_say_what_envd_says() {
        let e = end_event(&end(0, None));
        assert_eq!(
            (e.exit_code, e.exited, e.status.as_str(), e.error),
            (0, true, "exit status 0", None)
        );
        let e = end_event(&end(3, None));
        assert_eq!(e.error.as_deref(), Some("exit status 3"));
        let e = end_event(&end(137, Some("SIGKILL")));
        assert_eq!(
            (e.exit_code, e.exited, e.status.as_str()),
            (-1, false, "signal: killed")
        );
        let e = end_event(&end(143, Some("SIGTERM")));
        assert_eq!(e.status, "signal: terminated");
        let e = end_event(&end(-1, None));
        assert!(!e.exited && e.error.is_some());
    }
}
