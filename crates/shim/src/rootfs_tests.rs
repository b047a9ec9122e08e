use super::*;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, PermissionsExt};

#[derive(Debug, PartialEq)]
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    link: Option<String>,
    data: Vec<u8>,
}

/// Reads an archive back: name → entry (the last one wins, as on unpack), plus the order.
fn read_back(bytes: &[u8]) -> (BTreeMap<String, Entry>, Vec<String>) {
    let mut a = tar::Archive::new(bytes);
    let (mut map, mut order) = (BTreeMap::new(), Vec::new());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with('/') && !name.split('/').any(|c| c == ".."),
            "{name}"
        );
        assert!(
            e.pax_extensions().unwrap().is_none(),
            "no xattrs/pax: {name}"
        );
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        order.push(name.clone());
        map.insert(
            name,
            Entry {
                kind: h.entry_type(),
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                link: e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned()),
                data,
            },
        );
    }
    (map, order)
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

/// A small rootfs: owners, modes, a hard link, symlinks pointing outside, a fifo.
fn tree() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join("home/user")).unwrap();
    std::fs::create_dir_all(r.join("run")).unwrap();
    std::fs::create_dir_all(r.join("var")).unwrap();
    std::fs::write(r.join("etc/hosts"), "127.0.0.1 image\n").unwrap();
    std::fs::write(r.join("home/user/notes"), "mine").unwrap();
    chown(&r.join("home/user"), 1000, 1000);
    chown(&r.join("home/user/notes"), 1000, 1001);
    std::fs::set_permissions(
        r.join("home/user/notes"),
        std::fs::Permissions::from_mode(0o4750),
    )
    .unwrap();
    std::fs::hard_link(r.join("home/user/notes"), r.join("home/user/again")).unwrap();
    symlink("/etc/shadow", r.join("etc/escape")).unwrap();
    symlink("../../../../../../etc", r.join("home/up")).unwrap();
    symlink("/run", r.join("var/run")).unwrap();
    symlink("../run/resolv.real", r.join("etc/resolv.conf")).unwrap();
    chown(&r.join("etc/escape"), 7, 8);
    // Names and link targets past the 100 bytes of a plain tar header.
    let long = "n".repeat(150);
    std::fs::create_dir_all(r.join(&long)).unwrap();
    std::fs::write(r.join(&long).join(&long), "deep").unwrap();
    symlink(format!("/{long}/{long}"), r.join("longlink")).unwrap();
    nix_mkfifo(&r.join("run/fifo"));
    d
}

fn nix_mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only reads it.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

fn tar_of(root: &Path, host: &[HostFile]) -> Vec<u8> {
    let mut out = Vec::new();
    write_tar(root, host, &mut out).unwrap();
    out
}

#[test]
fn rootfs_tree_as_tar() {
    let d = tree();
    let (m, order) = read_back(&tar_of(d.path(), &[]));
    // Symlinks are links, never followed: the host's /etc/shadow is not in the archive.
    let esc = &m["etc/escape"];
    assert_eq!(
        (esc.kind, esc.link.as_deref()),
        (tar::EntryType::Symlink, Some("/etc/shadow"))
    );
    assert_eq!((esc.uid, esc.gid), (7, 8));
    assert_eq!(m["home/up"].link.as_deref(), Some("../../../../../../etc"));
    assert!(!m.keys().any(|k| k.starts_with("home/up/")));
    // Owners and modes kept; the second name of a hard link is a link to the first.
    let notes = &m["home/user/again"];
    assert_eq!(
        (notes.kind, notes.uid, notes.gid, notes.mode),
        (tar::EntryType::Regular, 1000, 1001, 0o4750)
    );
    assert_eq!(notes.data, b"mine");
    let link = &m["home/user/notes"];
    assert_eq!(
        (link.kind, link.link.as_deref()),
        (tar::EntryType::Link, Some("home/user/again"))
    );
    assert_eq!(
        (m["home/user"].kind, m["home/user"].uid),
        (tar::EntryType::Directory, 1000)
    );
    // The fifo is skipped; directories come before their contents.
    assert!(!m.contains_key("run/fifo"));
    let pos = |n: &str| order.iter().position(|o| o == n).unwrap();
    assert!(pos("home") < pos("home/user") && pos("home/user") < pos("home/user/again"));
    assert!(!m.contains_key(""));
    let long = "n".repeat(150);
    assert_eq!(m[&format!("{long}/{long}")].data, b"deep");
    assert_eq!(
        m["longlink"].link.as_deref(),
        Some(format!("/{long}/{long}").as_str())
    );
}

