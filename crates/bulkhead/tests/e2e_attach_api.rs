//! Volumes attached to nodes through the API (#13, attach): `POST /volumes`, then node
//! creates naming them. A jail node writes, later nodes read (read-only enforced) and write
//! again after the first is deleted; the node's mountinfo carries `nodev,nosuid,noexec`
//! (exec only with `config.policy.volumes_exec`); a full volume fails alone; nothing stays on
//! the host after the nodes go. One microVM node (TCG) mounts its volume through its agent;
//! the volume it wrote (and one restored from its snapshot) is then refused to a jail node.
//! A volume whose image does not mount fails each create naming it, each failure counted and an
//! event (#14). The supervisor-level cases (an edited spec, a wrong key) are in `e2e_attach.rs`.

mod common;
#[path = "common/volumes.rs"]
mod volumes;

use common::*;
use hyper::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};
use volumes::{create, delete, image, refused, req, Data};

/// Creates a node of the tenant's group with `vols`; its hostname.
fn node(c: &bulkhead_api::Client, g: &str, vols: Value) -> String {
    let (s, n) = req(
        c,
        Method::POST,
        &format!("/hostgroup/{g}/nodes?wait=agent&timeout=240s"),
        Some(json!({ "volumes": vols })),
    );
    assert_eq!(s, 201, "{n}");
    n["hostname"].as_str().unwrap().to_string()
}

fn delete_node(c: &bulkhead_api::Client, g: &str, n: &str) {
    let (s, e) = req(
        c,
        Method::DELETE,
        &format!("/hostgroup/{g}/nodes/{n}"),
        None,
    );
    assert_eq!(s, 200, "{e}");
}

/// The mount options (field 6) of the mount at `path` in a mountinfo text.
fn mount_opts(mountinfo: &str, path: &str) -> Option<Vec<String>> {
    mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&path)).then(|| f[5].split(',').map(str::to_string).collect())
    })
}

