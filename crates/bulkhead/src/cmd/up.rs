//! `bulkhead up CONFIG` and `bulkhead validate CONFIG`.

use anyhow::Context;
use bulkhead_core::DaemonConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn load(path: &Path) -> anyhow::Result<DaemonConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    DaemonConfig::parse(&text).with_context(|| format!("invalid config {}", path.display()))
}

pub fn validate(path: &Path) -> anyhow::Result<ExitCode> {
    let c = load(path)?;
    // Checked against this host, as `up` would.
    let state = c
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(bulkhead_daemon::DEFAULT_STATE_DIR));
    let drivers = bulkhead::drivers::registry();
    let facts = bulkhead_daemon::host_facts(&state);
    for t in &c.tenants {
        drivers.check(t, &facts).with_context(|| {
            format!(
                "config {} (tenant {}) does not fit this host",
                path.display(),
                t.tenant
            )
        })?;
        println!(
            "config ok: tenant {}, {} host group(s)",
            t.tenant,
            t.groups.len()
        );
        for w in drivers.warnings(t) {
            eprintln!("warning: {w}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run(path: &Path, state_dir: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BULKHEAD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only for a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = load(path)?;
    let drivers = std::sync::Arc::new(bulkhead::drivers::registry());
    for t in &cfg.tenants {
        for w in drivers.warnings(t) {
            tracing::warn!(tenant = %t.tenant, "{w}");
        }
    }
    let state = state_dir
        .or(cfg.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from(bulkhead_daemon::DEFAULT_STATE_DIR));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("bulkhead up must run as root: it creates namespaces, cgroups and uid mappings for nodes");
    }
    bulkhead_daemon::run(cfg, state, path, drivers).await?;
    Ok(ExitCode::SUCCESS)
}
