use super::*;

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn reader_of(data: Vec<u8>, limit: u64) -> ChanReader {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    for c in data.chunks(7000) {
        tx.try_send(Ok(c.to_vec())).unwrap();
    }
    ChanReader::new(rx, limit)
}

const B: Bounds = Bounds {
    max_entries: 100,
    max_bytes: 10 << 20,
    strip_setid: false,
};

fn id(u: u32, g: u32) -> (u32, u32) {
    (u, g)
}

#[test]
fn a_commit_is_sealed_then_unpacked_into_a_tree() {
    let t = tempfile::tempdir().unwrap();
    let Some(key) = seal::test_key(t.path(), "a") else {
        return;
    };
    let marker = b"plaintext-marker-0123456789".repeat(5000);
    let tar = tar_of(&[("etc/marker", &marker)]);
    let n = write_sealed(&key, "a", t.path(), "C1", reader_of(tar.clone(), 1 << 30)).unwrap();
    assert_eq!(n, tar.len() as u64);
    let sealed = fs::read(sealed_path(t.path(), "C1")).unwrap();
    assert!(
        !sealed
            .windows(b"plaintext-marker".len())
            .any(|w| w == b"plaintext-marker"),
        "the sealed file holds no plaintext"
    );
    assert!(!commits_dir(t.path()).join("C1.tmp").exists());
    let tree = ensure_tree(&key, "a", t.path(), "C1", "jail", &id, B).unwrap();
    assert_eq!(fs::read(tree.join("etc/marker")).unwrap(), marker);
    // Cached: a second call does not unpack again.
    assert_eq!(
        ensure_tree(&key, "a", t.path(), "C1", "jail", &id, B).unwrap(),
        tree
    );
    // Another tenant's name (the AAD), an edit or a truncation: no tree.
    assert!(ensure_tree(&key, "b", t.path(), "C1", "qemu", &id, B).is_err());
    let p = sealed_path(t.path(), "C1");
    let mut edited = sealed.clone();
    edited[100] ^= 1;
    fs::write(&p, &edited).unwrap();
    assert!(ensure_tree(&key, "a", t.path(), "C1", "qemu", &id, B).is_err());
    fs::write(&p, &sealed[..sealed.len() - 70_000]).unwrap();
    assert!(ensure_tree(&key, "a", t.path(), "C1", "qemu", &id, B).is_err());
    assert!(!tree_path(t.path(), "C1", "qemu").exists());
    let staging = fs::read_dir(t.path().join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(staging, 0);
    remove(t.path(), "C1");
    assert!(!tree.exists() && !p.exists());
}

#[test]
fn a_stream_past_its_limit_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let Some(key) = seal::test_key(t.path(), "a") else {
        return;
    };
    let tar = tar_of(&[("big", &vec![7u8; 300_000])]);
    let e = write_sealed(&key, "a", t.path(), "C2", reader_of(tar, 100_000)).unwrap_err();
    // Stopped at the chunk that passed it (chunks of 7000 bytes: the 15th).
    assert!(
        matches!(
            e,
            CommitError::TooLarge {
                limit: 100_000,
                read: 105_000
            }
        ),
        "{e}"
    );
    let left: Vec<_> = fs::read_dir(commits_dir(t.path()))
        .unwrap()
        .flatten()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_sweep_wipes_partial_and_unknown_commits_only() {
    let t = tempfile::tempdir().unwrap();
    let c = commits_dir(t.path());
    fs::create_dir_all(&c).unwrap();
    let i = t.path().join("images");
    fs::create_dir_all(i.join("commit-KEEP-jail")).unwrap();
    fs::create_dir_all(i.join("commit-GONE-jail/etc")).unwrap();
    fs::create_dir_all(i.join(".commit-X-jail.tmp-1")).unwrap();
    fs::create_dir_all(i.join("minimal-abc")).unwrap();
    for f in ["KEEP.sealed", "GONE.sealed", "HALF.tmp"] {
        fs::write(c.join(f), b"x").unwrap();
    }
    let known: HashSet<String> = ["KEEP".to_string()].into();
    let s = sweep(t.path(), &known);
    assert_eq!(
        s,
        Swept {
            partial: 2,
            orphans: 2
        }
    );
    let mut left: Vec<String> = fs::read_dir(&c)
        .unwrap()
        .chain(fs::read_dir(&i).unwrap())
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["KEEP.sealed", "commit-KEEP-jail", "minimal-abc"]);
}

#[test]
fn seal_round_trips_at_chunk_edges() {
    let t = tempfile::tempdir().unwrap();
    let Some(key) = seal::test_key(t.path(), "a") else {
        return;
    };
    for len in [0, 1, 65535, 65536, 65537, 3 * 65536] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut sealed = Vec::new();
        seal::seal_stream(&key, b"x", &data[..], &mut sealed).unwrap();
        let mut back = Vec::new();
        seal::open_stream(&key, b"x", &sealed[..], &mut back).unwrap();
        assert_eq!(back, data, "{len}");
        assert!(seal::open_stream(&key, b"y", &sealed[..], &mut Vec::new()).is_err());
    }
}
