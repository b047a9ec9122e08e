//! The daemon's periodic integrity check (#14, part B): every tenant's
//! `detection.integrity_interval` (the shortest), `integrity.rs` hashes the daemon's files
//! again and each change becomes one `integrity.changed` event in every tenant. Apart from
//! `integrity.rs` (which the host services hold) because it reaches the tenants.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::app::{App, Daemon};

/// Starts the periodic check for `daemon` (every tenant's `detection.integrity_interval`, the
/// shortest): each change is one `integrity.changed` event in every tenant. Ends when `stop`
/// turns true or the daemon is gone.
pub fn watch(daemon: &Arc<Daemon>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let interval = daemon
        .tenants
        .iter()
        .map(|a| a.tenant.cfg.events.integrity_interval)
        .min()
        .unwrap_or(Duration::from_secs(60));
    let integrity = daemon.host.integrity.clone();
    let tenants: Vec<Weak<App>> = daemon.tenants.iter().map(Arc::downgrade).collect();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            let i = integrity.clone();
            let Ok(changes) = tokio::task::spawn_blocking(move || i.check()).await else {
                continue;
            };
            for c in changes {
                tracing::warn!(file = c.file, path = %c.path.display(), at_start = %c.at_start, now = %c.now, "a file of the daemon changed on disk");
                for t in tenants.iter().filter_map(Weak::upgrade) {
                    t.tenant
                        .events
                        .emit(super::kind::INTEGRITY_CHANGED, None, c.detail());
                }
            }
        }
    });
}
