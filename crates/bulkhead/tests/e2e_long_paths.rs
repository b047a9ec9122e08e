//! End to end: a node's sockets past `sun_path`'s 108 bytes. A node's agent and control
//! sockets live in `<state>/tenants/<tenant>/nodes/<node>/`: a state directory like CI's, a
//! tenant name and a 63-character node name (the most a hostname label may have) put them far
//! past the limit. The supervisor binds them and the daemon connects to them through the
//! socket's directory (`bulkhead_agent::unix_path`): the node is created, runs commands, is
//! paused, shut down, relaunched and deleted like any other, and nothing of it is left.

mod common;
use common::*;
use hyper::Method;

#[test]
fn a_node_whose_socket_paths_pass_sun_path_lives_its_whole_life() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("longsocketpaths", &[]);
    let rt = rt();
    let c = d.client();
    let name = format!("n{}", "x".repeat(62));
    let node_dir = d.tenant_dir().join("nodes").join(&name);
    for sock in ["agent.sock", "supervisor.sock"] {
        let p = node_dir.join(sock);
        assert!(
            p.as_os_str().len() > 108,
            "{} is short enough for sun_path: the test proves nothing",
            p.display()
        );
    }
    let created: serde_json::Value = rt
        .block_on(c.json(
            Method::POST,
            &format!("/hostgroup/{}/nodes?wait=agent", d.tenant),
            Some(&serde_json::json!({ "hostname": name })),
        ))
        .expect("create a node with a 63-character name");
    assert_eq!(created["hostname"], name.as_str());
    assert!(node_dir.join("supervisor.sock").exists());
    assert_eq!(d.sh(&name, "hostname").1.trim(), name);

    // Pause and resume (the supervisor's control channel), then exec again; shut down (its
    // kill and wait) and relaunch (a new supervisor binds both sockets again); delete.
    let call = |method: Method, path: String, body: Option<serde_json::Value>| {
        let b = body
            .map(|v| serde_json::to_vec(&v).unwrap())
            .unwrap_or_default();
        let ct = (!b.is_empty()).then_some("application/json");
        let r = rt
            .block_on(c.send(
                method.clone(),
                &path,
                bulkhead_api::client::full_body(b),
                ct,
            ))
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(
            r.status().is_success(),
            "{method} {path} answered {}",
            r.status()
        );
    };
    call(Method::POST, format!("/vm/{name}/pause"), None);
    call(Method::POST, format!("/vm/{name}/resume"), None);
    assert_eq!(d.sh(&name, "echo ok").1, "ok\n");
    call(
        Method::POST,
        format!("/vm/{name}/shutdown"),
        Some(serde_json::json!({"action": "shutdown"})),
    );
    call(
        Method::POST,
        format!("/vm/{name}/relaunch?wait=agent&timeout=60s"),
        None,
    );
    assert_eq!(d.sh(&name, "echo again").1, "again\n");
    call(
        Method::DELETE,
        format!("/hostgroup/{}/nodes/{name}", d.tenant),
        None,
    );
    assert!(!node_dir.exists(), "the node's directory is left");
    d.stop_and_assert_clean();
}
