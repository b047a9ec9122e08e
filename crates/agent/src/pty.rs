//! Pseudo-terminals for execs with `tty` (protocol version 2). The agent opens the pair
//! through `/dev/ptmx` and takes the terminal end with `TIOCGPTPEER`, so no path under
//! `/dev/pts` (which the node's root may replace) is ever looked up. The command gets the
//! terminal end as its stdin, stdout and stderr and as its controlling terminal (its own
//! session, `TIOCSCTTY`); the agent keeps the other end: what the command writes is read
//! from it, stdin frames are written to it, and `Resize` frames set its size (the kernel then
//! sends `SIGWINCH` to the terminal's foreground process group).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::proto::WinSize;

pub(crate) struct Pty {
    /// The agent's end.
    pub master: File,
    /// The command's end.
    pub terminal: OwnedFd,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Opens a pseudo-terminal pair of the given size; both ends close on exec.
pub(crate) fn open(size: WinSize) -> io::Result<Pty> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path and plain flags.
    let m = check(unsafe { libc::open(c"/dev/ptmx".as_ptr(), flags) })?;
    // SAFETY: open returned a fresh fd that we now own.
    let master = unsafe { File::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads an int through the pointer, which is valid.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd.
    let t = check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
    // SAFETY: the ioctl returned a fresh fd that we now own.
    let terminal = unsafe { OwnedFd::from_raw_fd(t) };
    set_size(&master, size)?;
    Ok(Pty { master, terminal })
}

/// Sets the terminal's size (`TIOCSWINSZ`).
pub(crate) fn set_size(master: &impl AsRawFd, size: WinSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize through the pointer, which is valid.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) }).map(|_| ())
}

/// What "end of input" is on this terminal now: its `VEOF` character (usually ^D) while it
/// is in canonical mode; nothing in raw mode, where a program reads keys, not lines.
pub(crate) fn eof_char(master: &impl AsRawFd) -> Option<u8> {
    // SAFETY: termios is plain data that tcgetattr fills.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd and a valid out pointer.
    if unsafe { libc::tcgetattr(master.as_raw_fd(), &mut t) } < 0 {
        return None;
    }
    (t.c_lflag & libc::ICANON != 0).then_some(t.c_cc[libc::VEOF])
}