#[test]
fn host_files_appended_inside_the_root() {
    let d = tree();
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    std::fs::write(h.join("etc-hosts"), "10.0.0.5 web-0\n").unwrap();
    std::fs::write(h.join("resolv.conf"), "nameserver 10.96.0.10\n").unwrap();
    std::fs::write(h.join("termination"), "").unwrap();
    // A projected volume: a directory with kubelet's ..data symlinks.
    let vol = h.join("kube-api-access");
    std::fs::create_dir_all(vol.join("..2025_01_01")).unwrap();
    std::fs::write(vol.join("..2025_01_01/token"), "tok").unwrap();
    symlink("..2025_01_01", vol.join("..data")).unwrap();
    symlink("..data/token", vol.join("token")).unwrap();
    chown(&vol.join("..2025_01_01/token"), 0, 2000);
    symlink("/etc/shadow", h.join("sneaky")).unwrap();
    let hf = |host: &Path, dest: &str| HostFile {
        host: host.into(),
        dest: dest.into(),
    };
    let files = [
        hf(&h.join("etc-hosts"), "/etc/hosts"),
        // /etc/resolv.conf is a symlink in the image: the file lands where it points.
        hf(&h.join("resolv.conf"), "/etc/resolv.conf"),
        hf(&h.join("termination"), "/dev/termination-log"),
        // /var/run -> /run is followed inside the root.
        hf(&vol, "/var/run/secrets/kubernetes.io/serviceaccount"),
    ];
    let (m, order) = read_back(&tar_of(d.path(), &files));
    assert_eq!(m["etc/hosts"].data, b"10.0.0.5 web-0\n");
    assert!(order.iter().filter(|n| *n == "etc/hosts").count() == 2);
    assert_eq!(m["run/resolv.real"].data, b"nameserver 10.96.0.10\n");
    assert_eq!(m["etc/resolv.conf"].kind, tar::EntryType::Symlink);
    // Missing parents are made (0755 root); existing ones are not rewritten.
    assert_eq!(
        (m["dev"].kind, m["dev"].mode, m["dev"].uid),
        (tar::EntryType::Directory, 0o755, 0)
    );
    assert_eq!(order.iter().filter(|n| *n == "etc").count(), 1);
    let sa = "run/secrets/kubernetes.io/serviceaccount";
    assert_eq!(m[&format!("{sa}/..2025_01_01/token")].data, b"tok");
    assert_eq!(m[&format!("{sa}/..2025_01_01/token")].gid, 2000);
    assert_eq!(
        m[&format!("{sa}/token")].link.as_deref(),
        Some("..data/token")
    );
    assert!(m.contains_key("run/secrets"));
    assert!(!m.keys().any(|k| k.starts_with("var/run/")));

    // A host file that is itself a symlink is not followed.
    let mut out = Vec::new();
    let e = write_tar(d.path(), &[hf(&h.join("sneaky"), "/etc/x")], &mut out).unwrap_err();
    assert!(e.to_string().contains("symlink"), "{e}");
    let e = write_tar(d.path(), &[hf(&h.join("missing"), "/etc/x")], &mut out).unwrap_err();
    assert!(e.to_string().contains("missing"), "{e}");
}

