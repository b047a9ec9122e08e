//! End to end: admission policy per tenant and the policy webhook (issue #12, ADR 0024),
//! through one real shared daemon whose tenants each carry a policy of their own:
//! - `s`: every static rule (network modes, max_node vcpu/ram/storage, exec_as_root on
//!   foreground, background and shell execs, forward bind addresses) refused with 403
//!   `policy_denied` naming the rule, and what the policy allows passing; exec_as_root not
//!   bypassed by userdata, copies (uid 0, setuid bits, a tar's modes) or fs/mkdir;
//! - `d`, `i`, `f`: drivers, images, `forwards.allowed: false` (port forward and tunnel);
//! - `w`: a webhook on a UNIX socket served by this test: allow (and what it is asked),
//!   deny with its reason, narrow (fewer vCPUs; root exec made uid 1000), a widening
//!   answer, an answer leaving fields out (they keep their asked values), a timeout, garbage,
//!   HTTP 500: each denial says which; background execs, shells,
//!   port forwards and tunnels are asked too, each with its kind;
//! - `u`, `a`: an unreachable webhook denies, and passes with `on_error: allow`;
//! - `p`: docs/examples/policy-webhook.py, run with python3 over http:// inside the daemon's
//!   network namespace: a root exec refused with its reason, a non-root one allowed.

mod common;
#[path = "policy/hook.rs"]
mod hook;

use bulkhead_api::ClientError;
use common::answer::{call, Answer};
use common::shared::Shared;
use common::*;
use hook::{last_question, serve_hook, set, Hook};
use hyper::Method;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn post_json(c: &bulkhead_api::Client, path: &str, body: Value) -> Answer {
    call(
        c,
        Method::POST,
        path,
        body.to_string().into_bytes(),
        Some("application/json"),
    )
}

/// A 403 `policy_denied` whose message contains `says`; returns the message.
fn denied(a: &Answer, what: &str, says: &str) -> String {
    assert_eq!(a.status.as_u16(), 403, "{what}: {} {}", a.status, a.text());
    let v = a.json();
    assert_eq!(v["code"], "policy_denied", "{what}: {v}");
    let m = v["error"].as_str().unwrap().to_string();
    assert!(m.contains(says), "{what}: {m:?} lacks {says:?}");
    m
}

fn created(a: &Answer, what: &str) -> String {
    assert_eq!(a.status.as_u16(), 201, "{what}: {}", a.text());
    a.json()["hostname"].as_str().unwrap().to_string()
}

fn create(c: &bulkhead_api::Client, group: &str, body: Value) -> Answer {
    post_json(c, &format!("/hostgroup/{group}/nodes?wait=agent"), body)
}

fn exec(c: &bulkhead_api::Client, node: &str, query: &str) -> Answer {
    call(
        c,
        Method::POST,
        &format!("/vm/{node}/exec?{query}"),
        vec![],
        None,
    )
}

/// A buffered exec's stdout.
fn exec_out(c: &bulkhead_api::Client, node: &str, query: &str) -> String {
    let a = exec(c, node, &format!("{query}&buffered=true"));
    assert_eq!(a.status.as_u16(), 200, "exec {query}: {}", a.text());
    a.json()["stdout"].as_str().unwrap_or_default().to_string()
}

fn ws_refusal(r: Result<bulkhead_api::ws::Socket, ClientError>) -> (u16, String, String) {
    match r {
        Ok(_) => panic!("upgrade was accepted"),
        Err(ClientError::Api { status, body }) => (status.as_u16(), body.code, body.error),
        Err(e) => panic!("not an API answer: {e}"),
    }
}

fn listed(c: &bulkhead_api::Client, node: &str) -> Value {
    let a = call(c, Method::GET, "/nodes", vec![], None);
    a.json()
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["hostname"] == node)
        .unwrap_or_else(|| panic!("{node} listed"))
        .clone()
}

fn cpus_of(c: &bulkhead_api::Client, node: &str) -> u64 {
    listed(c, node)["cpus"].as_u64().unwrap()
}

