//! UNIX sockets by paths longer than `sun_path` (108 bytes). A node's sockets live in its
//! directory, `<state>/tenants/<tenant>/nodes/<node>/`: a long state directory, a tenant name
//! and a 63-character node name easily pass the limit, and `connect(2)`/`bind(2)` then fail
//! with `ENAMETOOLONG` (or, worse, a truncated name). The socket's directory is opened
//! (`O_PATH`) and the socket reached through `/proc/self/fd/N/<name>`, which is short whatever
//! the directory's path. Short paths go to the kernel as they are.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Paths shorter than this go to the kernel as they are.
const DIRECT: usize = 100;

/// A path the kernel accepts for `path`, and the directory it goes through (keep it open
/// until the call that uses the path returns). `None`: `path` is short, use it as it is.
fn short(path: &Path) -> io::Result<Option<(File, PathBuf)>> {
    if path.as_os_str().len() < DIRECT {
        return Ok(None);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(None);
    };
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    let mut s = OsString::from(format!("/proc/self/fd/{}/", d.as_raw_fd()));
    s.push(name);
    Ok(Some((d, PathBuf::from(s))))
}

/// `UnixStream::connect(path)`, also for a `path` longer than `sun_path`.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    match short(path)? {
        Some((_dir, p)) => UnixStream::connect(p),
        None => UnixStream::connect(path),
    }
}

/// `tokio::net::UnixStream::connect(path)`, also for a `path` longer than `sun_path`.
pub async fn connect_async(path: &Path) -> io::Result<tokio::net::UnixStream> {
    match short(path)? {
        Some((_dir, p)) => tokio::net::UnixStream::connect(p).await,
        None => tokio::net::UnixStream::connect(path).await,
    }
}

/// `UnixListener::bind(path)`, also for a `path` longer than `sun_path`.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    match short(path)? {
        Some((_dir, p)) => UnixListener::bind(p),
        None => UnixListener::bind(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deep(t: &tempfile::TempDir) -> PathBuf {
        let d = t.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn binds_and_connects_past_sun_len() {
        let t = tempfile::tempdir().unwrap();
        let sock = deep(&t).join("agent.sock");
        assert!(sock.as_os_str().len() > 108);
        assert!(
            UnixListener::bind(&sock).is_err(),
            "the plain path is too long"
        );
        let l = bind(&sock).unwrap();
        assert!(sock.exists(), "the socket is where the long path says");
        assert!(
            UnixStream::connect(&sock).is_err(),
            "the plain path is too long"
        );
        let _c = connect(&sock).unwrap();
        l.accept().unwrap();
    }

    #[tokio::test]
    async fn connects_async_past_sun_len() {
        let t = tempfile::tempdir().unwrap();
        let sock = deep(&t).join("supervisor.sock");
        let l = bind(&sock).unwrap();
        let _c = connect_async(&sock).await.unwrap();
        l.accept().unwrap();
    }

    #[test]
    fn short_paths_are_used_as_they_are() {
        let t = tempfile::tempdir().unwrap();
        let sock = t.path().join("s");
        let l = bind(&sock).unwrap();
        let _c = connect(&sock).unwrap();
        l.accept().unwrap();
        let missing = t.path().join("none");
        assert_eq!(
            connect(&missing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }
}
