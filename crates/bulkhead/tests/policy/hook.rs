//! The e2e_policy test's webhook: an HTTP/1.1 server on a UNIX socket that answers what it
//! is told to and records every question.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the test's webhook answers next.
#[derive(Clone)]
pub enum Hook {
    Allow,
    Deny(&'static str),
    /// Allow, with the question's request with these fields replaced.
    Narrow(Value),
    /// Allow, with exactly this as the request (left-out fields to be kept by the daemon).
    Only(Value),
    Garbage,
    Slow,
    Status500,
}

#[derive(Default)]
pub struct HookState {
    answer: Option<Hook>,
    questions: Vec<Value>,
}

/// A webhook on a UNIX socket, answering what `state.answer` says and recording questions.
pub fn serve_hook(path: &Path) -> Arc<Mutex<HookState>> {
    let state = Arc::new(Mutex::new(HookState {
        answer: Some(Hook::Allow),
        questions: vec![],
    }));
    let l = UnixListener::bind(path).unwrap();
    let st = state.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            let st = st.clone();
            std::thread::spawn(move || answer_one(conn, &st));
        }
    });
    state
}

fn answer_one(conn: UnixStream, st: &Mutex<HookState>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    let q: Value = serde_json::from_slice(&body).unwrap();
    let hook = {
        let mut s = st.lock().unwrap();
        s.questions.push(q.clone());
        s.answer.clone().unwrap_or(Hook::Allow)
    };
    let (status, body) = match hook {
        Hook::Allow => ("200 OK", json!({"allow": true}).to_string()),
        Hook::Deny(r) => ("200 OK", json!({"allow": false, "reason": r}).to_string()),
        Hook::Narrow(patch) => {
            let mut req = q["request"].clone();
            for (k, v) in patch.as_object().unwrap() {
                req[k] = v.clone();
            }
            ("200 OK", json!({"allow": true, "request": req}).to_string())
        }
        Hook::Only(req) => ("200 OK", json!({"allow": true, "request": req}).to_string()),
        Hook::Garbage => ("200 OK", "<html>policy says maybe</html>".to_string()),
        Hook::Slow => {
            std::thread::sleep(Duration::from_secs(2));
            ("200 OK", json!({"allow": true}).to_string())
        }
        Hook::Status500 => ("500 Internal Server Error", "oops".to_string()),
    };
    let mut w = conn;
    let _ = write!(
        w,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

pub fn set(st: &Mutex<HookState>, h: Hook) {
    st.lock().unwrap().answer = Some(h);
}

pub fn last_question(st: &Mutex<HookState>) -> Value {
    st.lock()
        .unwrap()
        .questions
        .last()
        .cloned()
        .expect("the webhook was asked")
}
