//! Proving a copy of the database restores: open it as a store, get its symmetric key, and
//! decrypt every user key in it. Nothing is written to the copy.
//!
//! Where the symmetric key comes from is a seam, [`SymmetricKeySource`]: the configured RSA
//! key unwrapping the key stored in the copy ([`ConfiguredRsaKey`]), or the offline recovery
//! key unwrapping the copy's recovery wraps ([`OfflineRecoveryKey`]). The check itself does
//! not know which one it was given.
//!
//! Reports name the user ids whose key does not decrypt and why, never key material.

use std::sync::Arc;

use async_trait::async_trait;
use uuid::Uuid;

use crate::config::SettingsGroup;
use crate::crypto::recovery::{RecoveryPrivateKey, unwrap_recovery_wraps};
use crate::crypto::symmetric_key::unwrap_existing;
use crate::crypto::{SealError, UserKeyCipher};
use crate::keys::RsaKeyProvider;
use crate::keys::RsaKeySettings;
use crate::operations::progress::Progress;
use crate::operations::{OperationError, open_rsa_key};
use crate::store::{KeyStore, SourceError};

/// How the check gets the symmetric key that seals the copy's user keys.
#[async_trait]
pub trait SymmetricKeySource: Send + Sync {
    /// Names the source in reports, e.g. "the configured RSA key (certificate ...)".
    fn describe(&self) -> String;

    /// The cipher of the copy's user keys, from what `store` holds; `None` when the copy
    /// holds no symmetric key at all. An error says why the key cannot be had (wrong RSA
    /// key, damaged wrap, provider unreachable).
    async fn cipher_for(&self, store: &dyn KeyStore) -> Result<Option<UserKeyCipher>, SourceError>;
}

/// The configured RSA key provider unwrapping the copy's stored symmetric key (and the
/// pending one of an unfinished rotation), exactly as the service does at start-up.
pub struct ConfiguredRsaKey(pub Arc<dyn RsaKeyProvider>);

impl ConfiguredRsaKey {
    /// The service's RSA key (`keyConnectorSettings:rsaKey`).
    pub async fn open(settings: &RsaKeySettings) -> Result<Self, OperationError> {
        Ok(Self(open_rsa_key(settings, SettingsGroup::Main).await?))
    }
}

#[async_trait]
impl SymmetricKeySource for ConfiguredRsaKey {
    fn describe(&self) -> String {
        format!("the configured RSA key ({})", self.0.describe())
    }

    async fn cipher_for(&self, store: &dyn KeyStore) -> Result<Option<UserKeyCipher>, SourceError> {
        Ok(unwrap_existing(store, self.0.as_ref()).await?)
    }
}

/// The offline recovery key unwrapping the copy's recovery wraps: proves the copy can be
/// restored even when the RSA key is lost (the break-glass path of `recover`).
pub struct OfflineRecoveryKey(pub RecoveryPrivateKey);

#[async_trait]
impl SymmetricKeySource for OfflineRecoveryKey {
    fn describe(&self) -> String {
        format!(
            "the offline recovery key (fingerprint {})",
            self.0.fingerprint()
        )
    }

    async fn cipher_for(&self, store: &dyn KeyStore) -> Result<Option<UserKeyCipher>, SourceError> {
        let recovered = unwrap_recovery_wraps(store, &self.0).await?;
        let mut keys = recovered.iter();
        let Some(first) = keys.next() else {
            if store.read_symmetric_key().await?.is_none() {
                return Ok(None);
            }
            return Err(format!(
                "the copy holds no recovery wrap for this recovery key (fingerprint {}); \
                 only the configured RSA key can restore it",
                self.0.fingerprint()
            )
            .into());
        };
        // The current key and, during an unfinished rotation, the pending one: a user key
        // sealed under either must open.
        let mut cipher = UserKeyCipher::new(&first.key)?;
        if let Some(second) = keys.next() {
            cipher = cipher.with_fallback(&second.key)?;
        }
        Ok(Some(cipher))
    }
}

/// Why a copy failed its check.
#[derive(Debug)]
pub enum VerifyProblem {
    /// The copy could not be read as a store (its rows, its schema).
    Unreadable(String),
    /// The copy holds no symmetric key, so nothing in it can be restored.
    NoSymmetricKey,
    /// The symmetric key could not be had from the copy with the given source.
    SymmetricKey(String),
    /// These users' keys do not decrypt under the copy's symmetric key.
    UserKeys(Vec<(Uuid, SealError)>),
}

impl std::fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VerifyProblem::Unreadable(why) => write!(f, "the copy cannot be read: {why}"),
            VerifyProblem::NoSymmetricKey => f.write_str(
                "the copy holds no symmetric key, so no user key in it could be served \
                 (a database the service never started on, or the wrong one)",
            ),
            VerifyProblem::SymmetricKey(why) => {
                write!(f, "the copy's symmetric key cannot be had: {why}")
            }
            VerifyProblem::UserKeys(failed) => {
                write!(f, "{} user key(s) do not decrypt", failed.len())
            }
        }
    }
}

