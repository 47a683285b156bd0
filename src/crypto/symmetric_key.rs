//! The database's symmetric key: read and unwrapped at start-up, or created once.
//!
//! Safety rule: a stored key that the configured RSA key cannot unwrap stops start-up. A
//! replacement is never generated over an existing key, because every user key in the
//! database would become unreadable. A new key is used only after the store confirmed it
//! holds exactly that key (another instance may have saved one first: then that one wins).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::{SYMMETRIC_KEY_LEN, SealError, UserKeyCipher, generate_symmetric_key};
use crate::keys::{KeyProviderError, RsaKeyProvider};
use crate::store::{StoreError, SymmetricKeyStore};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(KeyProviderError),
    #[error(
        "the symmetric key stored in the database cannot be unwrapped by the configured RSA key ({provider}): {reason}. \
         Is this the certificate/key the database was created with? Refusing to start: generating a new key would make every stored user key unreadable"
    )]
    WrongRsaKey {
        provider: String,
        /// Why the provider could not unwrap it (an [`KeyProviderError::UnwrapFailed`]).
        #[source]
        reason: KeyProviderError,
    },
    #[error("the symmetric key stored in the database is damaged: {0}. Refusing to start")]
    DamagedStoredKey(String),
    #[error("cannot generate a symmetric key: {0}")]
    KeyGeneration(SealError),
}

impl BootstrapError {
    /// Whether waiting and trying again can help (a peer is down), as opposed to a
    /// configuration or data problem that needs an operator.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            BootstrapError::Store(StoreError::Unavailable(_))
                | BootstrapError::Provider(KeyProviderError::Unavailable { .. })
        )
    }
}

/// Where the key came from, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymmetricKeyOrigin {
    /// Unwrapped from the database.
    Existing,
    /// Generated and saved by this instance.
    Created,
    /// Another instance saved one first while this one was creating its own.
    CreatedConcurrently,
}

/// Reads the wrapped key (or creates one) and returns the cipher for user keys.
pub async fn load_or_create_symmetric_key(
    store: &dyn SymmetricKeyStore,
    provider: &dyn RsaKeyProvider,
) -> Result<(UserKeyCipher, SymmetricKeyOrigin), BootstrapError> {
    if let Some(wrapped) = store.read_symmetric_key().await? {
        let key = unwrap_stored(&wrapped, provider).await?;
        let cipher = with_pending_key(cipher_from(&key)?, store, provider).await?;
        return Ok((cipher, SymmetricKeyOrigin::Existing));
    }

    let key = generate_symmetric_key().map_err(BootstrapError::KeyGeneration)?;
    let wrapped = provider
        .wrap_symmetric_key(&key)
        .await
        .map_err(BootstrapError::Provider)?;
    let wrapped = STANDARD.encode(wrapped);
    let stored = store.insert_symmetric_key_if_absent(&wrapped).await?;
    if stored == wrapped {
        Ok((cipher_from(&key)?, SymmetricKeyOrigin::Created))
    } else {
        let winner = unwrap_stored(&stored, provider).await?;
        Ok((
            cipher_from(&winner)?,
            SymmetricKeyOrigin::CreatedConcurrently,
        ))
    }
}

/// Unwraps the stored key if there is one; never writes. For tasks that must not change a
/// database they only read (`check-config`, dry runs).
pub async fn unwrap_existing(
    store: &dyn SymmetricKeyStore,
    provider: &dyn RsaKeyProvider,
) -> Result<Option<UserKeyCipher>, BootstrapError> {
    match store.read_symmetric_key().await? {
        Some(wrapped) => {
            let cipher = cipher_from(&unwrap_stored(&wrapped, provider).await?)?;
            Ok(Some(with_pending_key(cipher, store, provider).await?))
        }
        None => Ok(None),
    }
}

/// During an unfinished symmetric-key rotation some user keys are sealed under the new key:
/// the cipher then opens both (and keeps sealing with the current one), so no key is ever
/// unreadable, whenever the rotation was interrupted.
async fn with_pending_key(
    cipher: UserKeyCipher,
    store: &dyn SymmetricKeyStore,
    provider: &dyn RsaKeyProvider,
) -> Result<UserKeyCipher, BootstrapError> {
    let Some(pending) = store.read_pending_symmetric_key().await? else {
        return Ok(cipher);
    };
    let key = unwrap_stored(&pending, provider).await?;
    tracing::warn!(
        "a symmetric-key rotation is unfinished: keys sealed under either key are served; \
         stop every instance and run `key-connector rotate-symmetric-key` to finish it"
    );
    cipher
        .with_fallback(&key)
        .map_err(|e| BootstrapError::DamagedStoredKey(e.to_string()))
}

/// Unwraps a stored (base64) wrapped symmetric key with `provider`.
pub async fn unwrap_stored(
    wrapped: &str,
    provider: &dyn RsaKeyProvider,
) -> Result<Zeroizing<Vec<u8>>, BootstrapError> {
    let bytes = STANDARD
        .decode(wrapped.trim())
        .map_err(|_| BootstrapError::DamagedStoredKey("it is not base64".into()))?;
    let key = provider
        .unwrap_symmetric_key(&bytes)
        .await
        .map_err(|e| match e {
            KeyProviderError::UnwrapFailed { .. } => BootstrapError::WrongRsaKey {
                provider: provider.describe(),
                reason: e,
            },
            other => BootstrapError::Provider(other),
        })?;
    if key.len() != SYMMETRIC_KEY_LEN {
        return Err(BootstrapError::DamagedStoredKey(format!(
            "it unwraps to {} bytes instead of {SYMMETRIC_KEY_LEN}",
            key.len()
        )));
    }
    Ok(key)
}

fn cipher_from(key: &[u8]) -> Result<UserKeyCipher, BootstrapError> {
    UserKeyCipher::new(key).map_err(|e| BootstrapError::DamagedStoredKey(e.to_string()))
}
