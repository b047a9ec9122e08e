//! Unpacking a commit's tar into an image tree on the host. The tar was made by the node's
//! agent, which the node's root controls: it is hostile input, read by the root daemon.
//!
//! Invariants:
//! - the tree is built in a directory nothing else writes in meanwhile (the encrypted `data`
//!   directory of a fresh image, mounted for the unpack alone), so paths are stable; the
//!   image counts only once every entry was accepted (the caller renames it into place), and
//!   a refused archive discards it whole;
//! - no entry is written outside it: absolute names and `..` are refused outright, every entry
//!   goes through `tar`'s `unpack_in` (which refuses a parent resolving outside, and a hard
//!   link whose source does), and owners and modes are set on the entry itself (never through
//!   a symlink, and only after checking its parent resolves inside);
//! - device nodes are never made (a node gets its devices from its driver); setuid and setgid
//!   bits are kept only when the tenant's policy lets commands run as root;
//! - the node's mount points (`proc`, `sys`, `dev`, `run`, `tmp`, `.bulkhead`) are plain
//!   directories in the tree, empty: the archive may have them only as directories (a symlink
//!   there would redirect a driver's mounts), and nothing below them;
//! - bounded: at most `max_entries` entries and `max_bytes` of file data.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Top-level names a driver mounts over: directories, empty in a commit.
pub const MOUNT_POINTS: &[&str] = &["proc", "sys", "dev", "run", "tmp", ".bulkhead"];

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry {path}: {why}")]
    Refused { path: String, why: String },
    #[error("the archive has more than {0} entries")]
    TooManyEntries(u64),
    #[error("the archive holds more than {0} bytes of files")]
    TooLarge(u64),
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// What an unpack may hold, and its policy.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_entries: u64,
    pub max_bytes: u64,
    /// Clear setuid/setgid bits (the tenant's policy forbids commands as root).
    pub strip_setid: bool,
}

/// What an unpack did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
    /// Device nodes left out.
    pub devices_skipped: u64,
}

