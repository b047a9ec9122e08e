//! Usage (#14, part E; ADR 0035) through the real daemon, sampling every second:
//! - a jail node burns ~2.5 s of CPU: `cpu_seconds` covers what the node's shell itself
//!   measured (`times`) within a tolerance of 0.5 s + 10 % (the sampler's own figure includes
//!   the node's agent and the exec's shell start);
//! - it holds 64 MiB (a file on its tmpfs layer, charged to its cgroup): its memory peak is at
//!   least 64 MiB and at most 64 MiB + 48 MiB (the agent and shell's own memory), and the
//!   memory byte-seconds grow at an average between 56 MiB and 64 + 48 MiB per second while
//!   it is held;
//! - node-seconds and execs count; the tenant's memory peak is a gauge metric; figures survive
//!   a daemon crash and restart (never counted twice: what was counted before stays within
//!   1 s of node time of what is counted after);
//! - a deleted node's figures stay (`deleted: true`);
//! - an OOM kill in a node counts in `bulkhead_node_oom_kills_total`, raises the daemon's
//!   `node.oom_kill` event (on `GET /events`) and writes the daemon's own line in the
//!   tenant's audit trail (principal `daemon`, via `internal`; on `GET /audit`), and
//!   `bulkhead audit verify` passes on that trail after the stop;
//! - a networked node's bytes out are what it sent (1 MiB to a sink: between 1 MiB and
//!   1.15 MiB + 64 KiB with headers and retransmits), bytes in count its peer's answers, and a
//!   shutdown and relaunch (a new cgroup and veth, counters from zero) adds to them;
//! - on a shared daemon a tenant sees only its own usage, a foreign `?tenant=` is a 404, and
//!   global-admin sees every tenant's;
//! - a tenant with one unattached 64 MiB volume and no node accrues storage byte-seconds of
//!   64 MiB × the seconds elapsed, within 1.5 s of 64 MiB (a round each second at either end
//!   of the window, and the request's own time), across a daemon crash and restart, in its
//!   `(stored)` row, its tenant total and its metric.

mod common;

#[path = "common/volumes.rs"]
mod vols;

use common::shared::Shared;
use common::*;
use hyper::Method;
use serde_json::Value;
use std::time::Duration;

const MIB: f64 = (1u64 << 20) as f64;

