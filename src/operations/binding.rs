//! `bind-user-keys` and `unbind-user-keys`: every user key re-sealed in the other form (see
//! [`crate::crypto::binding`]), under the same symmetric key.
//!
//! Both are safe to interrupt at any point, `kill -9` included, and to run again, as
//! `rotate-symmetric-key` is: each key is re-sealed with a compare-and-swap on the value it
//! was read with (a durable write of its own), and a key already in the wanted form is left
//! alone, so a second run continues where the first stopped. The database's property
//! [`USER_KEYS_BOUND`] is what changes the service's policy, and it moves only where it is
//! safe:
//! - binding sets it last, once a fresh listing shows every key bound and opening for its
//!   own user: until then the service opens both forms, so nothing is ever unreadable;
//! - unbinding clears it first, before any key goes back to the unbound form, so that no
//!   moment has unbound keys and a database refusing them.

use std::sync::Arc;

use uuid::Uuid;

use super::progress::Progress;
use super::{DatabaseWithKeys, KeyDatabase, OperationError, StepFailure, SymmetricKeyUse};
use crate::config::DatabaseSettings;
use crate::crypto::binding::{BOUND_VALUE, unbound_keys_refused};
use crate::crypto::symmetric_key::unwrap_stored;
use crate::crypto::{SealedForm, UserKeyCipher};
use crate::keys::{RsaKeyProvider, RsaKeySettings};
use crate::store::{KeyStore, USER_KEYS_BOUND};

/// What a run of `bind-user-keys` or `unbind-user-keys` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BindingReport {
    pub total: usize,
    /// Re-sealed into the wanted form in this run.
    pub resealed: usize,
    /// Already in the wanted form.
    pub already: usize,
    /// Changed by someone else between this run's read and its write: left as they were.
    pub changed_meanwhile: usize,
    /// Open for their own user in neither form: left as they are (a bound key copied from
    /// another user's row is one), and binding is not completed while there are any.
    pub unreadable: Vec<Uuid>,
    /// Binding: the database now refuses unbound keys. Unbinding: every key is unbound.
    pub completed: bool,
}

/// Which way a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Bind,
    Unbind,
}

impl Direction {
    fn wanted(self) -> SealedForm {
        match self {
            Direction::Bind => SealedForm::Bound,
            Direction::Unbind => SealedForm::Unbound,
        }
    }

    fn step(self) -> &'static str {
        match self {
            Direction::Bind => "binding user keys",
            Direction::Unbind => "unbinding user keys",
        }
    }
}

/// Re-seals every user key bound to its user, then records in the database that unbound
/// keys are no longer accepted. `batch` limits how many keys are re-sealed in this run.
pub async fn bind_user_keys(
    database: &DatabaseSettings,
    rsa_key: &RsaKeySettings,
    batch: Option<usize>,
    interactive: bool,
) -> Result<BindingReport, OperationError> {
    run(Direction::Bind, database, rsa_key, batch, interactive).await
}

/// Clears the database's record that unbound keys are refused, then re-seals every user key
/// in upstream's unbound form, which the official service reads.
pub async fn unbind_user_keys(
    database: &DatabaseSettings,
    rsa_key: &RsaKeySettings,
    batch: Option<usize>,
    interactive: bool,
) -> Result<BindingReport, OperationError> {
    run(Direction::Unbind, database, rsa_key, batch, interactive).await
}

async fn run(
    direction: Direction,
    database: &DatabaseSettings,
    rsa_key: &RsaKeySettings,
    batch: Option<usize>,
    interactive: bool,
) -> Result<BindingReport, OperationError> {
    let opening = DatabaseWithKeys::main(database, rsa_key, SymmetricKeyUse::NotRead);
    super::run(opening, async |database: &KeyDatabase| {
        let store = &database.store;
        let cipher = match read_cipher(store.as_ref(), database.rsa_key.as_ref()).await? {
            Some(cipher) => Some(cipher),
            None if store
                .list_user_keys()
                .await
                .map_err(failed(direction).at("cannot list user keys"))?
                .is_empty() =>
            {
                None
            }
            None => return Err(OperationError::UserKeysWithoutSymmetricKey),
        };
        reseal_all(direction, store, cipher.as_ref(), batch, interactive).await
    })
    .await
}

/// The state a failure leaves behind, said once.
fn failed(direction: Direction) -> StepFailure {
    match direction {
        Direction::Bind => StepFailure(
            "Every key is still readable and unbound keys are still accepted; run bind-user-keys again when it is fixed",
        ),
        Direction::Unbind => StepFailure(
            "Every key is still readable (the service accepts both forms now); run unbind-user-keys again when it is fixed",
        ),
    }
}

