//! End to end, over a real daemon and node: E2B's `process.Process` (#15, C; ADR 0038) with
//! raw Connect calls in JSON and in binary protobuf, through the E2B listener
//! (`config.api.e2b`) as the SDKs reach it (a sandbox made by `POST /v2/sandboxes` with an
//! `e2b_` key, then `E2b-Sandbox-Id` and `X-Access-Token` on every call): a command's
//! output, exit code and end status; its environment, working directory and user; stdin (SendInput, StreamInput,
//! CloseStdin); signals; List; Connect by tag (new output from the attach point); a terminal
//! and its resize; keepalives and the command's timeout; Connect errors (unknown pid, bad
//! body, wrong content type, a cwd that does not exist); processes are background execs
//! (Slicer's list sees them); and the admission policy's `exec_as_root: false`.

mod common;
mod e2b_client;

use std::time::{Duration, Instant};

use bulkhead_e2b::connect::{Code, Codec};
use bulkhead_e2b::process::{self as p, process_event::Event};
use common::*;
use e2b_client::process::*;
use e2b_client::Envd;

#[test]
fn process_service() {
    if !privileged() {
        return;
    }
    let d = e2b_daemon("e2bproc", false);
    let (node, e) = sandbox(&d);
    let e2 = e.clone();
    in_daemon_ns(&d, move |rt| {
        for codec in [Codec::Json, Codec::Proto] {
            rt.block_on(output_env_cwd_user(&e2, codec));
            rt.block_on(stdin_signals_list_connect(&e2, codec));
            rt.block_on(terminal_keepalive_timeout(&e2, codec));
            rt.block_on(errors(&e2, codec));
        }
    });
    // One registry: Slicer's list shows an E2B process while it runs.
    let (tx, rx) = std::sync::mpsc::channel::<u32>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let e3 = e.clone();
    let t = std::thread::spawn({
        let ns = format!("/proc/{}/ns/net", d.pid());
        move || {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(ns).unwrap();
            // SAFETY: moves this thread (only) into the daemon's network namespace.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            rt().block_on(async {
                let mut s = e3.stream(Codec::Json, "Start", &sh("sleep 30"), &[]).await;
                let pid = started(&mut s).await;
                tx.send(pid).unwrap();
                done_rx.recv().unwrap();
                let sig = p::SendSignalRequest {
                    process: by_pid(pid),
                    signal: p::Signal::Sigkill as i32,
                };
                let _: p::SendSignalResponse = e3
                    .unary(Codec::Json, "SendSignal", &sig, &[])
                    .await
                    .unwrap();
                assert_eq!(finish(&mut s).await.end.unwrap().status, "signal: killed");
            })
        }
    });
    let pid = rx.recv().unwrap();
    let l: Vec<bulkhead_api::BgExecInfo> = common::exec_wire::ok_json(
        &rt(),
        &d.client(),
        hyper::Method::GET,
        &format!("/vm/{node}/exec"),
        None,
    );
    let me = l
        .iter()
        .find(|x| x.pid == pid as i32)
        .expect("in Slicer's list");
    assert!(me.running && me.command == "/bin/sh", "{me:?}");
    done_tx.send(()).unwrap();
    t.join().unwrap();

    // Another sandbox's access token does not reach this sandbox's processes.
    let (_, other) = sandbox(&d);
    let mut wrong = e.clone();
    wrong.headers[1].1 = other.headers[1].1.clone();
    let r = in_daemon_ns(&d, move |rt| {
        rt.block_on(wrong.raw("List", "application/json", &[], b"{}".to_vec()))
    });
    assert_eq!(r.status, 401, "{r:?}");
}

/// `policy.exec_as_root: false` refuses a root process (Connect `permission_denied`) and
/// lets `user` run.
#[test]
fn exec_as_root_policy() {
    if !privileged() {
        return;
    }
    let d = e2b_daemon("e2bpol", true);
    let (_, e) = sandbox(&d);
    in_daemon_ns(&d, move |rt| {
        rt.block_on(async {
            let mut s = e
                .stream(
                    Codec::Json,
                    "Start",
                    &sh("id -u"),
                    &[("authorization", &basic("root"))],
                )
                .await;
            let (msgs, end) = s.rest::<p::StartResponse>().await;
            assert!(msgs.is_empty());
            let err = end.unwrap_err();
            assert_eq!(err.code, Code::PermissionDenied, "{err}");
            assert!(err.message.contains("exec_as_root"), "{err}");
            let mut req = sh("id -u");
            req.process.as_mut().unwrap().cwd = Some("/tmp".into());
            let r = run(&e, Codec::Proto, req, &[("authorization", &basic("user"))]).await;
            assert_eq!(r.out, b"1000\n");
        })
    });
}

