//! The chain, its files and `verify` against each kind of tampering, with real files.

use super::verify::{chain_order, load_key, verify};
use super::*;
use ring::signature::Ed25519KeyPair;
use std::path::PathBuf;

fn pair() -> Ed25519KeyPair {
    Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap()
}

fn rec(i: usize) -> Record {
    Record {
        request_id: format!("r{i}"),
        principal: "uid:0".into(),
        via: "socket".into(),
        tenant: "t".into(),
        action: if i.is_multiple_of(2) {
            "create_node"
        } else {
            "exec_in_node"
        }
        .into(),
        object: format!("node/n-{i}"),
        outcome: if i.is_multiple_of(3) {
            "denied"
        } else {
            "allowed"
        }
        .into(),
        reason: String::new(),
    }
}

fn cfg() -> AuditConfig {
    AuditConfig::default()
}

/// A closed trail of `n` records with a checkpoint in the middle; its files and key.
fn trail(dir: &Path, n: usize, c: &AuditConfig) -> (Vec<PathBuf>, Vec<u8>) {
    let a = Audit::start(dir, "t", pair(), c).unwrap();
    for i in 0..n {
        a.record(rec(i));
        if i == n / 2 {
            a.checkpoint();
        }
    }
    a.close();
    let files = writer::files(dir)
        .unwrap()
        .into_iter()
        .map(|f| f.1)
        .collect();
    let key = load_key(None, &dir.join("audit-1.jsonl")).unwrap();
    (files, key)
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

fn write(p: &Path, lines: &[String]) {
    std::fs::write(p, lines.join("\n") + "\n").unwrap();
}

#[test]
fn an_untouched_trail_verifies() {
    let d = tempfile::tempdir().unwrap();
    let (files, key) = trail(d.path(), 10, &cfg());
    assert_eq!(files.len(), 1);
    let r = verify(&files, &key, false).unwrap();
    // 10 records, a checkpoint in the middle and one at stop.
    assert_eq!((r.lines, r.checkpoints, r.last_seq), (12, 2, 12));
    assert_eq!(r.owner.as_deref(), Some("t"));
    let l = lines(&files[0]);
    assert!(l[0].contains("\"prev\":\"0000"), "{}", l[0]);
    assert!(l.last().unwrap().contains("\"checkpoint\""));
    // Another key does not verify it.
    let other = Ed25519KeyPair::from_seed_unchecked(&[8u8; 32]).unwrap();
    use ring::signature::KeyPair;
    assert!(verify(&files, other.public_key().as_ref(), false).is_err());
}

fn tampered(f: impl FnOnce(&mut Vec<String>)) -> super::verify::Bad {
    let d = tempfile::tempdir().unwrap();
    let (files, key) = trail(d.path(), 10, &cfg());
    let mut l = lines(&files[0]);
    f(&mut l);
    write(&files[0], &l);
    verify(&files, &key, false).unwrap_err()
}

#[test]
fn an_edited_line_is_named() {
    let b = tampered(|l| l[3] = l[3].replace("node/n-3", "node/n-9"));
    assert_eq!(b.line, 4, "{b}");
    assert!(b.why.contains("edited"), "{b}");
}

#[test]
fn a_dropped_line_is_named() {
    let b = tampered(|l| {
        l.remove(3);
    });
    assert_eq!(b.line, 4, "{b}");
    assert!(b.why.contains("missing"), "{b}");
}

#[test]
fn an_inserted_line_is_named() {
    // A copy of an earlier line.
    let b = tampered(|l| {
        let c = l[1].clone();
        l.insert(4, c);
    });
    assert_eq!(b.line, 5, "{b}");
    assert!(b.why.contains("inserted"), "{b}");
    // A forged line that links to the line before it and takes the next seq.
    let b = tampered(|l| {
        let h = line::hash(l[3].as_bytes());
        let forged = line::record_line(5, "2026-01-01T00:00:00.000Z", &rec(99), &h);
        l.insert(4, forged);
    });
    assert_eq!(b.line, 5, "{b}");
    assert!(b.why.contains("inserted"), "{b}");
}

#[test]
fn reordered_lines_are_named() {
    let b = tampered(|l| l.swap(2, 3));
    assert_eq!(b.line, 3, "{b}");
    assert!(b.why.contains("out of order"), "{b}");
}

#[test]
fn a_truncated_trail_is_named() {
    // Whole lines cut off the end (the last checkpoint with them).
    let b = tampered(|l| l.truncate(9));
    assert_eq!(b.line, 9, "{b}");
    assert!(b.why.contains("without a signed checkpoint"), "{b}");
    // Cut in the middle of a line.
    let d = tempfile::tempdir().unwrap();
    let (files, key) = trail(d.path(), 10, &cfg());
    let text = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &text[..text.len() - 20]).unwrap();
    let b = verify(&files, &key, false).unwrap_err();
    assert_eq!(b.line, 12, "{b}");
    assert!(b.why.contains("cut short"), "{b}");
}

