//! Commit and fork (#13): a node's root filesystem becomes a tenant-private commit, sealed at
//! rest; forks and creates with `image: <commit id>` start from it; another tenant's commit id
//! answers 404 on every route; hostile content in a node does not escape on unpack; a daemon
//! killed mid-commit leaves nothing listed and nothing on disk; a delete wipes (the storage
//! quota's cases are in `e2e_commit_quota.rs`). The tree a fork starts from is at rest only in an encrypted image (ADR 0041): no plaintext under the tenant's
//! `images/`, no mount on the host, no loop device after the delete.

#[path = "common/commits.rs"]
mod commits;
mod common;

use commits::*;
use common::shared::Shared;
use common::*;
use hyper::Method;
use std::time::{Duration, Instant};

#[test]
fn a_fork_and_a_create_from_a_commit_have_its_content() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("cm", &[]);
    let c = d.client();
    let node = d.add();
    let marker = "commit-marker-7f3a9c-do-not-leak";
    let (code, _, err) = d.sh(
        &node,
        &format!(
            "for i in $(seq 200); do echo {marker}; done > /root/marker && mkdir -p /opt/app && \
             echo data > /opt/app/f && ln -s /etc/shadow /leak && ln -s / /root/hostroot && \
             echo scratch > /tmp/t"
        ),
    );
    assert_eq!(code, 0, "{err}");
    let id = commit(&c, &node);
    assert_eq!(id.len(), 26, "a ULID: {id}");
    let (st, list) = call(&c, Method::GET, "/vm/commits", "");
    assert_eq!(st, 200, "{list}");
    let list = json(&list);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["node"], node.as_str());
    assert_eq!(list[0]["tenant"], d.tenant.as_str());
    // Sealed at rest: the file holds no plaintext marker.
    let sealed =
        std::fs::read(d.tenant_dir().join("commits").join(format!("{id}.sealed"))).unwrap();
    assert!(sealed.len() > 1000);
    assert!(
        !contains(&sealed, marker.as_bytes()),
        "plaintext in the sealed commit"
    );

    // A fork (the CLI): the marker, the image's files, no /tmp content.
    let out = cli_ok(&["commit", "fork", "--socket", d.sock(), &id]);
    let forked = out.trim().to_string();
    assert_ne!(forked, node);
    let (code, out, err) = d.sh(
        &forked,
        "head -1 /root/marker; cat /opt/app/f; test -x /bin/busybox && echo busybox; \
         test -e /tmp/t || echo no-tmp; readlink /leak; ls /proc/self >/dev/null && echo proc",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!("{marker}\ndata\nbusybox\nno-tmp\n/etc/shadow\nproc\n")
    );
    // The node's symlinks stay links, resolved in the node: `hostroot` is the fork's own root,
    // and nothing of the host came through (the test's directory exists only on the host).
    let host_only = d.tenant_dir();
    let (code, _, _) = d.sh(
        &forked,
        &format!("test -e /root/hostroot{}", host_only.display()),
    );
    assert_ne!(
        code, 0,
        "the host's tree is visible through a committed symlink"
    );
    // At rest the tree is ciphertext only (ADR 0041): an image whose raw bytes hold no
    // marker, no plain tree beside it, and no byte of the marker anywhere under images/.
    let images = d.tenant_dir().join("images");
    let img = images.join(format!("commit-{id}-jail.img"));
    let raw = std::fs::read(&img).unwrap();
    assert!(raw.len() > 1 << 20, "{}", raw.len());
    assert!(
        !contains(&raw, marker.as_bytes()),
        "plaintext in the commit's image"
    );
    drop(raw);
    assert_eq!(
        files_containing(&images, marker.as_bytes()),
        Vec::<String>::new()
    );
    assert_eq!(
        commit_files(&d.tenant_dir()),
        vec![format!("{id}.sealed"), format!("commit-{id}-jail.img")]
    );
    // The fork's supervisor holds it through a loop device; nothing is mounted on the host.
    assert_eq!(loops_backing(&format!("commit-{id}-")).len(), 1);
    assert_eq!(mounts_naming(&format!("commit-{id}")), Vec::<String>::new());
    assert_eq!(
        mounts_naming(&d.tenant_dir().display().to_string()),
        Vec::<String>::new()
    );

    // `image: <commit id>` at create, answered like a create.
    let g = d.tenant.clone();
    let (st, b) = call(
        &c,
        Method::POST,
        &format!("/hostgroup/{g}/nodes?wait=agent"),
        &format!(r#"{{"image":"{id}"}}"#),
    );
    assert_eq!(st, 201, "{b}");
    let created = json(&b)["hostname"].as_str().unwrap().to_string();
    let (_, out, _) = d.sh(&created, "head -1 /root/marker");
    assert_eq!(out.trim(), marker);
    // The group's own image name keeps working; an unknown commit id is a 404 naming it.
    let (st, b) = call(
        &c,
        Method::POST,
        &format!("/hostgroup/{g}/nodes"),
        r#"{"image":"minimal"}"#,
    );
    assert_eq!(st, 201, "{b}");
    let plain = json(&b)["hostname"].as_str().unwrap().to_string();
    let unknown = "01JAAAAAAAAAAAAAAAAAAAAAAA";
    let (st, b) = call(
        &c,
        Method::POST,
        &format!("/hostgroup/{g}/nodes"),
        &format!(r#"{{"image":"{unknown}"}}"#),
    );
    assert_eq!(st, 404, "{b}");
    assert!(b.contains(unknown), "{b}");

    // Deleting it while nodes run from it: 409 naming them.
    let (st, b) = call(&c, Method::DELETE, &format!("/vm/commits/{id}"), "");
    assert_eq!(st, 409, "{b}");
    assert!(b.contains(&forked) && b.contains(&created), "{b}");
    d.vm_ok(&["delete", &forked, &created, &plain]);
    // Then it goes, and its files are wiped.
    let (st, b) = call(&c, Method::DELETE, &format!("/vm/commits/{id}"), "");
    assert_eq!(st, 204, "{b}");
    assert_eq!(commit_files(&d.tenant_dir()), Vec::<String>::new());
    // No loop device or mount of it is left.
    assert_eq!(
        loops_backing(&format!("commit-{id}-")),
        Vec::<String>::new()
    );
    assert_eq!(mounts_naming(&format!("commit-{id}")), Vec::<String>::new());
    let (st, _) = call(&c, Method::GET, &format!("/vm/commits/{id}"), "");
    assert_eq!(st, 404);
    let (st, _) = call(&c, Method::POST, &format!("/vm/commits/{id}/fork"), "");
    assert_eq!(st, 404);
    d.stop_and_assert_clean();
}

#[test]
fn hostile_content_in_a_node_is_refused_and_leaves_nothing() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("ch", &[]);
    let c = d.client();
    let node = d.add();
    // A mount point replaced by a symlink to the host's root: unpacked as it is, a driver's
    // mount would follow it.
    let (code, _, err) = d.sh(&node, "rm -rf /tmp && ln -s / /tmp");
    assert_eq!(code, 0, "{err}");
    let (st, b) = call(&c, Method::POST, &format!("/vm/{node}/commit"), "");
    assert_eq!(st, 400, "{b}");
    assert_eq!(json(&b)["code"], "invalid_archive", "{b}");
    assert!(b.contains("tmp"), "{b}");
    let (_, list) = call(&c, Method::GET, "/vm/commits", "");
    assert_eq!(json(&list), serde_json::json!([]));
    assert_eq!(commit_files(&d.tenant_dir()), Vec::<String>::new());
    d.stop_and_assert_clean();
}