async fn output_env_cwd_user(e: &Envd, codec: Codec) {
    // Output, exit code, end status.
    let r = run(e, codec, sh("echo out; echo err >&2; exit 3"), &[]).await;
    assert!(r.pid > 1, "{r:?}");
    assert_eq!(
        (r.out.as_slice(), r.err.as_slice()),
        (&b"out\n"[..], &b"err\n"[..])
    );
    let end = r.end.unwrap();
    assert_eq!(
        (end.exit_code, end.exited, end.status.as_str()),
        (3, true, "exit status 3")
    );
    assert_eq!(end.error.as_deref(), Some("exit status 3"));
    let r = run(e, codec, sh("true"), &[]).await;
    let end = r.end.unwrap();
    assert_eq!((end.exit_code, end.exited, end.error), (0, true, None));

    // Environment: the sandbox's envVars under the request's envs, HOME/USER/LOGNAME of the
    // user.
    let script = "echo \"$FOO|$SBX|$HOME|$USER|$LOGNAME\"";
    let mut req = sh(script);
    req.process.as_mut().unwrap().envs = [("FOO".to_string(), "bar baz".to_string())].into();
    let root = basic("root");
    let r = run(e, codec, req, &[("authorization", &root)]).await;
    assert_eq!(
        String::from_utf8_lossy(&r.out),
        "bar baz|from-sandbox|/root|root|root\n"
    );
    let r = run(e, codec, sh(script), &[("authorization", &root)]).await;
    assert_eq!(
        String::from_utf8_lossy(&r.out),
        "sandbox|from-sandbox|/root|root|root\n"
    );

    // Working directory: asked, and the user's home by default; users by Basic header.
    let mut req = sh("pwd; id -u; id -g");
    req.process.as_mut().unwrap().cwd = Some("/tmp".into());
    let u = basic("user");
    let r = run(e, codec, req.clone(), &[("authorization", &u)]).await;
    assert_eq!(String::from_utf8_lossy(&r.out), "/tmp\n1000\n1000\n");
    let r = run(e, codec, req, &[("authorization", &root)]).await;
    assert_eq!(String::from_utf8_lossy(&r.out), "/tmp\n0\n0\n");
    let r = run(e, codec, sh("pwd"), &[("authorization", &root)]).await;
    assert_eq!(String::from_utf8_lossy(&r.out), "/root\n");
}

