//! Operator tasks run by the same binary with the same settings: the start-up `transferTo`
//! copy, and the admin subcommands (`check-config`, `transfer`, `rotate-rsa-key`,
//! `rotate-symmetric-key`, `bind-user-keys`, `unbind-user-keys`, `recover`,
//! `replace-recovery-wrap`, `backup`, `stats`).
//!
//! Each task opens what it needs through the same seams as the server ([`open_store`],
//! [`open_rsa_key_provider`], [`load_or_create_symmetric_key`]), so a task can never read or
//! write a key differently from the service.

pub mod backup;
pub mod binding;
pub mod break_glass;
pub mod check;
pub mod progress;
pub mod recovery_wraps;
pub mod rotate;
pub mod stats;
pub mod transfer;

use std::sync::Arc;

use crate::config::{DatabaseSettings, SettingsGroup};
use crate::crypto::UserKeyCipher;
use crate::crypto::symmetric_key::{BootstrapError, load_or_create_symmetric_key, unwrap_existing};
use crate::keys::{KeyProviderError, RsaKeyProvider, RsaKeySettings, open_rsa_key_provider};
use crate::store::{KeyStore, SourceError, StoreError, open_store};

/// Why a task could not run. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    #[error("{what}: cannot open the key store: {source}")]
    Store {
        what: &'static str,
        source: StoreError,
    },
    #[error("{what}: cannot load the RSA key: {source}")]
    RsaKey {
        what: &'static str,
        source: KeyProviderError,
    },
    #[error("{what}: {source}")]
    SymmetricKey {
        what: &'static str,
        source: BootstrapError,
    },
    /// A step of a task failed on the store, a key provider or the cipher; `then` says what
    /// that leaves behind and what to do.
    #[error("{what}: {source}. {then}")]
    Step {
        what: &'static str,
        #[source]
        source: SourceError,
        then: &'static str,
    },
    #[error("{0}")]
    Failed(String),
}

/// Turns the errors of one task's steps into [`OperationError::Step`]s; every failure of
/// the task leaves the same state, said once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepFailure(pub &'static str);

impl StepFailure {
    /// The error of the step `what`, keeping the one that caused it.
    pub(crate) fn at<E: Into<SourceError>>(
        self,
        what: &'static str,
    ) -> impl FnOnce(E) -> OperationError {
        move |source| OperationError::Step {
            what,
            source: source.into(),
            then: self.0,
        }
    }
}

/// A store with the RSA key and (when it has one) the symmetric key that seal its keys.
pub struct KeyDatabase {
    pub store: Arc<dyn KeyStore>,
    pub rsa_key: Arc<dyn RsaKeyProvider>,
    /// `None` when the database has no symmetric key yet and none was to be created.
    pub cipher: Option<Arc<UserKeyCipher>>,
}

impl KeyDatabase {
    /// Opens `database` with `rsa_key`. With `create_symmetric_key`, a database without a
    /// symmetric key gets one (as the server does at start-up); otherwise nothing is written.
    /// `what` names the database in messages ("source", "transfer target"); `group` is
    /// where `rsa_key` was configured.
    pub async fn open(
        what: &'static str,
        database: &DatabaseSettings,
        rsa_key: &RsaKeySettings,
        group: SettingsGroup,
        create_symmetric_key: bool,
    ) -> Result<Self, OperationError> {
        let store = open_store(database)
            .await
            .map_err(|source| OperationError::Store { what, source })?;
        let rsa_key = open_rsa_key_provider(rsa_key, group)
            .await
            .map_err(|source| OperationError::RsaKey { what, source })?;
        let cipher = if create_symmetric_key {
            let (cipher, _) = load_or_create_symmetric_key(store.as_ref(), rsa_key.as_ref())
                .await
                .map_err(|source| OperationError::SymmetricKey { what, source })?;
            Some(Arc::new(cipher))
        } else {
            unwrap_existing(store.as_ref(), rsa_key.as_ref())
                .await
                .map_err(|source| OperationError::SymmetricKey { what, source })?
                .map(Arc::new)
        };
        Ok(Self {
            store,
            rsa_key,
            cipher,
        })
    }
}

/// Wraps `key` under `provider` and proves the wrapping: `provider` must unwrap it again to
/// the same key. The base64 text to store. What the RSA-key rotation and `recover` store.
pub(crate) async fn wrap_proved(
    provider: &dyn RsaKeyProvider,
    key: &[u8],
) -> Result<String, OperationError> {
    let failed = StepFailure("Nothing was changed");
    let wrapped = provider
        .wrap_symmetric_key(key)
        .await
        .map_err(failed.at("the new RSA key cannot wrap"))?;
    let proof = provider
        .unwrap_symmetric_key(&wrapped)
        .await
        .map_err(failed.at("the new RSA key cannot unwrap what it wrapped"))?;
    if proof.as_slice() != key {
        return Err(OperationError::Failed(
            "the new RSA key does not round-trip the symmetric key; nothing was changed".into(),
        ));
    }
    Ok(base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        &wrapped,
    ))
}

/// Whether the stored (base64) wrapping `stored` unwraps under `provider` to `key`: the
/// read-back after a new wrapping was saved.
pub(crate) async fn unwraps_to(provider: &dyn RsaKeyProvider, stored: &str, key: &[u8]) -> bool {
    match base64::Engine::decode(&base64::engine::general_purpose::STANDARD, stored.trim()) {
        Ok(bytes) => provider
            .unwrap_symmetric_key(&bytes)
            .await
            .is_ok_and(|k| k.as_slice() == key),
        Err(_) => false,
    }
}