/// `exec_as_root: false` is not bypassed by other doors: a create's userdata (run as root),
/// a copy-in or `fs/mkdir` making root's files or setuid/setgid bits, a tar upload's modes.
fn no_root_by_other_doors(c: &bulkhead_api::Client, group: &str, node: &str) {
    let m = denied(
        &create(
            c,
            group,
            json!({"cpus": 1, "ram_bytes": 256u64 << 20, "userdata": "#!/bin/sh\nid\n"}),
        ),
        "userdata",
        "policy.exec_as_root: ",
    );
    assert!(m.contains("userdata runs as root"), "{m}");
    let up = |q: &str, body: &[u8]| {
        call(
            c,
            Method::POST,
            &format!("/vm/{node}/cp?{q}"),
            body.to_vec(),
            Some("application/octet-stream"),
        )
    };
    let m = denied(
        &up("path=/tmp/sh&uid=0&gid=0&permissions=0755", b"x"),
        "cp as uid 0",
        "policy.exec_as_root: ",
    );
    assert!(m.contains("uid 0 (root) is refused"), "{m}");
    denied(
        &up("path=/tmp/sh&uid=1000&gid=0", b"x"),
        "cp as gid 0",
        "gid 0 (root) is refused",
    );
    denied(
        &up("path=/tmp/sh&uid=1000&gid=1000&permissions=4755", b"x"),
        "cp setuid",
        "permissions 4755 sets setuid or setgid",
    );
    let a = up("path=/tmp/f&uid=1000&gid=1000&permissions=0755", b"x");
    assert_eq!(a.status.as_u16(), 200, "a non-root copy: {}", a.text());
    // A tar upload keeps its modes but for setuid/setgid, which the agent strips.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o2775);
    h.set_size(0);
    b.append_data(&mut h, "d", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o4755);
    h.set_size(2);
    b.append_data(&mut h, "d/sh", &b"#!"[..]).unwrap();
    let a = up("path=/tmp/t&mode=tar", &b.into_inner().unwrap());
    assert_eq!(a.status.as_u16(), 200, "tar upload: {}", a.text());
    for (p, mode) in [("/tmp/t/d", "0775"), ("/tmp/t/d/sh", "0755")] {
        let st = call(
            c,
            Method::GET,
            &format!("/vm/{node}/fs/stat?path={p}"),
            vec![],
            None,
        );
        assert_eq!(st.json()["mode"], mode, "{p}: {}", st.text());
    }
    denied(
        &post_json(
            c,
            &format!("/vm/{node}/fs/mkdir"),
            json!({"path": "/tmp/g", "mode": "2775"}),
        ),
        "setgid mkdir",
        "mode 2775 sets setuid or setgid",
    );
}

/// python3 running the documented example webhook inside `netns` on 127.0.0.1:9000.
struct PyHook(Child);

