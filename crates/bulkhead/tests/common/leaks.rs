//! Looking for plaintext where it must not be (#13, secrets): every file under a directory
//! (the state directory: databases and their WAL, node files, console logs, disk images) whose
//! bytes contain a marker.

use base64::Engine;
use std::path::Path;

pub fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Every file under `dir` whose bytes contain one of `needles`.
pub fn files_containing(dir: &Path, needles: &[&[u8]]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let p = e.path();
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let Ok(bytes) = std::fs::read(&p) else {
                    continue;
                };
                if needles
                    .iter()
                    .any(|n| bytes.windows(n.len()).any(|w| w == *n))
                {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}
