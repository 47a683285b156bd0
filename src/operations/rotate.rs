//! `rotate-rsa-key`: wrap the database's symmetric key under a new RSA key, without touching
//! any user key.
//!
//! The symmetric key is unwrapped with the current RSA key, wrapped with the new one, the
//! new wrapping is unwrapped again to prove it round-trips, and only then swapped in with a
//! compare-and-swap on the stored value (so a concurrent change is never overwritten). User
//! keys stay as they are: they are sealed by the symmetric key, which does not change.
//! Running instances keep working (they hold the symmetric key in memory); restart them with
//! the new RSA key settings.
//!
//! `rotate-symmetric-key`: re-seal every user key under a new symmetric key, resumable, with
//! the new key saved as the pending one first (see [`rotate_symmetric_key`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::{
    DatabaseWithKeys, KeyDatabase, OperationError, StepFailure, SymmetricKeyUse, open_rsa_key,
};
use crate::config::{DatabaseSettings, SettingsGroup};
use crate::crypto::recovery::{OnMismatch, RecoveryPublicKey, keep_recovery_wraps_current};
use crate::crypto::symmetric_key::unwrap_stored;
use crate::keys::RsaKeySettings;

/// What was done, for the report.
#[derive(Debug)]
pub struct RotationReport {
    pub old_provider: String,
    pub new_provider: String,
}

/// `recovery`: the configured recovery key, whose wrap of the (unchanged) symmetric key is
/// written if it is missing.
pub async fn rotate_rsa_key(
    database: &DatabaseSettings,
    current: &RsaKeySettings,
    new: &RsaKeySettings,
    recovery: Option<&RecoveryPublicKey>,
) -> Result<RotationReport, OperationError> {
    super::run(DatabaseWithKeys::main(database, current, SymmetricKeyUse::NotRead), async |database: &KeyDatabase| {
        let store = database.store.as_ref();
        let new_provider = open_rsa_key(new, SettingsGroup::RotateTo)
        .await?;
        let wrapped = super::stored_symmetric_key(
            store,
            " yet; start the service once with the new RSA key instead",
        )
        .await?;
        // The same unwrapping as start-up's, its 32-byte check included: a key of another
        // length must never be wrapped anew under the new RSA key.
        let key = unwrap_stored(&wrapped, database.rsa_key.as_ref())
            .await
            .map_err(|source| OperationError::SymmetricKey {
                what: "the current RSA key (keyConnectorSettings__rsaKey__...) and the stored symmetric key",
                source,
            })?;
        let replacement = super::wrap_proved(new_provider.as_ref(), &key).await?;
        super::swap_wrapping(store, &wrapped, &replacement, "rotating").await?;
        super::read_back(store, new_provider.as_ref(), &key).await?;
        if let Some(recovery) = recovery {
            // The symmetric key did not change, so neither does its recovery wrap; write it
            // if it was never written.
            keep_recovery_wraps_current(store, recovery, &key, None, OnMismatch::Keep, false)
                .await
                .map_err(
                    StepFailure("The service writes a missing wrap at its next start")
                        .at("the RSA key was rotated, but the recovery wrap could not be checked"),
                )?;
        }
        Ok(RotationReport {
            old_provider: database.rsa_key.describe(),
            new_provider: new_provider.describe(),
        })
    })
    .await
}

/// What a symmetric-key rotation run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SymmetricRotationReport {
    pub total: usize,
    /// Re-sealed under the new key in this run.
    pub resealed: usize,
    /// Already under the new key (an earlier, interrupted run).
    pub already_resealed: usize,
    /// Readable under neither key: they were unreadable before; left as they are, and the
    /// rotation is not completed while there are any.
    pub unreadable: Vec<uuid::Uuid>,
    /// The new key became the current one (every key verified under it).
    pub completed: bool,
}

