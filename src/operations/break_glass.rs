//! `recover`: the break-glass path when the RSA key is lost. The symmetric key is unwrapped
//! from its recovery wrap with the offline recovery private key, every user key is proved
//! to open under it, and it is wrapped again under a new RSA key provider.
//!
//! Nothing is written until every user key has opened under a recovered key and the new
//! provider has round-tripped each key it will hold. The commit is the compare-and-swap of
//! `rotate-rsa-key`: the stored wrapping is replaced only if it is still the one read, so a
//! crash at any point leaves the old wrapping or the new one, never none. During an
//! unfinished symmetric-key rotation both keys (current and pending) are recovered and
//! re-wrapped; a crash between the two swaps leaves one of them under the lost key, and
//! running `recover` again completes it.

use std::sync::Arc;

use super::{Database, OperationError, StepFailure, open_rsa_key};
use crate::config::{DatabaseSettings, SettingsGroup};
use crate::crypto::UserKeyCipher;
use crate::crypto::recovery::{RecoveredSymmetricKey, RecoveryPrivateKey, unwrap_recovery_wraps};
use crate::keys::RsaKeySettings;
use crate::store::KeyStore;

/// What a recovery did.
#[derive(Debug)]
pub struct RecoverReport {
    /// The recovery key's fingerprint.
    pub fingerprint: String,
    /// The RSA key provider now wrapping the symmetric key.
    pub new_provider: String,
    /// User keys, every one of which opened under the recovered key(s).
    pub user_keys: usize,
    /// An unfinished rotation's pending key was recovered too.
    pub pending_recovered: bool,
}

/// Recovers the symmetric key of `database` with `private` and wraps it under `to` (read
/// from the settings `group`). `interactive` shows a progress bar on a terminal.
pub async fn recover(
    database: &DatabaseSettings,
    private: &RecoveryPrivateKey,
    to: &RsaKeySettings,
    group: SettingsGroup,
    interactive: bool,
) -> Result<RecoverReport, OperationError> {
    super::run(
        Database::at("database", database),
        async |store: &Arc<dyn KeyStore>| {
            recover_in(store.as_ref(), private, to, group, interactive).await
        },
    )
    .await
}

async fn recover_in(
    store: &dyn KeyStore,
    private: &RecoveryPrivateKey,
    to: &RsaKeySettings,
    group: SettingsGroup,
    interactive: bool,
) -> Result<RecoverReport, OperationError> {
    let failed = StepFailure("Nothing was changed");
    let fingerprint = private.fingerprint().to_owned();
    let current_wrapped =
        super::stored_symmetric_key(store, ": there is nothing to recover").await?;
    let pending_wrapped = store
        .read_pending_symmetric_key()
        .await
        .map_err(failed.at("cannot read the pending symmetric key"))?;

    let recovered = unwrap_recovery_wraps(store, private)
        .await
        .map_err(failed.at("cannot open the recovery wraps"))?;
    if recovered.is_empty() {
        let stored = store
            .read_recovery_wraps()
            .await
            .map_err(failed.at("cannot read the recovery wraps"))?;
        let mut stored_for: Vec<_> = stored.into_iter().map(|w| w.fingerprint).collect();
        stored_for.sort_unstable();
        stored_for.dedup();
        return Err(if stored_for.is_empty() {
            OperationError::NoRecoveryWrap
        } else {
            OperationError::NoRecoveryWrapForKey {
                fingerprint,
                stored_for,
            }
        });
    }

    let user_keys = verify_every_user_key(store, &recovered, interactive).await?;
    let (current, pending) = assign(&recovered, &user_keys.opened, pending_wrapped.is_some())?;

    let new_provider = open_rsa_key(to, group).await?;
    let new_current = super::wrap_proved(new_provider.as_ref(), &current.key).await?;
    let new_pending = match pending {
        Some(pending) => Some(super::wrap_proved(new_provider.as_ref(), &pending.key).await?),
        None => None,
    };

    // Commit: each swap only if the stored wrapping is still the one read.
    super::swap_wrapping(store, &current_wrapped, &new_current, "recovering").await?;
    if let (Some(expected), Some(replacement)) = (&pending_wrapped, &new_pending) {
        let swapped = store
            .replace_symmetric_key(expected, replacement)
            .await
            .map_err(StepFailure("Run `recover` again to finish").at(
            "the current key is recovered, but the pending key's new wrapping could not be saved",
        ))?;
        if !swapped {
            return Err(OperationError::PendingKeyChanged);
        }
    }
    super::read_back(store, new_provider.as_ref(), &current.key).await?;
    Ok(RecoverReport {
        fingerprint,
        new_provider: new_provider.describe(),
        user_keys: user_keys.total,
        pending_recovered: pending.is_some(),
    })
}

