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

use super::OperationError;
use crate::config::{DatabaseSettings, SettingsGroup};
use crate::crypto::UserKeyCipher;
use crate::crypto::recovery::{RecoveredSymmetricKey, RecoveryPrivateKey, unwrap_recovery_wraps};
use crate::keys::{RsaKeySettings, open_rsa_key_provider};
use crate::store::{KeyStore, open_store};

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
    let store = open_store(database)
        .await
        .map_err(|source| OperationError::Store {
            what: "database",
            source,
        })?;
    let result = recover_in(store.as_ref(), private, to, group, interactive).await;
    store.close().await;
    result
}

async fn recover_in(
    store: &dyn KeyStore,
    private: &RecoveryPrivateKey,
    to: &RsaKeySettings,
    group: SettingsGroup,
    interactive: bool,
) -> Result<RecoverReport, OperationError> {
    let failed = super::StepFailure("Nothing was changed");
    let fingerprint = private.fingerprint().to_owned();
    let current_wrapped = store
        .read_symmetric_key()
        .await
        .map_err(failed.at("cannot read the symmetric key"))?
        .ok_or_else(|| {
            OperationError::Failed(
                "the database has no symmetric key: there is nothing to recover".into(),
            )
        })?;
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
        let mut others: Vec<_> = stored.iter().map(|w| w.fingerprint.as_str()).collect();
        others.sort_unstable();
        others.dedup();
        return Err(OperationError::Failed(if others.is_empty() {
            "the database holds no recovery wrap (was keyConnectorSettings__recoveryKey__publicKeyPath \
             configured when the service ran?); nothing was changed"
                .to_owned()
        } else {
            format!(
                "the database holds no recovery wrap for this recovery key (fingerprint {fingerprint}); \
                 its wraps are for {}; nothing was changed",
                others.join(", ")
            )
        }));
    }

    let user_keys = verify_every_user_key(store, &recovered, interactive).await?;
    let (current, pending) = assign(&recovered, &user_keys.opened, pending_wrapped.is_some())?;

    let new_provider =
        open_rsa_key_provider(to, group)
            .await
            .map_err(|source| OperationError::RsaKey {
                what: "new RSA key",
                source,
            })?;
    let new_current = super::wrap_proved(new_provider.as_ref(), &current.key).await?;
    let new_pending = match pending {
        Some(pending) => Some(super::wrap_proved(new_provider.as_ref(), &pending.key).await?),
        None => None,
    };

    // Commit: each swap only if the stored wrapping is still the one read.
    let swapped = store
        .replace_symmetric_key(&current_wrapped, &new_current)
        .await
        .map_err(failed.at("cannot save the new wrapping"))?;
    if !swapped {
        return Err(OperationError::Failed(
            "the stored symmetric key changed while recovering; nothing was changed, run again"
                .into(),
        ));
    }
    if let (Some(expected), Some(replacement)) = (&pending_wrapped, &new_pending) {
        let swapped = store
            .replace_symmetric_key(expected, replacement)
            .await
            .map_err(|e| {
                OperationError::Failed(format!(
                    "the current key is recovered, but the pending key's new wrapping could not be saved ({e}); \
                     run `recover` again to finish"
                ))
            })?;
        if !swapped {
            return Err(OperationError::Failed(
                "the current key is recovered, but the pending key changed meanwhile; run `recover` again"
                    .into(),
            ));
        }
    }

    // Read back: what is stored unwraps under the new provider to the recovered key.
    let stored = store
        .read_symmetric_key()
        .await
        .map_err(|e| OperationError::Failed(format!("saved, but cannot read it back: {e}")))?
        .unwrap_or_default();
    if !super::unwraps_to(new_provider.as_ref(), &stored, &current.key).await {
        return Err(OperationError::Failed(
            "saved, but the stored value does not unwrap with the new RSA key; investigate before starting the service"
                .into(),
        ));
    }
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
    let failed = super::StepFailure("Nothing was changed");
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
        let shown: Vec<_> = unreadable
            .iter()
            .take(10)
            .map(ToString::to_string)
            .collect();
        return Err(OperationError::Failed(format!(
            "{} of {} user key(s) open under no recovered symmetric key ({}{}); nothing was changed. \
             Is this the database the recovery key was configured for?",
            unreadable.len(),
            rows.len(),
            shown.join(", "),
            if unreadable.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        )));
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
    let ambiguous = || {
        OperationError::Failed(format!(
            "the database holds {} recovery wraps for this recovery key and its user keys do not tell which \
             symmetric key is current; nothing was changed",
            recovered.len()
        ))
    };
    if !rotation_unfinished {
        return match (used.as_slice(), recovered) {
            ([only], _) => Ok((&recovered[*only], None)),
            ([], [only]) => Ok((only, None)),
            _ => Err(ambiguous()),
        };
    }
    if recovered.len() < 2 {
        return Err(OperationError::Failed(
            "a symmetric-key rotation is unfinished, but the database holds a recovery wrap of only one of its two keys \
             for this recovery key; nothing was changed"
                .into(),
        ));
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