/// Waits until no loop device backs `img` (autoclear frees it once the last mount goes).
fn assert_detached(img: &Path) {
    let until = Instant::now() + Duration::from_secs(5);
    while let Some(dev) = bulkhead_storage::loopdev::find_backing(img).unwrap() {
        assert!(
            Instant::now() < until,
            "{} is still on {} after its nodes went",
            img.display(),
            dev.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let host = std::fs::read_to_string("/proc/1/mountinfo").unwrap();
    assert!(!host.contains(&*img.to_string_lossy()));
}

#[test]
fn a_volume_goes_from_jail_node_to_jail_node_with_its_flags() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("ata", &[]);
    let (c, g) = (d.client(), d.tenant.clone());
    let v = create(&c, json!({"name": "data", "size": "32M", "inodes": 1024}));
    let id = v["id"].as_str().unwrap().to_string();
    let img = image(&d.tenant_dir(), &id);

    let w = node(&c, &g, json!([{"id": id, "path": "/data"}]));
    let (code, out, err) = d.sh(
        &w,
        "echo api-marker > /data/f && cat /data/f && cat /proc/self/mountinfo",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("api-marker\n"), "{out}");
    let opts = mount_opts(&out, "/data").expect("/data is a mount of its own");
    for f in ["nodev", "nosuid", "noexec", "rw"] {
        assert!(opts.iter().any(|o| o == f), "{f} missing in {opts:?}");
    }
    let (code, out, err) = d.sh(
        &w,
        "printf '#!/bin/sh\\necho ran\\n' > /data/t && chmod +x /data/t && /data/t",
    );
    assert_ne!(code, 0, "a program ran from a noexec volume: {out}");
    assert!(err.contains("ermission denied"), "{err}");
    // On the host: a loop device while the node runs, never a mount.
    let dev = bulkhead_storage::loopdev::find_backing(&img).unwrap();
    let dev = dev.expect("the volume is on a loop device while its node runs");
    let host = std::fs::read_to_string("/proc/1/mountinfo").unwrap();
    assert!(!host.contains(&format!("{} ", dev.display())), "{host}");
    delete_node(&c, &g, &w);
    assert_detached(&img);

    // Two readers at once (read-only shares); writes fail with EROFS.
    let r1 = node(
        &c,
        &g,
        json!([{"id": id, "path": "/mnt/v", "read_only": true}]),
    );
    let r2 = node(
        &c,
        &g,
        json!([{"id": id, "path": "/srv/v", "read_only": true}]),
    );
    let (code, out, err) = d.sh(
        &r1,
        "cat /mnt/v/f; echo x > /mnt/v/g; echo rc=$?; grep ' /mnt/v ' /proc/self/mountinfo",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("api-marker\n"), "{out}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(mount_opts(&out, "/mnt/v")
        .unwrap()
        .iter()
        .any(|o| o == "ro"));
    let (_, out, _) = d.sh(&r2, "cat /srv/v/f");
    assert_eq!(out, "api-marker\n");
    delete_node(&c, &g, &r1);
    delete_node(&c, &g, &r2);
    assert_detached(&img);

    // A writer again: the data is there; filling the volume fails inside it only.
    let w2 = node(&c, &g, json!([{"id": id, "path": "/data"}]));
    let (_, out, err) = d.sh(
        &w2,
        "cat /data/f; dd if=/dev/zero of=/data/big bs=1M count=64 2>&1; echo root > /tmp/ok && cat /tmp/ok",
    );
    assert!(out.starts_with("api-marker\n"), "{out}{err}");
    assert!(out.contains("No space left on device"), "{out}");
    assert!(out.ends_with("root\n"), "{out}");
    let (code, _, _) = d.sh(&w2, "rm /data/big && echo fine > /data/after");
    assert_eq!(code, 0);
    delete_node(&c, &g, &w2);
    assert_detached(&img);

    let (_, m) = req(&c, Method::GET, "/metrics", None);
    let m = m.as_str().unwrap_or_default().to_string();
    assert!(
        m.contains(&format!(
            "bulkhead_volume_mount_failures_total{{tenant=\"{g}\"}} 0"
        )),
        "{m}"
    );
    delete(&c, &id);
    d.stop_and_assert_clean();
}

#[test]
fn volumes_run_programs_only_where_the_policy_allows_it() {
    if !privileged() {
        return;
    }
    let d = Daemon::start_edited("atx", &[], |y| {
        y.replacen(
            "config:\n",
            "config:\n  policy:\n    volumes_exec: true\n",
            1,
        )
    });
    let (c, g) = (d.client(), d.tenant.clone());
    let v = create(&c, json!({"name": "tools", "size": "16M"}));
    let id = v["id"].as_str().unwrap().to_string();
    let n = node(&c, &g, json!([{"id": id, "path": "/opt/tools"}]));
    let (code, out, err) = d.sh(
        &n,
        "printf '#!/bin/sh\\necho ran\\n' > /opt/tools/t && chmod +x /opt/tools/t && /opt/tools/t; grep ' /opt/tools ' /proc/self/mountinfo",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ran\n"), "{out}");
    let opts = mount_opts(&out, "/opt/tools").unwrap();
    assert!(!opts.iter().any(|o| o == "noexec"), "{opts:?}");
    for f in ["nodev", "nosuid"] {
        assert!(opts.iter().any(|o| o == f), "{f} missing in {opts:?}");
    }
    delete_node(&c, &g, &n);
    assert_detached(&image(&d.tenant_dir(), &id));
    delete(&c, &id);
    d.stop_and_assert_clean();
}

/// A volume whose image no longer mounts (its ext4 superblock zeroed, as a damaged disk or a
/// tampered file would leave it): each jail create naming it fails, and each failure is
/// counted (`bulkhead_volume_mount_failures_total`) and is a `volume.mount_failed` event
/// naming the node (#14: repeated mount failures, counted); nothing stays on the host.
#[test]
fn a_volume_that_does_not_mount_fails_the_create_and_each_failure_counts() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("atm", &[]);
    let (c, g) = (d.client(), d.tenant.clone());
    let v = create(&c, json!({"name": "broken", "size": "16M"}));
    let id = v["id"].as_str().unwrap().to_string();
    let img = image(&d.tenant_dir(), &id);
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
        f.seek(SeekFrom::Start(1024)).unwrap();
        f.write_all(&[0u8; 1024]).unwrap();
        f.sync_all().unwrap();
    }
    for _ in 0..2 {
        let (s, e) = req(
            &c,
            Method::POST,
            &format!("/hostgroup/{g}/nodes?wait=agent&timeout=240s"),
            Some(json!({ "volumes": [{"id": id, "path": "/data"}] })),
        );
        assert!(s >= 500, "a create with an unmountable volume: {s} {e}");
    }
    let (_, m) = req(&c, Method::GET, "/metrics", None);
    let m = m.as_str().unwrap_or_default().to_string();
    let line = format!("bulkhead_volume_mount_failures_total{{tenant=\"{g}\"}} 2");
    assert!(m.contains(&line), "{line} in\n{m}");
    let (s, ev) = rt().block_on(async {
        use http_body_util::BodyExt;
        let r = c
            .send(
                Method::GET,
                "/events?follow=false",
                bulkhead_api::client::full_body(Vec::new()),
                None,
            )
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.into_body().collect().await.unwrap().to_bytes())
    });
    assert_eq!(s, 200);
    let failed: Vec<Value> = String::from_utf8_lossy(&ev)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["kind"] == "volume.mount_failed")
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    for e in &failed {
        let node = e["node"].as_str().unwrap_or_default();
        assert!(node.starts_with(&format!("{g}-")), "{e}");
        let msg = e["detail"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("volume_mount_failed") && msg.contains(&id),
            "{e}"
        );
    }
    assert_ne!(failed[0]["node"], failed[1]["node"]);
    assert_detached(&img);
    delete(&c, &id);
    d.stop_and_assert_clean();
}

