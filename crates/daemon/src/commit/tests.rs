use super::*;
use std::collections::HashSet;

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

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_commit_is_sealed_then_unpacked_into_an_encrypted_image() {
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
        !contains(&sealed, b"plaintext-marker"),
        "the sealed file holds no plaintext"
    );
    assert!(!commits_dir(t.path()).join("C1.tmp").exists());
    let mounts = || fs::read_to_string("/proc/self/mountinfo").unwrap();
    let before = mounts();
    let img = image::ensure_image(&key, "a", t.path(), "C1", "jail", &id, B).unwrap();
    assert_eq!(img, image::image_path(t.path(), "C1", "jail"));
    // The image holds only ciphertext of the tree, and nothing stays mounted or attached.
    let raw = fs::read(&img).unwrap();
    assert!(
        !contains(&raw, b"plaintext-marker"),
        "plaintext in the image"
    );
    assert_eq!(mounts(), before);
    assert!(bulkhead_storage::loopdev::find_backing(&img)
        .unwrap()
        .is_none());
    // Read back through a private mount, as a driver that makes a disk from it does.
    let back = image::with_tree(&key, t.path(), "C1", &img, |p| {
        fs::read(p.join("etc/marker")).unwrap()
    })
    .unwrap();
    assert_eq!(back, marker);
    // Cached: a second call does not unpack again.
    let m0 = fs::metadata(&img).unwrap().modified().unwrap();
    assert_eq!(
        image::ensure_image(&key, "a", t.path(), "C1", "jail", &id, B).unwrap(),
        img
    );
    assert_eq!(fs::metadata(&img).unwrap().modified().unwrap(), m0);
    // Another tenant's name (the AAD), an edit or a truncation: no image.
    assert!(image::ensure_image(&key, "b", t.path(), "C1", "qemu", &id, B).is_err());
    let p = sealed_path(t.path(), "C1");
    let mut edited = sealed.clone();
    edited[100] ^= 1;
    fs::write(&p, &edited).unwrap();
    assert!(image::ensure_image(&key, "a", t.path(), "C1", "qemu", &id, B).is_err());
    fs::write(&p, &sealed[..sealed.len() - 70_000]).unwrap();
    assert!(image::ensure_image(&key, "a", t.path(), "C1", "qemu", &id, B).is_err());
    assert!(!image::image_path(t.path(), "C1", "qemu").exists());
    let staging = fs::read_dir(t.path().join("images"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".commit"))
        .count();
    assert_eq!(staging, 0);
    sweep::remove(t.path(), "C1");
    assert!(!img.exists() && !p.exists());
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
    fs::create_dir_all(i.join(".tree")).unwrap();
    // An earlier version's plaintext trees: of a commit a node uses (kept until the commit
    // goes), of one no node uses (wiped), of an unknown one (wiped).
    fs::create_dir_all(i.join("commit-USED-jail/etc")).unwrap();
    fs::create_dir_all(i.join("commit-KEEP-qemu/etc")).unwrap();
    fs::create_dir_all(i.join("commit-GONE-jail/etc")).unwrap();
    for f in [
        "commit-KEEP-jail.img",
        "commit-GONE-qemu.img",
        ".commit-X-jail.img.tmp-1",
    ] {
        fs::write(i.join(f), b"x").unwrap();
    }
    fs::create_dir_all(i.join("minimal-abc")).unwrap();
    for f in ["KEEP.sealed", "USED.sealed", "GONE.sealed", "HALF.tmp"] {
        fs::write(c.join(f), b"x").unwrap();
    }
    let known: HashSet<String> = ["KEEP".to_string(), "USED".to_string()].into();
    let in_use: HashSet<String> = ["USED".to_string()].into();
    let s = sweep::sweep(t.path(), &known, &in_use);
    assert_eq!(
        s,
        sweep::Swept {
            partial: 2,
            orphans: 3,
            legacy: 1,
        }
    );
    let mut left: Vec<String> = fs::read_dir(&c)
        .unwrap()
        .chain(fs::read_dir(&i).unwrap())
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            ".tree",
            "KEEP.sealed",
            "USED.sealed",
            "commit-KEEP-jail.img",
            "commit-USED-jail",
            "minimal-abc"
        ]
    );
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
