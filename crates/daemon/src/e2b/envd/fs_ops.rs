//! What `filesystem.Filesystem`'s calls do, over the tenant's file-system operations in a node
//! (the same agent operations as Slicer's `/vm/{node}/fs/*`): entries in envd's shape
//! ([`entry`]), listings to a depth ([`list`]), `MakeDir` with the user's ownership, `Move`,
//! `Remove`. Paths were resolved by the caller (`user::resolve_path`). No wire types but the
//! generated messages; errors are `DomainError`s the adapter (`filesystem.rs`) maps to Connect.

use bulkhead_agent::client::MkdirRequest;
use bulkhead_agent::proto::FsInfo;
use bulkhead_core::{Code, DomainError};
use bulkhead_e2b::filesystem::{EntryInfo, FileType};
use bulkhead_e2b::timestamp::Timestamp;

use super::user::EnvdUser;
use crate::tenant::{NodeRef, Tenant};

/// Entries one listing may return (a deeper walk stops with a clear error past it).
pub const MAX_LIST: usize = 100_000;

/// The name of a uid or gid as E2B's images have them: 0 `root`, 1000 `user`, else the number.
fn id_name(id: Option<u32>) -> String {
    match id {
        Some(0) => "root".into(),
        Some(1000) => "user".into(),
        Some(n) => n.to_string(),
        None => String::new(),
    }
}