/// One microVM node (TCG): its volume is a virtio disk mounted by the guest's agent when the
/// daemon asks; what the guest wrote is on the image afterwards (read here with the key).
#[test]
fn a_microvm_node_gets_its_volume_from_the_daemon() {
    if !privileged() {
        return;
    }
    let netns = common::netlab::Netns::new();
    // The tenant's microVM group, and a jail group beside it (guest-written volumes).
    let yaml = vm_config().replace(
        "      storage_size: 256M\n",
        "      storage_size: 256M\n    - name: TENANT-jail\n      ram_mb: 128\n      storage_size: 64M\n      hypervisor: jail\n",
    );
    let d = Daemon::start_in(&netns.path(), "atq", &yaml);
    let (c, g) = (d.client(), d.tenant.clone());
    let v = create(&c, json!({"name": "vmdata", "size": "32M"}));
    let id = v["id"].as_str().unwrap().to_string();
    let n = node(&c, &g, json!([{"id": id, "path": "/data"}]));
    let (code, out, err) = d.sh(
        &n,
        "echo from-the-guest > /data/hello && sync && grep ' /data ' /proc/self/mountinfo",
    );
    assert_eq!(code, 0, "{err}");
    let opts = mount_opts(&out, "/data").unwrap();
    for f in ["nodev", "nosuid", "noexec", "rw"] {
        assert!(opts.iter().any(|o| o == f), "{f} missing in {opts:?}");
    }
    delete_node(&c, &g, &n);
    {
        let data = Data::open(&d.state, &d.tenant, &d.tenant_dir(), &v);
        assert_eq!(
            std::fs::read_to_string(data.path("hello")).unwrap(),
            "from-the-guest\n"
        );
    }
    assert_detached(&image(&d.tenant_dir(), &id));

    // The guest wrote the image's blocks: the host kernel never mounts it for a jail node,
    // nor a volume restored from its snapshot (the mark goes along), while a jail node
    // without it starts in the same group (the refusal is the mark's).
    let jail = format!("{g}-jail");
    let jail_node = |vid: &str| {
        req(
            &c,
            Method::POST,
            &format!("/hostgroup/{jail}/nodes?wait=agent"),
            Some(json!({"volumes": [{"id": vid, "path": "/data"}]})),
        )
    };
    refused(jail_node(&id), 409, "conflict", "microVM nodes only");
    let (s, snap) = req(&c, Method::POST, &format!("/volumes/{id}/snapshots"), None);
    assert_eq!(s, 201, "{snap}");
    let sid = snap["id"].as_str().unwrap().to_string();
    let restored = create(&c, json!({"name": "restored", "from_snapshot": sid}));
    let id2 = restored["id"].as_str().unwrap().to_string();
    refused(jail_node(&id2), 409, "conflict", "microVM nodes only");
    let plain = node(&c, &jail, json!([]));
    delete_node(&c, &jail, &plain);
    delete(&c, &id2);
    let (s, e) = req(
        &c,
        Method::DELETE,
        &format!("/volumes/{id}/snapshots/{sid}"),
        None,
    );
    assert_eq!(s, 204, "{e}");
    delete(&c, &id);
    d.stop_and_assert_clean();
}
