//! Reading a trail back for `GET /audit`: the record lines (checkpoints left out) of its files
//! that fall in a time window and match an action and an outcome, oldest first, as written.

use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;

use super::line;
use super::writer::files;

/// What `GET /audit` asks for.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Milliseconds since the epoch, inclusive.
    pub since: Option<i64>,
    /// Milliseconds since the epoch, inclusive.
    pub until: Option<i64>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    /// At most this many lines.
    pub limit: usize,
}

#[derive(Deserialize)]
struct Fields {
    time: String,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    checkpoint: Option<serde::de::IgnoredAny>,
}

impl Filter {
    fn matches(&self, f: &Fields) -> bool {
        if f.checkpoint.is_some() {
            return false;
        }
        if self.action.is_some() && f.action != self.action {
            return false;
        }
        if self.outcome.is_some() && f.outcome != self.outcome {
            return false;
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = line::parse_time(&f.time) else {
                return false;
            };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
                return false;
            }
        }
        true
    }
}

/// Appends the matching lines of the trail in `dir` to `out` (each with its newline), up to
/// `filter.limit` lines in `out`; returns whether the limit cut the answer short.
pub fn read(dir: &Path, filter: &Filter, out: &mut Vec<u8>, count: &mut usize) -> bool {
    let Ok(files) = files(dir) else {
        return false;
    };
    for (_, p) in files {
        let Ok(f) = std::fs::File::open(&p) else {
            continue;
        };
        for l in std::io::BufReader::new(f).split(b'\n') {
            let Ok(l) = l else { break };
            let Ok(fields) = serde_json::from_slice::<Fields>(&l) else {
                continue;
            };
            if !filter.matches(&fields) {
                continue;
            }
            if *count >= filter.limit {
                return true;
            }
            out.extend_from_slice(&l);
            out.push(b'\n');
            *count += 1;
        }
    }
    false
}
