//! `bulkhead audit verify FILE…` (#14, part A; ADR 0031): checks an audit trail's files offline
//! (the chain, the checkpoints' signatures) and names the first bad line; exits non-zero on
//! any. The checking itself is `bulkhead_daemon::audit::verify`.

use std::path::PathBuf;
use std::process::ExitCode;

use bulkhead_daemon::audit::verify::{chain_order, load_key, verify};

#[derive(clap::Subcommand)]
pub enum AuditCmd {
    /// Check audit files (audit-<n>.jsonl, in chain order) and name the first bad line
    Verify {
        /// The trail's files, e.g. /var/lib/bulkhead/tenants/t/audit/audit-*.jsonl
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The trail's Ed25519 public key: a file holding its hex, or the hex itself
        /// (default: the audit.pub beside the files; a copy kept off the host is better)
        #[arg(long)]
        key: Option<String>,
        /// The daemon is still writing the last file: lines after its last checkpoint are
        /// reported, not failed
        #[arg(long)]
        live: bool,
    },
}

pub fn run(c: AuditCmd) -> anyhow::Result<ExitCode> {
    match c {
        AuditCmd::Verify { files, key, live } => {
            let files = chain_order(files);
            let key = match load_key(key.as_deref(), &files[0]) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("bulkhead: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            match verify(&files, &key, live) {
                Ok(r) => {
                    println!(
                        "ok: {} file(s), {} lines (seq {}..{}), {} signed checkpoints{}{}{}",
                        r.files,
                        r.lines,
                        r.first_seq,
                        r.last_seq,
                        r.checkpoints,
                        r.owner
                            .map(|o| format!(", trail of {o:?}"))
                            .unwrap_or_default(),
                        if r.anchored {
                            "; the first file is not the trail's first: its first line was taken on trust"
                        } else {
                            ""
                        },
                        if r.unsigned > 0 {
                            format!(
                                "; {} line(s) after the last checkpoint are not signed yet",
                                r.unsigned
                            )
                        } else {
                            String::new()
                        }
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(bad) => {
                    eprintln!("bulkhead: audit trail broken: {bad}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