/// How many user keys opened under each recovered key.
struct Verified {
    total: usize,
    opened: Vec<usize>,
}

/// Opens every user key under the recovered keys; refuses if any opens under none.
async fn verify_every_user_key(
    store: &dyn KeyStore,
    recovered: &[RecoveredSymmetricKey],
    interactive: bool,
) -> Result<Verified, OperationError> {
    let failed = StepFailure("Nothing was changed");
    let ciphers = recovered
        .iter()
        .map(|r| UserKeyCipher::new(&r.key))
        .collect::<Result<Vec<_>, _>>()
        .map_err(failed.at("a recovered symmetric key is not an AES-256 key"))?;
    let rows = store
        .list_user_keys()
        .await
        .map_err(failed.at("cannot list user keys"))?;
    let mut opened = vec![0usize; ciphers.len()];
    let mut unreadable = Vec::new();
    let mut progress =
        super::progress::Progress::new("verifying user keys", rows.len() as u64, interactive);
    for row in &rows {
        progress.advance();
        match ciphers
            .iter()
            .position(|cipher| cipher.open_with_main_key(&row.sealed_key, row.id).is_ok())
        {
            Some(index) => opened[index] += 1,
            None => unreadable.push(row.id),
        }
    }
    progress.finish();
    if !unreadable.is_empty() {
        return Err(OperationError::UserKeysNotRecovered {
            unreadable,
            total: rows.len(),
        });
    }
    Ok(Verified {
        total: rows.len(),
        opened,
    })
}

/// Which recovered key is the current one and which the pending one (when a rotation is
/// unfinished). Without a rotation, the current key is the one every user key opens under.
/// During one, user keys are under either key and the cipher opens both, so the two keys
/// may take either place; a rotation run afterwards moves every key to the pending one.
fn assign<'a>(
    recovered: &'a [RecoveredSymmetricKey],
    opened: &[usize],
    rotation_unfinished: bool,
) -> Result<(&'a RecoveredSymmetricKey, Option<&'a RecoveredSymmetricKey>), OperationError> {
    let used: Vec<usize> = (0..recovered.len()).filter(|i| opened[*i] > 0).collect();
    let ambiguous = || OperationError::AmbiguousRecoveryWraps {
        count: recovered.len(),
    };
    if !rotation_unfinished {
        return match (used.as_slice(), recovered) {
            ([only], _) => Ok((&recovered[*only], None)),
            ([], [only]) => Ok((only, None)),
            _ => Err(ambiguous()),
        };
    }
    if recovered.len() < 2 {
        return Err(OperationError::PendingKeyNotRecoverable);
    }
    let unused: Vec<usize> = (0..recovered.len()).filter(|i| opened[*i] == 0).collect();
    let pair = match (used.as_slice(), unused.as_slice()) {
        ([a, b], _) => (*a, *b),
        ([a], [b]) => (*a, *b),
        ([], [a, b]) => (*a, *b),
        _ => return Err(ambiguous()),
    };
    Ok((&recovered[pair.0], Some(&recovered[pair.1])))
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::*;

    fn keys(n: u8) -> Vec<RecoveredSymmetricKey> {
        (0..n)
            .map(|i| RecoveredSymmetricKey {
                key_check: i.to_string(),
                key: Zeroizing::new(vec![i; 32]),
            })
            .collect()
    }

    fn checks(
        (current, pending): (&RecoveredSymmetricKey, Option<&RecoveredSymmetricKey>),
    ) -> (String, Option<String>) {
        (
            current.key_check.clone(),
            pending.map(|p| p.key_check.clone()),
        )
    }

    #[test]
    fn the_current_key_is_the_one_the_user_keys_open_under() {
        let two = keys(2);
        assert_eq!(
            checks(assign(&two, &[0, 5], false).unwrap()),
            ("1".into(), None)
        );
        let one = keys(1);
        assert_eq!(
            checks(assign(&one, &[0], false).unwrap()),
            ("0".into(), None)
        );
        assert!(
            assign(&two, &[0, 0], false).is_err(),
            "no user key tells which"
        );
        assert!(
            assign(&two, &[1, 1], false).is_err(),
            "two keys without a rotation"
        );
    }

    #[test]
    fn an_unfinished_rotation_recovers_both_keys_or_refuses() {
        let two = keys(2);
        assert_eq!(
            checks(assign(&two, &[3, 4], true).unwrap()),
            ("0".into(), Some("1".into()))
        );
        assert_eq!(
            checks(assign(&two, &[0, 4], true).unwrap()),
            ("1".into(), Some("0".into()))
        );
        assert!(
            assign(&keys(1), &[4], true).is_err(),
            "the pending key's wrap is missing"
        );
        assert!(assign(&keys(3), &[4, 0, 0], true).is_err());
    }
}
