//! Operator tasks run by the same binary with the same settings: the start-up `transferTo`
//! copy, and the admin subcommands (`check-config`, `transfer`, `rotate-rsa-key`,
//! `rotate-symmetric-key`, `bind-user-keys`, `unbind-user-keys`, `recover`,
//! `replace-recovery-wrap`, `backup`, `stats`).
//!
//! Each task opens, runs and closes what it works on one way, `run` (`open.rs`), through
//! the same seams as the server, so a task can never read or write a key differently from
//! the service; its failures are [`OperationError`]s that keep their cause (`error.rs`).

pub mod backup;
pub mod binding;
pub mod break_glass;
pub mod check;
mod error;
mod open;
pub mod progress;
pub mod recovery_wraps;
pub mod rotate;
pub mod stats;
pub mod transfer;

pub(crate) use self::error::StepFailure;
pub use self::error::{OperationError, StepCause};
pub use self::open::KeyDatabase;
pub(crate) use self::open::{Database, DatabaseWithKeys, SymmetricKeyUse, open_rsa_key, run};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::keys::RsaKeyProvider;
use crate::store::KeyStore;

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
        return Err(OperationError::NewKeyDoesNotRoundTrip);
    }
    Ok(STANDARD.encode(&wrapped))
}

/// The stored (wrapped) symmetric key, or [`OperationError::NoSymmetricKey`] saying `then`
/// (what follows for the task).
pub(crate) async fn stored_symmetric_key(
    store: &dyn KeyStore,
    then: &'static str,
) -> Result<String, OperationError> {
    store
        .read_symmetric_key()
        .await
        .map_err(StepFailure("Nothing was changed").at("cannot read the symmetric key"))?
        .ok_or(OperationError::NoSymmetricKey {
            database: "the database",
            then,
        })
}

/// The commit of `rotate-rsa-key` and `recover`: the stored wrapping `expected` replaced by
/// `replacement` only if it is still the one stored; `task` names the task in the refusal.
pub(crate) async fn swap_wrapping(
    store: &dyn KeyStore,
    expected: &str,
    replacement: &str,
    task: &'static str,
) -> Result<(), OperationError> {
    let swapped = store
        .replace_symmetric_key(expected, replacement)
        .await
        .map_err(StepFailure("Nothing was changed").at("cannot save the new wrapping"))?;
    if !swapped {
        return Err(OperationError::SymmetricKeyChanged { task });
    }
    Ok(())
}

/// The read-back after a new wrapping was saved: what is stored now must unwrap under
/// `provider` to `key`.
pub(crate) async fn read_back(
    store: &dyn KeyStore,
    provider: &dyn RsaKeyProvider,
    key: &[u8],
) -> Result<(), OperationError> {
    let stored = store
        .read_symmetric_key()
        .await
        .map_err(
            StepFailure("Investigate before starting the service")
                .at("saved, but cannot read it back"),
        )?
        .unwrap_or_default();
    let unwrapped = match STANDARD.decode(stored.trim()) {
        Ok(bytes) => provider.unwrap_symmetric_key(&bytes).await.ok(),
        Err(_) => None,
    };
    if unwrapped.is_none_or(|k| k.as_slice() != key) {
        return Err(OperationError::StoredWrappingDiffers);
    }
    Ok(())
}
