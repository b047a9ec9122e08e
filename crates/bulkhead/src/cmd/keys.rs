//! `bulkhead keys rotate-master` (#13): replaces the host master key and re-wraps every
//! tenant's data key under the new one (`bulkhead_storage::rotate_master`). It runs on the
//! host, as root, against the keyring directory itself — the master key is the host's, not a
//! tenant's, so there is no API route for it. Daemons may keep running: tenants' data keys
//! do not change (only their wrapping), and the keyring's lock serialises the rotation with a
//! daemon creating a tenant key. A rotation cut short (crash, power loss) is finished by
//! running the command again.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum KeysCmd {
    /// Make a new host master key and re-wrap every tenant key under it; the old key is wiped
    RotateMaster {
        /// The daemon's config: its state_dir and storage.master_key say where the keyring is
        #[arg(long)]
        config: Option<PathBuf>,
        /// State directory (default: the config's state_dir, else /var/lib/bulkhead)
        #[arg(long, env = "BULKHEAD_STATE_DIR")]
        state_dir: Option<PathBuf>,
        /// Print the report as JSON
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(c: KeysCmd) -> anyhow::Result<ExitCode> {
    match c {
        KeysCmd::RotateMaster {
            config,
            state_dir,
            json,
        } => {
            let cfg = match &config {
                Some(p) => Some(
                    bulkhead_core::DaemonConfig::parse(
                        &std::fs::read_to_string(p)
                            .with_context(|| format!("reading {}", p.display()))?,
                    )
                    .with_context(|| format!("{}", p.display()))?,
                ),
                None => None,
            };
            let state = state_dir
                .or_else(|| cfg.as_ref().and_then(|c| c.state_dir.clone()))
                .unwrap_or_else(|| PathBuf::from(bulkhead_daemon::DEFAULT_STATE_DIR));
            let keys = cfg.map(|c| c.storage).unwrap_or_default().keys_dir(&state);
            let k = keys.clone();
            let r = tokio::task::spawn_blocking(move || bulkhead_storage::rotate_master(&k))
                .await?
                .with_context(|| format!("rotating the master key in {}", keys.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "keys_dir": keys,
                        "old_key_id": r.old_key_id,
                        "new_key_id": r.new_key_id,
                        "tenants": r.tenants,
                        "resumed": r.resumed,
                    })
                );
            } else {
                println!(
                    "master key {} replaced by {} in {}; {} tenant key(s) re-wrapped{}",
                    r.old_key_id,
                    r.new_key_id,
                    keys.display(),
                    r.tenants,
                    if r.resumed {
                        " (finished a rotation an earlier run left half done)"
                    } else {
                        ""
                    }
                );
                eprintln!("bulkhead: back up the new master key now: backups of the old one no longer open these tenant keys");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
