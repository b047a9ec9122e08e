//! The registry's bounds, ids and scoping, on execs that could not start (no session needed);
//! execs with real sessions are driven end to end (`crates/bulkhead/tests/e2e_exec_bg.rs`).

use super::*;
use bulkhead_core::Code;

fn launch(ring: u64) -> Launch {
    Launch {
        command: "nope".into(),
        args: vec!["a".into()],
        cwd: None,
        uid: 0,
        ring_bytes: ring,
        base64: true,
        opts: Default::default(),
    }
}

fn failed(b: &BgExecs, node: &str) -> Result<Arc<BgExec>, DomainError> {
    Ok(b.reserve(node, 10)?
        .launch_failed(launch(10), 127, "not found"))
}

#[tokio::test]
async fn limits_per_node_per_tenant_and_ring_are_429() {
    let b = BgExecs::new(Limits {
        per_node: 2,
        per_tenant: 3,
        ring_total: 45,
    });
    failed(&b, "a-1").unwrap();
    failed(&b, "a-1").unwrap();
    let e = failed(&b, "a-1").err().unwrap();
    assert_eq!(e.code, Code::TooManyExecs);
    assert!(
        e.message.contains("node \"a-1\" already has 2"),
        "{}",
        e.message
    );
    // A reservation counts until it is dropped.
    let r = b.reserve("a-2", 10).unwrap();
    let e = failed(&b, "a-3").err().unwrap();
    assert!(e.message.contains("tenant already has 3"), "{}", e.message);
    drop(r);
    let e = b.reserve("a-3", 30).err().unwrap();
    assert!(e.message.contains("bytes of ring"), "{}", e.message);
    failed(&b, "a-3").unwrap();
    // Deleting exited ones makes room.
    let id = b.list("a-1")[0].id.clone();
    b.remove("a-1", &id).unwrap();
    failed(&b, "a-1").unwrap();
}

#[tokio::test]
async fn ids_are_random_and_scoped_to_their_node() {
    let b = BgExecs::default();
    let x = failed(&b, "a-1").unwrap();
    let y = failed(&b, "a-1").unwrap();
    assert!(x.id.starts_with("ex_") && x.id.len() == 35, "{}", x.id);
    assert_ne!(x.id, y.id);
    assert_eq!(b.get("a-1", &x.id).unwrap().id, x.id);
    // Another node's exec is not found, like one that never was.
    assert_eq!(b.get("a-2", &x.id).err().unwrap().code, Code::NotFound);
    assert_eq!(b.get("a-1", "ex_00").err().unwrap().code, Code::NotFound);
    // Deleted: gone (410), and no longer listed; another node still cannot see it.
    b.remove("a-1", &x.id).unwrap();
    assert_eq!(b.get("a-1", &x.id).err().unwrap().code, Code::ExecGone);
    assert_eq!(b.get("a-2", &x.id).err().unwrap().code, Code::NotFound);
    assert_eq!(b.list("a-1").len(), 1);
    // A node that goes takes its execs along, and one being started on it is not kept.
    let r = b.reserve("a-1", 10).unwrap();
    b.forget_node("a-1");
    assert!(b.list("a-1").is_empty());
    assert_eq!(b.get("a-1", &y.id).err().unwrap().code, Code::NotFound);
    let late = r.launch_failed(launch(10), 127, "x");
    assert_eq!(b.get("a-1", &late.id).err().unwrap().code, Code::NotFound);
    assert!(b.list("a-1").is_empty());
}

#[tokio::test]
async fn a_command_that_could_not_start_has_ended_with_its_reason() {
    let b = BgExecs::default();
    let e = failed(&b, "a-1").unwrap();
    let i = e.info();
    assert!(!i.running);
    assert_eq!((i.exit_code, i.pid, i.next_id), (Some(127), 0, 3));
    assert_eq!(i.args, ["a"]);
    let s = e.read(0);
    assert!(s.ended && s.gap.is_none());
    assert_eq!(
        s.frames[0].1,
        Entry::Output {
            stderr: true,
            data: b"not found\n".to_vec()
        }
    );
    // Waiting and killing an ended exec answer at once.
    let t = std::time::Instant::now();
    assert_eq!(e.wait(Duration::from_secs(5)).await.unwrap().exit_code, 127);
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(
        e.kill(libc::SIGTERM, Duration::ZERO).await.unwrap(),
        (false, String::new())
    );
}

#[test]
fn exit_fields_follow_the_shell() {
    assert_eq!(exit_fields(Some(3), None), (3, None));
    assert_eq!(exit_fields(None, Some(9)), (137, Some("SIGKILL".into())));
    assert_eq!(exit_fields(None, None), (-1, None));
}