/// What the check of one copy found.
#[derive(Debug)]
pub struct Verification {
    /// The store kind the copy was opened as (`sqlite`, `postgresql`, ...).
    pub store_kind: &'static str,
    /// Where the symmetric key came from ([`SymmetricKeySource::describe`]).
    pub key_source: String,
    /// User-key rows in the copy.
    pub user_keys: u64,
    /// Of those, how many decrypted.
    pub decrypted: u64,
    /// `None` when every user key decrypted.
    pub problem: Option<VerifyProblem>,
}

impl Verification {
    pub fn passed(&self) -> bool {
        self.problem.is_none()
    }
}

impl std::fmt::Display for Verification {
    /// The outcome in a few lines: what was checked, and what failed (user ids only).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// Failed ids listed one a line; the rest are counted.
        const LISTED: usize = 50;
        match &self.problem {
            None => writeln!(
                f,
                "verified: all {} user keys of the {} copy decrypt under its symmetric key, unwrapped by {}",
                self.user_keys, self.store_kind, self.key_source
            ),
            Some(problem) => {
                writeln!(f, "verification FAILED: {problem}")?;
                if let VerifyProblem::UserKeys(failed) = problem {
                    for (id, why) in failed.iter().take(LISTED) {
                        writeln!(f, "  user {id}: {why}")?;
                    }
                    if failed.len() > LISTED {
                        writeln!(f, "  and {} more", failed.len() - LISTED)?;
                    }
                }
                writeln!(
                    f,
                    "{} of {} user keys decrypted; symmetric key from {}",
                    self.decrypted, self.user_keys, self.key_source
                )
            }
        }
    }
}

/// Checks `store` (a copy opened read-only): its symmetric key from `source`, then every
/// user key. A progress bar on a terminal when `interactive`.
pub async fn verify_store(
    store: &dyn KeyStore,
    source: &dyn SymmetricKeySource,
    interactive: bool,
) -> Verification {
    let mut verification = Verification {
        store_kind: store.kind(),
        key_source: source.describe(),
        user_keys: 0,
        decrypted: 0,
        problem: None,
    };
    let rows = match store.list_user_keys().await {
        Ok(rows) => rows,
        Err(error) => {
            verification.problem = Some(VerifyProblem::Unreadable(error.to_string()));
            return verification;
        }
    };
    verification.user_keys = rows.len() as u64;
    let cipher = match source.cipher_for(store).await {
        Ok(Some(cipher)) => cipher,
        Ok(None) => {
            verification.problem = Some(VerifyProblem::NoSymmetricKey);
            return verification;
        }
        Err(error) => {
            verification.problem = Some(VerifyProblem::SymmetricKey(error.to_string()));
            return verification;
        }
    };
    let mut progress = Progress::new("checking user keys", rows.len() as u64, interactive);
    let mut failed = Vec::new();
    for row in &rows {
        match cipher.open_user_key(&row.sealed_key, row.id) {
            // The clear key is dropped (and zeroized) at once: opening it is the proof.
            Ok(_) => verification.decrypted += 1,
            Err(error) => failed.push((row.id, error)),
        }
        progress.advance();
    }
    progress.finish();
    if !failed.is_empty() {
        verification.problem = Some(VerifyProblem::UserKeys(failed));
    }
    verification
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_names_users_and_counts_beyond_the_list() {
        let failed: Vec<_> = (0..52)
            .map(|i| (Uuid::from_u128(i), SealError::Unauthentic))
            .collect();
        let verification = Verification {
            store_kind: "sqlite",
            key_source: "the configured RSA key (test)".into(),
            user_keys: 60,
            decrypted: 8,
            problem: Some(VerifyProblem::UserKeys(failed)),
        };
        let text = verification.to_string();
        assert!(!verification.passed());
        assert!(text.contains("52 user key(s) do not decrypt"), "{text}");
        assert!(
            text.contains(&format!("user {}: ", Uuid::from_u128(0))),
            "{text}"
        );
        assert!(!text.contains(&Uuid::from_u128(50).to_string()), "{text}");
        assert!(text.contains("and 2 more"), "{text}");
        assert!(text.contains("8 of 60 user keys decrypted"), "{text}");
    }

    #[test]
    fn a_passed_check_says_how_many_keys_and_from_where() {
        let verification = Verification {
            store_kind: "json",
            key_source: "the configured RSA key (test)".into(),
            user_keys: 3,
            decrypted: 3,
            problem: None,
        };
        assert!(verification.passed());
        let text = verification.to_string();
        assert!(text.contains("all 3 user keys of the json copy"), "{text}");
        assert!(text.contains("the configured RSA key (test)"), "{text}");
    }
}
