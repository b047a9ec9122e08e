//! Rate limits, fair queues and per-tenant connection and in-flight bounds (issue #12, ADR
//! 0026), on a real shared daemon with two tenants: a burst of creates beyond the lifecycle
//! bucket answers 429 `rate_limited` with Retry-After and passes again after waiting; so do
//! execs beyond the exec bucket; a tenant whose lifecycle queue is full gets 503 `busy` while
//! the other tenant's creates pass; a tenant at its in-flight bound gets 503 while the other
//! is unaffected and its own long-lived requests do not count; a tenant at its bound of open
//! long-lived requests (sessions) gets 503 on the shared admin socket while the other's exec
//! passes there; a tenant socket refuses connections beyond its tenant's cap (with
//! Retry-After) while the other tenant's socket serves.

mod common;

use common::answer::{call, get, Answer};
use common::shared::Shared;
use common::*;
use hyper::{Method, StatusCode};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

fn create(c: &bulkhead_api::Client, group: &str, query: &str, body: &str) -> Answer {
    call(
        c,
        Method::POST,
        &format!("/hostgroup/{group}/nodes{query}"),
        body.as_bytes().to_vec(),
        Some("application/json"),
    )
}

fn exec(c: &bulkhead_api::Client, node: &str, cmd: &str) -> Answer {
    call(
        c,
        Method::POST,
        &format!("/vm/{node}/exec?cmd={cmd}"),
        Vec::new(),
        None,
    )
}