/// Go's `FileMode.String()` (what envd reports as `permissions`): type and special letters,
/// then `rwx` three times; `-` when there is no letter.
pub fn permissions(kind: &str, mode: u32) -> String {
    let mut s = String::new();
    match kind {
        "directory" => s.push('d'),
        "symlink" => s.push('L'),
        _ => {}
    }
    if mode & 0o4000 != 0 {
        s.push('u');
    }
    if mode & 0o2000 != 0 {
        s.push('g');
    }
    if mode & 0o1000 != 0 {
        s.push('t');
    }
    if s.is_empty() {
        s.push('-');
    }
    for shift in [6, 3, 0] {
        let b = (mode >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn file_type(kind: &str) -> FileType {
    match kind {
        "file" => FileType::File,
        "directory" => FileType::Directory,
        "symlink" => FileType::Symlink,
        _ => FileType::Unspecified,
    }
}

/// One entry at `path` as envd describes it.
pub fn entry(path: &str, i: &FsInfo) -> EntryInfo {
    let name = if path == "/" {
        "/".to_string()
    } else {
        path.rsplit('/').next().unwrap_or_default().to_string()
    };
    let symlink = i.kind == "symlink";
    EntryInfo {
        name,
        r#type: file_type(&i.kind) as i32,
        path: path.to_string(),
        size: i64::try_from(i.size).unwrap_or(i64::MAX),
        mode: i.mode & 0o777,
        permissions: permissions(&i.kind, i.mode),
        owner: id_name(i.uid),
        group: id_name(i.gid),
        modified_time: Some(Timestamp {
            seconds: i.mtime_s,
            nanos: i32::try_from(i.mtime_ns).unwrap_or(0),
        }),
        symlink_target: if symlink { i.link.clone() } else { None },
        metadata: Default::default(),
        is_symlink: symlink,
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// `Stat`: the entry at `path` (a symlink is reported, not followed).
pub async fn stat(t: &Tenant, n: &NodeRef, path: &str) -> Result<EntryInfo, DomainError> {
    let i = t.fs_stat(n, path).await.map_err(|e| not_found(e, path))?;
    Ok(entry(path, &i))
}

/// `ListDir`: the entries below `path` down to `depth` levels (0 is 1), directories before
/// their contents, never following a symlink below `path`.
pub async fn list(
    t: &Tenant,
    n: &NodeRef,
    path: &str,
    depth: u32,
) -> Result<Vec<EntryInfo>, DomainError> {
    let depth = depth.max(1);
    let top = t
        .fs_read_dir(n, path)
        .await
        .map_err(|e| not_found(e, path))?;
    let mut out = Vec::new();
    walk(t, n, path, top, 1, depth, &mut out).await?;
    // envd's order: depth first, names in order within each directory.
    out.sort_by(|a, b| a.path.split('/').cmp(b.path.split('/')));
    Ok(out)
}

async fn walk(
    t: &Tenant,
    n: &NodeRef,
    dir: &str,
    items: Vec<FsInfo>,
    level: u32,
    depth: u32,
    out: &mut Vec<EntryInfo>,
) -> Result<(), DomainError> {
    // Iterative over levels below (async recursion needs boxing): a queue of directories.
    let mut queue: std::collections::VecDeque<(String, Vec<FsInfo>, u32)> =
        std::collections::VecDeque::from([(dir.to_string(), items, level)]);
    while let Some((d, items, lvl)) = queue.pop_front() {
        for i in items {
            if out.len() >= MAX_LIST {
                return Err(DomainError::invalid(format!(
                    "more than {MAX_LIST} entries below {dir}: list with a smaller depth"
                )));
            }
            let p = join(&d, &i.name);
            out.push(entry(&p, &i));
            if i.kind == "directory" && lvl < depth {
                // A directory removed meanwhile is simply not descended into.
                match t.fs_read_dir(n, &p).await {
                    Ok(sub) => queue.push_back((p, sub, lvl + 1)),
                    Err(e) if matches!(e.code, Code::PathNotFound | Code::NotADirectory) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// `MakeDir`: the directory and its missing parents, owned by `u`; an existing directory is
/// `AlreadyExists` (the SDKs answer `False`), an existing file an invalid argument.
pub async fn make_dir(
    t: &Tenant,
    n: &NodeRef,
    u: &EnvdUser,
    path: &str,
) -> Result<EntryInfo, DomainError> {
    match t.fs_stat(n, path).await {
        Ok(i) if i.kind == "directory" => {
            return Err(DomainError::new(
                Code::AlreadyExists,
                format!("directory already exists: {path}"),
            ))
        }
        Ok(_) => {
            return Err(DomainError::invalid(format!(
                "path already exists but it is not a directory: {path}"
            )))
        }
        Err(e) if matches!(e.code, Code::PathNotFound) => {}
        Err(e) => return Err(e),
    }
    let req = MkdirRequest {
        path: path.to_string(),
        recursive: true,
        mode: Some(0o755),
        uid: Some(u.uid),
        gid: Some(u.gid),
    };
    t.fs_mkdir(n, req).await.map_err(|e| match e.code {
        Code::AlreadyExists | Code::NotADirectory => DomainError::invalid(format!(
            "cannot make {path}: a part of it is a file, not a directory"
        )),
        _ => e,
    })?;
    Ok(EntryInfo {
        name: path.rsplit('/').next().unwrap_or_default().to_string(),
        r#type: FileType::Directory as i32,
        path: path.to_string(),
        ..Default::default()
    })
}

/// `Move`: renames `from` to `to` (making `to`'s missing parents as `u`'s), then describes
/// `to`.
pub async fn rename(
    t: &Tenant,
    n: &NodeRef,
    u: &EnvdUser,
    from: &str,
    to: &str,
) -> Result<EntryInfo, DomainError> {
    t.fs_stat(n, from).await.map_err(|e| not_found(e, from))?;
    if let Some((parent, _)) = to.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
        let req = MkdirRequest {
            path: parent.to_string(),
            recursive: true,
            mode: Some(0o755),
            uid: Some(u.uid),
            gid: Some(u.gid),
        };
        t.fs_mkdir(n, req).await.map_err(|e| match e.code {
            Code::AlreadyExists | Code::NotADirectory => DomainError::invalid(format!(
                "cannot move to {to}: a part of {parent} is a file, not a directory"
            )),
            _ => e,
        })?;
    }
    t.fs_rename(n, from, to).await?;
    stat(t, n, to).await
}

/// `Remove`: a file, a symlink or a whole tree.
pub async fn remove(t: &Tenant, n: &NodeRef, path: &str) -> Result<(), DomainError> {
    t.fs_remove(n, path, true)
        .await
        .map_err(|e| not_found(e, path))
}

/// A missing path, said as envd says it.
fn not_found(e: DomainError, path: &str) -> DomainError {
    if e.code == Code::PathNotFound {
        DomainError::new(Code::PathNotFound, format!("path not found: {path}"))
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(kind: &str, mode: u32) -> FsInfo {
        FsInfo {
            name: "x".into(),
            kind: kind.into(),
            size: 5,
            mtime_s: 1_700_000_000,
            mtime_ns: 5,
            mode,
            uid: Some(1000),
            gid: Some(0),
            link: Some("t".into()),
        }
    }

    #[test]
    fn entries_as_envd_reports_them() {
        assert_eq!(permissions("file", 0o644), "-rw-r--r--");
        assert_eq!(permissions("directory", 0o755), "drwxr-xr-x");
        assert_eq!(permissions("symlink", 0o777), "Lrwxrwxrwx");
        assert_eq!(permissions("file", 0o4755), "urwxr-xr-x");
        let e = entry("/home/user/a.txt", &info("file", 0o644));
        assert_eq!(
            (
                e.name.as_str(),
                e.r#type,
                e.owner.as_str(),
                e.group.as_str()
            ),
            ("a.txt", FileType::File as i32, "user", "root")
        );
        assert_eq!((e.size, e.mode, e.symlink_target), (5, 0o644, None));
        let l = entry("/l", &info("symlink", 0o777));
        assert!(l.is_symlink);
        assert_eq!(l.symlink_target.as_deref(), Some("t"));
        assert_eq!(entry("/", &info("directory", 0o755)).name, "/");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
    }
}