/// The cipher of the current symmetric key, or `None` in a database without one. Refused
/// while a symmetric-key rotation is unfinished: keys are then under either key, and
/// moving them is the rotation's business.
async fn read_cipher(
    store: &dyn KeyStore,
    provider: &dyn RsaKeyProvider,
) -> Result<Option<UserKeyCipher>, OperationError> {
    let failed = StepFailure("Nothing was changed");
    if store
        .read_pending_symmetric_key()
        .await
        .map_err(failed.at("cannot read the pending symmetric key"))?
        .is_some()
    {
        return Err(OperationError::RotationUnfinished);
    }
    let Some(wrapped) = store
        .read_symmetric_key()
        .await
        .map_err(failed.at("cannot read the symmetric key"))?
    else {
        return Ok(None);
    };
    let key =
        unwrap_stored(&wrapped, provider)
            .await
            .map_err(|source| OperationError::SymmetricKey {
                what: "database",
                source,
            })?;
    UserKeyCipher::new(&key)
        .map(Some)
        .map_err(failed.at("the symmetric key is damaged"))
}

async fn reseal_all(
    direction: Direction,
    store: &Arc<dyn KeyStore>,
    cipher: Option<&UserKeyCipher>,
    batch: Option<usize>,
    interactive: bool,
) -> Result<BindingReport, OperationError> {
    let failed = failed(direction);
    let wanted = direction.wanted();
    if direction == Direction::Unbind {
        // First: from now on the service accepts unbound keys again.
        store
            .write_property(USER_KEYS_BOUND, None)
            .await
            .map_err(failed.at("cannot clear the record that every key is bound"))?;
    }
    let rows = store
        .list_user_keys()
        .await
        .map_err(failed.at("cannot list user keys"))?;
    let mut report = BindingReport {
        total: rows.len(),
        ..BindingReport::default()
    };
    let mut progress = Progress::new(direction.step(), rows.len() as u64, interactive);
    for row in &rows {
        progress.advance();
        let opened = cipher.and_then(|c| c.open_user_key(&row.sealed_key, row.id).ok());
        let Some(clear) = opened else {
            tracing::warn!(user = %row.id, "this user key does not open for its user; left as it is");
            report.unreadable.push(row.id);
            continue;
        };
        if SealedForm::of(&row.sealed_key) == wanted {
            report.already += 1;
            continue;
        }
        if batch.is_some_and(|limit| report.resealed >= limit) {
            continue;
        }
        let Some(cipher) = cipher else { continue };
        let resealed = cipher
            .seal_user_key(&clear, row.id, wanted)
            .map_err(failed.at("cannot seal"))?;
        if store
            .reseal_user_key(row.id, &row.sealed_key, &resealed)
            .await
            .map_err(failed.at("cannot write a re-sealed key"))?
        {
            report.resealed += 1;
        } else {
            // A client replaced it meanwhile: the fresh listing below decides.
            report.changed_meanwhile += 1;
        }
    }
    progress.finish();

    // Judged on a fresh listing: keys written meanwhile count as they are now.
    let left = not_in_form(store, cipher, wanted, &report.unreadable)
        .await
        .map_err(failed.at("cannot list user keys"))?;
    if left > 0 || !report.unreadable.is_empty() {
        if left > 0 {
            tracing::info!(left, "keys still in the other form; run again to continue");
        }
        return Ok(report);
    }
    if direction == Direction::Bind {
        // Last: only now may the service refuse unbound keys.
        store
            .write_property(USER_KEYS_BOUND, Some(BOUND_VALUE))
            .await
            .map_err(failed.at("cannot record that every key is bound"))?;
        let late = not_in_form(store, cipher, wanted, &[])
            .await
            .map_err(failed.at("cannot list user keys"))?;
        if late > 0 {
            tracing::warn!(
                late,
                "keys were written unbound while binding (an instance without userKeyBinding=on?); \
                 they are refused now: run bind-user-keys again"
            );
        }
    }
    report.completed = true;
    Ok(report)
}

/// How many keys (besides `skip`) are not in `form` or do not open for their own user.
async fn not_in_form(
    store: &Arc<dyn KeyStore>,
    cipher: Option<&UserKeyCipher>,
    form: SealedForm,
    skip: &[Uuid],
) -> Result<usize, crate::store::StoreError> {
    Ok(store
        .list_user_keys()
        .await?
        .iter()
        .filter(|row| !skip.contains(&row.id))
        .filter(|row| {
            SealedForm::of(&row.sealed_key) != form
                || cipher.is_none_or(|c| c.open_user_key(&row.sealed_key, row.id).is_err())
        })
        .count())
}

/// The binding state of a database, for `check-config` and `stats`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BindingState {
    /// User keys in the bound form.
    pub bound: usize,
    /// User keys in upstream's unbound form.
    pub unbound: usize,
    /// The database records that every key is bound and refuses unbound ones.
    pub unbound_refused: bool,
}

impl BindingState {
    /// Counts the forms of `rows` and reads the database's property.
    pub async fn read(
        store: &dyn KeyStore,
        rows: &[crate::store::StoredUserKey],
    ) -> Result<Self, crate::store::StoreError> {
        let bound = rows
            .iter()
            .filter(|row| SealedForm::of(&row.sealed_key) == SealedForm::Bound)
            .count();
        Ok(Self {
            bound,
            unbound: rows.len() - bound,
            unbound_refused: unbound_keys_refused(store).await?,
        })
    }
}

impl std::fmt::Display for BindingState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bound to their user, {} unbound (upstream's form); unbound keys {}",
            self.bound,
            self.unbound,
            if self.unbound_refused {
                "refused (bind-user-keys completed)"
            } else {
                "accepted"
            }
        )
    }
}
