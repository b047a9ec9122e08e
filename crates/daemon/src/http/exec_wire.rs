//! How exec output is written on the wire, shared by foreground execs (`exec.rs`) and the
//! logs of background execs (`exec_bg.rs`): NDJSON lines, output encoded per `stdio` (UTF-8
//! text that never splits a character across frames, or base64 of each chunk's bytes), and a
//! command that could not start told as a shell tells it (exit code 127 or 126, the reason on
//! stderr) rather than as an HTTP error, as Slicer's clients expect.

use axum::body::Bytes;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bulkhead_api::ExecFrame;
use bulkhead_core::{Code, DomainError};
use serde::Serialize;

use super::exec_query::Stdio;

/// One NDJSON line.
pub fn line(f: &impl Serialize) -> Result<Bytes, std::io::Error> {
    let mut v = serde_json::to_vec(f).unwrap_or_default();
    v.push(b'\n');
    Ok(Bytes::from(v))
}

/// The exit code of a command that could not start, when that is how the request failed:
/// 127 for a command that is not there, 126 for one that cannot be executed.
pub fn not_started(e: &DomainError) -> Option<i32> {
    match e.code {
        Code::CommandNotFound => Some(127),
        Code::ExecFailed if e.message.contains("No such file") => Some(127),
        Code::ExecFailed => Some(126),
        _ => None,
    }
}

/// Output frames of one exec, encoded for the wire.
pub struct Encoders {
    stdio: Stdio,
    out: Utf8Carry,
    err: Utf8Carry,
}

impl Encoders {
    pub fn new(stdio: Stdio) -> Self {
        Encoders {
            stdio,
            out: Utf8Carry::default(),
            err: Utf8Carry::default(),
        }
    }

    /// The frame carrying `data` of stdout or stderr.
    pub fn frame(&mut self, stderr: bool, data: &[u8]) -> ExecFrame {
        let encoding = self.stdio.encoding();
        let data = match self.stdio {
            Stdio::Base64 => B64.encode(data),
            Stdio::Text if stderr => self.err.push(data),
            Stdio::Text => self.out.push(data),
        };
        if stderr {
            ExecFrame::Stderr { data, encoding }
        } else {
            ExecFrame::Stdout { data, encoding }
        }
    }
}

/// Turns byte chunks into UTF-8 text without splitting a character across frames.
#[derive(Default)]
pub struct Utf8Carry(Vec<u8>);

impl Utf8Carry {
    pub fn push(&mut self, data: &[u8]) -> String {
        self.0.extend_from_slice(data);
        let valid = match std::str::from_utf8(&self.0) {
            Ok(_) => self.0.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.0.len(),
        };
        let rest = self.0.split_off(valid);
        let text = String::from_utf8_lossy(&self.0).into_owned();
        self.0 = rest;
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_not_split_across_frames() {
        let s = "héllo ✓".as_bytes();
        let mut c = Utf8Carry::default();
        let mut out = String::new();
        for b in s {
            out.push_str(&c.push(&[*b]));
        }
        assert_eq!(out, "héllo ✓");
        assert_eq!(Utf8Carry::default().push(&[0xff, b'a']), "\u{fffd}a");
    }

    #[test]
    fn base64_frames_carry_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let mut e = Encoders::new(Stdio::Base64);
        match e.frame(false, &all) {
            ExecFrame::Stdout { data, encoding } => {
                assert_eq!(encoding.as_deref(), Some("base64"));
                assert_eq!(B64.decode(data).unwrap(), all);
            }
            f => panic!("{f:?}"),
        }
        let v = serde_json::to_value(Encoders::new(Stdio::Text).frame(true, b"x")).unwrap();
        assert_eq!(v, serde_json::json!({"type": "stderr", "data": "x"}));
    }

    #[test]
    fn a_command_that_cannot_start_is_an_exit_code() {
        let e = |c, m: &str| DomainError::new(c, m);
        assert_eq!(not_started(&e(Code::CommandNotFound, "x")), Some(127));
        assert_eq!(
            not_started(&e(Code::ExecFailed, "cannot execute: Permission denied")),
            Some(126)
        );
        assert_eq!(
            not_started(&e(
                Code::ExecFailed,
                "No such file or directory (os error 2)"
            )),
            Some(127)
        );
        assert_eq!(not_started(&e(Code::InvalidRequest, "x")), None);
    }
}