#[test]
fn resolve_stays_in_root() {
    let d = tree();
    let r = d.path();
    let res = |p: &str| resolve_in_root(r, p).unwrap();
    assert_eq!(res("/etc/hosts"), PathBuf::from("etc/hosts"));
    assert_eq!(res("/var/run/x"), PathBuf::from("run/x"));
    assert_eq!(res("/home/up/passwd"), PathBuf::from("etc/passwd"));
    assert_eq!(res("/etc/escape"), PathBuf::from("etc/shadow"));
    assert_eq!(res("/../../x"), PathBuf::from("x"));
    symlink("loop", r.join("loop")).unwrap();
    assert!(resolve_in_root(r, "/loop/x").is_err());
}

#[tokio::test]
async fn streamed_body_is_the_same_archive() {
    let d = tree();
    // Big enough for several chunks through the bounded channel.
    let big: Vec<u8> = (0..3 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.path().join("big"), &big).unwrap();
    let mut body = Box::pin(tar_body(d.path(), Vec::new()));
    let mut bytes = Vec::new();
    let mut chunks = 0;
    while let Some(c) = body.next().await {
        bytes.extend_from_slice(&c.unwrap());
        chunks += 1;
    }
    assert!(chunks > 3);
    assert_eq!(bytes, tar_of(d.path(), &[]));
    assert_eq!(read_back(&bytes).0["big"].data, big);

    // An error ends the stream with that error.
    let mut body = Box::pin(tar_body(
        d.path(),
        vec![HostFile {
            host: "/nonexistent/host".into(),
            dest: "/x".into(),
        }],
    ));
    let mut last = None;
    while let Some(c) = body.next().await {
        last = Some(c);
    }
    assert!(last.unwrap().is_err());

    // Dropping the body stops the writer (no hang, no panic).
    let body = tar_body(d.path(), Vec::new());
    drop(body);
}

/// Unmounts whatever a failed test left (lazily), so no mount outlives the test.
struct Unmount(PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        unmount_rootfs(&self.0);
    }
}

fn mount(typ: &str, source: &str, options: &[String]) -> Mount {
    let mut m = Mount::new();
    m.type_ = typ.into();
    m.source = source.into();
    m.options = options.to_vec();
    m
}

/// containerd's overlayfs snapshotter and a read-only bind, mounted and unmounted for real.
#[test]
fn mount_and_unmount_rootfs() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting needs root");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s);
    for dir in ["lower", "upper", "work", "bindsrc"] {
        std::fs::create_dir(p(dir)).unwrap();
    }
    std::fs::write(p("lower/from-image"), "layer").unwrap();
    std::fs::write(p("bindsrc/file"), "bound").unwrap();
    let target = p("bundle/rootfs");
    let _guard = Unmount(target.clone());
    let opts = vec![
        "index=off".to_string(),
        format!("workdir={}", p("work").display()),
        format!("upperdir={}", p("upper").display()),
        format!("lowerdir={}", p("lower").display()),
    ];
    mount_rootfs(&[mount("overlay", "overlay", &opts)], &target).unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("from-image")).unwrap(),
        "layer"
    );
    std::fs::write(target.join("written"), "w").unwrap();
    assert!(p("upper/written").exists());
    // What the tar body sees is the mounted rootfs.
    let (m, _) = read_back(&tar_of(&target, &[]));
    assert!(m.contains_key("from-image") && m.contains_key("written"));
    unmount_rootfs(&target);
    assert!(!target.join("from-image").exists());

    let bind = vec!["rbind".to_string(), "ro".to_string()];
    mount_rootfs(
        &[mount("bind", p("bindsrc").to_str().unwrap(), &bind)],
        &target,
    )
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(target.join("file")).unwrap(),
        "bound"
    );
    let e = std::fs::write(target.join("new"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    unmount_rootfs(&target);
    assert!(!target.join("file").exists());

    // A failing mount says which one and why.
    let e = mount_rootfs(
        &[mount(
            "overlay",
            "overlay",
            &["lowerdir=/nonexistent/x".into()],
        )],
        &target,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("rootfs mount 0") && e.contains("overlay"), "{e}");
    let mut bad = mount("bind", "/x", &[]);
    bad.target = "../escape".into();
    assert!(mount_rootfs(&[bad], &target)
        .unwrap_err()
        .to_string()
        .contains("relative"));
}
