//! Why a task could not run or finish: [`OperationError`], one variant per situation an
//! operator must act on, each keeping the error that caused it as its source and saying
//! what to do. The command line shows its text ([`crate::cli`]); nothing here prints.

use std::path::PathBuf;

use uuid::Uuid;

use super::recovery_wraps::RecoveryWrapError;
use crate::config::ConfigError;
use crate::config::catalog::RECOVERY_KEY_PUBLIC_KEY_PATH;
use crate::crypto::SealError;
use crate::crypto::recovery::RecoveryError;
use crate::crypto::symmetric_key::BootstrapError;
use crate::keys::KeyProviderError;
use crate::store::{Refusal, SourceError, StoreError};

/// Why a task could not run. Each message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum OperationError {
    /// The store named `what` ("database", "transfer target", ...) could not be opened.
    #[error("{what}: cannot open the key store: {source}")]
    Store {
        what: &'static str,
        #[source]
        source: StoreError,
    },
    /// The RSA key of a settings group could not be opened; `what` names the group's key
    /// ("RSA key (keyConnectorSettings__rsaKey__...)"), the provider's text its setting.
    #[error("cannot open the {what}: {source}")]
    RsaKey {
        what: &'static str,
        #[source]
        source: KeyProviderError,
    },
    #[error("{what}: {source}")]
    SymmetricKey {
        what: &'static str,
        #[source]
        source: BootstrapError,
    },
    #[error(transparent)]
    Settings(#[from] ConfigError),
    #[error("no recovery key is configured: set {}", RECOVERY_KEY_PUBLIC_KEY_PATH.both_spellings())]
    NoRecoveryKeyConfigured,

    /// A step of a task failed on the store, a key provider, the cipher or the recovery
    /// key; `then` says what that leaves behind and what to do.
    #[error("{what}: {source}. {then}")]
    Step {
        what: &'static str,
        #[source]
        source: StepCause,
        then: &'static str,
    },
    /// The recovery wraps of the database named `what` could not be checked or written.
    #[error("{what}: {source}")]
    RecoveryWrap {
        what: &'static str,
        #[source]
        source: RecoveryWrapError,
    },

    // The database is not in a state the task can work on; nothing was changed.
    /// `database` ("the database", "the source database") has no symmetric key; `then`
    /// says what follows.
    #[error("{database} has no symmetric key{then}")]
    NoSymmetricKey {
        database: &'static str,
        then: &'static str,
    },
    #[error("the database holds user keys but no symmetric key")]
    UserKeysWithoutSymmetricKey,
    #[error(
        "a symmetric-key rotation is unfinished; complete it (rotate-symmetric-key) first; nothing was changed"
    )]
    RotationUnfinished,
    #[error(
        "the database holds no recovery wrap (was keyConnectorSettings__recoveryKey__publicKeyPath \
         configured when the service ran?); nothing was changed"
    )]
    NoRecoveryWrap,
    /// The stored wraps are for other recovery keys, `stored_for` their fingerprints.
    #[error(
        "the database holds no recovery wrap for this recovery key (fingerprint {fingerprint}); \
         its wraps are for {}; nothing was changed",
        .stored_for.join(", ")
    )]
    NoRecoveryWrapForKey {
        fingerprint: String,
        stored_for: Vec<String>,
    },
    #[error(
        "the database holds {count} recovery wraps for this recovery key and its user keys do not tell which \
         symmetric key is current; nothing was changed"
    )]
    AmbiguousRecoveryWraps { count: usize },
    #[error(
        "a symmetric-key rotation is unfinished, but the database holds a recovery wrap of only one of its two keys \
         for this recovery key; nothing was changed"
    )]
    PendingKeyNotRecoverable,
    #[error(
        "{} of {total} user key(s) open under no recovered symmetric key ({}); nothing was changed. \
         Is this the database the recovery key was configured for?",
        .unreadable.len(),
        listed(.unreadable, 10)
    )]
    UserKeysNotRecovered { unreadable: Vec<Uuid>, total: usize },
    /// Promoting the new key would forget every other stored wrapping while these keys
    /// cannot be explained.
    #[error(
        "{} user key(s) open under neither key ({}); the rotation is not completed so that \
         no stored key is discarded. Investigate them (check-config), then run again",
        .unreadable.len(),
        listed(.unreadable, usize::MAX)
    )]
    RotationBlockedByUnreadableKeys { unreadable: Vec<Uuid> },
    #[error("the new RSA key does not round-trip the symmetric key; nothing was changed")]
    NewKeyDoesNotRoundTrip,

    // Someone else changed the database meanwhile.
    /// `task` ("recovering", "rotating") found the symmetric key changed at its commit.
    #[error("the stored symmetric key changed while {task}; nothing was changed, run again")]
    SymmetricKeyChanged { task: &'static str },
    #[error("the current symmetric key changed during the rotation; run it again")]
    CurrentKeyChangedBeforePromotion,
    #[error(
        "the current key is recovered, but the pending key changed meanwhile; run `recover` again"
    )]
    PendingKeyChanged,
    #[error(
        "the key of user {user} changed during the rotation: is an instance still running? \
         Stop every instance and run the rotation again"
    )]
    UserKeyChangedDuringRotation { user: Uuid },

    // Written, but what is stored is not what was written.
    #[error(
        "saved, but the stored value does not unwrap with the new RSA key; investigate before starting the service"
    )]
    StoredWrappingDiffers,
    #[error(
        "the key written to the target for user {user} does not read back as written; stopping"
    )]
    TargetKeyDiffers { user: Uuid },

    // Files.
    #[error(
        "transferTo: cannot use the lock file {} (keyConnectorSettings__transferTo__lockfilePath): {source}",
        .path.display()
    )]
    LockFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("backup --to {}: {problem}", .path.display())]
    BackupDestination {
        path: PathBuf,
        problem: &'static str,
    },
    #[error("backup --to {}: {what}: {source}", .path.display())]
    BackupDestinationIo {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the database file {} ({setting}) does not exist: there is nothing to back up",
        .path.display()
    )]
    NothingToBackUp {
        path: PathBuf,
        setting: &'static str,
    },
    #[error("cannot copy the database {} ({setting}): {source}", .path.display())]
    CopyFailed {
        path: PathBuf,
        setting: &'static str,
        #[source]
        source: SourceError,
    },
    /// `backup --to` copies the file stores only; `tool` takes the dumps of `provider`.
    #[error(
        "backup --to copies the sqlite and json stores only; for {provider} use {tool}. Then restore the dump \
         into a scratch database and check it with `key-connector backup --verify CONNECTION-STRING`"
    )]
    UseTheServersDumpTool {
        provider: &'static str,
        tool: &'static str,
    },
    #[error("the backup task failed: {0}")]
    BackgroundTask(#[source] tokio::task::JoinError),
}

