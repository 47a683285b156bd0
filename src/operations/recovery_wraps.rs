//! Keeping the recovery wraps current: at start-up, after rotations and transfers, on the
//! operator's `replace-recovery-wrap`, and read-only for `check-config`.
//!
//! Each function unwraps the stored symmetric key (and the pending one of an unfinished
//! rotation) with the RSA key, then hands the keys to [`crate::crypto::recovery`], which
//! decides what to write. A wrap made for another recovery key than the configured one is
//! kept with a warning naming both fingerprints: its private key may be the one held
//! offline, so only the operator's `replace-recovery-wrap` replaces it.

use zeroize::Zeroizing;

use super::{DatabaseWithKeys, KeyDatabase, OperationError, SymmetricKeyUse};
use crate::config::ConfigError;
use crate::crypto::recovery::{
    OnMismatch, RecoveryError, RecoveryPublicKey, RecoveryStatus, keep_recovery_wraps_current,
    recovery_status,
};
use crate::crypto::symmetric_key::{BootstrapError, unwrap_stored};
use crate::keys::RsaKeyProvider;
use crate::settings::Settings;
use crate::store::KeyStore;

/// Why the recovery wraps could not be checked or written.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryWrapError {
    #[error(transparent)]
    Settings(#[from] ConfigError),
    #[error("recovery wrap: {0}")]
    SymmetricKey(#[from] BootstrapError),
    #[error("recovery wrap: {0}")]
    Recovery(#[from] RecoveryError),
    #[error("recovery wrap: the database has no symmetric key yet")]
    NoSymmetricKey,
}

/// The stored symmetric key and the pending one, unwrapped with `provider`.
pub(crate) struct ClearSymmetricKeys {
    pub current: Zeroizing<Vec<u8>>,
    pub pending: Option<Zeroizing<Vec<u8>>>,
}

pub(crate) async fn clear_symmetric_keys(
    store: &dyn KeyStore,
    provider: &dyn RsaKeyProvider,
) -> Result<ClearSymmetricKeys, RecoveryWrapError> {
    let current = store
        .read_symmetric_key()
        .await
        .map_err(BootstrapError::from)?
        .ok_or(RecoveryWrapError::NoSymmetricKey)?;
    let current = unwrap_stored(&current, provider).await?;
    let pending = match store
        .read_pending_symmetric_key()
        .await
        .map_err(BootstrapError::from)?
    {
        Some(pending) => Some(unwrap_stored(&pending, provider).await?),
        None => None,
    };
    Ok(ClearSymmetricKeys { current, pending })
}

/// Writes the wraps that are missing (and, with [`OnMismatch::Replace`], replaces those made
/// for another recovery key), then forgets wraps of keys that are neither current nor
/// pending.
pub async fn keep_current(
    store: &dyn KeyStore,
    provider: &dyn RsaKeyProvider,
    recovery: &RecoveryPublicKey,
    on_mismatch: OnMismatch,
) -> Result<RecoveryStatus, RecoveryWrapError> {
    let keys = clear_symmetric_keys(store, provider).await?;
    Ok(keep_recovery_wraps_current(
        store,
        recovery,
        &keys.current,
        keys.pending.as_deref().map(Vec::as_slice),
        on_mismatch,
        true,
    )
    .await?)
}

/// The state of the wraps, writing nothing (`check-config`).
pub async fn status(
    store: &dyn KeyStore,
    provider: &dyn RsaKeyProvider,
    recovery: &RecoveryPublicKey,
) -> Result<RecoveryStatus, RecoveryWrapError> {
    let keys = clear_symmetric_keys(store, provider).await?;
    Ok(recovery_status(
        store,
        recovery,
        &keys.current,
        keys.pending.as_deref().map(Vec::as_slice),
    )
    .await?)
}

/// The configured recovery key, if there is one.
pub fn configured_key(settings: &Settings) -> Result<Option<RecoveryPublicKey>, ConfigError> {
    settings
        .recovery_key
        .as_ref()
        .map(|recovery| RecoveryPublicKey::load(&recovery.public_key_path))
        .transpose()
}

/// `replace-recovery-wrap`: wraps the symmetric key (and a pending one) under the configured
/// recovery key, replacing wraps made for another recovery key.
pub async fn replace_recovery_wrap(settings: &Settings) -> Result<RecoveryStatus, OperationError> {
    let recovery = configured_key(settings)?.ok_or(OperationError::NoRecoveryKeyConfigured)?;
    let opening = DatabaseWithKeys::main(
        &settings.database,
        &settings.rsa_key,
        SymmetricKeyUse::Existing,
    );
    super::run(opening, async |database: &KeyDatabase| {
        keep_current(
            database.store.as_ref(),
            database.rsa_key.as_ref(),
            &recovery,
            OnMismatch::Replace,
        )
        .await
        .map_err(|source| OperationError::RecoveryWrap {
            what: "replace-recovery-wrap",
            source,
        })
    })
    .await
}

/// Writes the recovery wrap of a transfer target's symmetric key, when a recovery key is
/// configured (the target is then as recoverable as the source); before any key is copied.
pub async fn keep_target_current(
    settings: &Settings,
    target: &KeyDatabase,
) -> Result<(), OperationError> {
    let failed = |source| OperationError::RecoveryWrap {
        what: "transfer target",
        source,
    };
    let Some(recovery) = configured_key(settings).map_err(|e| failed(e.into()))? else {
        return Ok(());
    };
    if target.cipher.is_none() {
        return Ok(());
    }
    keep_current(
        target.store.as_ref(),
        target.rsa_key.as_ref(),
        &recovery,
        OnMismatch::Keep,
    )
    .await
    .map(drop)
    .map_err(failed)
}