#[test]
fn a_rewritten_chain_fails_at_its_checkpoint() {
    // Drop a line and rewrite every later seq and prev: only the signature can tell.
    let b = tampered(|l| {
        l.remove(2);
        let mut prev = line::hash(l[1].as_bytes());
        for (i, entry) in l.iter_mut().enumerate().skip(2) {
            let mut v: serde_json::Value = serde_json::from_str(entry).unwrap();
            v["seq"] = (i as u64 + 1).into();
            v["prev"] = prev.clone().into();
            *entry = serde_json::to_string(&v).unwrap();
            prev = line::hash(entry.as_bytes());
        }
    });
    assert!(b.why.contains("signature"), "{b}");
    assert_eq!(b.line, 6, "{b}");
}

#[test]
fn rotation_keeps_the_chain_across_files() {
    let d = tempfile::tempdir().unwrap();
    let c = AuditConfig {
        rotate_size: 1024,
        ..cfg()
    };
    let (files, key) = trail(d.path(), 40, &c);
    assert!(files.len() >= 3, "{files:?}");
    let r = verify(&chain_order(files.clone()), &key, false).unwrap();
    assert_eq!(r.lines, 40 + r.checkpoints);
    // Every file ends with a checkpoint; the next begins with the hash of it.
    for w in files.windows(2) {
        let (a, b) = (lines(&w[0]), lines(&w[1]));
        assert!(a.last().unwrap().contains("\"checkpoint\""));
        let h: line::Head = serde_json::from_str(&b[0]).unwrap();
        assert_eq!(h.prev, line::hash(a.last().unwrap().as_bytes()));
    }
    // A later file alone verifies, anchored on its first line.
    let r = verify(&files[1..], &key, false).unwrap();
    assert!(r.anchored);
    // A missing file in the middle is named.
    let mut gap = files.clone();
    gap.remove(1);
    let b = verify(&gap, &key, false).unwrap_err();
    assert_eq!((b.file.clone(), b.line), (files[2].clone(), 1), "{b}");
    assert!(b.why.contains("audit-2.jsonl missing"), "{b}");
}

#[test]
fn rotation_by_age_keeps_the_chain_across_files() {
    let d = tempfile::tempdir().unwrap();
    let c = AuditConfig {
        rotate_age: std::time::Duration::from_secs(1),
        ..cfg()
    };
    let a = Audit::start(d.path(), "t", pair(), &c).unwrap();
    a.record(rec(0));
    a.record(rec(1));
    a.flush();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The first line after the file's first second begins the next file.
    a.record(rec(2));
    a.close();
    let files: Vec<PathBuf> = writer::files(d.path())
        .unwrap()
        .into_iter()
        .map(|f| f.1)
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    let key = load_key(None, &files[0]).unwrap();
    let r = verify(&files, &key, false).unwrap();
    // Two records and the rotation's checkpoint, then one record and the stop's checkpoint.
    assert_eq!((r.lines, r.checkpoints), (5, 2));
    let (a, b) = (lines(&files[0]), lines(&files[1]));
    assert_eq!(a.len(), 3);
    assert!(a[2].contains("\"checkpoint\""), "{}", a[2]);
    let h: line::Head = serde_json::from_str(&b[0]).unwrap();
    assert_eq!(h.prev, line::hash(a[2].as_bytes()));
    assert!(b[0].contains("\"request_id\":\"r2\""), "{}", b[0]);
}

