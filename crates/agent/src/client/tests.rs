//! The client against the real agent: the server code of this crate, serving in a child
//! process forked from the test (the agent reaps with `waitpid(-1)` and takes SIGCHLD with
//! `sigwaitinfo`, which needs a process of its own), and against a stand-in for an agent of
//! protocol version 1, which records what it was sent.

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use super::frames::{write_frame, FrameReader};
use super::*;
use crate::proto::{WinSize, CAP_RESIZE, CAP_SIGNAL, CAP_TTY};

#[path = "tests_containers.rs"]
mod container_ops;
#[path = "tests_fs.rs"]
mod fs_ops;
#[path = "tests_setid.rs"]
mod setid_ops;
#[path = "tests_tcp.rs"]
mod tcp_ops;

/// The agent's server in a forked child, on a UNIX socket in a temporary directory.
struct TestAgent {
    pid: libc::pid_t,
    dir: tempfile::TempDir,
}

impl TestAgent {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener =
            std::os::unix::net::UnixListener::bind(dir.path().join("agent.sock")).unwrap();
        // SAFETY: the child only runs the agent's server, which starts its own threads.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: prctl with integer arguments: the agent dies with the test's thread.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            crate::server::serve(listener.as_raw_fd(), false);
        }
        TestAgent { pid, dir }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("agent.sock")
    }

    fn client(&self) -> AgentClient {
        AgentClient::new(self.path())
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        // SAFETY: killing and reaping the child this test forked, by its pid.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// Commands run as uid 0 (the agent calls setgroups): these tests need root, as CI has.
fn root() -> bool {
    // SAFETY: no arguments.
    let r = unsafe { libc::geteuid() } == 0;
    if !r {
        eprintln!("skipped: the agent's exec and copy need root (setgroups, chown)");
    }
    r
}

fn sh(script: &str) -> ExecRequest {
    ExecRequest {
        cmd: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn ping_tells_version_and_capabilities() {
    let agent = TestAgent::start();
    let info = agent.client().ping().await.unwrap();
    assert_eq!(info.version, proto::VERSION);
    for cap in ["exec", "copy", CAP_TTY, CAP_RESIZE, CAP_SIGNAL] {
        assert!(info.has(cap), "{cap} missing from {info:?}");
    }
}

#[tokio::test]
async fn exec_takes_stdin_and_reports_the_exit_code() {
    if !root() {
        return;
    }
    let agent = TestAgent::start();
    let mut s = agent
        .client()
        .exec(ExecRequest {
            stdin: true,
            ..sh("cat; echo oops >&2; exit 3")
        })
        .await
        .unwrap();
    assert!(s.pid() > 0);
    assert_eq!(s.agent_version(), proto::VERSION);
    s.write_stdin(b"hello ").await.unwrap();
    s.write_stdin(b"world").await.unwrap();
    s.close_stdin().await.unwrap();
    let (out, err, st) = s.collect().await.unwrap();
    assert_eq!(text(&out), "hello world");
    assert_eq!(text(&err), "oops\n");
    assert_eq!(
        st,
        ExitStatus {
            code: Some(3),
            signal: None,
            timed_out: false
        }
    );
}

#[tokio::test]
async fn agent_errors_carry_the_agents_code() {
    if !root() {
        return;
    }
    let agent = TestAgent::start();
    let e = agent
        .client()
        .exec(ExecRequest {
            cmd: "no-such-command-here".into(),
            ..Default::default()
        })
        .await
        .err()
        .unwrap();
    assert!(
        matches!(&e, AgentError::Remote { code, .. } if code == "command_not_found"),
        "{e:?}"
    );
    let e = agent
        .client()
        .copy_out("/no/such/file", false)
        .await
        .err()
        .unwrap();
    assert!(matches!(&e, AgentError::Remote { code, .. } if code == "not_found"));
}

#[tokio::test]
async fn split_sessions_feed_stdin_while_output_is_read() {
    if !root() {
        return;
    }
    let agent = TestAgent::start();
    let s = agent
        .client()
        .exec(ExecRequest {
            stdin: true,
            ..sh("cat")
        })
        .await
        .unwrap();
    let (mut input, mut output) = s.split();
    // More than every buffer between here and `cat` holds: written from one task without
    // reading, it would stall.
    const N: usize = 8 << 20;
    let feeder = tokio::spawn(async move {
        let chunk = vec![b'z'; 100_000];
        let mut sent = 0;
        while sent < N {
            let n = chunk.len().min(N - sent);
            input.write_stdin(&chunk[..n]).await.unwrap();
            sent += n;
        }
        input.close_stdin().await.unwrap();
        input
    });
    let mut got = 0;
    let status = loop {
        match output.next().await.unwrap().unwrap() {
            ExecEvent::Stdout(d) => {
                assert!(d.iter().all(|b| *b == b'z'));
                got += d.len();
            }
            ExecEvent::Stderr(d) => panic!("stderr: {}", text(&d)),
            ExecEvent::Exit(s) => break s,
        }
    };
    let _input = feeder.await.unwrap();
    assert_eq!((got, status.code), (N, Some(0)));
    assert!(output.next().await.unwrap().is_none());
}

#[tokio::test]
async fn a_signal_frame_ends_the_command() {
    if !root() {
        return;
    }
    let agent = TestAgent::start();
    let mut s = agent
        .client()
        .exec(sh("echo up; exec sleep 60"))
        .await
        .unwrap();
    assert_eq!(
        s.next().await.unwrap(),
        Some(ExecEvent::Stdout(b"up\n".to_vec()))
    );
    let t = Instant::now();
    s.signal(libc::SIGTERM).await.unwrap();
    let (_, _, st) = s.collect().await.unwrap();
    assert_eq!(
        st,
        ExitStatus {
            code: None,
            signal: Some(libc::SIGTERM),
            timed_out: false
        }
    );
    assert!(t.elapsed() < Duration::from_secs(10));

    // A number that is no signal is answered with an error; the command goes on.
    let mut s = agent
        .client()
        .exec(ExecRequest {
            stdin: true,
            ..sh("cat")
        })
        .await
        .unwrap();
    s.signal(1000).await.unwrap();
    let e = s.next().await.unwrap_err();
    assert!(
        matches!(&e, AgentError::Remote { code, .. } if code == "invalid_argument"),
        "{e:?}"
    );
    s.write_stdin(b"still here").await.unwrap();
    s.close_stdin().await.unwrap();
    let (out, _, st) = s.collect().await.unwrap();
    assert_eq!((text(&out).as_str(), st.code), ("still here", Some(0)));
}

#[tokio::test]
async fn the_timeout_still_kills() {
    if !root() {
        return;
    }
    let agent = TestAgent::start();
    let s = agent
        .client()
        .exec(ExecRequest {
            timeout_ms: Some(200),
            ..sh("sleep 60")
        })
        .await
        .unwrap();
    let (_, _, st) = s.collect().await.unwrap();
    assert!(st.timed_out);
    assert_eq!(st.signal, Some(libc::SIGKILL));
}

/// Reads stdout until `want` appears in all of it.
async fn read_until<R: tokio::io::AsyncRead + Unpin, W: tokio::io::AsyncWrite + Unpin>(
    s: &mut ExecSession<R, W>,
    all: &mut String,
    want: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !all.contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.next()).await {
            Ok(Ok(Some(ExecEvent::Stdout(d)))) => all.push_str(&text(&d)),
            other => panic!("waiting for {want:?} in {all:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_tty_has_its_size_and_follows_resizes() {
    if !root() {
        return;
    }
    let agent = TestAgent::start();
    let c = agent.client();
    let mut s = c
        .exec(ExecRequest {
            tty: Some(WinSize {
                cols: 100,
                rows: 30,
            }),
            ..sh("tty; stty size; echo to-stderr >&2; read x; stty size")
        })
        .await
        .unwrap();
    let mut all = String::new();
    read_until(&mut s, &mut all, "30 100").await;
    read_until(&mut s, &mut all, "to-stderr").await;
    assert!(all.contains("/dev/pts/"), "{all:?}");
    s.resize(WinSize {
        cols: 120,
        rows: 50,
    })
    .await
    .unwrap();
    s.write_stdin(b"\n").await.unwrap();
    let (rest, err, st) = s.collect().await.unwrap();
    all.push_str(&text(&rest));
    assert!(all.contains("50 120"), "{all:?}");
    // One terminal, one output: stderr went to it too.
    assert!(err.is_empty());
    assert_eq!(st.code, Some(0));

    // Closing stdin on a terminal types its end of file: `cat` ends.
    let mut s = c
        .exec(ExecRequest {
            tty: Some(WinSize { cols: 80, rows: 24 }),
            ..sh("cat")
        })
        .await
        .unwrap();
    s.write_stdin(b"typed\n").await.unwrap();
    s.close_stdin().await.unwrap();
    let (out, _, st) = tokio::time::timeout(Duration::from_secs(10), s.collect())
        .await
        .expect("cat on a tty ends at ^D")
        .unwrap();
    assert!(text(&out).contains("typed"), "{:?}", text(&out));
    assert_eq!(st.code, Some(0));
}

#[tokio::test]
async fn copies_go_in_and_come_back() {
    if !root() {
        return;
    }
    let agent = TestAgent::start();
    let c = agent.client();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sub/data.bin");
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let mut up = c
        .copy_in(CopyInRequest {
            path: file.to_str().unwrap().into(),
            mode: Some(0o640),
            ..Default::default()
        })
        .await
        .unwrap();
    for part in data.chunks(300_000) {
        up.write(part).await.unwrap();
    }
    assert_eq!(up.finish().await.unwrap(), data.len() as u64);

    let down = c.copy_out(file.to_str().unwrap(), false).await.unwrap();
    assert_eq!((down.mode, down.size), (0o640, data.len() as u64));
    assert_eq!(down.read_to_end().await.unwrap(), data);

    // A tree as tar, out of one place and into another.
    let tree = c
        .copy_out(dir.path().to_str().unwrap(), true)
        .await
        .unwrap();
    let archive = tree.read_to_end().await.unwrap();
    let dest = dir.path().join("copy");
    let mut up = c
        .copy_in(CopyInRequest {
            path: dest.to_str().unwrap().into(),
            tar: true,
            ..Default::default()
        })
        .await
        .unwrap();
    up.write(&archive).await.unwrap();
    assert_eq!(up.finish().await.unwrap(), archive.len() as u64);
    assert_eq!(std::fs::read(dest.join("sub/data.bin")).unwrap(), data);

    // An upload dropped before its end writes nothing.
    let never = dir.path().join("never");
    let mut up = c
        .copy_in(CopyInRequest {
            path: never.to_str().unwrap().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    up.write(b"partial").await.unwrap();
    drop(up);
    assert!(c.ping().await.is_ok());
    assert!(!never.exists());
}

/// Frames of a kind the agent does not know are answered with a clear error, first frame or
/// mid-exec, and an exec goes on.
#[tokio::test]
async fn unknown_frame_kinds_get_a_clear_error() {
    if !root() {
        return;
    }
    let agent = TestAgent::start();
    let s = UnixStream::connect(agent.path()).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = FrameReader::new(r);
    write_frame(&mut w, Kind::Data, &[]).await.unwrap();
    // Not a request kind at all:
    use tokio::io::AsyncWriteExt;
    w.write_all(&[0, 0, 0, 1, 200]).await.unwrap();
    let e = read_event(&mut r).await.unwrap_err();
    assert!(
        matches!(&e, AgentError::Remote { code, .. } if code == "invalid_request"),
        "{e:?}"
    );

    let s = UnixStream::connect(agent.path()).await.unwrap();
    let (r, mut w) = s.into_split();
    let mut r = FrameReader::new(r);
    w.write_all(&[0, 0, 0, 3, 200, 1, 2]).await.unwrap();
    let e = read_event(&mut r).await.unwrap_err();
    assert!(
        matches!(&e, AgentError::Remote { code, message } if code == "unsupported_frame" && message.contains("unknown frame kind 200")),
        "{e:?}"
    );

    let s = UnixStream::connect(agent.path()).await.unwrap();
    let (r, mut w) = s.into_split();
    let req = serde_json::to_vec(&Request::Exec(ExecRequest {
        stdin: true,
        ..sh("cat")
    }))
    .unwrap();
    write_frame(&mut w, Kind::Request, &req).await.unwrap();
    let mut r = FrameReader::new(r);
    assert!(matches!(
        read_event(&mut r).await.unwrap(),
        Some(Event::Started { version, .. }) if version == proto::VERSION
    ));
    w.write_all(&[0, 0, 0, 3, 77, 9, 9]).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), read_event(&mut r))
        .await
        .expect("an answer, not a hang")
        .unwrap_err();
    assert!(
        matches!(&e, AgentError::Remote { code, message } if code == "unsupported_frame" && message.contains("77")),
        "{e:?}"
    );
    write_frame(&mut w, Kind::Stdin, b"on").await.unwrap();
    write_frame(&mut w, Kind::Stdin, &[]).await.unwrap();
    let mut out = ExecOutput {
        rd: r,
        pid: 0,
        ended: false,
    };
    assert_eq!(
        out.next().await.unwrap(),
        Some(ExecEvent::Stdout(b"on".to_vec()))
    );
    assert!(matches!(
        out.next().await.unwrap(),
        Some(ExecEvent::Exit(ExitStatus { code: Some(0), .. }))
    ));
}

/// A stand-in for an agent of protocol version 1 (as running nodes keep across an upgrade):
/// its pong and `started` carry no version. It records every frame it is sent.
struct OldAgent {
    dir: tempfile::TempDir,
    seen: Arc<Mutex<Vec<Frame>>>,
}

type Frame = (Kind, Vec<u8>);

impl OldAgent {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let l = tokio::net::UnixListener::bind(dir.path().join("agent.sock")).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut r = FrameReader::new(r);
                    while let Ok(Some((k, p))) = r.next().await {
                        log.lock().unwrap().push((k, p.clone()));
                        let answer: &[u8] = match serde_json::from_slice(&p) {
                            Ok(Request::Ping) => br#"{"event":"pong","uptime_ms":5}"#,
                            Ok(Request::Exec(_)) => br#"{"event":"started","pid":42}"#,
                            _ => continue,
                        };
                        write_frame(&mut w, Kind::Event, answer).await.unwrap();
                    }
                });
            }
        });
        OldAgent { dir, seen }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("agent.sock")
    }
}