#[test]
fn a_daemon_killed_mid_commit_leaves_nothing() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("ck", &["--ram-mb", "768"]);
    let node = d.add();
    let (code, _, err) = d.sh(&node, "head -c 300000000 /dev/urandom > /root/big");
    assert_eq!(code, 0, "{err}");
    let tdir = d.tenant_dir();
    let sock = d.socket.clone();
    let n2 = node.clone();
    let req = std::thread::spawn(move || {
        let c = bulkhead_api::Client::new(bulkhead_api::Endpoint::Unix(sock));
        call(&c, Method::POST, &format!("/vm/{n2}/commit"), "")
    });
    // Kill it as soon as the commit's files appear.
    let deadline = Instant::now() + Duration::from_secs(60);
    while commit_files(&tdir).is_empty() {
        assert!(Instant::now() < deadline, "the commit never started");
        std::thread::sleep(Duration::from_millis(2));
    }
    let seen = commit_files(&tdir);
    d.crash();
    let _ = req.join();
    assert!(
        !seen.is_empty(),
        "files of the commit under way existed when it was killed"
    );
    d.spawn();
    let (st, list) = call(&d.client(), Method::GET, "/vm/commits", "");
    assert_eq!(st, 200);
    assert_eq!(
        json(&list),
        serde_json::json!([]),
        "a half-made commit is listed"
    );
    assert_eq!(
        commit_files(&tdir),
        Vec::<String>::new(),
        "left after restart (seen while committing: {seen:?})"
    );
    assert!(d
        .log()
        .contains("wiped commits a stopped daemon left unfinished"));
    // The node was re-adopted and commits fine now.
    let id = commit(&d.client(), &node);
    assert_eq!(commit_files(&tdir).len(), 2, "{:?}", commit_files(&tdir));
    let (st, _) = call(
        &d.client(),
        Method::DELETE,
        &format!("/vm/commits/{id}"),
        "",
    );
    assert_eq!(st, 204);
    d.stop_and_assert_clean();
}