async fn stdin_signals_list_connect(e: &Envd, codec: Codec) {
    // stdin: SendInput then CloseStdin.
    let mut req = start_req("cat", &[]);
    req.stdin = Some(true);
    let mut s = e.stream(codec, "Start", &req, &[]).await;
    let pid = started(&mut s).await;
    let input = |d: &[u8]| p::SendInputRequest {
        process: by_pid(pid),
        input: Some(p::ProcessInput {
            input: Some(p::process_input::Input::Stdin(d.to_vec())),
        }),
    };
    let _: p::SendInputResponse = e
        .unary(codec, "SendInput", &input(b"hello "), &[])
        .await
        .unwrap();
    let _: p::SendInputResponse = e
        .unary(codec, "SendInput", &input(b"world\n"), &[])
        .await
        .unwrap();
    let _: p::CloseStdinResponse = e
        .unary(
            codec,
            "CloseStdin",
            &p::CloseStdinRequest {
                process: by_pid(pid),
            },
            &[],
        )
        .await
        .unwrap();
    let r = finish(&mut s).await;
    assert_eq!(r.out, b"hello world\n");
    assert_eq!(r.end.unwrap().exit_code, 0);

    // stdin through StreamInput, in order, with a keepalive among the data.
    let mut s = e.stream(codec, "Start", &req, &[]).await;
    let pid = started(&mut s).await;
    use p::stream_input_request::{DataEvent, Event as In, KeepAlive, StartEvent};
    let data = |d: &str| p::StreamInputRequest {
        event: Some(In::Data(DataEvent {
            input: Some(p::ProcessInput {
                input: Some(p::process_input::Input::Stdin(d.as_bytes().to_vec())),
            }),
        })),
    };
    let ms = Duration::from_millis(50);
    let msgs = vec![
        (
            ms,
            p::StreamInputRequest {
                event: Some(In::Start(StartEvent {
                    process: by_pid(pid),
                })),
            },
        ),
        (ms, data("a")),
        (
            ms,
            p::StreamInputRequest {
                event: Some(In::Keepalive(KeepAlive {})),
            },
        ),
        (ms, data("b\n")),
    ];
    let _: p::StreamInputResponse = e.client_stream(codec, "StreamInput", msgs).await.unwrap();
    let _: p::CloseStdinResponse = e
        .unary(
            codec,
            "CloseStdin",
            &p::CloseStdinRequest {
                process: by_pid(pid),
            },
            &[],
        )
        .await
        .unwrap();
    let r = finish(&mut s).await;
    assert_eq!(r.out, b"ab\n");
    // A stream naming no process first is refused in its end-of-stream.
    let err = e
        .client_stream::<_, p::StreamInputResponse>(codec, "StreamInput", vec![(ms, data("x"))])
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::InvalidArgument, "{err}");

    // Input to a process started without stdin is refused.
    let mut s = e.stream(codec, "Start", &sh("sleep 30"), &[]).await;
    let pid = started(&mut s).await;
    // (the `input` closure names the earlier, ended, process)
    let gone = e
        .unary::<_, p::SendInputResponse>(codec, "SendInput", &input(b"x"), &[])
        .await
        .unwrap_err();
    assert_eq!(gone.code, Code::NotFound, "{gone}");
    let refused = e
        .unary::<_, p::SendInputResponse>(
            codec,
            "SendInput",
            &p::SendInputRequest {
                process: by_pid(pid),
                input: Some(p::ProcessInput {
                    input: Some(p::process_input::Input::Stdin(b"x".to_vec())),
                }),
            },
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code, Code::FailedPrecondition, "{refused}");

    // List shows it (with its config), SIGTERM ends it with envd's status.
    let l: p::ListResponse = e
        .unary(codec, "List", &p::ListRequest {}, &[])
        .await
        .unwrap();
    let me = l.processes.iter().find(|x| x.pid == pid).expect("listed");
    assert_eq!(me.config.as_ref().unwrap().cmd, "/bin/sh");
    let sig = |pid, s: p::Signal| p::SendSignalRequest {
        process: by_pid(pid),
        signal: s as i32,
    };
    let _: p::SendSignalResponse = e
        .unary(codec, "SendSignal", &sig(pid, p::Signal::Sigterm), &[])
        .await
        .unwrap();
    let end = finish(&mut s).await.end.unwrap();
    assert_eq!(
        (end.exit_code, end.exited, end.status.as_str()),
        (-1, false, "signal: terminated")
    );
    // Gone once ended: not listed, not found.
    let l: p::ListResponse = e
        .unary(codec, "List", &p::ListRequest {}, &[])
        .await
        .unwrap();
    assert!(l.processes.iter().all(|x| x.pid != pid), "{l:?}");
    let err = e
        .unary::<_, p::SendSignalResponse>(codec, "SendSignal", &sig(pid, p::Signal::Sigkill), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    assert!(err.message.contains(&format!("pid {pid}")), "{err}");

    // Connect by tag: the start event names the same pid, then new output, then the end.
    let mut req = sh("read x; echo \"got $x\"; sleep 30");
    req.tag = Some("web".into());
    req.stdin = Some(true);
    req.process.as_mut().unwrap().envs = [("K".to_string(), "v".to_string())].into();
    let mut s = e.stream(codec, "Start", &req, &[]).await;
    let pid = started(&mut s).await;
    let l: p::ListResponse = e
        .unary(codec, "List", &p::ListRequest {}, &[])
        .await
        .unwrap();
    let me = l.processes.iter().find(|x| x.pid == pid).expect("listed");
    assert_eq!(me.tag.as_deref(), Some("web"));
    assert_eq!(
        me.config
            .as_ref()
            .unwrap()
            .envs
            .get("K")
            .map(String::as_str),
        Some("v")
    );
    let mut c = e
        .stream(
            codec,
            "Connect",
            &p::ConnectRequest {
                process: by_tag("web"),
            },
            &[],
        )
        .await;
    let m = c.next::<p::ConnectResponse>().await.unwrap();
    assert!(matches!(m.event.and_then(|x| x.event), Some(Event::Start(st)) if st.pid == pid));
    let _: p::SendInputResponse = e
        .unary(
            codec,
            "SendInput",
            &p::SendInputRequest {
                process: by_tag("web"),
                input: Some(p::ProcessInput {
                    input: Some(p::process_input::Input::Stdin(b"it\n".to_vec())),
                }),
            },
            &[],
        )
        .await
        .unwrap();
    let mut attached = Run::default();
    while attached.out != b"got it\n" {
        let m = c
            .next::<p::ConnectResponse>()
            .await
            .expect("output on the attached stream");
        take(&mut attached, m.event);
    }
    let _: p::SendSignalResponse = e
        .unary(codec, "SendSignal", &sig(pid, p::Signal::Sigkill), &[])
        .await
        .unwrap();
    let (rest, end) = c.rest::<p::ConnectResponse>().await;
    end.unwrap();
    for m in rest {
        take(&mut attached, m.event);
    }
    assert_eq!(attached.end.unwrap().status, "signal: killed");
    let r = finish(&mut s).await;
    assert_eq!(r.out, b"got it\n");
    let err = e
        .stream(
            codec,
            "Connect",
            &p::ConnectRequest {
                process: by_tag("web"),
            },
            &[],
        )
        .await
        .rest::<p::ConnectResponse>()
        .await
        .1
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound, "{err}");
}