async fn call(c: &bulkhead_api::Client, path: &str) -> (u16, Value) {
    use http_body_util::BodyExt;
    let r = c
        .send(
            Method::GET,
            path,
            bulkhead_api::client::full_body(Vec::new()),
            None,
        )
        .await
        .unwrap();
    let s = r.status().as_u16();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

fn get(c: &bulkhead_api::Client, path: &str) -> Value {
    let (s, v) = rt().block_on(call(c, path));
    assert_eq!(s, 200, "GET {path}: {v}");
    v
}

/// A GET's status and body as text (metrics, NDJSON).
fn text(c: &bulkhead_api::Client, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    rt().block_on(async {
        let r = c
            .send(
                Method::GET,
                path,
                bulkhead_api::client::full_body(Vec::new()),
                None,
            )
            .await
            .unwrap();
        let st = r.status().as_u16();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (st, String::from_utf8_lossy(&b).into_owned())
    })
}

fn metrics(c: &bulkhead_api::Client) -> String {
    text(c, "/metrics").1
}

/// The usage row of node `node` (`group_by=node`).
fn node_row(c: &bulkhead_api::Client, node: &str) -> Value {
    let v = get(c, "/usage?group_by=node");
    v["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == node)
        .cloned()
        .unwrap_or_else(|| panic!("no usage row of {node}: {v}"))
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// Waits two sampling rounds (1 s each).
fn rounds() {
    std::thread::sleep(Duration::from_millis(2500));
}

/// Seconds summed over a shell's `times` output (`0m1.23s 0m0.01s` lines).
fn times_total(out: &str) -> f64 {
    out.split_whitespace()
        .filter_map(|w| {
            let w = w.strip_suffix('s')?;
            let (m, s) = w.split_once('m')?;
            Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
        })
        .sum()
}

fn with_usage(yaml: String) -> String {
    yaml.replacen(
        "config:\n",
        "config:\n  usage:\n    sample_interval: 1s\n",
        1,
    )
}

#[test]
fn a_nodes_cpu_and_memory_are_counted_survive_a_restart_and_its_delete() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start_edited("us", &["--ram-mb", "256"], with_usage);
    let c = d.client();
    let node = d.add();
    // ~2.5 s of CPU in the node (the shell's own user time, so a loaded host only makes it
    // take longer; 30 s at most); the shell says what it and its children used.
    let (code, out, err) = d.sh(
        &node,
        "end=$(($(date +%s)+30)); while [ $(cut -d' ' -f14 /proc/$$/stat) -lt 250 ] && [ $(date +%s) -lt $end ]; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; done; times",
    );
    assert_eq!(code, 0, "{out}{err}");
    let burnt = times_total(&out);
    assert!(burnt >= 1.0, "the loop burnt only {burnt}s of CPU: {out}");
    rounds();
    let r = node_row(&c, &node);
    let cpu = f(&r, "cpu_seconds");
    eprintln!("usage: the node measured {burnt}s of CPU; the sampler counted {cpu}s: {r}");
    assert!(
        cpu >= burnt - 0.05 && cpu <= burnt + 0.5 + burnt * 0.1,
        "cpu_seconds {cpu} vs {burnt} the node measured: {r}"
    );
    assert!(f(&r, "node_seconds") >= burnt, "{r}");
    assert_eq!(r["execs"], 1, "{r}");
    assert_eq!(r["deleted"], Value::Null, "{r}");
    // 64 MiB held on the node's tmpfs layer, charged to its cgroup.
    let (code, out, err) = d.sh(&node, "dd if=/dev/zero of=/tmp/hold bs=1M count=64 2>&1");
    assert_eq!(code, 0, "{out}{err}");
    rounds();
    let before = node_row(&c, &node);
    std::thread::sleep(Duration::from_secs(4));
    let after = node_row(&c, &node);
    let held = (f(&after, "memory_byte_seconds") - f(&before, "memory_byte_seconds"))
        / (f(&after, "node_seconds") - f(&before, "node_seconds"));
    assert!(
        (56.0 * MIB..=(64.0 + 48.0) * MIB).contains(&held),
        "average memory {} MiB while 64 MiB were held: {before} {after}",
        held / MIB
    );
    eprintln!(
        "usage: average memory {:.1} MiB while 64 MiB were held: {after}",
        held / MIB
    );
    let peak = f(&after, "memory_peak_bytes");
    assert!(
        (64.0 * MIB..=(64.0 + 48.0) * MIB).contains(&peak),
        "peak {} MiB: {after}",
        peak / MIB
    );
    assert_eq!(after["execs"], 2, "{after}");
    // A crash and restart: the nodes run on; nothing is counted twice, nothing lost.
    d.crash();
    std::thread::sleep(Duration::from_secs(1));
    d.spawn();
    let c = d.client();
    rounds();
    let again = node_row(&c, &node);
    assert!(
        f(&again, "cpu_seconds") >= cpu && f(&again, "cpu_seconds") <= cpu + 1.0,
        "cpu before {cpu}, after the restart: {again}"
    );
    let (was, now) = (f(&after, "node_seconds"), f(&again, "node_seconds"));
    assert!(now >= was + 2.0, "node_seconds {was} → {now}");
    assert!(
        f(&again, "memory_byte_seconds") >= f(&after, "memory_byte_seconds"),
        "{again}"
    );
    // Tenant totals and metrics agree with the node's.
    let t = get(&c, "/usage");
    assert_eq!(t["group_by"], "tenant");
    let row = &t["usage"][0];
    assert_eq!(row["tenant"], d.tenant.as_str(), "{t}");
    assert!(f(row, "cpu_seconds") >= f(&again, "cpu_seconds"), "{t}");
    let m = metrics(&c);
    let line = format!(
        "bulkhead_usage_cpu_seconds_total{{tenant=\"{}\"}} ",
        d.tenant
    );
    let mcpu: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in metrics"))
        .parse()
        .unwrap();
    assert!(mcpu >= cpu, "metric {mcpu} < {cpu}");
    // The memory peak is a gauge per tenant too, read back from the store after the restart:
    // at least the node's peak, at most what GET /usage says of the tenant now.
    let line = format!(
        "bulkhead_usage_memory_peak_bytes{{tenant=\"{}\"}} ",
        d.tenant
    );
    let mpeak: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in metrics"))
        .parse()
        .unwrap();
    let tpeak = f(&get(&c, "/usage")["usage"][0], "memory_peak_bytes");
    assert!(
        mpeak >= peak && mpeak <= tpeak,
        "metric peak {mpeak}: node peak {peak}, tenant peak {tpeak}"
    );
    // A window in the past has nothing; RFC 3339 and UNIX seconds both work.
    let past = get(&c, "/usage?to=2000-01-01T00:00:00Z&group_by=node");
    assert_eq!(past["usage"], Value::Array(vec![]), "{past}");
    let (s, v) = rt().block_on(call(&c, "/usage?from=yesterday"));
    assert_eq!(s, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("from"), "{v}");
    // The delete keeps the node's figures, final.
    d.vm_ok(&["delete", &node]);
    let gone = node_row(&c, &node);
    assert_eq!(gone["deleted"], true, "{gone}");
    assert!(
        f(&gone, "cpu_seconds") >= f(&again, "cpu_seconds"),
        "{gone}"
    );
    rounds();
    let still = node_row(&c, &node);
    assert_eq!(
        f(&still, "node_seconds"),
        f(&gone, "node_seconds"),
        "a deleted node is counted no more"
    );
    // The CLI shows the same (table and JSON).
    let table = cli_ok(&["usage", "--socket", d.sock(), "--group-by", "node"]);
    assert!(table.contains(&format!("{node} (deleted)")), "{table}");
    let json: Value =
        serde_json::from_str(&cli_ok(&["usage", "--socket", d.sock(), "--json"])).unwrap();
    assert_eq!(json["usage"][0]["tenant"], d.tenant.as_str(), "{json}");
    d.stop_and_assert_clean();
}

#[test]
fn an_oom_kill_in_a_node_is_the_daemons_event_and_metric() {
    if !privileged() {
        return;
    }
    let d = Daemon::start_edited("uo", &["--ram-mb", "64"], with_usage);
    let c = d.client();
    let node = d.add();
    // A 256 MiB buffer in a 64 MiB node: the kernel's OOM killer ends the command.
    let (code, out, err) = d.sh(&node, "dd if=/dev/zero of=/dev/null bs=256M count=1");
    assert_ne!(code, 0, "dd survived: {out}{err}");
    rounds();
    let line = format!("bulkhead_node_oom_kills_total{{tenant=\"{}\"}} ", d.tenant);
    let kills: u64 = metrics(&c)
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in metrics"))
        .parse()
        .unwrap();
    assert!(kills >= 1, "the OOM kill was not seen");
    // The event on the tenant's stream.
    let (st, body) = text(&c, "/events?since=0&follow=false");
    assert_eq!(st, 200, "{body}");
    let events: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "node.oom_kill" && e["node"] == node.as_str()),
        "no node.oom_kill event of {node}: {body}"
    );
    // The daemon's own change is a line of the tenant's audit trail (Tenant::by_daemon).
    let (st, body) = text(&c, &format!("/audit?action=oom_kill&tenant={}", d.tenant));
    assert_eq!(st, 200, "{body}");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let object = format!("node/{node}");
    let line = lines
        .iter()
        .find(|l| l["object"] == object.as_str())
        .unwrap_or_else(|| panic!("no oom_kill audit line of {node}: {body}"));
    assert_eq!(
        (
            line["principal"].as_str(),
            line["via"].as_str(),
            line["tenant"].as_str(),
            line["outcome"].as_str()
        ),
        (
            Some("daemon"),
            Some("internal"),
            Some(d.tenant.as_str()),
            Some("allowed")
        ),
        "{line}"
    );
    assert!(
        line["reason"]
            .as_str()
            .is_some_and(|r| r.contains("OOM killer")),
        "{line}"
    );
    // After the stop (a checkpoint closes the trail) the chain of that trail verifies.
    let mut d = d;
    d.stop();
    let dir = d.tenant_dir().join("audit");
    let mut files: Vec<(u64, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            let num = n
                .strip_prefix("audit-")?
                .strip_suffix(".jsonl")?
                .parse()
                .ok()?;
            Some((num, e.path().to_str()?.to_string()))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no audit files in {}", dir.display());
    let trail = files
        .iter()
        .map(|f| std::fs::read_to_string(&f.1).unwrap())
        .collect::<String>();
    assert!(
        trail.contains("\"action\":\"oom_kill\"") && trail.contains(&object),
        "the oom_kill line is not in the files:\n{trail}"
    );
    let mut args = vec!["audit", "verify"];
    args.extend(files.iter().map(|f| f.1.as_str()));
    let o = cli(&args);
    assert!(
        o.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_clean(&d.tenant, &d.tenant_dir());
}

/// The tenant's storage byte-seconds: its `group_by=tenant` row.
fn tenant_storage(c: &bulkhead_api::Client) -> f64 {
    let t = get(c, "/usage");
    f(&t["usage"][0], "storage_byte_seconds")
}

#[test]
fn an_unattached_volume_accrues_storage_without_a_node_across_a_restart() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start_edited("usv", &[], with_usage);
    let c = d.client();
    let v = vols::create(&c, serde_json::json!({"name": "kept", "size": "64M"}));
    let size = f(&v, "size_bytes");
    assert_eq!(size, 64.0 * MIB, "{v}");
    rounds();
    let t1 = std::time::Instant::now();
    let s1 = tenant_storage(&c);
    assert!(s1 > 0.0, "an unattached volume counts: {s1}");
    d.crash();
    std::thread::sleep(Duration::from_secs(1));
    d.spawn();
    let c = d.client();
    rounds();
    std::thread::sleep(Duration::from_secs(2));
    let s2 = tenant_storage(&c);
    let elapsed = t1.elapsed().as_secs_f64();
    let secs = (s2 - s1) / size;
    eprintln!("usage: a 64 MiB volume held {elapsed:.2}s counted {secs:.2}s (1.5 s allowed)");
    assert!(
        (secs - elapsed).abs() <= 1.5,
        "storage {s1} → {s2}: {secs:.2}s of 64 MiB counted over {elapsed:.2}s"
    );
    // The row says what it is; the metric has it too.
    let rows = get(&c, "/usage?group_by=node");
    let stored = rows["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == "(stored)")
        .unwrap_or_else(|| panic!("no (stored) row: {rows}"))
        .clone();
    assert_eq!(
        (&stored["node_id"], &stored["deleted"]),
        (&serde_json::json!("_stored"), &Value::Null),
        "{stored}"
    );
    assert_eq!(f(&stored, "node_seconds"), 0.0, "{stored}");
    let m = metrics(&c);
    let line = format!(
        "bulkhead_usage_storage_byte_seconds_total{{tenant=\"{}\"}} ",
        d.tenant
    );
    let metric: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("no {line} in the metrics"))
        .parse()
        .unwrap();
    assert!(metric >= s2, "metric {metric} below the figure {s2}");
    d.stop_and_assert_clean();
}

#[test]
fn a_tenant_sees_its_own_usage_and_global_admin_every_tenants() {
    if !privileged() {
        return;
    }
    let s = Shared::start("  usage: { sample_interval: 1s }\n", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    let na = s.add(&s.tenant_sock(&a), &a);
    let nb = s.add(&s.tenant_sock(&b), &b);
    rounds();
    let ca = s.tenant_client(&a);
    let mine = get(&ca, "/usage?group_by=node");
    let rows = mine["usage"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["tenant"] == a.as_str()), "{mine}");
    assert!(rows.iter().any(|r| r["node"] == na.as_str()), "{mine}");
    assert!(!rows.iter().any(|r| r["node"] == nb.as_str()), "{mine}");
    // A foreign tenant answers exactly as one that does not exist.
    let mut said = Vec::new();
    for t in [b.as_str(), "nosuch"] {
        let (st, v) = rt().block_on(call(&ca, &format!("/usage?tenant={t}")));
        assert_eq!(st, 404, "{t}: {v}");
        said.push(v["error"].as_str().unwrap().replace(t, "T"));
    }
    assert_eq!(said[0], said[1]);
    let admin = s.admin_client();
    let all = get(&admin, "/usage");
    let tenants: Vec<&str> = all["usage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tenant"].as_str().unwrap())
        .collect();
    assert!(
        tenants.contains(&a.as_str()) && tenants.contains(&b.as_str()),
        "{all}"
    );
    let only_b = get(&admin, &format!("/usage?tenant={b}&group_by=node"));
    let rows = only_b["usage"].as_array().unwrap();
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r["tenant"] == b.as_str()),
        "{only_b}"
    );
    s.stop_and_assert_clean();
}