/// Runs `f` `n` times at once, each on a thread of its own; the answers in no order.
fn at_once<F>(n: usize, f: F) -> Vec<Answer>
where
    F: Fn() -> Answer + Send + Sync + 'static,
{
    let f = std::sync::Arc::new(f);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f()
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn code(a: &Answer) -> String {
    a.json()["code"].as_str().unwrap_or_default().to_string()
}

fn metric(text: &str, name: &str, tenant: &str) -> u64 {
    let prefix = format!("{name}{{tenant=\"{tenant}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Checks a refusal: status, code, a Retry-After of whole seconds ≥ 1, and what the message
/// must name. Returns Retry-After.
fn assert_refused(a: &Answer, status: StatusCode, want_code: &str, names: &[&str]) -> u64 {
    assert_eq!(a.status, status, "{}", a.text());
    assert_eq!(code(a), want_code, "{}", a.text());
    let secs: u64 = a
        .header("retry-after")
        .parse()
        .unwrap_or_else(|_| panic!("no Retry-After in whole seconds: {:?}", a.headers));
    assert!(secs >= 1, "Retry-After {secs}");
    let msg = a.json()["error"].as_str().unwrap().to_string();
    for n in names {
        assert!(msg.contains(n), "{msg:?} does not name {n:?}");
    }
    secs
}

#[test]
fn bursts_beyond_the_buckets_answer_429_with_retry_after_then_pass_again() {
    if !privileged() {
        return;
    }
    let s = Shared::start(
        "  rate_limits: { lifecycle_per_s: 1, lifecycle_burst: 3, exec_per_s: 1, exec_burst: 4 }\n",
        "",
    );
    let (a, b) = (s.a.clone(), s.b.clone());
    let (ta, tb) = (s.tenant_client(&a), s.tenant_client(&b));

    // Lifecycle: six creates at once, against a burst of 3 at 1 a second.
    let answers = at_once(6, {
        let (ta, a) = (ta.clone(), a.clone());
        move || create(&ta, &a, "", "{}")
    });
    let ok: Vec<&Answer> = answers
        .iter()
        .filter(|x| x.status == StatusCode::CREATED)
        .collect();
    let limited: Vec<&Answer> = answers
        .iter()
        .filter(|x| x.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(ok.len() + limited.len(), 6, "only 201 or 429");
    assert!(ok.len() >= 3, "the burst passes");
    assert!(!limited.is_empty(), "beyond the burst is refused");
    let wait = assert_refused(
        limited[0],
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &[
            "rate limit: 1 lifecycle operations per second (burst 3)",
            &format!("for tenant {a:?}"),
            "retry after",
        ],
    );
    // The other tenant's bucket is its own.
    assert_eq!(create(&tb, &b, "", "{}").status, StatusCode::CREATED);
    // After waiting what Retry-After said, the tenant may create again.
    std::thread::sleep(Duration::from_secs(wait));
    let again = create(&ta, &a, "", "{}");
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
    let node = again.json()["hostname"].as_str().unwrap().to_string();

    // Exec: ten at once against a burst of 4 at 1 a second.
    let answers = at_once(10, {
        let (ta, node) = (ta.clone(), node.clone());
        move || exec(&ta, &node, "true")
    });
    let limited: Vec<&Answer> = answers
        .iter()
        .filter(|x| x.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    let ok = answers
        .iter()
        .filter(|x| x.status == StatusCode::OK)
        .count();
    assert_eq!(ok + limited.len(), 10, "only 200 or 429");
    assert!(
        ok >= 4 && limited.len() >= 4,
        "{ok} passed, {} refused",
        limited.len()
    );
    let wait = assert_refused(
        limited[0],
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        &["1 execs per second (burst 4)", &format!("{a:?}")],
    );
    std::thread::sleep(Duration::from_secs(wait));
    let e = exec(&ta, &node, "true");
    assert_eq!(e.status, StatusCode::OK, "{}", e.text());
    // Reads are not rate limited.
    for _ in 0..20 {
        assert_eq!(get(&ta, "/nodes").status, StatusCode::OK);
    }

    // Metrics count the refusals per tenant.
    let m = get(&s.admin_client(), "/metrics").text();
    assert!(metric(&m, "bulkhead_rate_limited_total", &a) >= 2, "{m}");
    assert_eq!(metric(&m, "bulkhead_rate_limited_total", &b), 0, "{m}");
    s.stop_and_assert_clean();
}

/// Creates that stay admitted for about `secs`: their userdata sleeps and they wait for it.
fn slow_creates(
    c: &bulkhead_api::Client,
    group: &str,
    n: usize,
    secs: u32,
) -> Vec<std::thread::JoinHandle<Answer>> {
    (0..n)
        .map(|_| {
            let (c, g) = (c.clone(), group.to_string());
            std::thread::spawn(move || {
                create(
                    &c,
                    &g,
                    "?wait=userdata&timeout=60s",
                    &format!(r##"{{"userdata": "#!/bin/sh\nsleep {secs}\n"}}"##),
                )
            })
        })
        .collect()
}

#[test]
fn a_full_queue_answers_503_while_the_other_tenant_passes() {
    if !privileged() {
        return;
    }
    let s = Shared::start("  rate_limits: { max_queued: 2 }\n", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    let (ta, tb) = (s.tenant_client(&a), s.tenant_client(&b));
    let slow = slow_creates(&ta, &a, 2, 4);
    // Both are admitted once the tenant's nodes exist.
    let until = Instant::now() + Duration::from_secs(20);
    while get(&ta, "/nodes").json().as_array().unwrap().len() < 2 {
        assert!(Instant::now() < until, "the slow creates never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let full = create(&ta, &a, "", "{}");
    assert_refused(
        &full,
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        &[&format!("tenant {a:?}"), "2 node operations", "max_queued"],
    );
    // Tenant b's creates pass while a's queue is full, and quickly.
    for _ in 0..3 {
        let t = Instant::now();
        let r = create(&tb, &b, "", "{}");
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    }
    for t in slow {
        let r = t.join().unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    // The queue drained: a passes again.
    assert_eq!(create(&ta, &a, "", "{}").status, StatusCode::CREATED);
    let m = get(&s.admin_client(), "/metrics").text();
    assert!(metric(&m, "bulkhead_busy_total", &a) >= 1, "{m}");
    assert_eq!(metric(&m, "bulkhead_busy_total", &b), 0, "{m}");
    s.stop_and_assert_clean();
}

#[test]
fn a_tenant_at_its_in_flight_bound_is_busy_and_the_other_is_not() {
    if !privileged() {
        return;
    }
    let s = Shared::start("  rate_limits: { max_in_flight: 2 }\n", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    let (ta, tb) = (s.tenant_client(&a), s.tenant_client(&b));
    let node = s.add(&s.tenant_sock(&a), &a);
    // Long-lived requests do not count: two execs that run for seconds...
    let long: Vec<_> = (0..2)
        .map(|_| {
            let (ta, node) = (ta.clone(), node.clone());
            std::thread::spawn(move || exec(&ta, &node, "sleep&args=3"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // ...leave room for short ones.
    assert_eq!(get(&ta, "/nodes").status, StatusCode::OK);
    // Two slow creates fill a's places in flight.
    let slow = slow_creates(&ta, &a, 2, 4);
    let until = Instant::now() + Duration::from_secs(20);
    // (Polled over the admin socket and over all tenants: not counted against a.)
    while get(&s.admin_client(), "/nodes")
        .json()
        .as_array()
        .unwrap()
        .len()
        < 3
    {
        assert!(Instant::now() < until, "the slow creates never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let busy = get(&ta, &format!("/hostgroup/{a}/nodes"));
    assert_refused(
        &busy,
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        &[
            &format!("tenant {a:?}"),
            "2 requests in flight",
            "max_in_flight",
        ],
    );
    // Tenant b is unaffected.
    assert_eq!(get(&tb, "/nodes").status, StatusCode::OK);
    assert_eq!(create(&tb, &b, "", "{}").status, StatusCode::CREATED);
    for t in slow {
        assert_eq!(t.join().unwrap().status, StatusCode::CREATED);
    }
    for t in long {
        let r = t.join().unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    assert_eq!(get(&ta, "/nodes").status, StatusCode::OK);
    s.stop_and_assert_clean();
}

#[test]
fn a_burst_of_one_tenant_does_not_hold_up_the_other_tenants_create() {
    if !privileged() {
        return;
    }
    let s = Shared::start("", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    let (ta, tb) = (s.tenant_client(&a), s.tenant_client(&b));
    const BURST: usize = 48;
    let t0 = Instant::now();
    let burst: Vec<_> = (0..BURST)
        .map(|_| {
            let (ta, a) = (ta.clone(), a.clone());
            std::thread::spawn(move || {
                let r = create(&ta, &a, "", "{}");
                (r.status, t0.elapsed())
            })
        })
        .collect();
    // b asks once a's burst is queued.
    std::thread::sleep(Duration::from_millis(100));
    let r = create(&tb, &b, "", "{}");
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let b_done = t0.elapsed();
    let mut a_done: Vec<Duration> = burst
        .into_iter()
        .map(|t| {
            let (st, at) = t.join().unwrap();
            assert_eq!(st, StatusCode::CREATED);
            at
        })
        .collect();
    a_done.sort();
    // Round-robin: b waits for at most one of a's setups per slot, not for a's whole burst
    // (FIFO over all tenants would finish b after nearly all of a's creates).
    let before_b = a_done.iter().filter(|t| **t < b_done).count();
    eprintln!(
        "b's create done at {b_done:?}, after {before_b} of a's {BURST}; a's last at {:?}",
        a_done[BURST - 1]
    );
    assert!(
        before_b < BURST / 2,
        "{before_b} of a's {BURST} creates finished before b's one ({b_done:?}; a's: {a_done:?})"
    );
    s.stop_and_assert_clean();
}

#[test]
fn a_tenants_slow_userdata_holds_no_host_work_slot() {
    if !privileged() {
        return;
    }
    let s = Shared::start("", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    let (ta, tb) = (s.tenant_client(&a), s.tenant_client(&b));
    // More creates waiting for their userdata than the daemon has host-work slots (8).
    let slow = slow_creates(&ta, &a, 12, 6);
    let until = Instant::now() + Duration::from_secs(30);
    while get(&s.admin_client(), "/nodes")
        .json()
        .as_array()
        .unwrap()
        .len()
        < 12
    {
        assert!(Instant::now() < until, "the slow creates never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let r = create(&tb, &b, "?wait=agent", "{}");
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "b's create waited {:?} behind a's userdata",
        t.elapsed()
    );
    for t in slow {
        let r = t.join().unwrap();
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    }
    s.stop_and_assert_clean();
}

#[test]
fn a_tenant_at_its_session_bound_is_busy_and_the_others_exec_passes_on_the_admin_socket() {
    if !privileged() {
        return;
    }
    let s = Shared::start("  rate_limits: { max_sessions: 2 }\n", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    let na = s.add(&s.tenant_sock(&a), &a);
    let nb = s.add(&s.tenant_sock(&b), &b);
    // Everything over the one admin socket: the shared listener a tenant must not fill.
    let admin = s.admin_client();
    let rt = rt();
    // A shell counts while its WebSocket is open (past the upgrade), an exec while it runs.
    let shell = rt
        .block_on(admin.websocket(&format!("/vm/{na}/shell"), &[]))
        .expect("a's shell");
    let long = {
        let (c, n) = (admin.clone(), na.clone());
        std::thread::spawn(move || exec(&c, &n, "sleep&args=4"))
    };
    std::thread::sleep(Duration::from_millis(1000));
    let third = exec(&admin, &na, "true");
    assert_refused(
        &third,
        StatusCode::SERVICE_UNAVAILABLE,
        "busy",
        &[
            &format!("tenant {a:?}"),
            "2 long-lived requests",
            "max_sessions",
        ],
    );
    // Tenant b's exec passes on the same socket; a's short requests are not sessions.
    let eb = exec(&admin, &nb, "true");
    assert_eq!(eb.status, StatusCode::OK, "{}", eb.text());
    assert_eq!(
        get(&admin, &format!("/hostgroup/{a}/nodes")).status,
        StatusCode::OK
    );
    let r = long.join().unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // The sessions end with their streamed answer and their closed WebSocket: with a new
    // shell open (one session), a may exec again (a second).
    drop(shell);
    std::thread::sleep(Duration::from_millis(300));
    let _shell = rt
        .block_on(admin.websocket(&format!("/vm/{na}/shell"), &[]))
        .expect("a's shell again");
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let r = exec(&admin, &na, "true");
        if r.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < until,
            "a's sessions were not released: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = get(&admin, "/metrics").text();
    assert!(metric(&m, "bulkhead_busy_total", &a) >= 1, "{m}");
    assert_eq!(metric(&m, "bulkhead_busy_total", &b), 0, "{m}");
    s.stop_and_assert_clean();
}

/// One request on a fresh connection to `sock`; the raw answer.
fn raw(sock: &std::path::Path, req: &[u8]) -> String {
    let mut c = UnixStream::connect(sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(req).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_tenant_socket_refuses_connections_beyond_its_tenants_cap() {
    if !privileged() {
        return;
    }
    let s = Shared::start("  rate_limits: { max_connections: 3 }\n", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    let (sa, sb) = (s.tenant_sock(&a), s.tenant_sock(&b));
    let req = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    let held: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&sa).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let answer = raw(&sa, req);
    assert!(
        answer.starts_with("HTTP/1.1 503")
            && answer.contains("too_many_connections")
            && answer.contains("config.rate_limits.max_connections")
            && answer
                .to_ascii_lowercase()
                .contains("\r\nretry-after: 1\r\n"),
        "{answer}"
    );
    // The other tenant's socket, and the admin socket, serve.
    assert!(
        raw(&sb, req).starts_with("HTTP/1.1 200"),
        "tenant b refused"
    );
    assert!(
        raw(&s.admin, req).starts_with("HTTP/1.1 200"),
        "admin refused"
    );
    drop(held);
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let r = raw(&sa, req);
        if r.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < until, "the cap was not released: {r}");
        std::thread::sleep(Duration::from_millis(100));
    }
    s.stop_and_assert_clean();
}
