//! Helpers of the E2B process tests (#15, C): a daemon with the E2B listener, a sandbox made
//! through its control plane, a runtime in the daemon's network namespace, and `Start`
//! streams read into what they said.

use base64::Engine;
use bulkhead_e2b::connect::Codec;
use bulkhead_e2b::process::{self as p, process_event::data_event::Output, process_event::Event};

use super::{Conn, Envd, Stream};
use crate::common::{cli_ok, Daemon};

pub fn basic(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:"))
    )
}

/// Where the daemon's E2B listener binds (in the daemon's own network namespace).
pub const ADDR: &str = "127.0.0.1:13001";

/// A daemon with the E2B listener, and `policy.exec_as_root: false` if `no_root`.
pub fn e2b_daemon(prefix: &str, no_root: bool) -> Daemon {
    Daemon::start_edited(prefix, &[], |y| {
        let mut s = format!("{}\n    e2b: {{ bind: \"{ADDR}\" }}\n", y.trim_end());
        if no_root {
            s.push_str("  policy:\n    exec_as_root: false\n");
        }
        s
    })
}

/// Runs `f` on a runtime whose thread is in the daemon's network namespace, where the E2B
/// listener is.
pub fn in_daemon_ns<T: Send + 'static>(
    d: &Daemon,
    f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send + 'static,
) -> T {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", d.pid())).unwrap();
    std::thread::spawn(move || {
        // SAFETY: moves this thread (only) into the daemon's network namespace.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        f(&rt)
    })
    .join()
    .unwrap()
}

/// A sandbox made through the control plane with a fresh `e2b_` key (envVars `SBX` and `FOO`);
/// its process service.
pub fn sandbox(d: &Daemon) -> (String, Envd) {
    let key = cli_ok(&[
        "token",
        "create",
        "--socket",
        d.sock(),
        "--tenant",
        &d.tenant,
        "--role",
        "developer",
        "--e2b",
    ])
    .trim()
    .to_string();
    in_daemon_ns(d, move |rt| {
        rt.block_on(async {
            let plane = Envd {
                connect: Conn::Tcp(ADDR.into()),
                prefix: String::new(),
                headers: vec![],
            };
            let body = br#"{"templateID": "base", "timeout": 600, "envVars": {"SBX": "from-sandbox", "FOO": "sandbox"}}"#.to_vec();
            let r = plane
                .http(
                    "POST",
                    "/v2/sandboxes",
                    &[("x-api-key", &key), ("content-type", "application/json")],
                    body,
                )
                .await;
            assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let id = v["sandboxID"].as_str().unwrap().to_string();
            let token = v["envdAccessToken"].as_str().unwrap().to_string();
            let e = Envd {
                connect: Conn::Tcp(ADDR.into()),
                prefix: "/process.Process".into(),
                headers: vec![
                    ("e2b-sandbox-id".into(), id.clone()),
                    ("x-access-token".into(), token),
                ],
            };
            (id, e)
        })
    })
}

pub fn start_req(cmd: &str, args: &[&str]) -> p::StartRequest {
    p::StartRequest {
        process: Some(p::ProcessConfig {
            cmd: cmd.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Default::default()
        }),
        stdin: Some(false),
        ..Default::default()
    }
}

pub fn sh(script: &str) -> p::StartRequest {
    start_req("/bin/sh", &["-c", script])
}

pub fn by_pid(pid: u32) -> Option<p::ProcessSelector> {
    Some(p::ProcessSelector {
        selector: Some(p::process_selector::Selector::Pid(pid)),
    })
}

pub fn by_tag(tag: &str) -> Option<p::ProcessSelector> {
    Some(p::ProcessSelector {
        selector: Some(p::process_selector::Selector::Tag(tag.into())),
    })
}

/// What a finished stream said: pid, stdout, stderr, pty bytes, keepalives, the end event.
#[derive(Debug, Default)]
pub struct Run {
    pub pid: u32,
    pub out: Vec<u8>,
    pub err: Vec<u8>,
    pub pty: Vec<u8>,
    pub keepalives: usize,
    pub end: Option<p::process_event::EndEvent>,
}

pub fn take(r: &mut Run, ev: Option<p::ProcessEvent>) {
    match ev.and_then(|e| e.event) {
        Some(Event::Start(s)) => r.pid = s.pid,
        Some(Event::Data(d)) => match d.output {
            Some(Output::Stdout(b)) => r.out.extend(b),
            Some(Output::Stderr(b)) => r.err.extend(b),
            Some(Output::Pty(b)) => r.pty.extend(b),
            None => panic!("an empty data event"),
        },
        Some(Event::End(e)) => r.end = Some(e),
        Some(Event::Keepalive(_)) => r.keepalives += 1,
        None => panic!("an empty event"),
    }
}

/// Reads a Start stream to its end.
pub async fn finish(s: &mut Stream) -> Run {
    let mut r = Run::default();
    let (msgs, end) = s.rest::<p::StartResponse>().await;
    for m in msgs {
        take(&mut r, m.event);
    }
    end.unwrap();
    r
}

/// Reads a Start stream's first event: the pid.
pub async fn started(s: &mut Stream) -> u32 {
    let m = s.next::<p::StartResponse>().await.expect("a start event");
    match m.event.and_then(|e| e.event) {
        Some(Event::Start(st)) => st.pid,
        other => panic!("the first event is not start: {other:?}"),
    }
}

pub async fn run(e: &Envd, codec: Codec, req: p::StartRequest, h: &[(&str, &str)]) -> Run {
    let mut s = e.stream(codec, "Start", &req, h).await;
    finish(&mut s).await
}