fn refused(path: &Path, why: impl Into<String>) -> UnpackError {
    UnpackError::Refused {
        path: path.display().to_string(),
        why: why.into(),
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> UnpackError + 'a {
    move |source| UnpackError::Io {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Unpacks `r` into `root`, an empty directory nothing else writes in meanwhile (the `data`
/// directory of a commit's image, mounted for this unpack only: `super::image`). `owner` maps
/// the node's ids to the host's; the root ends owned by the node's root, mode 0755. A refused
/// archive leaves whatever it had unpacked: the caller discards the whole image.
pub fn unpack_root(
    r: impl Read,
    root: &Path,
    owner: &dyn Fn(u32, u32) -> (u32, u32),
    bounds: Bounds,
) -> Result<Unpacked, UnpackError> {
    let u = unpack_into(r, root, owner, bounds)?;
    let (uid, gid) = owner(0, 0);
    lchown(root, Some(uid), Some(gid)).map_err(io_err("chown", root))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).map_err(io_err("chmod", root))?;
    Ok(u)
}

/// Sets the owner (mapped) and mode of an unpacked entry, on the entry itself.
fn finish_entry(
    root: &Path,
    rel: &Path,
    (uid, gid, mode): (u32, u32, u32),
    owner: &dyn Fn(u32, u32) -> (u32, u32),
    strip_setid: bool,
) -> Result<(), UnpackError> {
    let p = root.join(rel);
    // The parent resolves inside the tree (tar checked it; checked again, cheaply).
    let parent = p.parent().unwrap_or(root);
    let real = parent.canonicalize().map_err(io_err("resolving", parent))?;
    let base = root.canonicalize().map_err(io_err("resolving", root))?;
    if !real.starts_with(&base) {
        return Err(refused(rel, "its parent resolves outside the tree"));
    }
    let md = fs::symlink_metadata(&p).map_err(io_err("reading", &p))?;
    let (u, g) = owner(uid, gid);
    lchown(&p, Some(u), Some(g)).map_err(io_err("chown", &p))?;
    if !md.file_type().is_symlink() {
        // chown cleared any setuid/setgid bit: set the mode after it.
        let mut m = mode & 0o7777;
        if strip_setid {
            m &= !0o6000;
        }
        fs::set_permissions(&p, fs::Permissions::from_mode(m)).map_err(io_err("chmod", &p))?;
    }
    Ok(())
}

fn unpack_into(
    r: impl Read,
    root: &Path,
    owner: &dyn Fn(u32, u32) -> (u32, u32),
    bounds: Bounds,
) -> Result<Unpacked, UnpackError> {
    use tar::EntryType as T;
    let mut a = tar::Archive::new(r);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(false);
    a.set_unpack_xattrs(false);
    a.set_overwrite(true);
    let mut out = Unpacked::default();
    let mut dirs = Vec::new();
    for entry in a.entries().map_err(UnpackError::Read)? {
        let mut e = entry.map_err(UnpackError::Read)?;
        let path = e
            .path()
            .map_err(|err| refused(Path::new("?"), format!("unreadable name: {err}")))?
            .into_owned();
        let comps: Vec<Component<'_>> = path.components().collect();
        if comps
            .iter()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(refused(
                &path,
                "absolute names and `..` never come from a node's agent",
            ));
        }
        let normal: PathBuf = comps
            .iter()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        if normal.as_os_str().is_empty() {
            continue;
        }
        out.entries += 1;
        if out.entries > bounds.max_entries {
            return Err(UnpackError::TooManyEntries(bounds.max_entries));
        }
        let kind = e.header().entry_type();
        let top = normal
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .unwrap_or_default();
        if MOUNT_POINTS.contains(&top.as_str()) {
            if normal.components().count() > 1 {
                return Err(refused(&path, format!("/{top} is never committed")));
            }
            if kind != T::Directory {
                return Err(refused(&path, format!("/{top} must be a directory")));
            }
            continue;
        }
        let h = e.header();
        let meta = (
            h.uid().unwrap_or(0) as u32,
            h.gid().unwrap_or(0) as u32,
            h.mode().unwrap_or(0o644),
        );
        match kind {
            T::Directory => {
                dirs.push((normal, meta, e));
                continue;
            }
            T::Char | T::Block => {
                out.devices_skipped += 1;
                continue;
            }
            T::Regular | T::Continuous | T::GNUSparse | T::Symlink | T::Link | T::Fifo => {}
            T::XGlobalHeader => continue,
            t => return Err(refused(&path, format!("a {t:?} is not accepted"))),
        }
        out.bytes = out.bytes.saturating_add(e.size());
        if out.bytes > bounds.max_bytes {
            return Err(UnpackError::TooLarge(bounds.max_bytes));
        }
        let ok = e
            .unpack_in(root)
            .map_err(|err| refused(&path, err.to_string()))?;
        if !ok {
            return Err(refused(&path, "it leaves the tree"));
        }
        if kind != T::Link {
            finish_entry(root, &normal, meta, owner, bounds.strip_setid)?;
        }
    }
    // Directories last, deepest first, as tar's own unpack does (a read-only directory would
    // stop its own entries).
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (rel, meta, mut e) in dirs {
        let ok = e
            .unpack_in(root)
            .map_err(|err| refused(&rel, err.to_string()))?;
        if !ok {
            return Err(refused(&rel, "it leaves the tree"));
        }
        finish_entry(root, &rel, meta, owner, bounds.strip_setid)?;
    }
    // The mount points, as plain empty directories of the node's root.
    let (uid, gid) = owner(0, 0);
    for d in MOUNT_POINTS {
        let p = root.join(d);
        if fs::symlink_metadata(&p).is_err() {
            fs::create_dir(&p).map_err(io_err("creating", &p))?;
        }
        let md = fs::symlink_metadata(&p).map_err(io_err("reading", &p))?;
        if !md.is_dir() {
            return Err(refused(Path::new(d), "must be a directory"));
        }
        lchown(&p, Some(uid), Some(gid)).map_err(io_err("chown", &p))?;
        let mode = if *d == "tmp" { 0o1777 } else { 0o755 };
        if md.mode() & 0o7777 != mode {
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", &p))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    /// One entry: name, type, data, link target, mode.
    type Raw<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>, u32);

    /// A tar with raw names (bypassing the builder's own checks, as a hostile agent would).
    fn raw(entries: &[Raw<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, kind, data, link, mode) in entries {
            let mut h = header(*kind, data.len() as u64, *mode);
            {
                let gnu = h.as_gnu_mut().unwrap();
                gnu.name[..name.len()].copy_from_slice(name.as_bytes());
                if let Some(l) = link {
                    gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
                }
            }
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            let pad = (512 - data.len() % 512) % 512;
            out.extend(std::iter::repeat_n(0u8, pad));
        }
        out.extend([0u8; 1024]);
        out
    }

    const B: Bounds = Bounds {
        max_entries: 1000,
        max_bytes: 1 << 20,
        strip_setid: false,
    };

    fn id(u: u32, g: u32) -> (u32, u32) {
        (u, g)
    }

    use tar::EntryType as T;

    /// As the caller does: a fresh directory `<parent>/<name>`, discarded when refused.
    fn unpack_tree(
        r: &[u8],
        parent: &Path,
        name: &str,
        owner: &dyn Fn(u32, u32) -> (u32, u32),
        bounds: Bounds,
    ) -> Result<(PathBuf, Unpacked), UnpackError> {
        let root = parent.join(name);
        fs::create_dir(&root).unwrap();
        match unpack_root(r, &root, owner, bounds) {
            Ok(u) => Ok((root, u)),
            Err(e) => {
                fs::remove_dir_all(&root).unwrap();
                Err(e)
            }
        }
    }

    #[test]
    fn a_plain_tree_unpacks_with_its_mount_points() {
        let dir = tempfile::tempdir().unwrap();
        let tar = raw(&[
            ("etc", T::Directory, b"", None, 0o755),
            ("etc/marker", T::Regular, b"hello", None, 0o640),
            ("etc/link", T::Symlink, b"", Some("/etc/shadow"), 0o777),
            ("etc/hard", T::Link, b"", Some("etc/marker"), 0o640),
            ("proc", T::Directory, b"", None, 0o555),
        ]);
        let (tree, u) = unpack_tree(&tar[..], dir.path(), "t", &id, B).unwrap();
        assert_eq!(fs::read(tree.join("etc/marker")).unwrap(), b"hello");
        assert_eq!(
            fs::metadata(tree.join("etc/marker")).unwrap().mode() & 0o7777,
            0o640
        );
        // A symlink stays a link, pointing where the node pointed it (resolved in the node).
        assert_eq!(
            fs::read_link(tree.join("etc/link")).unwrap(),
            Path::new("/etc/shadow")
        );
        assert_eq!(fs::read(tree.join("etc/hard")).unwrap(), b"hello");
        for d in MOUNT_POINTS {
            assert!(fs::symlink_metadata(tree.join(d)).unwrap().is_dir(), "{d}");
        }
        assert_eq!(
            fs::metadata(tree.join("tmp")).unwrap().mode() & 0o7777,
            0o1777
        );
        assert_eq!(u.entries, 5);
        assert_eq!(fs::metadata(&tree).unwrap().mode() & 0o7777, 0o755);
    }

    fn refused_and_nothing_left(tar: &[u8], why: &str) {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let e = unpack_tree(tar, dir.path(), "t", &id, B)
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "{e}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn hostile_archives_are_refused_whole() {
        refused_and_nothing_left(&raw(&[("../x", T::Regular, b"x", None, 0o644)]), "`..`");
        refused_and_nothing_left(
            &raw(&[("a/../../x", T::Regular, b"x", None, 0o644)]),
            "`..`",
        );
        refused_and_nothing_left(
            &raw(&[("/etc/x", T::Regular, b"x", None, 0o644)]),
            "absolute",
        );
        // A symlink out, then a file through it.
        refused_and_nothing_left(
            &raw(&[
                ("esc", T::Symlink, b"", Some("/tmp"), 0o777),
                ("esc/planted", T::Regular, b"x", None, 0o644),
            ]),
            "esc/planted",
        );
        // A hard link to a host file.
        refused_and_nothing_left(
            &raw(&[("h", T::Link, b"", Some("/etc/passwd"), 0o644)]),
            "entry h",
        );
        // A mount point as a symlink, or with content.
        refused_and_nothing_left(
            &raw(&[("proc", T::Symlink, b"", Some("/etc"), 0o777)]),
            "must be a directory",
        );
        refused_and_nothing_left(
            &raw(&[("run/secrets/x", T::Regular, b"x", None, 0o644)]),
            "never committed",
        );
        // A directory entry over an earlier symlink.
        refused_and_nothing_left(
            &raw(&[
                ("d", T::Symlink, b"", Some("/etc"), 0o777),
                ("d", T::Directory, b"", None, 0o777),
            ]),
            "entry d",
        );
    }

    #[test]
    fn a_sparse_file_from_the_agents_builder_unpacks() {
        // The agent's tar builder writes sparse files (a microVM's disk has them) as GNU
        // sparse entries.
        let src = tempfile::tempdir().unwrap();
        let f = src.path().join("sparse");
        let file = fs::File::create(&f).unwrap();
        file.set_len(8 << 20).unwrap();
        use std::io::{Seek, Write};
        let mut file = file;
        file.seek(io::SeekFrom::Start(4 << 20)).unwrap();
        file.write_all(b"middle").unwrap();
        drop(file);
        let mut b = tar::Builder::new(Vec::new());
        b.append_path_with_name(&f, "sparse").unwrap();
        let tar = b.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let big = Bounds {
            max_bytes: 16 << 20,
            ..B
        };
        let (tree, _) = unpack_tree(&tar[..], dir.path(), "t", &id, big).unwrap();
        let back = fs::read(tree.join("sparse")).unwrap();
        assert_eq!(back.len(), 8 << 20);
        assert_eq!(&back[4 << 20..(4 << 20) + 6], b"middle");
    }

    #[test]
    fn devices_are_skipped_and_setid_follows_the_policy() {
        let tar = raw(&[
            ("null", T::Char, b"", None, 0o666),
            ("su", T::Regular, b"x", None, 0o4755),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let (tree, u) = unpack_tree(&tar[..], dir.path(), "keep", &id, B).unwrap();
        assert_eq!(u.devices_skipped, 1);
        assert!(!tree.join("null").exists());
        assert_eq!(
            fs::metadata(tree.join("su")).unwrap().mode() & 0o7777,
            0o4755
        );
        let strip = Bounds {
            strip_setid: true,
            ..B
        };
        let (tree, _) = unpack_tree(&tar[..], dir.path(), "strip", &id, strip).unwrap();
        assert_eq!(
            fs::metadata(tree.join("su")).unwrap().mode() & 0o7777,
            0o755
        );
    }

    #[test]
    fn owners_are_mapped() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: chown needs root");
            return;
        }
        let tar = raw(&[("f", T::Regular, b"x", None, 0o644)]);
        let dir = tempfile::tempdir().unwrap();
        let shift = |u: u32, g: u32| (u + 100_000, g + 100_000);
        let (tree, _) = unpack_tree(&tar[..], dir.path(), "t", &shift, B).unwrap();
        assert_eq!(fs::metadata(tree.join("f")).unwrap().uid(), 100_000);
        assert_eq!(fs::metadata(&tree).unwrap().uid(), 100_000);
    }

    #[test]
    fn bounds_hold() {
        let big = vec![b'x'; 2048];
        let tar = raw(&[("f", T::Regular, &big, None, 0o644)]);
        let dir = tempfile::tempdir().unwrap();
        let small = Bounds {
            max_bytes: 1024,
            ..B
        };
        let e = unpack_tree(&tar[..], dir.path(), "t", &id, small).unwrap_err();
        assert!(matches!(e, UnpackError::TooLarge(1024)), "{e}");
        let few = Bounds {
            max_entries: 1,
            ..B
        };
        let tar = raw(&[
            ("a", T::Regular, b"", None, 0o644),
            ("b", T::Regular, b"", None, 0o644),
        ]);
        let e = unpack_tree(&tar[..], dir.path(), "t", &id, few).unwrap_err();
        assert!(matches!(e, UnpackError::TooManyEntries(1)), "{e}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
