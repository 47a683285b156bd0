//! Binding user keys to their users: which form new seals take, and whether a key in
//! upstream's unbound form is still accepted.
//!
//! In upstream's form a sealed key opens for whichever user owns the row it is in, so
//! whoever can write the `UserKeys` table and has an SSO account of their own can copy a
//! victim's `Key` into their own row and be served the victim's key. A bound key
//! ([`SealedForm::Bound`]) opens only for its owner. Two things decide:
//! - the setting `userKeyBinding` ([`UserKeyBinding`]): `on` seals new keys bound;
//! - the database's property [`USER_KEYS_BOUND`], written by `bind-user-keys` once every
//!   row is bound and cleared first by `unbind-user-keys`: while it is set an unbound key is
//!   refused wherever it is (it may be a copy), and new keys are sealed bound whatever the
//!   setting says (an unbound one would be refused).
//!
//! Accepting unbound keys is the fallback upstream's databases need until they are bound;
//! left on, it would let a legacy value be copied. So the property is read at start-up and,
//! while it is not known to be set, again whenever an unbound key is met, after the key was
//! read: with `userKeyBinding=on` every time (an instance running while `bind-user-keys`
//! finishes never serves an unbound key written after that), with it `off` (where nothing
//! but an operator's mistake sets the property, and every key is unbound) at most once per
//! [`RECHECK_INTERVAL`], also when a key is sealed. Once seen set, it holds for the life of
//! the process (`unbind-user-keys` asks for the service to be stopped). The interval is
//! measured on tokio's clock.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::SealedForm;
use crate::config::UserKeyBinding;
use crate::store::{PropertyStore, StoreError, USER_KEYS_BOUND};

/// How often the database is asked again whether unbound keys are still accepted, at most.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The value of [`USER_KEYS_BOUND`] that means "every key is bound".
pub const BOUND_VALUE: &str = "true";

/// Whether the database records that every user key is bound and unbound ones are refused.
pub async fn unbound_keys_refused(store: &dyn PropertyStore) -> Result<bool, StoreError> {
    Ok(store.read_property(USER_KEYS_BOUND).await?.as_deref() == Some(BOUND_VALUE))
}

/// The binding policy of a running service.
pub struct BindingPolicy {
    setting: UserKeyBinding,
    store: Arc<dyn PropertyStore>,
    /// The database said unbound keys are refused (never unset again in this process).
    refused: AtomicBool,
    /// When the database was last asked.
    checked: Mutex<Instant>,
}

impl std::fmt::Debug for BindingPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindingPolicy")
            .field("setting", &self.setting)
            .field("refused", &self.refused.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl BindingPolicy {
    /// Reads the database's property once.
    pub async fn load(
        setting: UserKeyBinding,
        store: Arc<dyn PropertyStore>,
    ) -> Result<Self, StoreError> {
        let refused = unbound_keys_refused(store.as_ref()).await?;
        let policy = Self {
            setting,
            store,
            refused: AtomicBool::new(false),
            checked: Mutex::new(Instant::now()),
        };
        if refused {
            policy.learn_refused();
        }
        Ok(policy)
    }

    /// The form a new key is sealed in.
    pub async fn seal_form(&self) -> Result<SealedForm, StoreError> {
        if self.setting == UserKeyBinding::On || self.refuses_unbound().await? {
            Ok(SealedForm::Bound)
        } else {
            Ok(SealedForm::Unbound)
        }
    }

    /// Whether a key in upstream's unbound form must be refused. Asked after the key was
    /// read, so that a value written after the database began refusing them is refused.
    pub async fn refuses_unbound(&self) -> Result<bool, StoreError> {
        if self.refused.load(Ordering::Acquire) {
            return Ok(true);
        }
        if self.setting == UserKeyBinding::Off {
            let mut checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
            if checked.elapsed() < RECHECK_INTERVAL {
                return Ok(false);
            }
            *checked = Instant::now();
        }
        if unbound_keys_refused(self.store.as_ref()).await? {
            self.learn_refused();
            return Ok(true);
        }
        Ok(false)
    }

    fn learn_refused(&self) {
        if !self.refused.swap(true, Ordering::AcqRel) {
            if self.setting == UserKeyBinding::Off {
                tracing::warn!(
                    "every user key in the database is bound (bind-user-keys was run): new keys are sealed bound \
                     although keyConnectorSettings__userKeyBinding is off; run unbind-user-keys to go back"
                );
            } else {
                tracing::info!("every user key is bound; unbound keys are refused");
            }
        }
    }
}
