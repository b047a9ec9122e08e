//! `bulkhead audit verify`: checks a trail's files (in chain order) line by line: each line
//! reads, follows the one before it (`seq` one more, `prev` its hash), every checkpoint's
//! signature verifies with the trail's public key and counts its file's lines, every file
//! but a live trail's last ends with a checkpoint. The first bad line is named (file, line
//! number, why): an edited, dropped, inserted, reordered or cut-off line each reads
//! differently.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::line::{self, Head, GENESIS};
use super::writer::file_number;

/// The first bad line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bad {
    pub file: PathBuf,
    /// 1-based; 0 for the file as a whole.
    pub line: u64,
    pub why: String,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.why)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.why)
        }
    }
}

/// What a trail that verified holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub files: usize,
    pub lines: u64,
    pub checkpoints: u64,
    /// Whose trail the checkpoints say it is.
    pub owner: Option<String>,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Lines after the last checkpoint (only with `live`).
    pub unsigned: u64,
    /// The first file is not the trail's first: its first line was taken on trust.
    pub anchored: bool,
}

/// Orders `files` by their number when every name is `audit-<n>.jsonl` (a shell's glob puts
/// `audit-10` before `audit-2`); otherwise keeps the order given.
pub fn chain_order(mut files: Vec<PathBuf>) -> Vec<PathBuf> {
    let num = |p: &PathBuf| p.file_name().and_then(|n| n.to_str()).and_then(file_number);
    if files.iter().all(|p| num(p).is_some()) {
        files.sort_by_key(num);
    }
    files
}

struct Loc {
    file: PathBuf,
    line: u64,
}

fn bad(file: &Path, line: u64, why: impl Into<String>) -> Bad {
    Bad {
        file: file.to_path_buf(),
        line,
        why: why.into(),
    }
}

/// Verifies `files` (in chain order) against `public_key` (Ed25519, 32 bytes). `live`: the
/// last file may end in lines no checkpoint covers yet (a trail the daemon is writing).
pub fn verify(files: &[PathBuf], public_key: &[u8], live: bool) -> Result<Report, Bad> {
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key);
    let mut r = Report {
        files: files.len(),
        ..Default::default()
    };
    // What the next line must say: its seq and prev.
    let mut expect: Option<(u64, String)> = None;
    let mut last: Option<Loc> = None;
    let mut last_file_no: Option<u64> = None;
    let mut since_cp = 0u64;
    for (fi, path) in files.iter().enumerate() {
        let text =
            std::fs::read(path).map_err(|e| bad(path, 0, format!("cannot read the file: {e}")))?;
        let file_no = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(file_number);
        let mut raw: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        let torn = !raw.last().is_some_and(|l| l.is_empty());
        if !torn {
            raw.pop();
        }
        if raw.is_empty() {
            if fi + 1 < files.len() {
                return Err(bad(
                    path,
                    0,
                    "the file is empty: a rotated file ends with a checkpoint",
                ));
            }
            continue;
        }
        if torn {
            // The only line without a newline is the last; it was cut short.
            let n = raw.len() as u64;
            if serde_json::from_slice::<Head>(raw[raw.len() - 1]).is_err() || !live {
                return Err(bad(
                    path,
                    n,
                    "the line is cut short (the file does not end with a newline): the file was truncated",
                ));
            }
        }
        let heads: Vec<Result<Head, String>> = raw
            .iter()
            .map(|l| serde_json::from_slice::<Head>(l).map_err(|e| e.to_string()))
            .collect();
        let hashes: Vec<String> = raw.iter().map(|l| line::hash(l)).collect();
        let mut at_seq: HashMap<u64, u64> = HashMap::new();
        for (i, h) in heads.iter().enumerate() {
            if let Ok(h) = h {
                at_seq.entry(h.seq).or_insert(i as u64 + 1);
            }
        }
        for (i, h) in heads.iter().enumerate() {
            let n = i as u64 + 1;
            let h = match h {
                Ok(h) => h,
                Err(e) => {
                    return Err(bad(
                        path,
                        n,
                        format!("not an audit line (edited or cut short): {e}"),
                    ))
                }
            };
            if expect.is_none() {
                // The chain's start: the trail's first line, or (a later file given first)
                // whatever its first line says, taken on trust and reported.
                if h.prev == GENESIS || file_no == Some(1) {
                    expect = Some((1, GENESIS.to_string()));
                } else {
                    r.anchored = true;
                    expect = Some((h.seq, h.prev.clone()));
                }
                r.first_seq = expect.as_ref().map(|e| e.0).unwrap_or(1);
            }
            let (es, eh) = expect.clone().expect("set above");
            if h.prev != eh || h.seq != es {
                return Err(diagnose(
                    path,
                    n,
                    h,
                    &es,
                    &eh,
                    &heads,
                    &hashes,
                    &at_seq,
                    &last,
                    last_file_no,
                    file_no,
                ));
            }
            if let Some(c) = &h.checkpoint {
                let sig = h.sig.as_deref().and_then(line::unhex).unwrap_or_default();
                let msg = line::signed_message(h.seq, &h.time, c, &h.prev);
                if key.verify(&msg, &sig).is_err() {
                    return Err(bad(
                        path,
                        n,
                        "the checkpoint's signature does not verify: the checkpoint was edited, forged, or the lines before it were rewritten (or this is another trail's key)",
                    ));
                }
                if c.lines != n - 1 {
                    return Err(bad(
                        path,
                        n,
                        format!(
                            "the checkpoint counts {} lines before it in its file, the file has {}: lines were dropped or inserted",
                            c.lines,
                            n - 1
                        ),
                    ));
                }
                if file_no.is_some_and(|f| f != c.file) {
                    return Err(bad(
                        path,
                        n,
                        format!(
                            "the checkpoint was signed for audit-{}.jsonl: the file was renamed or lines moved between files",
                            c.file
                        ),
                    ));
                }
                if let Some(o) = &r.owner {
                    if *o != c.tenant {
                        return Err(bad(
                            path,
                            n,
                            format!("the checkpoint is of trail {:?}, earlier ones of {o:?}: files of two trails were mixed", c.tenant),
                        ));
                    }
                }
                r.owner = Some(c.tenant.clone());
                r.checkpoints += 1;
                since_cp = 0;
            } else {
                since_cp += 1;
            }
            r.lines += 1;
            r.last_seq = h.seq;
            expect = Some((h.seq + 1, hashes[i].clone()));
            last = Some(Loc {
                file: path.clone(),
                line: n,
            });
        }
        let last_file = fi + 1 == files.len();
        if since_cp > 0 && !(last_file && live) {
            let l = last.as_ref().expect("a line was read");
            return Err(bad(
                &l.file,
                l.line,
                if last_file {
                    format!("the trail ends after this line without a signed checkpoint ({since_cp} unsigned lines): lines were cut off its end or appended (a trail the daemon is still writing: --live)")
                } else {
                    format!("the file ends after this line without a checkpoint ({since_cp} unsigned lines): lines were cut off its end (a rotated file always ends with one)")
                },
            ));
        }
        last_file_no = file_no;
    }
    r.unsigned = since_cp;
    Ok(r)
}