/// Re-seals every user key under a new symmetric key, then makes it the current key.
///
/// Safe to interrupt at any point, `kill -9` included, and to run again:
/// 1. the new key is generated, wrapped by the RSA key and saved as the *pending* key
///    before any user key is touched (a second run finds and reuses it);
/// 2. each user key is opened with the current key, sealed with the new one, and replaced
///    only if unchanged since read (compare-and-swap); one already under the new key is
///    skipped. The service, when started meanwhile, opens keys under either key;
/// 3. when every key opens under the new key, the new key replaces the current one and the
///    old one is forgotten, in one transaction (one file write for JSON).
///
/// Instances that are running keep only the old key in memory and would seal new keys with
/// it: stop them all before rotating (the caller must confirm).
/// `batch` limits how many keys are re-sealed in this run (the rest in later runs).
///
/// With a `recovery` key, the new key's recovery wrap is saved before the new key itself
/// (so no user key is ever sealed under a key without one), checked again before any user
/// key is re-sealed, and the old key's wrap is forgotten only after the new key became
/// current: at every instant the current key, and the pending one, can be recovered.
pub async fn rotate_symmetric_key(
    database: &DatabaseSettings,
    rsa_key: &RsaKeySettings,
    batch: Option<usize>,
    interactive: bool,
    recovery: Option<&RecoveryPublicKey>,
) -> Result<SymmetricRotationReport, OperationError> {
    use crate::crypto::{SealedForm, UserKeyCipher, generate_symmetric_key};

    let failed =
        StepFailure("Every key is still readable; run the rotation again when it is fixed");
    super::run(DatabaseWithKeys::main(database, rsa_key, SymmetricKeyUse::NotRead), async |database: &KeyDatabase| {
        let (store, provider) = (&database.store, &database.rsa_key);
        let current_wrapped = super::stored_symmetric_key(store.as_ref(), " yet").await?;
        let symmetric = |e| OperationError::SymmetricKey {
            what: "database",
            source: e,
        };
        let current_key = unwrap_stored(&current_wrapped, provider.as_ref()).await.map_err(symmetric)?;
        let current = UserKeyCipher::new(&current_key)
            .map_err(failed.at("the current symmetric key is damaged"))?;

        // 1. The pending key: reuse an interrupted run's, or make and save one.
        let pending_wrapped = match store
            .read_pending_symmetric_key()
            .await
            .map_err(failed.at("cannot read the pending key"))?
        {
            Some(pending) => {
                tracing::info!("resuming an unfinished symmetric-key rotation");
                pending
            }
            None => {
                let fresh = generate_symmetric_key().map_err(failed.at("cannot generate a key"))?;
                if let Some(recovery) = recovery {
                    let wrap = recovery.wrap(&fresh).map_err(failed.at("cannot wrap the new key under the recovery key"))?;
                    store
                        .save_recovery_wrap(&wrap)
                        .await
                        .map_err(failed.at("cannot save the new key's recovery wrap"))?;
                }
                let wrapped = provider
                    .wrap_symmetric_key(&fresh)
                    .await
                    .map_err(failed.at("the RSA key cannot wrap the new key"))?;
                store
                    .save_pending_symmetric_key_if_absent(&STANDARD.encode(wrapped))
                    .await
                    .map_err(failed.at("cannot save the new key"))?
            }
        };
        let pending_key = unwrap_stored(&pending_wrapped, provider.as_ref()).await.map_err(symmetric)?;
        let new = UserKeyCipher::new(&pending_key)
            .map_err(failed.at("the pending symmetric key is damaged"))?;
        if let Some(recovery) = recovery {
            // Both keys recoverable before any user key moves (a resumed run, or another
            // run's pending key that won the race, included).
            keep_recovery_wraps_current(store.as_ref(), recovery, &current_key, Some(pending_key.as_slice()), OnMismatch::Keep, false)
                .await
                .map_err(failed.at("cannot write the recovery wraps"))?;
        }

        // 2. Re-seal.
        let rows = store
            .list_user_keys()
            .await
            .map_err(failed.at("cannot list user keys"))?;
        let total = rows.len();
        let mut report = SymmetricRotationReport {
            total,
            ..SymmetricRotationReport::default()
        };
        let mut progress = super::progress::Progress::new("re-sealing user keys", rows.len() as u64, interactive);
        for row in &rows {
            progress.advance();
            if new.open_with_main_key(&row.sealed_key, row.id).is_ok() {
                report.already_resealed += 1;
                continue;
            }
            if batch.is_some_and(|limit| report.resealed >= limit) {
                continue;
            }
            let Ok(clear) = current.open_with_main_key(&row.sealed_key, row.id) else {
                tracing::warn!(user = %row.id, "this user key opens under neither key; left as it is");
                report.unreadable.push(row.id);
                continue;
            };
            // In the form it was in: a bound key stays bound, an unbound one unbound.
            let resealed = new
                .seal_user_key(&clear, row.id, SealedForm::of(&row.sealed_key))
                .map_err(failed.at("cannot seal"))?;
            let swapped = store
                .reseal_user_key(row.id, &row.sealed_key, &resealed)
                .await
                .map_err(failed.at("cannot write a re-sealed key"))?;
            if !swapped {
                return Err(OperationError::UserKeyChangedDuringRotation { user: row.id });
            }
            report.resealed += 1;
        }
        progress.finish();

        // 3. Promote only when every readable key is verified under the new key.
        let rows = store
            .list_user_keys()
            .await
            .map_err(failed.at("cannot list user keys"))?;
        let pending_left = rows
            .iter()
            .filter(|row| !report.unreadable.contains(&row.id))
            .filter(|row| new.open_with_main_key(&row.sealed_key, row.id).is_err())
            .count();
        if pending_left > 0 {
            tracing::info!(left = pending_left, "keys still under the current key; run again to continue");
            return Ok(report);
        }
        if !report.unreadable.is_empty() {
            // Promotion forgets every other stored wrapping; keep them while any key cannot
            // be explained, so nothing that might still open one is destroyed.
            return Err(OperationError::RotationBlockedByUnreadableKeys {
                unreadable: report.unreadable,
            });
        }
        report.completed = store
            .promote_pending_symmetric_key(&current_wrapped)
            .await
            .map_err(failed.at("cannot make the new key current"))?;
        if !report.completed {
            return Err(OperationError::CurrentKeyChangedBeforePromotion);
        }
        if let Some(recovery) = recovery {
            // The old key seals nothing any more: forget its wrap (start-up does it too,
            // should this fail).
            if let Err(error) =
                keep_recovery_wraps_current(store.as_ref(), recovery, &pending_key, None, OnMismatch::Keep, true).await
            {
                tracing::warn!(%error, "rotation completed; the old key's recovery wrap is removed at the next start");
            }
        }
        Ok(report)
    })
    .await
}