#[tokio::test]
async fn an_old_agent_is_sent_only_what_it_knows() {
    let old = OldAgent::start().await;
    let c = AgentClient::new(old.path());
    let info = c.ping().await.unwrap();
    assert_eq!(
        (info.version, info.caps.clone()),
        (1, vec!["exec".to_string(), "copy".into()])
    );
    assert_eq!(info.uptime_ms, 5);

    let tty = ExecRequest {
        tty: Some(WinSize { cols: 80, rows: 24 }),
        ..sh("true")
    };
    let e = c.exec(tty.clone()).await.err().unwrap();
    assert!(
        matches!(
            e,
            AgentError::Unsupported {
                feature: "tty",
                version: Some(1)
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("recreate the node"), "{e}");
    // On a stream of its own, without a ping, a tty is not risked either.
    let conn = AgentConn::new(UnixStream::connect(old.path()).await.unwrap());
    let e = conn.exec(tty).await.err().unwrap();
    assert!(
        matches!(e, AgentError::Unsupported { version: None, .. }),
        "{e:?}"
    );

    // A TCP connection (capability `tcp`) is not asked of it: the daemon keeps its own path.
    let e = c.connect_tcp("127.0.0.1", 80).await.err().unwrap();
    assert!(
        matches!(
            e,
            AgentError::Unsupported {
                feature: "tcp",
                version: Some(1)
            }
        ),
        "{e:?}"
    );

    // A plain exec runs; resize and signal are refused before anything is sent, whether the
    // client pinged (AgentClient) or learnt the version from `started` (a bare connection).
    let mut s = c.exec(sh("true")).await.unwrap();
    let conn = AgentConn::new(UnixStream::connect(old.path()).await.unwrap());
    let mut bare = conn.exec(sh("true")).await.unwrap();
    assert_eq!((s.pid(), bare.agent_version()), (42, 1));
    for s in [&mut s, &mut bare] {
        let e = s.resize(WinSize { cols: 1, rows: 1 }).await.unwrap_err();
        assert!(matches!(
            e,
            AgentError::Unsupported {
                feature: "resize",
                version: Some(1)
            }
        ));
        let e = s.signal(libc::SIGTERM).await.unwrap_err();
        assert!(matches!(
            e,
            AgentError::Unsupported {
                feature: "signal",
                version: Some(1)
            }
        ));
        s.close_stdin().await.unwrap();
    }
    drop((s, bare));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = old.seen.lock().unwrap().clone();
    let mut kinds: Vec<u8> = seen.iter().map(|(k, _)| *k as u8).collect();
    kinds.sort();
    // ping, exec + close, exec + close: no tty or connect request, no resize or signal frame.
    let (req, stdin) = (Kind::Request as u8, Kind::Stdin as u8);
    assert_eq!(kinds, [req, req, req, stdin, stdin]);
    for (k, p) in &seen {
        if *k == Kind::Request {
            let v: serde_json::Value = serde_json::from_slice(p).unwrap();
            assert!(v.get("tty").is_none(), "{v}");
        }
    }
}