/// Why line `n` (`h`) does not follow the line before it, naming the first bad line.
#[allow(clippy::too_many_arguments)]
fn diagnose(
    path: &Path,
    n: u64,
    h: &Head,
    es: &u64,
    eh: &str,
    heads: &[Result<Head, String>],
    hashes: &[String],
    at_seq: &HashMap<u64, u64>,
    last: &Option<Loc>,
    last_file_no: Option<u64>,
    file_no: Option<u64>,
) -> Bad {
    let es = *es;
    let i = (n - 1) as usize;
    let previous = || match last {
        Some(l) => bad(&l.file, l.line, ""),
        None => bad(path, n, ""),
    };
    let gap_note = match (n, last_file_no, file_no) {
        (1, Some(a), Some(b)) if b != a + 1 => format!(" (is audit-{}.jsonl missing?)", a + 1),
        _ => String::new(),
    };
    if h.prev == eh {
        return bad(
            path,
            n,
            format!(
                "its seq is {}, {es} was expected: the line was edited or inserted",
                h.seq
            ),
        );
    }
    if h.seq == es {
        // In sequence but not linked: either this line is an insertion (the next one links to
        // the line before it), or the line before it changed since this one was written.
        let next_links_past = heads
            .get(i + 1)
            .and_then(|x| x.as_ref().ok())
            .is_some_and(|x| x.prev == eh);
        if next_links_past {
            return bad(
                path,
                n,
                "the line was inserted: the line after it follows the line before it",
            );
        }
        let mut b = previous();
        b.why = format!(
            "the line was edited: it does not hash to what the next line ({}:{}) says it follows",
            path.display(),
            n
        );
        if last.is_none() {
            b.why = "the line's prev was edited".into();
        }
        return b;
    }
    if h.seq > es {
        if let Some(j) = (es..h.seq).find_map(|s| at_seq.get(&s).filter(|j| **j > n)) {
            return bad(
                path,
                n,
                format!(
                    "the line is out of order: seq {} comes before seq {es} (line {j})",
                    h.seq
                ),
            );
        }
        return bad(
            path,
            n,
            format!(
                "{} line(s) are missing before this one (seq {es}..{}): dropped{gap_note}",
                h.seq - es,
                h.seq - 1
            ),
        );
    }
    // The seq goes back: a copy of an earlier line, or a line moved down.
    if let Some(j) = (0..i).find(|j| hashes[*j] == hashes[i]) {
        return bad(
            path,
            n,
            format!("the line was inserted: it repeats line {}", j + 1),
        );
    }
    if h.seq + 1 == es {
        // The line before it took this seq: that one is the insertion.
        let mut b = previous();
        b.why = format!(
            "the line was inserted: it takes seq {}, which the next line also has and links past it",
            h.seq
        );
        return b;
    }
    bad(
        path,
        n,
        format!(
            "the line is out of order: seq {} after seq {}",
            h.seq,
            es - 1
        ),
    )
}

/// The trail's public key: `--key` (a file holding the hex key, or the hex itself), else the
/// `audit.pub` beside the first file.
pub fn load_key(key: Option<&str>, first_file: &Path) -> Result<Vec<u8>, String> {
    let text = match key {
        Some(k) if k.len() == 64 && line::unhex(k).is_some() => k.to_string(),
        Some(k) => std::fs::read_to_string(k).map_err(|e| format!("--key {k}: {e}"))?,
        None => {
            let p = first_file
                .parent()
                .unwrap_or(Path::new("."))
                .join(super::PUBLIC_KEY_FILE);
            std::fs::read_to_string(&p).map_err(|e| {
                format!(
                    "{}: {e}: pass the trail's public key with --key (a copy kept off the host is best)",
                    p.display()
                )
            })?
        }
    };
    let k = line::unhex(text.trim())
        .filter(|k| k.len() == 32)
        .ok_or("the public key is not 64 hex digits (an Ed25519 key)")?;
    Ok(k)
}
