//! The host's keys and storage protection at daemon start (#13, ADR 0028): the keyring (the
//! master key and each tenant's wrapped data key, `bulkhead_storage::keys`) and the probe of
//! what protects tenant data at rest on this host. Key bytes are never logged, only ids.

use std::path::PathBuf;
use std::sync::Arc;

use crate::start_error::StartError;

/// Probes what protects tenant data at rest on this host (#13; a 16 MiB scratch image in the
/// keys directory, removed again) and says at start which protection is missing, so that the
/// operator learns it before a tenant asks for an encrypted volume.
pub(crate) async fn probe_protection(scratch: PathBuf) -> bulkhead_storage::probe::Protection {
    let p =
        tokio::task::spawn_blocking(move || bulkhead_storage::probe::Protection::detect(&scratch))
            .await
            .unwrap_or_else(|_| {
                bulkhead_storage::probe::Protection::detect(std::path::Path::new("/nonexistent"))
            });
    for m in p.missing() {
        // Without fscrypt, encrypted volumes and persistent nodes are refused: the operator
        // must know. dm-crypt is not used today: its absence is only information.
        if p.fscrypt {
            tracing::info!(missing = %m, "storage protection not available on this host");
        } else {
            tracing::warn!(missing = %m, "storage protection not available on this host");
        }
    }
    p
}

/// keys (#13): opens (creating on the first start) the host keyring in `dir`. A master key
/// that is missing while tenant keys exist, or readable by anyone but root, stops the start
/// with what to do (`bulkhead_storage::keys`); its bytes are never logged, only its id.
pub(crate) async fn open_keyring(
    dir: PathBuf,
) -> Result<Arc<bulkhead_storage::Keyring>, StartError> {
    let shown = dir.display().to_string();
    let kr = tokio::task::spawn_blocking(move || bulkhead_storage::Keyring::open(&dir))
        .await
        .map_err(|e| StartError::Refused(format!("opening the keyring: {e}")))?
        .map_err(|e| StartError::Refused(format!("the keyring in {shown}: {e}")))?;
    tracing::info!(dir = %shown, master_key_id = %kr.master_key_id(), "keyring open");
    Ok(Arc::new(kr))
}
