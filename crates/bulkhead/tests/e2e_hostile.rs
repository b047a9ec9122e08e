//! End to end: a hostile tenant against its own node. Uploads bigger than the node can hold,
//! workloads that fill the node's memory and archives refused half-way must not kill the
//! node's agent (PID 1) nor leave anything half-applied.

mod common;

use bulkhead_api::client::full_body;
use bulkhead_api::NodeStatus;
use common::*;
use http_body_util::BodyExt;
use hyper::Method;

/// The host pid of the node's agent (the init its supervisor cloned).
fn agent_pid(d: &Daemon, node: &str) -> i64 {
    d.supervisor_state(node)["init_pid"].as_i64().unwrap()
}

fn assert_alive(d: &Daemon, node: &str, pid: i64) {
    let rt = rt();
    let status = rt.block_on(d.client().find_node(node)).unwrap().status;
    assert_eq!(status, NodeStatus::Running, "{}", d.log());
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the agent (pid {pid}) died:\n{}",
        d.log()
    );
    assert_eq!(agent_pid(d, node), pid, "the node's init changed");
    let (code, out, err) = d.sh(node, "echo alive");
    assert_eq!((code, out.as_str()), (0, "alive\n"), "exec after: {err}");
}

/// Whether this process (root, like the daemon it starts) may lower OOM scores.
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    const CAP_SYS_RESOURCE: u32 = 24;
    eff & (1 << CAP_SYS_RESOURCE) != 0
}

#[test]
fn upload_bigger_than_memory_answers_507_and_node_survives() {
    if !privileged() {
        return;
    }
    // Defaults: storage_size 1G on a tmpfs charged to 512 MiB of RAM.
    let d = Daemon::start("bigcp", &[]);
    let n = d.add();
    let pid = agent_pid(&d, &n);
    let rt = rt();
    let c = d.client();
    d.sh(&n, "echo old > /big");
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>(4);
    let body =
        http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed();
    let path = format!("/vm/{n}/cp?path=/big");
    let resp = rt.block_on(async {
        let send = c.send(Method::POST, &path, body, None);
        let feed = async move {
            let chunk = bytes::Bytes::from(vec![b'x'; 1 << 20]);
            for _ in 0..700 {
                if tx
                    .send(Ok(hyper::body::Frame::data(chunk.clone())))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        };
        let (r, _) = tokio::join!(send, feed);
        r
    });
    let resp = resp.unwrap();
    let status = resp.status();
    let bytes = rt.block_on(resp.into_body().collect()).unwrap().to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("{status}: {}", String::from_utf8_lossy(&bytes)));
    assert_eq!(status.as_u16(), 507, "{body}");
    assert_eq!(body["code"], "no_space", "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("storage_size") && msg.contains("ram"),
        "the message does not name the limit: {msg}"
    );
    assert_alive(&d, &n, pid);
    assert_eq!(d.sh(&n, "cat /big").1, "old\n", "the old file was replaced");
    assert_eq!(
        d.sh(&n, "ls -A / | grep -c bulkhead-upload").1,
        "0\n",
        "the partial upload was left behind"
    );
    // The memory is back: a small upload works.
    let r = rt.block_on(c.send_ok(Method::POST, &path, full_body("new\n"), None));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(d.sh(&n, "cat /big").1, "new\n");
    d.stop_and_assert_clean();
}

#[test]
fn workloads_that_fill_memory_do_not_kill_the_agent() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("hog", &[]);
    let n = d.add();
    let pid = agent_pid(&d, &n);
    // The agent is OOM-unkillable where the host lets root lower scores (CAP_SYS_RESOURCE;
    // containers often lack it, and then the layer's cap below RAM is what protects it);
    // commands are preferred victims and cannot follow it there.
    let adj = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    let expected = if has_cap_sys_resource() { "-1000" } else { "0" };
    assert_eq!(adj.trim(), expected);
    let (_, out, _) = d.sh(
        &n,
        "cat /proc/self/oom_score_adj; echo -1000 > /proc/self/oom_score_adj || echo refused; \
         echo -998 > /proc/self/oom_score_adj || echo refused; \
         echo -1 > /proc/self/oom_score_adj || echo refused",
    );
    // The floor is 0: not the supervisor's own -998 (which a node once inherited).
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["500", "refused", "refused", "refused"],
        "{out}"
    );
    // Anonymous memory: the hog is killed (or fails), not PID 1.
    let (code, _, _) = d.sh(
        &n,
        "head -c 800000000 /dev/zero | tr '\\0' x | (v=$(cat); echo ${#v})",
    );
    assert_ne!(code, 0, "a 800 MB shell variable fit in 512 MiB");
    assert_alive(&d, &n, pid);
    // The writable layer (tmpfs, charged to the node's memory), then memory on top of it.
    let (code, _, _) = d.sh(&n, "dd if=/dev/zero of=/fill bs=1M count=700 2>&1");
    assert_ne!(code, 0, "700 MB fit in a node of 512 MiB");
    assert_alive(&d, &n, pid);
    let (code, _, _) = d.sh(&n, "rm -f /fill; dd if=/dev/zero of=/fill bs=1M count=300");
    assert_eq!(code, 0);
    let (code, _, _) = d.sh(
        &n,
        "head -c 400000000 /dev/zero | tr '\\0' x | (v=$(cat); echo ${#v})",
    );
    assert_ne!(code, 0);
    assert_alive(&d, &n, pid);
    d.stop_and_assert_clean();
}

