//! The one way a task opens what it works on, runs and closes it: [`run`] opens an
//! [`Opening`] (a database alone, [`Database`]; a database with its keys,
//! [`DatabaseWithKeys`]; or two of them, for a transfer), runs the task on what was opened,
//! and closes every store it opened whatever the task returned, and also when opening fails
//! half-way.
//!
//! A task never creates the service's database ([`MissingDatabase::Refuse`]): only a
//! transfer creates its target.
//!
//! Everything is opened through the same seams as the server ([`open_store_if`],
//! [`open_rsa_key_provider`], [`load_or_create_symmetric_key`]), so a task can never read or
//! write a key differently from the service.

use std::sync::Arc;

use super::OperationError;
use crate::config::{DatabaseSettings, SettingsGroup};
use crate::crypto::UserKeyCipher;
use crate::crypto::symmetric_key::{load_or_create_symmetric_key, unwrap_existing};
use crate::keys::RsaKeySettings;
use crate::keys::{RsaKeyProvider, open_rsa_key_provider};
use crate::settings::TransferTarget;
use crate::store::{KeyStore, MissingDatabase, NamedBy, open_store_if, open_store_read_only};

/// Something a task opens before it runs and closes after.
pub(crate) trait Opening {
    type Opened;

    /// Opens it; what was opened before a failure is closed again.
    async fn open(self) -> Result<Self::Opened, OperationError>;

    async fn close(opened: Self::Opened);
}

/// Opens `opening`, runs `task` on it and closes it, whatever `task` returned.
pub(crate) async fn run<O: Opening, T>(
    opening: O,
    task: impl AsyncFnOnce(&O::Opened) -> Result<T, OperationError>,
) -> Result<T, OperationError> {
    let opened = opening.open().await?;
    let result = task(&opened).await;
    O::close(opened).await;
    result
}

/// A database alone: the store, opened and migrated as the service does, or a copy opened
/// only to be read.
pub(crate) struct Database<'a> {
    what: &'static str,
    settings: &'a DatabaseSettings,
    access: Access,
}

enum Access {
    /// Opened and migrated as the service does; created only if `MissingDatabase::Create`.
    Write(MissingDatabase),
    /// Opened only to be read; a refusal names what gave it.
    ReadOnly(NamedBy),
}

impl<'a> Database<'a> {
    /// The existing database of `settings`, named `what` in messages. A task never creates
    /// the service's database: a mistyped path or name is refused, not a new empty database.
    pub(crate) fn at(what: &'static str, settings: &'a DatabaseSettings) -> Self {
        Self {
            what,
            settings,
            access: Access::Write(MissingDatabase::Refuse),
        }
    }

    /// A copy (a backup, a restored dump) opened only to be read: nothing created, migrated
    /// or written; its refusals name `named_by` as what gave it.
    pub(crate) fn copy_at(
        what: &'static str,
        settings: &'a DatabaseSettings,
        named_by: NamedBy,
    ) -> Self {
        Self {
            what,
            settings,
            access: Access::ReadOnly(named_by),
        }
    }
}

impl Opening for Database<'_> {
    type Opened = Arc<dyn KeyStore>;

    async fn open(self) -> Result<Self::Opened, OperationError> {
        let opened = match self.access {
            Access::Write(missing) => open_store_if(self.settings, missing).await,
            Access::ReadOnly(named_by) => open_store_read_only(self.settings, named_by).await,
        };
        opened.map_err(|source| OperationError::Store {
            what: self.what,
            source,
        })
    }

    async fn close(store: Self::Opened) {
        store.close().await;
    }
}

/// What a task needs of the database's symmetric key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SymmetricKeyUse {
    /// Not read here: the task reads it itself, or needs none (the cipher is `None`).
    NotRead,
    /// Unwrapped if the database has one; nothing is written.
    Existing,
    /// Unwrapped, or created in a database without one, as the server does at start-up.
    CreatedIfMissing,
}

/// A database with the RSA key that wraps its symmetric key.
pub(crate) struct DatabaseWithKeys<'a> {
    /// Names the database in messages ("database", "source", "transfer target").
    pub what: &'static str,
    pub database: &'a DatabaseSettings,
    pub rsa_key: &'a RsaKeySettings,
    /// Where `rsa_key` was configured.
    pub group: SettingsGroup,
    pub symmetric_key: SymmetricKeyUse,
    /// Whether a missing database is created: only a transfer's target is.
    pub missing: MissingDatabase,
}

/// A store with the RSA key and (when it has one) the symmetric key that seal its keys.
pub struct KeyDatabase {
    pub store: Arc<dyn KeyStore>,
    pub rsa_key: Arc<dyn RsaKeyProvider>,
    /// `None` when the database has no symmetric key yet and none was to be created, or
    /// when it was not asked for (`SymmetricKeyUse::NotRead`).
    pub cipher: Option<Arc<UserKeyCipher>>,
}

impl<'a> DatabaseWithKeys<'a> {
    /// The service's database with its RSA key (`keyConnectorSettings:rsaKey`).
    pub(crate) fn main(
        database: &'a DatabaseSettings,
        rsa_key: &'a RsaKeySettings,
        symmetric_key: SymmetricKeyUse,
    ) -> Self {
        Self {
            what: "database",
            database,
            rsa_key,
            group: SettingsGroup::Main,
            symmetric_key,
            missing: MissingDatabase::Refuse,
        }
    }

    /// The transfer target (`keyConnectorSettings:transferTo`) with its RSA key, created if
    /// missing.
    pub(crate) fn transfer_target(
        target: &'a TransferTarget,
        symmetric_key: SymmetricKeyUse,
    ) -> Self {
        Self {
            what: "transfer target",
            database: &target.database,
            rsa_key: &target.rsa_key,
            group: SettingsGroup::TransferTo,
            symmetric_key,
            missing: MissingDatabase::Create,
        }
    }

