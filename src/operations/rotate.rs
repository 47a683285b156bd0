//! `rotate-rsa-key`: wrap the database's symmetric key under a new RSA key, without touching
//! any user key.
//!
//! The symmetric key is unwrapped with the current RSA key, wrapped with the new one, the
//! new wrapping is unwrapped again to prove it round-trips, and only then swapped in with a
//! compare-and-swap on the stored value (so a concurrent change is never overwritten). User
//! keys stay as they are: they are sealed by the symmetric key, which does not change.
//! Running instances keep working (they hold the symmetric key in memory); restart them with
//! the new RSA key settings.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::OperationError;
use crate::config::{DatabaseSettings, RsaKeySettings};
use crate::keys::open_rsa_key_provider;
use crate::store::open_store;

/// What was done, for the report.
#[derive(Debug)]
pub struct RotationReport {
    pub old_provider: String,
    pub new_provider: String,
}

pub async fn rotate_rsa_key(
    database: &DatabaseSettings,
    current: &RsaKeySettings,
    new: &RsaKeySettings,
) -> Result<RotationReport, OperationError> {
    let failed = |what: &str, error: &dyn std::fmt::Display| {
        OperationError::Failed(format!("{what}: {error}. Nothing was changed"))
    };
    let store = open_store(database)
        .await
        .map_err(|source| OperationError::Store {
            what: "database",
            source,
        })?;
    let old_provider =
        open_rsa_key_provider(current)
            .await
            .map_err(|source| OperationError::RsaKey {
                what: "current RSA key",
                source,
            })?;
    let new_provider =
        open_rsa_key_provider(new)
            .await
            .map_err(|source| OperationError::RsaKey {
                what: "new RSA key (keyConnectorSettings__rotateTo__...)",
                source,
            })?;
    let new_description = new_provider.describe();
    let result = async {
        let wrapped = store
            .read_symmetric_key()
            .await
            .map_err(|e| failed("cannot read the symmetric key", &e))?
            .ok_or_else(|| {
                OperationError::Failed(
                    "the database has no symmetric key yet; start the service once with the new RSA key instead".into(),
                )
            })?;
        let bytes = STANDARD
            .decode(wrapped.trim())
            .map_err(|e| failed("the stored symmetric key is not base64", &e))?;
        let key = old_provider.unwrap_symmetric_key(&bytes).await.map_err(|e| {
            failed(
                "the current RSA key (keyConnectorSettings__rsaKey__...) cannot unwrap the stored symmetric key",
                &e,
            )
        })?;
        let rewrapped = new_provider
            .wrap_symmetric_key(&key)
            .await
            .map_err(|e| failed("the new RSA key cannot wrap", &e))?;
        let proof = new_provider
            .unwrap_symmetric_key(&rewrapped)
            .await
            .map_err(|e| failed("the new RSA key cannot unwrap what it wrapped", &e))?;
        if proof.as_slice() != key.as_slice() {
            return Err(OperationError::Failed(
                "the new RSA key does not round-trip the symmetric key; nothing was changed".into(),
            ));
        }
        let replacement = STANDARD.encode(&rewrapped);
        let swapped = store
            .replace_symmetric_key(&wrapped, &replacement)
            .await
            .map_err(|e| failed("cannot save the new wrapping", &e))?;
        if !swapped {
            return Err(OperationError::Failed(
                "the stored symmetric key changed while rotating; nothing was changed, run again".into(),
            ));
        }
        // Read back: what is stored now unwraps with the new key to the same key.
        let stored = store
            .read_symmetric_key()
            .await
            .map_err(|e| OperationError::Failed(format!("saved, but cannot read it back: {e}")))?
            .unwrap_or_default();
        let verified = match STANDARD.decode(stored.trim()) {
            Ok(bytes) => new_provider
                .unwrap_symmetric_key(&bytes)
                .await
                .is_ok_and(|k| k.as_slice() == key.as_slice()),
            Err(_) => false,
        };
        if !verified {
            return Err(OperationError::Failed(
                "saved, but the stored value does not unwrap with the new RSA key; investigate before restarting".into(),
            ));
        }
        Ok(RotationReport {
            old_provider: old_provider.describe(),
            new_provider: new_description,
        })
    }
    .await;
    store.close().await;
    result
}
