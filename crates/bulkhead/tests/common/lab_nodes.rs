//! Nodes on a network lab's host for the network tests: a tenant config with one networked
//! group, and a node created through the API that serves its own name on [`netlab::PORT`].

use bulkhead_api::client::full_body;
use http_body_util::BodyExt;
use hyper::Method;
use std::path::PathBuf;

use super::{netlab, Daemon};

/// POSTs `body` and returns (status, JSON answer).
pub fn post(d: &Daemon, path: &str, body: &str) -> (u16, serde_json::Value) {
    let c = d.client();
    super::rt().block_on(async {
        let r = c
            .send(
                Method::POST,
                path,
                full_body(body.as_bytes().to_vec()),
                Some("application/json"),
            )
            .await
            .unwrap();
        let st = r.status().as_u16();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (st, serde_json::from_slice(&b).unwrap_or_default())
    })
}

pub fn config(mode: &str, range: &str, extra_net: &str, extra_group: &str) -> String {
    format!(
        "config:\n  tenant: TENANT\n  host_groups:\n    - name: TENANT\n      ram_mb: 128\n      network: {{ mode: {mode}, range: {range}{extra_net} }}\n{extra_group}  graceful_shutdown: false\n  api:\n    bind_address: SOCKET\n"
    )
}

pub struct N {
    pub name: String,
    pub ip: String,
    pub ns: PathBuf,
    /// microVM nodes are probed from inside the guest, through the agent (QEMU's namespace
    /// only bridges the guest's tap).
    pub vm_socket: Option<String>,
}

pub fn add(d: &Daemon, body: &str) -> N {
    let (st, v) = post(
        d,
        &format!("/hostgroup/{}/nodes?wait=agent", d.tenant),
        body,
    );
    assert!(st == 200 || st == 201, "create: {st} {v}");
    let name = v["hostname"].as_str().unwrap().to_string();
    let ip = v["ip"].as_str().unwrap().to_string();
    // A listener in the node, run by the node itself: answers with the node's name.
    serve_in_node(d, &name, netlab::PORT, &format!("echo {name}"));

    N {
        ns: d.node_netns(&name),
        vm_socket: d
            .config_text()
            .contains("hypervisor: qemu")
            .then(|| d.sock().to_string()),
        name,
        ip,
    }
}

/// Starts `nc -ll -p PORT -e PROG` in the node, in a session of its own (an exec's process
/// group is killed when the exec's client goes), and waits until it listens.
pub fn serve_in_node(d: &Daemon, node: &str, port: u16, prog: &str) {
    let script = format!(
        "setsid nc -ll -p {port} -e {prog} </dev/null >/dev/null 2>&1 & \
         for i in $(seq 100); do grep -q ':{port:04X} [0-9A-F]*:0000 0A' /proc/net/tcp /proc/net/tcp6 && exit 0; sleep 0.05; done; exit 1"
    );
    let (code, out, err) = d.sh(node, &script);
    assert_eq!(code, 0, "listener in {node} did not start: {out}{err}");
}