    async fn keys_of(
        &self,
        store: &dyn KeyStore,
    ) -> Result<(Arc<dyn RsaKeyProvider>, Option<UserKeyCipher>), OperationError> {
        let rsa_key = open_rsa_key(self.rsa_key, self.group).await?;
        let cipher = match self.symmetric_key {
            SymmetricKeyUse::NotRead => Ok(None),
            SymmetricKeyUse::Existing => unwrap_existing(store, rsa_key.as_ref()).await,
            SymmetricKeyUse::CreatedIfMissing => {
                load_or_create_symmetric_key(store, rsa_key.as_ref())
                    .await
                    .map(|(cipher, _)| Some(cipher))
            }
        }
        .map_err(|source| OperationError::SymmetricKey {
            what: self.what,
            source,
        })?;
        Ok((rsa_key, cipher))
    }
}

impl Opening for DatabaseWithKeys<'_> {
    type Opened = KeyDatabase;

    async fn open(self) -> Result<Self::Opened, OperationError> {
        let database = Database {
            what: self.what,
            settings: self.database,
            access: Access::Write(self.missing),
        };
        let store = database.open().await?;
        let keys = self.keys_of(store.as_ref()).await;
        if keys.is_err() {
            store.close().await;
        }
        let (rsa_key, cipher) = keys?;
        Ok(KeyDatabase {
            store,
            rsa_key,
            cipher: cipher.map(Arc::new),
        })
    }

    async fn close(database: Self::Opened) {
        database.store.close().await;
    }
}

/// Two openings, opened in order (the first is closed again if the second fails).
impl<A: Opening, B: Opening> Opening for (A, B) {
    type Opened = (A::Opened, B::Opened);

    async fn open(self) -> Result<Self::Opened, OperationError> {
        let first = self.0.open().await?;
        match self.1.open().await {
            Ok(second) => Ok((first, second)),
            Err(error) => {
                A::close(first).await;
                Err(error)
            }
        }
    }

    async fn close((first, second): Self::Opened) {
        A::close(first).await;
        B::close(second).await;
    }
}

/// How messages name the RSA key of `group` (the provider's own text names the setting).
fn rsa_key_label(group: SettingsGroup) -> &'static str {
    match group {
        SettingsGroup::Main => "RSA key (keyConnectorSettings__rsaKey__...)",
        SettingsGroup::TransferTo => {
            "transfer target's RSA key (keyConnectorSettings__transferTo__rsaKey__...)"
        }
        SettingsGroup::RotateTo => "new RSA key (keyConnectorSettings__rotateTo__...)",
    }
}

/// The RSA key provider configured by `settings` in `group`; messages name that group's key.
pub(crate) async fn open_rsa_key(
    settings: &RsaKeySettings,
    group: SettingsGroup,
) -> Result<Arc<dyn RsaKeyProvider>, OperationError> {
    open_rsa_key_provider(settings, group)
        .await
        .map_err(|source| OperationError::RsaKey {
            what: rsa_key_label(group),
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    type Log = &'static Mutex<Vec<String>>;

    /// An opening that records its opening and closing in `log`, and fails to open unless
    /// `opens`.
    struct Recorded {
        name: &'static str,
        opens: bool,
        log: Log,
    }

    impl Opening for Recorded {
        type Opened = (&'static str, Log);

        async fn open(self) -> Result<Self::Opened, OperationError> {
            self.log.lock().unwrap().push(format!("open {}", self.name));
            if !self.opens {
                return Err(OperationError::NoRecoveryKeyConfigured);
            }
            Ok((self.name, self.log))
        }

        async fn close((name, log): Self::Opened) {
            log.lock().unwrap().push(format!("close {name}"));
        }
    }

    fn recorded(log: Log) -> impl Fn(&'static str, bool) -> Recorded {
        move |name, opens| Recorded { name, opens, log }
    }

    fn new_log() -> Log {
        Box::leak(Box::default())
    }

    #[tokio::test]
    async fn what_was_opened_is_closed_whatever_the_task_returned() {
        let log = new_log();
        let opening = recorded(log);
        let answer = run(opening("a", true), async |_: &(&str, Log)| Ok(7)).await;
        assert_eq!(answer.unwrap(), 7);
        let failed = run(opening("b", true), async |_: &(&str, Log)| {
            Err::<(), _>(OperationError::RotationUnfinished)
        })
        .await;
        assert!(matches!(failed, Err(OperationError::RotationUnfinished)));
        assert_eq!(
            *log.lock().unwrap(),
            ["open a", "close a", "open b", "close b"]
        );
    }

    #[tokio::test]
    async fn a_pair_half_opened_closes_the_first_and_runs_nothing() {
        let log = new_log();
        let opening = recorded(log);
        let ran = run(
            (opening("source", true), opening("target", false)),
            async |_: &((&str, Log), (&str, Log))| -> Result<(), OperationError> {
                panic!("the task must not run")
            },
        )
        .await;
        assert!(matches!(ran, Err(OperationError::NoRecoveryKeyConfigured)));
        assert_eq!(
            *log.lock().unwrap(),
            ["open source", "open target", "close source"]
        );
        let both = (opening("source", true), opening("target", true));
        run(both, async |_: &((&str, Log), (&str, Log))| Ok(()))
            .await
            .unwrap();
        assert_eq!(
            log.lock().unwrap()[3..],
            ["open source", "open target", "close source", "close target"]
        );
    }
}
