//! End to end: exec and copy semantics through the raw API, a create's wait timeout, and
//! concurrent load on one daemon. Bad input on every route: `e2e_api_input.rs`.

mod common;

/// Awaits spawned tasks in order.
async fn join<T>(tasks: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    futures_util::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect()
}
use bulkhead_api::client::full_body;
use bulkhead_api::{BufferedExec, ExecFrame};
use common::*;
use http_body_util::BodyExt;
use hyper::Method;

fn frames(
    rt: &tokio::runtime::Runtime,
    c: &bulkhead_api::Client,
    path: &str,
    body: &'static str,
) -> Vec<ExecFrame> {
    let resp = rt
        .block_on(c.send_ok(Method::POST, path, full_body(body), None))
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/x-ndjson");
    let bytes = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

fn stdout_of(f: &[ExecFrame]) -> String {
    f.iter()
        .filter_map(|x| {
            if let ExecFrame::Stdout { data, .. } = x {
                Some(data.as_str())
            } else {
                None
            }
        })
        .collect()
}

fn exit_of(f: &[ExecFrame]) -> (i32, Option<&str>, bool) {
    match f.last().unwrap() {
        ExecFrame::Exit {
            exit_code,
            signal,
            timed_out,
            ..
        } => (*exit_code, signal.as_deref(), *timed_out),
        other => panic!("last frame is {other:?}"),
    }
}

#[test]
fn exec_semantics() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("ex", &[]);
    let n = d.add();
    let rt = rt();
    let c = d.client();
    let f = frames(
        &rt,
        &c,
        &format!("/vm/{n}/exec?cmd=sh&args=-c&args=echo%20out;%20echo%20err%20%3E%262;%20exit%207"),
        "",
    );
    assert!(matches!(f[0], ExecFrame::Started { pid, .. } if pid > 1));
    assert_eq!(stdout_of(&f), "out\n");
    assert!(f
        .iter()
        .any(|x| matches!(x, ExecFrame::Stderr { data, .. } if data == "err\n")));
    assert_eq!(exit_of(&f), (7, None, false));
    // env, cwd, uid and gid
    let f = frames(&rt, &c, &format!("/vm/{n}/exec?cmd=sh&args=-c&args=echo%20$FOO:$(pwd):$(id%20-u):$(id%20-g)&env=FOO%3Dbar&cwd=/tmp&uid=1000&gid=1001"), "");
    assert_eq!(stdout_of(&f), "bar:/tmp:1000:1001\n");
    // stdin through the request body
    let f = frames(
        &rt,
        &c,
        &format!("/vm/{n}/exec?cmd=wc&args=-c&stdin=true"),
        "twelve bytes",
    );
    assert_eq!(stdout_of(&f).trim(), "12");
    // a signal ends the command
    let f = frames(
        &rt,
        &c,
        &format!("/vm/{n}/exec?cmd=sh&args=-c&args=kill%20-TERM%20$$"),
        "",
    );
    // Slicer's shape: the signal by name, exit_code 128 + its number (as a shell's `$?`).
    assert_eq!(exit_of(&f), (143, Some("SIGTERM"), false));
    // timeout kills the process group
    let t = std::time::Instant::now();
    let f = frames(
        &rt,
        &c,
        &format!("/vm/{n}/exec?cmd=sleep&args=30&timeout=300ms"),
        "",
    );
    assert_eq!(exit_of(&f), (137, Some("SIGKILL"), true));
    assert!(t.elapsed() < std::time::Duration::from_secs(10));
    // large output arrives whole
    let f = frames(&rt, &c, &format!("/vm/{n}/exec?cmd=sh&args=-c&args=head%20-c%2020000000%20/dev/zero%20|%20tr%20%27\\0%27%20x"), "");
    assert_eq!(stdout_of(&f).len(), 20_000_000);
    // buffered mode, and shell=true
    let r = rt
        .block_on(c.send_ok(
            Method::POST,
            &format!("/vm/{n}/exec?cmd=echo%20$((6*7))&shell=true&buffered=true"),
            full_body(""),
            None,
        ))
        .unwrap();
    let b: BufferedExec =
        serde_json::from_slice(&rt.block_on(r.into_body().collect()).unwrap().to_bytes()).unwrap();
    assert!(b.pid.is_some_and(|p| p > 1) && b.started_at.is_some() && b.ended_at.is_some());
    assert_eq!(
        b,
        BufferedExec {
            stdout: "42\n".into(),
            stderr: String::new(),
            encoding: None,
            exit_code: 0,
            signal: None,
            timed_out: false,
            pid: b.pid,
            started_at: b.started_at.clone(),
            ended_at: b.ended_at.clone(),
        }
    );
    // stdout=false drops the stream
    let f = frames(
        &rt,
        &c,
        &format!("/vm/{n}/exec?cmd=echo&args=hidden&stdout=false"),
        "",
    );
    assert_eq!(stdout_of(&f), "");
    // CLI: exit code, stdin, signal
    let o = d.vm(&["exec", &n, "--", "sh", "-c", "exit 42"]);
    assert_eq!(o.status.code(), Some(42));
    let o = d.vm(&["exec", &n, "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(o.status.code(), Some(137));
    assert_eq!(
        d.vm(&["exec", &n, "--", "no-such-command"]).status.code(),
        Some(127)
    );
    assert_eq!(
        d.vm(&["exec", &n, "--", "/etc/passwd"]).status.code(),
        Some(126)
    );
    // A client that goes away kills its command.
    {
        let resp = rt
            .block_on(c.send_ok(
                Method::POST,
                &format!("/vm/{n}/exec?cmd=sh&args=-c&args=echo%20started;%20sleep%20300"),
                full_body(""),
                None,
            ))
            .unwrap();
        drop(resp);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (_, ps, _) = d.sh(&n, "ps -o args | grep -c '^sleep 300' || true");
    assert_eq!(ps.trim(), "0", "orphaned command still runs");
    d.stop_and_assert_clean();
}

#[test]
fn wait_timeout_answers_408_and_cleans_up() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("tmo", &[]);
    let rt = rt();
    let c = d.client();
    let e = rt
        .block_on(c.json::<serde_json::Value>(
            Method::POST,
            &format!("/hostgroup/{}/nodes?wait=agent&timeout=1ns", d.tenant),
            None,
        ))
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(408), "{e}");
    assert!(rt.block_on(c.nodes()).unwrap().is_empty());
    d.stop_and_assert_clean();
}

#[test]
fn hundred_concurrent_creates_execs_and_deletes() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("load", &["--ram-mb", "64"]);
    let rt = rt();
    let c = d.client();
    let g = d.tenant.clone();
    let created: Vec<Result<serde_json::Value, bulkhead_api::ClientError>> = rt.block_on(async {
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let (c, g) = (c.clone(), g.clone());
                tokio::spawn(async move {
                    c.json::<serde_json::Value>(
                        Method::POST,
                        &format!("/hostgroup/{g}/nodes?wait=agent&timeout=120s"),
                        None,
                    )
                    .await
                })
            })
            .collect();
        join(tasks).await
    });
    let mut names = Vec::new();
    for r in created {
        match r {
            Ok(v) => names.push(v["hostname"].as_str().unwrap().to_string()),
            Err(e) => assert!(
                matches!(e.status().map(|s| s.as_u16()), Some(503) | Some(429)),
                "unclean failure: {e}"
            ),
        }
    }
    assert!(
        names.len() >= 90,
        "only {} of 100 creates succeeded",
        names.len()
    );
    let listed: Vec<bulkhead_api::Node> = rt.block_on(c.nodes()).unwrap();
    assert_eq!(listed.len(), names.len());
    let outs: Vec<(String, Result<BufferedExec, String>)> = rt.block_on(async {
        let tasks: Vec<_> = names
            .iter()
            .map(|n| {
                let (c, n) = (c.clone(), n.clone());
                tokio::spawn(async move {
                    let r = c
                        .send_ok(
                            Method::POST,
                            &format!("/vm/{n}/exec?cmd=hostname&buffered=true"),
                            full_body(""),
                            None,
                        )
                        .await;
                    let r = match r {
                        Ok(resp) => resp
                            .into_body()
                            .collect()
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|b| {
                                serde_json::from_slice(&b.to_bytes()).map_err(|e| e.to_string())
                            }),
                        Err(e) => Err(e.to_string()),
                    };
                    (n, r)
                })
            })
            .collect();
        join(tasks).await
    });
    for (n, r) in outs {
        assert_eq!(r.unwrap().stdout.trim(), n, "exec in {n}");
    }
    let deleted: Vec<Result<serde_json::Value, bulkhead_api::ClientError>> = rt.block_on(async {
        let tasks: Vec<_> = names
            .iter()
            .map(|n| {
                let (c, n, g) = (c.clone(), n.clone(), g.clone());
                tokio::spawn(async move {
                    c.json::<serde_json::Value>(
                        Method::DELETE,
                        &format!("/hostgroup/{g}/nodes/{n}"),
                        None,
                    )
                    .await
                })
            })
            .collect();
        join(tasks).await
    });
    assert!(
        deleted.iter().all(|r| r.is_ok()),
        "{:?}",
        deleted.iter().filter(|r| r.is_err()).collect::<Vec<_>>()
    );
    assert!(rt.block_on(c.nodes()).unwrap().is_empty());
    d.stop_and_assert_clean();
}

#[test]
fn cut_off_upload_leaves_nothing() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("cut", &[]);
    let n = d.add();
    let rt = rt();
    let c = d.client();
    d.sh(&n, "mkdir -p /work && echo old > /work/keep");
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>(4);
    let body =
        http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    let path = format!("/vm/{n}/cp?path=/work/keep");
    let r = rt.block_on(async {
        let send = c.send_ok(Method::POST, &path, body, None);
        let feed = async {
            tx.send(Ok(hyper::body::Frame::data(bytes::Bytes::from(
                vec![b'x'; 100_000],
            ))))
            .await
            .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            tx.send(Err(std::io::Error::other("client gave up")))
                .await
                .unwrap();
        };
        let (r, _) = tokio::join!(send, feed);
        r
    });
    assert!(r.is_err(), "a cut-off upload was accepted");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        d.sh(&n, "cat /work/keep").1,
        "old\n",
        "the old file was replaced by a partial upload"
    );
    assert_eq!(
        d.sh(&n, "ls -A /work").1,
        "keep\n",
        "a temporary upload file was left"
    );
    d.stop_and_assert_clean();
}