async fn terminal_keepalive_timeout(e: &Envd, codec: Codec) {
    // A terminal of 80x24, resized to 100x40 while the command waits for a line.
    let mut req = sh("stty size; read x; stty size");
    req.pty = Some(p::Pty {
        size: Some(p::pty::Size { cols: 80, rows: 24 }),
    });
    let mut s = e.stream(codec, "Start", &req, &[]).await;
    let pid = started(&mut s).await;
    let mut r = Run::default();
    while !String::from_utf8_lossy(&r.pty).contains("24 80") {
        take(
            &mut r,
            s.next::<p::StartResponse>()
                .await
                .expect("pty output")
                .event,
        );
    }
    let _: p::UpdateResponse = e
        .unary(
            codec,
            "Update",
            &p::UpdateRequest {
                process: by_pid(pid),
                pty: Some(p::Pty {
                    size: Some(p::pty::Size {
                        cols: 100,
                        rows: 40,
                    }),
                }),
            },
            &[],
        )
        .await
        .unwrap();
    let _: p::SendInputResponse = e
        .unary(
            codec,
            "SendInput",
            &p::SendInputRequest {
                process: by_pid(pid),
                input: Some(p::ProcessInput {
                    input: Some(p::process_input::Input::Pty(b"\n".to_vec())),
                }),
            },
            &[],
        )
        .await
        .unwrap();
    let rest = finish(&mut s).await;
    r.pty.extend(rest.pty);
    let text = String::from_utf8_lossy(&r.pty);
    assert!(text.contains("40 100"), "{text:?}");
    assert!(
        r.out.is_empty() && rest.out.is_empty(),
        "a terminal's output is pty"
    );
    assert_eq!(rest.end.unwrap().exit_code, 0);

    // Keepalives while silent; the command's timeout (Connect-Timeout-Ms) kills it.
    let t0 = Instant::now();
    let r = run(
        e,
        codec,
        sh("sleep 30"),
        &[
            ("keepalive-ping-interval", "1"),
            ("connect-timeout-ms", "2500"),
        ],
    )
    .await;
    assert!(t0.elapsed() < Duration::from_secs(20), "{:?}", t0.elapsed());
    assert!(r.keepalives >= 1, "{r:?}");
    assert_eq!(r.end.unwrap().status, "signal: killed");
}

async fn errors(e: &Envd, codec: Codec) {
    // Unknown pid: not_found (404 for a unary call).
    let err = e
        .unary::<_, p::CloseStdinResponse>(
            codec,
            "CloseStdin",
            &p::CloseStdinRequest {
                process: by_pid(999_999),
            },
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, Code::NotFound);
    // A cwd that does not exist, an empty cmd, an unknown user: the stream ends in an error.
    for (req, h, code) in [
        (
            {
                let mut r = sh("true");
                r.process.as_mut().unwrap().cwd = Some("/no/such/dir".into());
                r
            },
            basic("root"),
            Code::InvalidArgument,
        ),
        (start_req("", &[]), basic("root"), Code::InvalidArgument),
        (sh("true"), basic("admin"), Code::InvalidArgument),
    ] {
        let mut s = e
            .stream(codec, "Start", &req, &[("authorization", &h)])
            .await;
        let (msgs, end) = s.rest::<p::StartResponse>().await;
        assert!(msgs.is_empty(), "{msgs:?}");
        assert_eq!(end.unwrap_err().code, code);
    }
    // A bad body, a wrong content type.
    let r = e
        .raw("List", "application/json", &[], b"{\"x\":".to_vec())
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    let err = bulkhead_e2b::connect::ConnectError::from_json(&r.body).unwrap();
    assert_eq!(err.code, Code::InvalidArgument);
    let r = e.raw("List", "text/plain", &[], vec![]).await;
    assert_eq!(r.status, 415, "{r:?}");
    let r = e
        .raw("Start", "application/json", &[], b"{}".to_vec())
        .await;
    assert_eq!(
        r.status, 415,
        "a stream method takes a stream content type: {r:?}"
    );
    let r = e
        .raw(
            "List",
            "application/json",
            &[("connect-timeout-ms", "soon")],
            vec![],
        )
        .await;
    assert_eq!(r.status, 400, "{r:?}");
}