#[test]
fn the_head_is_signed_at_the_interval_without_a_stop() {
    let d = tempfile::tempdir().unwrap();
    let c = AuditConfig {
        checkpoint_interval: std::time::Duration::from_secs(1),
        ..cfg()
    };
    let a = Audit::start(d.path(), "t", pair(), &c).unwrap();
    a.record(rec(0));
    a.flush();
    let files: Vec<PathBuf> = writer::files(d.path())
        .unwrap()
        .into_iter()
        .map(|f| f.1)
        .collect();
    let key = load_key(None, &files[0]).unwrap();
    assert!(verify(&files, &key, false).is_err(), "not signed yet");
    // Still running, no checkpoint asked for: the interval's own checkpoint signs the head.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while verify(&files, &key, false).is_err() {
        assert!(
            std::time::Instant::now() < until,
            "no checkpoint within 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let r = verify(&files, &key, false).unwrap();
    assert_eq!((r.lines, r.checkpoints), (2, 1));
    a.close();
}

#[test]
fn a_restart_continues_the_chain_and_a_live_trail_verifies_with_live() {
    let d = tempfile::tempdir().unwrap();
    let (_, key) = trail(d.path(), 3, &cfg());
    // A second run appends to the same file.
    let a = Audit::start(d.path(), "t", pair(), &cfg()).unwrap();
    a.record(rec(7));
    a.flush();
    let files: Vec<PathBuf> = writer::files(d.path())
        .unwrap()
        .into_iter()
        .map(|f| f.1)
        .collect();
    assert_eq!(files.len(), 1);
    // Still being written: unsigned at the end.
    assert!(verify(&files, &key, false).is_err());
    let r = verify(&files, &key, true).unwrap();
    assert_eq!(r.unsigned, 1);
    a.close();
    let r = verify(&files, &key, false).unwrap();
    assert_eq!(r.last_seq, 3 + 2 + 1 + 1);
}

#[test]
fn a_damaged_end_starts_a_new_file() {
    let d = tempfile::tempdir().unwrap();
    let (files, key) = trail(d.path(), 3, &cfg());
    let text = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &text[..text.len() - 5]).unwrap();
    let a = Audit::start(d.path(), "t", pair(), &cfg()).unwrap();
    a.record(rec(1));
    a.close();
    assert!(d.path().join("audit-2.jsonl").exists());
    let b = verify(&files, &key, false).unwrap_err();
    assert!(b.why.contains("cut short"), "{b}");
}

#[test]
fn queries_filter_by_time_action_and_outcome() {
    let d = tempfile::tempdir().unwrap();
    let a = Audit::start(d.path(), "t", pair(), &cfg()).unwrap();
    for i in 0..6 {
        a.record(rec(i));
    }
    a.checkpoint();
    let read = |f: query::Filter| {
        let (mut out, mut n) = (Vec::new(), 0);
        let cut = a.read(&f, &mut out, &mut n);
        (String::from_utf8(out).unwrap(), n, cut)
    };
    let all = query::Filter {
        limit: 100,
        ..Default::default()
    };
    let (text, n, cut) = read(all.clone());
    assert_eq!((n, cut), (6, false));
    assert!(!text.contains("checkpoint"));
    let (_, n, _) = read(query::Filter {
        action: Some("create_node".into()),
        ..all.clone()
    });
    assert_eq!(n, 3);
    let (_, n, _) = read(query::Filter {
        outcome: Some("denied".into()),
        ..all.clone()
    });
    assert_eq!(n, 2);
    let (_, n, cut) = read(query::Filter {
        limit: 4,
        ..all.clone()
    });
    assert_eq!((n, cut), (4, true));
    let (_, n, _) = read(query::Filter {
        since: Some(i64::MAX / 2),
        ..all.clone()
    });
    assert_eq!(n, 0);
    let (_, n, _) = read(query::Filter {
        until: Some(i64::MAX / 2),
        since: Some(0),
        ..all
    });
    assert_eq!(n, 6);
    a.close();
}

#[test]
fn a_disabled_trail_writes_nothing() {
    let a = Audit::default();
    a.record(rec(1));
    a.close();
    assert!(!a.enabled());
    assert!(a.dir().is_none());
}

#[test]
fn action_names_are_snake_case() {
    assert_eq!(action_name("CreateNode"), "create_node");
    assert_eq!(action_name("ReadAudit"), "read_audit");
}