/// A tar with `n` good files, then an entry of `bad` kind.
fn tar_with_bad_entry(bad: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..3 {
        let data = format!("good {i}\n");
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("dir/good{i}"), data.as_bytes())
            .unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    match bad {
        "escape" => {
            h.set_size(4);
            h.set_entry_type(tar::EntryType::Regular);
            // append_data refuses `..`: write the name into the header directly.
            h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../../escaped");
            h.set_cksum();
            b.append(&h, &b"evil"[..]).unwrap();
        }
        "hardlink" => {
            // A hard link to a file outside the archive (resolved beneath the staging
            // directory, where no /etc/passwd exists).
            h.set_size(0);
            h.set_entry_type(tar::EntryType::Link);
            b.append_link(&mut h, "dir/pw", "/etc/passwd").unwrap();
        }
        "device" => {
            h.set_size(0);
            h.set_entry_type(tar::EntryType::Char);
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
            b.append_data(&mut h, "dir/null", &[][..]).unwrap();
        }
        "truncated" => {
            h.set_size(100_000);
            h.set_entry_type(tar::EntryType::Regular);
            let mut v = b.into_inner().unwrap();
            // Drop the end-of-archive blocks `into_inner` wrote, then cut an entry short.
            v.truncate(v.len() - 1024);
            h.set_path("dir/cut").unwrap();
            h.set_cksum();
            v.extend_from_slice(h.as_bytes());
            v.extend_from_slice(&[b'y'; 1000]);
            return v;
        }
        _ => unreachable!(),
    }
    b.into_inner().unwrap()
}

#[test]
fn refused_tar_leaves_the_destination_untouched() {
    if !privileged() {
        return;
    }
    let d = Daemon::start("badtar", &[]);
    let n = d.add();
    let rt = rt();
    let c = d.client();
    d.sh(&n, "mkdir -p /dst/dir && echo old > /dst/dir/good0");
    for (bad, status) in [
        ("escape", 400),
        ("hardlink", 400),
        ("device", 400),
        ("truncated", 400),
    ] {
        for dst in ["/dst", "/fresh"] {
            let path = format!("/vm/{n}/cp?path={dst}&mode=tar");
            let r = rt
                .block_on(c.send_ok(
                    Method::POST,
                    &path,
                    full_body(tar_with_bad_entry(bad)),
                    Some("application/x-tar"),
                ))
                .map(|_| ());
            let e = r.expect_err(&format!("a tar with a {bad} entry was accepted"));
            assert_eq!(e.status().map(|s| s.as_u16()), Some(status), "{bad}: {e}");
            let (_, listing, _) =
                d.sh(&n, "cd / && find /dst /fresh /escaped 2>/dev/null; ls -A /");
            assert_eq!(
                d.sh(&n, "find /dst | sort").1,
                "/dst\n/dst/dir\n/dst/dir/good0\n",
                "{bad} into {dst}: {listing}"
            );
            assert_eq!(
                d.sh(&n, "cat /dst/dir/good0").1,
                "old\n",
                "{bad} into {dst}"
            );
            assert!(
                !listing.contains("/fresh") && !listing.contains("escaped"),
                "{bad} into {dst}: {listing}"
            );
            assert!(
                !listing.contains("bulkhead-stag"),
                "{bad} into {dst}: staging left: {listing}"
            );
        }
    }
    // A good archive still merges into an existing tree and creates a new one.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o600);
    b.append_data(&mut h, "dir/new", &b"new\n"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    b.append_link(&mut h, "dir/same", "dir/new").unwrap();
    let good = b.into_inner().unwrap();
    for dst in ["/dst", "/fresh"] {
        let path = format!("/vm/{n}/cp?path={dst}&mode=tar&uid=1000&gid=1000");
        rt.block_on(c.send_ok(Method::POST, &path, full_body(good.clone()), None))
            .unwrap();
    }
    assert_eq!(
        d.sh(&n, "find /dst /fresh | sort").1,
        "/dst\n/dst/dir\n/dst/dir/good0\n/dst/dir/new\n/dst/dir/same\n/fresh\n/fresh/dir\n/fresh/dir/new\n/fresh/dir/same\n"
    );
    assert_eq!(
        d.sh(&n, "stat -c %h /dst/dir/same /fresh/dir/same").1,
        "2\n2\n",
        "hard links were not linked"
    );
    assert_eq!(
        d.sh(
            &n,
            "stat -c '%a %u' /dst/dir/new /fresh/dir/new /dst/dir/good0"
        )
        .1,
        "600 1000\n600 1000\n644 0\n"
    );
    // A mount point inside the destination (/dev/shm is a tmpfs of its own): entries cannot
    // be renamed across it, so the upload is refused before anything moves.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, "top-file", &b"top"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, "shm/x", &b"shm"[..]).unwrap();
    let across = b.into_inner().unwrap();
    let e = rt
        .block_on(c.send_ok(
            Method::POST,
            &format!("/vm/{n}/cp?path=/dev&mode=tar"),
            full_body(across),
            None,
        ))
        .map(|_| ())
        .expect_err("a merge across a mount point was accepted");
    assert_eq!(e.status().map(|s| s.as_u16()), Some(400), "{e}");
    assert!(e.to_string().contains("mount point"), "{e}");
    assert_eq!(
        d.sh(
            &n,
            "ls -A /dev/top-file /dev/shm/x 2>&1 | grep -c 'No such'"
        )
        .1,
        "2\n"
    );
    d.stop_and_assert_clean();
}
