//! Connecting to a node's UNIX sockets by paths longer than `sun_path` (108 bytes): a state
//! directory, a tenant and a 63-character node name easily make one. The socket's directory
//! is opened (`O_PATH`) and the socket reached through `/proc/self/fd/N/<name>`, which is
//! short whatever the directory's path.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Paths shorter than this go to `connect` as they are.
const DIRECT: usize = 100;

/// `UnixStream::connect(path)`, also for a `path` longer than `sun_path`.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    if path.as_os_str().len() < DIRECT {
        return UnixStream::connect(path);
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return UnixStream::connect(path);
    };
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?;
    let mut short = std::ffi::OsString::from(format!("/proc/self/fd/{}/", d.as_raw_fd()));
    short.push(name);
    UnixStream::connect(short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn reaches_a_socket_past_sun_len() {
        let t = tempfile::tempdir().unwrap();
        let deep = t.path().join("d".repeat(60)).join("e".repeat(60));
        std::fs::create_dir_all(&deep).unwrap();
        let sock = deep.join("agent.serial");
        assert!(sock.as_os_str().len() > 108);
        // Bound through the same trick (bind has the same limit).
        let d = std::fs::File::open(&deep).unwrap();
        let l =
            UnixListener::bind(format!("/proc/self/fd/{}/agent.serial", d.as_raw_fd())).unwrap();
        assert!(
            UnixStream::connect(&sock).is_err(),
            "the plain path is too long"
        );
        let _c = connect(&sock).unwrap();
        l.accept().unwrap();
    }
}