#[test]
fn network_bytes_count_and_a_relaunch_adds_to_them() {
    use common::lab_nodes::{add, config};
    use common::netlab::{NetLab, INTERNET, PORT};
    if !privileged() {
        return;
    }
    let lab = NetLab::new();
    let d = Daemon::start_in(
        &lab.host_ns(),
        "un",
        &with_usage(config("isolated", "10.147.0.0/24", "", "")),
    );
    let c = d.client();
    let n = add(&d, "{}");
    let send = || {
        let (code, out, err) = d.sh(
            &n.name,
            &format!(
                "head -c 1048576 /dev/zero | nc -w 3 {INTERNET} {}",
                PORT + 1
            ),
        );
        assert_eq!(code, 0, "{out}{err}");
    };
    send();
    rounds();
    let r = node_row(&c, &n.name);
    let (tx, rx) = (f(&r, "network_tx_bytes"), f(&r, "network_rx_bytes"));
    assert!(
        (MIB..=MIB * 1.15 + 65536.0).contains(&tx),
        "1 MiB sent, {tx} counted: {r}"
    );
    assert!(rx > 0.0, "the sink's acknowledgements: {r}");
    d.vm_ok(&["shutdown", &n.name]);
    rounds();
    d.vm_ok(&["relaunch", &n.name]);
    send();
    rounds();
    let r2 = node_row(&c, &n.name);
    let tx2 = f(&r2, "network_tx_bytes");
    assert!(
        (tx + MIB..=tx + MIB * 1.15 + 65536.0).contains(&tx2),
        "another 1 MiB after the relaunch: {tx} then {tx2}: {r2}"
    );
    assert!(f(&r2, "cpu_seconds") >= f(&r, "cpu_seconds"), "{r} {r2}");
    d.stop_and_assert_clean();
}