impl OperationError {
    /// Whether a store was not opened because it is not there (and nothing was created).
    pub fn is_missing_database(&self) -> bool {
        matches!(
            self,
            Self::Store {
                source: StoreError::Config(Refusal::NoDatabase { .. }),
                ..
            }
        )
    }
}

/// What failed underneath a [`OperationError::Step`].
#[derive(Debug, thiserror::Error)]
pub enum StepCause {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    KeyProvider(#[from] KeyProviderError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
}

/// Turns the errors of one task's steps into [`OperationError::Step`]s; every failure of
/// the task leaves the same state, said once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepFailure(pub &'static str);

impl StepFailure {
    /// The error of the step `what`, keeping the one that caused it.
    pub(crate) fn at<E: Into<StepCause>>(
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

/// The first `at_most` of `users`, and `...` for the rest.
fn listed(users: &[Uuid], at_most: usize) -> String {
    let mut shown: Vec<String> = users.iter().take(at_most).map(Uuid::to_string).collect();
    if users.len() > shown.len() {
        shown.push("...".into());
    }
    shown.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_lists_are_cut_after_the_first_ones() {
        let users: Vec<_> = (0..12).map(Uuid::from_u128).collect();
        let said = OperationError::UserKeysNotRecovered {
            unreadable: users.clone(),
            total: 20,
        }
        .to_string();
        assert!(said.starts_with("12 of 20 user key(s)"), "{said}");
        assert!(
            said.contains(&format!("{}, ...)", Uuid::from_u128(9))),
            "{said}"
        );
        assert!(!said.contains(&Uuid::from_u128(10).to_string()), "{said}");
        let said =
            OperationError::RotationBlockedByUnreadableKeys { unreadable: users }.to_string();
        assert!(said.contains(&Uuid::from_u128(11).to_string()), "{said}");
        assert!(said.contains("so that no stored key"), "{said}");
    }
}