impl PyHook {
    fn start(netns_arg: &str, log: &Path) -> PyHook {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples/policy-webhook.py");
        let child = Command::new("nsenter")
            .args([netns_arg, "--", "python3"])
            .arg(&script)
            .args(["--listen", "127.0.0.1:9000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("python3 runs the example webhook");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("listening")
        {
            assert!(
                Instant::now() < deadline,
                "the example webhook did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PyHook(child)
    }
}

impl Drop for PyHook {
    fn drop(&mut self) {
        // The python3 this test started, by its pid.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn policy_rules_and_the_webhook_over_a_real_daemon() {
    if !privileged() {
        return;
    }
    let names: Vec<String> = ["s", "d", "i", "f", "w", "u", "a", "p"]
        .iter()
        .map(|p| unique_tenant(&format!("po{p}")))
        .collect();
    let [s, d, i, f, w, u, al, p] = <[String; 8]>::try_from(names.clone()).unwrap();
    let hooks = test_dir();
    let hook_sock: PathBuf = hooks.path().join("hook.sock");
    let state = serve_hook(&hook_sock);
    let nobody = hooks.path().join("nobody.sock");
    let list = format!(
        "    - name: {s}
      policy:
        drivers: [jail]
        network_modes: [isolated]
        max_node: {{ vcpu: 1, ram: 256M, storage: 2G }}
        exec_as_root: false
        forwards: {{ allowed: true, bind_addresses: [127.0.0.1] }}
        images: [minimal]
      host_groups:
        - name: {s}
          vcpu: 2
          network: {{ mode: isolated, range: 10.231.0.0/24 }}
        - name: {s}n
        - name: {s}b
          storage_size: 4G
          network: {{ mode: isolated, range: 10.231.1.0/24 }}
    - name: {d}
      policy: {{ drivers: [qemu] }}
      host_groups: [{{ name: {d} }}]
    - name: {i}
      policy: {{ images: [python] }}
      host_groups: [{{ name: {i} }}]
    - name: {f}
      policy: {{ forwards: {{ allowed: false }} }}
      host_groups:
        - name: {f}
          ram_mb: 128
          network: {{ mode: isolated, range: 10.231.2.0/24 }}
    - name: {w}
      policy: {{ webhook: {{ url: \"unix://{}\", timeout: 500ms }} }}
      host_groups:
        - {{ name: {w}, vcpu: 2, ram_mb: 128 }}
        - {{ name: {w}net, ram_mb: 128, network: {{ mode: isolated, range: 10.231.3.0/24 }} }}
    - name: {u}
      policy: {{ webhook: {{ url: \"unix://{}\" }} }}
      host_groups: [{{ name: {u} }}]
    - name: {al}
      policy: {{ webhook: {{ url: \"unix://{}\", on_error: allow }} }}
      host_groups: [{{ name: {al}, ram_mb: 128 }}]
    - name: {p}
      policy: {{ webhook: {{ url: \"http://127.0.0.1:9000/admit\", timeout: 5s }} }}
      host_groups: [{{ name: {p}, ram_mb: 128 }}]
",
        hook_sock.display(),
        nobody.display(),
        nobody.display()
    );
    let sd = Shared::start_listed(names.clone(), &list, "");
    let c = |t: &str| sd.tenant_client(t);

    // ---- static rules (tenant s) ----
    let cs = c(&s);
    denied(
        &create(&cs, &format!("{s}n"), json!({})),
        "mode none",
        "policy.network_modes: ",
    );
    denied(
        &create(
            &cs,
            &format!("{s}b"),
            json!({"cpus": 1, "ram_bytes": 256u64 << 20}),
        ),
        "4G disk",
        "policy.max_node.storage: ",
    );
    let m = denied(
        &create(&cs, &s, json!({})),
        "group's 2 vCPUs",
        "policy.max_node.vcpu: ",
    );
    assert!(m.contains("2 vCPUs asked, at most 1 allowed"), "{m}");
    denied(
        &create(&cs, &s, json!({"cpus": 1})),
        "group's 512M",
        "policy.max_node.ram: ",
    );
    let node = created(
        &create(&cs, &s, json!({"cpus": 1, "ram_bytes": 256u64 << 20})),
        "within policy",
    );
    // Execs as root: an omitted uid is root; foreground, background and shell alike.
    let m = denied(
        &exec(&cs, &node, "cmd=id"),
        "omitted uid",
        "policy.exec_as_root: ",
    );
    assert!(m.contains("non-root uid"), "{m}");
    denied(
        &exec(&cs, &node, "cmd=id&uid=0"),
        "uid 0",
        "policy.exec_as_root: ",
    );
    denied(
        &exec(&cs, &node, "cmd=id&background=true"),
        "background",
        "policy.exec_as_root: ",
    );
    assert_eq!(
        exec_out(&cs, &node, "cmd=id&args=-u&uid=1000").trim(),
        "1000"
    );
    // The SDKs' non-root user stands for 1000.
    assert_eq!(
        exec_out(&cs, &node, "cmd=id&args=-u&uid=4294967295").trim(),
        "1000"
    );
    no_root_by_other_doors(&cs, &s, &node);
    let a = exec(&cs, &node, "cmd=true&uid=1000&background=true");
    assert!(a.status.is_success(), "background as 1000: {}", a.text());
    let rt = rt();
    let (st, code, msg) = ws_refusal(rt.block_on(cs.websocket(&format!("/vm/{node}/shell"), &[])));
    assert_eq!((st, code.as_str()), (403, "policy_denied"), "{msg}");
    assert!(msg.starts_with("policy.exec_as_root: "), "{msg}");
    rt.block_on(cs.websocket(&format!("/vm/{node}/shell?uid=1000&gid=1000"), &[]))
        .expect("a non-root shell");
    // Forwards: only 127.0.0.1.
    let fw = format!("/vm/{node}/forwards");
    denied(
        &post_json(
            &cs,
            &fw,
            json!({"host_port": 0, "node_port": 80, "bind": "0.0.0.0"}),
        ),
        "bind 0.0.0.0",
        "policy.forwards.bind_addresses: bind 0.0.0.0",
    );
    let a = post_json(&cs, &fw, json!({"host_port": 0, "node_port": 80}));
    assert_eq!(a.status.as_u16(), 201, "forward on 127.0.0.1: {}", a.text());

    // ---- drivers, images, forwards.allowed ----
    denied(
        &create(&c(&d), &d, json!({})),
        "jail under drivers: [qemu]",
        "policy.drivers: ",
    );
    denied(
        &create(&c(&i), &i, json!({})),
        "minimal under images: [python]",
        "policy.images: ",
    );
    let cf = c(&f);
    let fnode = created(&create(&cf, &f, json!({})), "no forwards tenant");
    denied(
        &post_json(
            &cf,
            &format!("/vm/{fnode}/forwards"),
            json!({"host_port": 0, "node_port": 80}),
        ),
        "forward",
        "policy.forwards.allowed: ",
    );
    let (st, code, msg) = ws_refusal(rt.block_on(cf.websocket(
        &format!("/vm/{fnode}/forward"),
        &[("X-Inlets-Upstream", "127.0.0.1:80")],
    )));
    assert_eq!((st, code.as_str()), (403, "policy_denied"), "{msg}");
    assert!(msg.starts_with("policy.forwards.allowed: "), "{msg}");

    // ---- the webhook (tenant w) ----
    let cw = c(&w);
    set(&state, Hook::Allow);
    let wnode = created(&create(&cw, &w, json!({"tags": ["ci"]})), "webhook allows");
    let q = last_question(&state);
    assert_eq!(q["tenant"], w.as_str(), "{q}");
    assert_eq!(q["action"], "create", "{q}");
    assert!(q["principal"].as_str().unwrap().starts_with("uid:"), "{q}");
    assert_eq!(q["target"]["hostgroup"], w.as_str(), "{q}");
    assert_eq!(q["target"]["driver"], "jail", "{q}");
    // After defaults: the group's 2 vCPUs and 128M.
    assert_eq!(
        (
            q["request"]["cpus"].as_u64(),
            q["request"]["ram_bytes"].as_u64()
        ),
        (Some(2), Some(128 << 20)),
        "{q}"
    );
    assert_eq!(cpus_of(&cw, &wnode), 2);

    set(&state, Hook::Deny("no builds on fridays"));
    let m = denied(
        &create(&cw, &w, json!({})),
        "webhook denies",
        "no builds on fridays",
    );
    assert!(m.starts_with("policy webhook denied the request: "), "{m}");
    let m = denied(
        &exec(&cw, &wnode, "cmd=id"),
        "webhook denies an exec",
        "no builds on fridays",
    );
    assert!(m.starts_with("policy webhook"), "{m}");
    let q = last_question(&state);
    assert_eq!(
        (
            q["action"].as_str(),
            q["target"]["node"].as_str(),
            q["request"]["cmd"].as_str()
        ),
        (Some("exec"), Some(wnode.as_str()), Some("id")),
        "{q}"
    );

    // Narrowed: the node gets the webhook's 1 vCPU; a root exec runs as 1000.
    set(&state, Hook::Narrow(json!({"cpus": 1})));
    let narrow = created(&create(&cw, &w, json!({})), "webhook narrows");
    assert_eq!(cpus_of(&cw, &narrow), 1, "the narrowed request was used");
    set(&state, Hook::Narrow(json!({"uid": 1000, "gid": 1000})));
    assert_eq!(exec_out(&cw, &wnode, "cmd=id&args=-u").trim(), "1000");
    // An answer's left-out fields keep their asked values (laid over the question).
    set(&state, Hook::Only(json!({"uid": 1000})));
    assert_eq!(exec_out(&cw, &wnode, "cmd=id&args=-u").trim(), "1000");
    set(&state, Hook::Only(json!({"cpus": 1})));
    let kept = created(
        &create(&cw, &w, json!({"tags": ["ci", "x"]})),
        "only cpus answered",
    );
    let v = listed(&cw, &kept);
    assert_eq!(
        (v["cpus"].as_u64(), &v["tags"]),
        (Some(1), &json!(["ci", "x"])),
        "{v}"
    );
    // Widening: more vCPUs than asked, or a non-root exec made root.
    set(&state, Hook::Narrow(json!({"cpus": 2})));
    denied(
        &create(&cw, &w, json!({"cpus": 1})),
        "webhook widens cpus",
        "policy webhook widened the request",
    );
    set(&state, Hook::Narrow(json!({"uid": 0})));
    denied(
        &exec(&cw, &wnode, "cmd=id&uid=1000"),
        "webhook makes root",
        "policy webhook widened the request",
    );
    set(&state, Hook::Narrow(json!({"cpus": "many"})));
    denied(
        &create(&cw, &w, json!({})),
        "unreadable narrowing",
        "rewritten request is not one this route takes",
    );
    // Failures deny, saying which.
    // Every exec kind and forward kind is asked, with what it is.
    set(&state, Hook::Deny("not this one"));
    denied(
        &exec(&cw, &wnode, "cmd=sleep&args=1&uid=1000&background=true"),
        "background exec",
        "not this one",
    );
    assert_eq!(last_question(&state)["target"]["mode"], "background");
    let (st, code, msg) =
        ws_refusal(rt.block_on(cw.websocket(&format!("/vm/{wnode}/shell?uid=1000"), &[])));
    assert_eq!((st, code.as_str()), (403, "policy_denied"), "{msg}");
    assert!(msg.contains("not this one"), "{msg}");
    let q = last_question(&state);
    assert_eq!(
        (q["target"]["mode"].as_str(), q["request"]["uid"].as_u64()),
        (Some("shell"), Some(1000)),
        "{q}"
    );
    set(&state, Hook::Allow);
    let netnode = created(
        &create(&cw, &format!("{w}net"), json!({})),
        "networked node",
    );
    set(&state, Hook::Deny("no ports today"));
    let fwp = format!("/vm/{netnode}/forwards");
    denied(
        &post_json(&cw, &fwp, json!({"host_port": 0, "node_port": 80})),
        "forward asked",
        "no ports today",
    );
    let q = last_question(&state);
    assert_eq!(
        (
            q["action"].as_str(),
            q["target"]["kind"].as_str(),
            q["request"]["bind"].as_str()
        ),
        (Some("forward"), Some("port"), Some("127.0.0.1")),
        "{q}"
    );
    let (st, code, msg) = ws_refusal(rt.block_on(cw.websocket(
        &format!("/vm/{netnode}/forward"),
        &[("X-Inlets-Upstream", "127.0.0.1:80")],
    )));
    assert_eq!((st, code.as_str()), (403, "policy_denied"), "{msg}");
    let q = last_question(&state);
    assert_eq!(
        (
            q["target"]["kind"].as_str(),
            q["request"]["upstream"].as_str()
        ),
        (Some("tunnel"), Some("127.0.0.1:80")),
        "{q}"
    );
    set(&state, Hook::Allow);
    let a = post_json(&cw, &fwp, json!({"host_port": 0, "node_port": 80}));
    assert_eq!(
        a.status.as_u16(),
        201,
        "forward the webhook allows: {}",
        a.text()
    );
    set(&state, Hook::Slow);
    let t0 = Instant::now();
    denied(
        &create(&cw, &w, json!({})),
        "slow webhook",
        "policy webhook timed out after 500ms",
    );
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "the timeout held: {:?}",
        t0.elapsed()
    );
    set(&state, Hook::Garbage);
    denied(
        &exec(&cw, &wnode, "cmd=id&uid=1000"),
        "garbage",
        "policy webhook's answer is not the expected JSON",
    );
    set(&state, Hook::Status500);
    denied(
        &create(&cw, &w, json!({})),
        "HTTP 500",
        "policy webhook answered HTTP 500",
    );

    // ---- unreachable: denied, or allowed with on_error: allow ----
    let m = denied(
        &create(&c(&u), &u, json!({})),
        "unreachable",
        "policy webhook is unreachable",
    );
    assert!(m.contains("on_error is deny"), "{m}");
    created(
        &create(&c(&al), &al, json!({})),
        "unreachable, on_error: allow",
    );

    // ---- the documented Python webhook over http:// in the daemon's namespace ----
    let py = PyHook::start(&sd.netns_arg(), &hooks.path().join("py.log"));
    let cp = c(&p);
    let pnode = created(&create(&cp, &p, json!({})), "python webhook allows creates");
    let m = denied(
        &exec(&cp, &pnode, "cmd=id"),
        "root exec",
        "execs as root are not allowed here",
    );
    assert!(m.starts_with("policy webhook denied the request: "), "{m}");
    assert_eq!(
        exec_out(&cp, &pnode, "cmd=id&args=-u&uid=1000").trim(),
        "1000"
    );
    drop(py);
    let log = std::fs::read_to_string(hooks.path().join("py.log")).unwrap();
    assert!(log.contains(&format!("{p} uid:0 exec: deny")), "{log}");

    sd.stop_and_assert_clean();
}
