//! A minimal QMP client: connect to a node's `vm/qmp.sock`, negotiate, run one command.
//! QMP is line-delimited JSON; asynchronous events may arrive between our request and its
//! answer and are skipped.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

fn answer(r: &mut impl BufRead) -> Result<serde_json::Value, String> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)
            .map_err(|e| format!("reading QMP: {e}"))?
            == 0
        {
            return Err("QMP closed the connection".into());
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("QMP sent {line:?}: {e}"))?;
        if v.get("event").is_some() {
            continue;
        }
        if let Some(e) = v.get("error") {
            return Err(format!(
                "QMP error: {}",
                e["desc"].as_str().unwrap_or("unknown")
            ));
        }
        return Ok(v);
    }
}

/// Runs `command` (e.g. `stop`, `cont`, `query-status`) and returns its `return` value.
pub fn execute(sock: &Path, command: &str) -> Result<serde_json::Value, String> {
    let s =
        UnixStream::connect(sock).map_err(|e| format!("connecting to {}: {e}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    let mut greeting = String::new();
    r.read_line(&mut greeting)
        .map_err(|e| format!("reading the QMP greeting: {e}"))?;
    if !greeting.contains("\"QMP\"") {
        return Err(format!("not a QMP greeting: {greeting:?}"));
    }
    writeln!(w, "{{\"execute\":\"qmp_capabilities\"}}").map_err(|e| e.to_string())?;
    answer(&mut r)?;
    writeln!(w, "{}", serde_json::json!({ "execute": command })).map_err(|e| e.to_string())?;
    Ok(answer(&mut r)?.get("return").cloned().unwrap_or_default())
}