#[test]
fn another_tenants_commit_answers_404_on_every_route() {
    if !privileged() {
        return;
    }
    let s = Shared::start("", "");
    let (a, b) = (s.a.clone(), s.b.clone());
    let (ta, tb) = (s.tenant_client(&a), s.tenant_client(&b));
    let na = s.add(&s.tenant_sock(&a), &a);
    let id = commit(&ta, &na);
    let unknown = "01JAAAAAAAAAAAAAAAAAAAAAAA";
    for probe in [id.as_str(), unknown] {
        let mut answers = Vec::new();
        for (m, path, body) in [
            (Method::GET, format!("/vm/commits/{probe}"), String::new()),
            (
                Method::DELETE,
                format!("/vm/commits/{probe}"),
                String::new(),
            ),
            (
                Method::POST,
                format!("/vm/commits/{probe}/fork"),
                String::new(),
            ),
            (
                Method::POST,
                format!("/vm/commits/{probe}/fork"),
                format!(r#"{{"hostgroup":"{b}"}}"#),
            ),
            (
                Method::POST,
                format!("/hostgroup/{b}/nodes"),
                format!(r#"{{"image":"{probe}"}}"#),
            ),
        ] {
            let (st, body) = call(&tb, m.clone(), &path, &body);
            assert_eq!(st, 404, "{m} {path}: {body}");
            // The same words as for an id that never existed (the id aside).
            answers.push(json(&body)["error"].as_str().unwrap().replace(probe, "ID"));
        }
        if probe == unknown {
            assert_eq!(answers.len(), 5);
        }
    }
    let (_, list) = call(&tb, Method::GET, "/vm/commits", "");
    assert_eq!(json(&list), serde_json::json!([]));
    // Tenant a's own fork into b's group: that group is not a's (404).
    let (st, body) = call(
        &ta,
        Method::POST,
        &format!("/vm/commits/{id}/fork"),
        &format!(r#"{{"hostgroup":"{b}"}}"#),
    );
    assert_eq!(st, 404, "{body}");
    // The admin sees it, with its tenant; a's own fork works and answers like a create.
    let (_, list) = call(&s.admin_client(), Method::GET, "/vm/commits", "");
    assert_eq!(json(&list)[0]["tenant"], a.as_str());
    let (st, body) = call(
        &ta,
        Method::POST,
        &format!("/vm/commits/{id}/fork?wait=agent"),
        "",
    );
    assert_eq!(st, 201, "{body}");
    let f = json(&body);
    assert_eq!(f["hostgroup"], a.as_str());
    assert!(f["hostname"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{a}-")));
    s.stop_and_assert_clean();
}

/// A microVM node (TCG here, slow): the commit reads the guest's root through its agent; the
/// fork's disk is made from the commit's tree (the guest's own ids).
#[test]
fn a_microvm_fork_has_the_committed_content() {
    if !privileged() {
        return;
    }
    let netns = common::netlab::Netns::new();
    let d = Daemon::start_in(&netns.path(), "cmv", &vm_config());
    let node = d
        .vm_ok(&["add", &d.tenant, "--timeout", "180s"])
        .trim()
        .to_string();
    let (code, _, err) = d.sh(
        &node,
        "echo vm-commit-marker > /root/marker && chown 1234:1234 /root/marker",
    );
    assert_eq!(code, 0, "{err}");
    let c = d.client();
    let id = commit(&c, &node);
    assert!(d
        .tenant_dir()
        .join("images")
        .join(format!("commit-{id}-qemu.img"))
        .is_file());
    let (st, b) = call(
        &c,
        Method::POST,
        &format!("/vm/commits/{id}/fork?wait=agent&timeout=180s"),
        "",
    );
    assert_eq!(st, 201, "{b}");
    let forked = json(&b)["hostname"].as_str().unwrap().to_string();
    let (code, out, err) = d.sh(&forked, "cat /root/marker; stat -c %u /root/marker");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "vm-commit-marker\n1234\n");
    // The disk was made from the tree mounted for that alone: nothing of it stays.
    assert_eq!(
        loops_backing(&format!("commit-{id}-")),
        Vec::<String>::new()
    );
    assert!(!contains(
        &std::fs::read(
            d.tenant_dir()
                .join("images")
                .join(format!("commit-{id}-qemu.img"))
        )
        .unwrap(),
        b"vm-commit-marker"
    ));
    d.vm_ok(&["delete", &forked, &node]);
    let (st, _) = call(&c, Method::DELETE, &format!("/vm/commits/{id}"), "");
    assert_eq!(st, 204);
    d.stop_and_assert_clean();
}

/// A persistent jail node forked from a commit: the commit's tree (its read-only overlay
/// lower, opened from the encrypted image) sits below the node's encrypted layer, across a
/// relaunch and a daemon stop and start that relaunches it; the delete of both leaves no loop
/// device.
#[test]
fn a_persistent_fork_keeps_its_commit_below_its_layer() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("cpf", &[]);
    let c = d.client();
    let node = d.add();
    let (code, _, err) = d.sh(&node, "echo from-the-commit > /root/base");
    assert_eq!(code, 0, "{err}");
    let id = commit(&c, &node);
    let (st, b) = call(
        &c,
        Method::POST,
        &format!("/vm/commits/{id}/fork?wait=agent"),
        r#"{"persistent":true}"#,
    );
    assert_eq!(st, 201, "{b}");
    let forked = json(&b)["hostname"].as_str().unwrap().to_string();
    let (code, _, err) = d.sh(&forked, "echo own > /root/own && rm /root/base && sync");
    assert_eq!(code, 0, "{err}");
    let both = "cat /root/own; test -e /root/base || echo base-deleted";
    d.vm_ok(&["shutdown", &forked]);
    d.vm_ok(&["relaunch", &forked]);
    let (code, out, err) = d.sh(&forked, both);
    assert_eq!((code, out.as_str()), (0, "own\nbase-deleted\n"), "{err}");
    // The daemon's stop (graceful_shutdown: false) keeps it; the start relaunches it.
    d.stop();
    assert_eq!(
        loops_backing(&format!("commit-{id}-")),
        Vec::<String>::new()
    );
    d.spawn();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out, _) = d.sh(&forked, both);
        if code == 0 {
            assert_eq!(out, "own\nbase-deleted\n");
            break;
        }
        assert!(Instant::now() < deadline, "the kept fork never came back");
        std::thread::sleep(Duration::from_millis(200));
    }
    let c = d.client();
    d.vm_ok(&["delete", &forked]);
    let (st, b) = call(&c, Method::DELETE, &format!("/vm/commits/{id}"), "");
    assert_eq!(st, 204, "{b}");
    assert_eq!(
        loops_backing(&format!("commit-{id}-")),
        Vec::<String>::new()
    );
    assert_eq!(commit_files(&d.tenant_dir()), Vec::<String>::new());
    d.stop_and_assert_clean();
}

/// A daemon killed while it fills a commit's image (its tree mounted in one thread's own
/// namespace) leaves no mount and no loop device; the next start wipes the staging image.
#[test]
fn a_daemon_killed_while_filling_the_image_leaves_no_mount_or_loop_device() {
    if !privileged() {
        return;
    }
    let mut d = Daemon::start("cki", &["--ram-mb", "768"]);
    let node = d.add();
    let (code, _, err) = d.sh(&node, "head -c 300000000 /dev/urandom > /root/big");
    assert_eq!(code, 0, "{err}");
    let tdir = d.tenant_dir();
    let sock = d.socket.clone();
    let n2 = node.clone();
    let req = std::thread::spawn(move || {
        let c = bulkhead_api::Client::new(bulkhead_api::Endpoint::Unix(sock));
        call(&c, Method::POST, &format!("/vm/{n2}/commit"), "")
    });
    // Kill it while one of its threads has the tree mounted on `images/.tree` in that
    // thread's own mount namespace (the host's has no such mount).
    let tree = tdir.join("images").join(".tree").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !thread_mounts(d.pid(), &tree) {
        assert!(Instant::now() < deadline, "the image was never filled");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(mounts_naming(&tree), Vec::<String>::new());
    d.crash();
    let _ = req.join();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !loops_backing(&tdir.display().to_string()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "loop devices left: {:?}",
            loops_backing(&tdir.display().to_string())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        mounts_naming(&tdir.display().to_string()),
        Vec::<String>::new()
    );
    d.spawn();
    let (st, list) = call(&d.client(), Method::GET, "/vm/commits", "");
    assert_eq!(st, 200);
    assert_eq!(json(&list), serde_json::json!([]));
    assert_eq!(commit_files(&tdir), Vec::<String>::new());
    assert!(d
        .log()
        .contains("wiped commits a stopped daemon left unfinished"));
    d.stop_and_assert_clean();
}
