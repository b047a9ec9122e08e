//! End to end, over a real daemon and node: exec in the shapes Slicer's SDKs decode
//! (`stdio=base64` carrying all 256 byte values, text, the signal by name, a missing command
//! as exit code 127, the buffered object, the SDKs' non-root uid). Background execs:
//! `e2e_exec_bg.rs`.

mod common;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use common::exec_wire::*;
use common::*;
use hyper::Method;
use serde_json::Value;

#[test]
fn exec_speaks_the_shapes_slicers_sdks_decode() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("exw", &[]);
    let n = d.add();
    let rt = rt();
    let c = d.client();
    // Every byte value through stdin and back, base64 both in frames and buffered.
    let all: Vec<u8> = (0..=255u8).cycle().take(256 * 4).collect();
    let (s, b) = send(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec?cmd=cat&stdin=true&stdio=base64&uid=0&gid=0&permissions=&timeout="),
        all.clone(),
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let f = ndjson(&b);
    assert_eq!(f[0]["type"], "started");
    assert!(f[0]["pid"].as_i64().unwrap() > 1);
    assert_eq!(output(&f, "stdout"), all);
    assert!(f
        .iter()
        .filter(|x| x["type"] == "stdout")
        .all(|x| x["encoding"] == "base64"));
    let exit = f.last().unwrap();
    assert_eq!(
        (exit["type"].as_str(), exit["exit_code"].as_i64()),
        (Some("exit"), Some(0))
    );
    assert!(exit.get("signal").is_none() && exit["ended_at"].is_string());
    let (s, b) = send(&rt, &c, Method::POST, &format!("/vm/{n}/exec?cmd=sh&args=-c&args=printf%20%27%5C000%5C377%27&stdio=base64&buffered=true"), vec![]);
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["encoding"], "base64");
    assert_eq!(
        B64.decode(v["stdout"].as_str().unwrap()).unwrap(),
        [0u8, 255]
    );
    assert_eq!(v["exit_code"], 0);
    assert!(v["pid"].as_i64().unwrap() > 1 && v["started_at"].is_string());
    // Text: UTF-8 as it is, no encoding field.
    let (_, b) = send(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec?cmd=echo&args=h%C3%A9llo&stdio=text"),
        vec![],
    );
    let f = ndjson(&b);
    let out: Vec<&Value> = f.iter().filter(|x| x["type"] == "stdout").collect();
    assert_eq!(out[0]["data"], "héllo\n");
    assert!(out[0].get("encoding").is_none());
    // A signal by name, the exit code as a shell's.
    let (_, b) = send(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec?cmd=sh&args=-c&args=kill%20-KILL%20$$"),
        vec![],
    );
    let exit = ndjson(&b).pop().unwrap();
    assert_eq!(
        (exit["exit_code"].as_i64(), exit["signal"].as_str()),
        (Some(137), Some("SIGKILL"))
    );
    // A missing command is exit code 127 with the reason on stderr, streamed and buffered.
    let (s, b) = send(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec?cmd=no-such-command&stdio=base64"),
        vec![],
    );
    assert_eq!(s, 200, "{}", String::from_utf8_lossy(&b));
    let f = ndjson(&b);
    assert!(String::from_utf8_lossy(&output(&f, "stderr")).contains("not found"));
    assert_eq!(f.last().unwrap()["exit_code"], 127);
    let (s, b) = send(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec?cmd=no-such-command&buffered=true"),
        vec![],
    );
    assert_eq!(s, 200);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["exit_code"], 127);
    assert!(v["stderr"].as_str().unwrap().contains("not found"));
    let (_, b) = send(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec?cmd=/etc/passwd&buffered=true"),
        vec![],
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["exit_code"],
        126
    );
    // The SDKs' "default non-root user".
    let (_, b) = send(
        &rt,
        &c,
        Method::POST,
        &format!("/vm/{n}/exec?cmd=id&args=-u&uid=4294967295&gid=4294967295&buffered=true"),
        vec![],
    );
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["stdout"], "1000\n", "{v}");
    d.stop_and_assert_clean();
}
