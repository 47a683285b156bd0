//! The store conformance suite: one set of behaviours, run against every backend.

use std::path::Path;
use std::sync::Arc;

use key_connector::config::{DatabaseSettings, SqliteConnection, UserKeyBinding};
use key_connector::store::{
    CreateOutcome, KeyStore, MissingDatabase, NamedBy, PutOutcome, Refusal, StoreError,
    StoredUserKey, open_store, open_store_if, open_store_read_only,
};
use reqwest::StatusCode;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

use crate::support::app::{AppOptions, StoreKind, settings_for, spawn_app_with};
use crate::support::databases::{Engine, TestDatabase};
use crate::support::{TestIdp, random_key};

/// A backend under test.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Json,
    PostgreSql,
    MySql,
    SqlServer,
}

impl Backend {
    /// SQL Server runs only where one is configured (`KC_TEST_SQLSERVER`); elsewhere its
    /// tests are skipped even when backends are required.
    fn not_configured(self) -> bool {
        matches!(self, Backend::SqlServer) && !Engine::SqlServer.is_configured()
    }

    fn settings(self, dir: &Path) -> DatabaseSettings {
        match self {
            Backend::Sqlite => DatabaseSettings::Sqlite {
                connection: SqliteConnection {
                    path: dir.join("keys.db"),
                    read_only: false,
                },
            },
            Backend::Json => DatabaseSettings::Json {
                path: dir.join("data.json"),
            },
            Backend::PostgreSql | Backend::MySql | Backend::SqlServer => {
                unreachable!("SQL servers use a TestDatabase")
            }
        }
    }

    async fn open(self, dir: &Path) -> Arc<dyn KeyStore> {
        open_store(&self.settings(dir)).await.expect("store opens")
    }

    /// Fresh storage for one test: a temporary directory or a throw-away database.
    async fn storage(self) -> Result<Storage, String> {
        Ok(match self {
            Backend::Sqlite | Backend::Json => Storage::Dir(self, tempfile::tempdir().unwrap()),
            Backend::PostgreSql => {
                Storage::Database(TestDatabase::reserve(Engine::PostgreSql).await?)
            }
            Backend::MySql => Storage::Database(TestDatabase::reserve(Engine::MySql).await?),
            Backend::SqlServer => {
                Storage::Database(TestDatabase::reserve(Engine::SqlServer).await?)
            }
        })
    }
}

/// `row` as `backend` gives it back: PostgreSQL and MySQL keep microseconds; SQLite, JSON
/// and SQL Server's `datetime2` keep .NET's 100 ns ticks, and Babelfish's `datetime2` is a
/// PostgreSQL timestamp that keeps microseconds, rounding the seventh digit.
fn kept(precision: DatePrecision, row: &StoredUserKey) -> StoredUserKey {
    let cut = |t: OffsetDateTime| match precision {
        DatePrecision::Ticks => t,
        DatePrecision::MicrosecondsCut => {
            t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap()
        }
        DatePrecision::MicrosecondsRounded => {
            let cut = t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap();
            if t.nanosecond() % 1000 >= 500 {
                cut + time::Duration::MICROSECOND
            } else {
                cut
            }
        }
    };
    StoredUserKey {
        id: row.id,
        sealed_key: row.sealed_key.clone(),
        creation_date: cut(row.creation_date),
        revision_date: row.revision_date.map(cut),
        last_access_date: row.last_access_date.map(cut),
    }
}

#[derive(Clone, Copy)]
enum DatePrecision {
    Ticks,
    MicrosecondsCut,
    MicrosecondsRounded,
}

/// Where one test's store lives; removed when dropped.
enum Storage {
    Dir(Backend, tempfile::TempDir),
    Database(TestDatabase),
}

impl Storage {
    /// `row` as this storage gives it back.
    fn kept(&self, row: &StoredUserKey) -> StoredUserKey {
        let precision = match self {
            Storage::Dir(..) => DatePrecision::Ticks,
            Storage::Database(database) => match database.server {
                Engine::PostgreSql | Engine::MySql => DatePrecision::MicrosecondsCut,
                // Babelfish for PostgreSQL only: SQL Server itself must keep every tick.
                Engine::SqlServer if database.is_babelfish() => DatePrecision::MicrosecondsRounded,
                Engine::SqlServer => DatePrecision::Ticks,
            },
        };
        kept(precision, row)
    }

    async fn open(&self) -> Arc<dyn KeyStore> {
        open_store(&self.settings()).await.expect("store opens")
    }

    fn settings(&self) -> DatabaseSettings {
        match self {
            Storage::Dir(backend, dir) => backend.settings(dir.path()),
            Storage::Database(database) => database.settings(),
        }
    }
}

/// Fresh storage for `backend`, or skip (fail under KC_REQUIRE_BACKENDS=1) the test.
macro_rules! storage_or_skip {
    ($backend:expr) => {
        match $backend.storage().await {
            Ok(storage) => storage,
            Err(reason) if $backend.not_configured() => $crate::harness::skip(reason),
            Err(reason) => $crate::skip_or_fail!("{reason}"),
        }
    };
}

fn row(id: Uuid, sealed: &str) -> StoredUserKey {
    StoredUserKey {
        id,
        sealed_key: sealed.to_owned(),
        creation_date: datetime!(2024-02-29 23:59:58.1234567 UTC),
        revision_date: None,
        last_access_date: None,
    }
}

async fn symmetric_key_is_set_once(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let store = storage.open().await;
    assert_eq!(store.read_symmetric_key().await.unwrap(), None);
    assert_eq!(
        store.insert_symmetric_key_if_absent("first").await.unwrap(),
        "first"
    );
    assert_eq!(
        store
            .insert_symmetric_key_if_absent("second")
            .await
            .unwrap(),
        "first"
    );
    assert_eq!(
        store.read_symmetric_key().await.unwrap().as_deref(),
        Some("first")
    );
    store.close().await;
    let store = storage.open().await;
    assert_eq!(
        store.read_symmetric_key().await.unwrap().as_deref(),
        Some("first")
    );
}

async fn create_read_and_refuse_a_second_create(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let store = storage.open().await;
    let id = Uuid::new_v4();
    assert_eq!(store.read_user_key(id).await.unwrap(), None);
    let original = row(id, "sealed-1");
    assert_eq!(
        store.create_user_key(&original).await.unwrap(),
        CreateOutcome::Created
    );
    assert_eq!(
        store.read_user_key(id).await.unwrap(),
        Some(storage.kept(&original))
    );
    assert_eq!(
        store.create_user_key(&row(id, "sealed-2")).await.unwrap(),
        CreateOutcome::AlreadyExists
    );
    assert_eq!(
        store.read_user_key(id).await.unwrap(),
        Some(storage.kept(&original)),
        "unchanged"
    );
}

async fn put_creates_then_replaces_keeping_dates(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let store = storage.open().await;
    let id = Uuid::new_v4();
    let t1 = datetime!(2025-01-01 00:00:00.5 UTC);
    let t2 = datetime!(2025-01-02 00:00:00 UTC);
    // Microsecond values: what every backend keeps exactly.
    let t3 = datetime!(2025-01-03 12:00:00.000001 UTC);
    assert_eq!(
        store.put_user_key(id, "a", t1).await.unwrap(),
        PutOutcome::Created
    );
    let created = store.read_user_key(id).await.unwrap().unwrap();
    assert_eq!(
        (
            created.sealed_key.as_str(),
            created.creation_date,
            created.revision_date
        ),
        ("a", t1, None)
    );
    store.record_last_access(&[(id, t2)]).await.unwrap();
    assert_eq!(
        store.put_user_key(id, "b", t3).await.unwrap(),
        PutOutcome::Replaced
    );
    let replaced = store.read_user_key(id).await.unwrap().unwrap();
    assert_eq!(replaced.sealed_key, "b");
    assert_eq!(replaced.creation_date, t1, "creation date kept");
    assert_eq!(replaced.revision_date, Some(t3));
    assert_eq!(replaced.last_access_date, Some(t2), "last access kept");
}

async fn last_access_updates_only_existing_rows(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let store = storage.open().await;
    let id = Uuid::new_v4();
    store.create_user_key(&row(id, "k")).await.unwrap();
    let when = datetime!(2026-11-24 15:33:59.123456 UTC);
    let ghost = Uuid::new_v4();
    store
        .record_last_access(&[(id, when), (ghost, when)])
        .await
        .unwrap();
    assert_eq!(
        store
            .read_user_key(id)
            .await
            .unwrap()
            .unwrap()
            .last_access_date,
        Some(when)
    );
    assert_eq!(
        store.read_user_key(ghost).await.unwrap(),
        None,
        "no row invented"
    );
    store.record_last_access(&[]).await.unwrap();
}

/// Only the service creates a missing database: a command's opening, and a copy opened to be
/// read, refuse it naming the setting, and leave nothing behind (a second refusal proves the
/// first created nothing). Once the service's opening created it, both open it.
async fn only_the_service_creates_a_missing_database(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let settings = storage.settings();
    for attempt in 0..2 {
        let refusals = [
            open_store_if(&settings, MissingDatabase::Refuse)
                .await
                .err(),
            open_store_read_only(&settings, NamedBy::Setting)
                .await
                .err(),
        ];
        for refusal in refusals {
            let error = refusal.expect("a missing database is refused");
            let message = error.to_string();
            assert!(
                matches!(error, StoreError::Config(Refusal::NoDatabase { .. })),
                "attempt {attempt}: {message}"
            );
            assert!(
                message.contains("does not exist (keyConnectorSettings__database__"),
                "the message names the setting: {message}"
            );
        }
        if let Storage::Dir(_, dir) = &storage {
            let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
            assert!(left.is_empty(), "nothing is left behind: {left:?}");
        }
    }

    open_store_if(&settings, MissingDatabase::Create)
        .await
        .expect("the service creates it")
        .close()
        .await;
    let store = open_store_if(&settings, MissingDatabase::Refuse)
        .await
        .expect("an existing database opens");
    assert_eq!(store.read_symmetric_key().await.unwrap(), None);
    store.close().await;
    open_store_read_only(&settings, NamedBy::Setting)
        .await
        .expect("an existing database opens to be read")
        .close()
        .await;
}

async fn everything_survives_reopening(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let store = storage.open().await;
    store
        .insert_symmetric_key_if_absent("wrapped")
        .await
        .unwrap();
    let mut rows = Vec::new();
    for i in 0..20 {
        let mut r = row(Uuid::new_v4(), &format!("sealed-{i}"));
        if i % 2 == 0 {
            r.revision_date = Some(OffsetDateTime::UNIX_EPOCH);
            r.last_access_date = Some(datetime!(2030-06-15 08:09:10.9999999 UTC));
        }
        store.create_user_key(&r).await.unwrap();
        rows.push(r);
    }
    store.close().await;
    let store = storage.open().await;
    for r in &rows {
        assert_eq!(
            store.read_user_key(r.id).await.unwrap(),
            Some(storage.kept(r))
        );
    }
    let mut listed = store.list_user_keys().await.unwrap();
    listed.sort_by_key(|r| r.sealed_key.clone());
    let mut expected: Vec<_> = rows.iter().map(|r| storage.kept(r)).collect();
    expected.sort_by_key(|r| r.sealed_key.clone());
    assert_eq!(listed, expected);
    store.ping().await.unwrap();
}

async fn concurrent_creates_for_one_user_have_one_winner(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let store = storage.open().await;
    let id = Uuid::new_v4();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            store
                .create_user_key(&row(id, &format!("k{i}")))
                .await
                .unwrap()
        });
    }
    let mut created = 0;
    while let Some(outcome) = tasks.join_next().await {
        if outcome.unwrap() == CreateOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(store.list_user_keys().await.unwrap().len(), 1);
}

async fn concurrent_puts_end_with_one_written_value(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let store = storage.open().await;
    let id = Uuid::new_v4();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..30 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            store
                .put_user_key(id, &format!("k{i}"), OffsetDateTime::now_utc())
                .await
                .unwrap()
        });
    }
    let mut created = 0;
    while let Some(outcome) = tasks.join_next().await {
        if outcome.unwrap() == PutOutcome::Created {
            created += 1;
        }
    }
    assert_eq!(created, 1, "exactly one put created the row");
    let final_key = store.read_user_key(id).await.unwrap().unwrap().sealed_key;
    assert!(final_key.starts_with('k'));
    assert_eq!(store.list_user_keys().await.unwrap().len(), 1);
}

/// Separate stores (as separate replicas have) racing on a new database agree on one key.
async fn replicas_racing_to_save_the_symmetric_key_agree_on_one(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(storage.open().await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(stores.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, store) in stores.iter().enumerate() {
        let store = Arc::clone(store);
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            barrier.wait().await;
            store
                .insert_symmetric_key_if_absent(&format!("wrapped-{i}"))
                .await
                .unwrap()
        });
    }
    let mut kept = Vec::new();
    while let Some(result) = tasks.join_next().await {
        kept.push(result.unwrap());
    }
    kept.sort();
    kept.dedup();
    assert_eq!(kept.len(), 1, "every replica uses the same key: {kept:?}");
    for store in &stores {
        assert_eq!(
            store.read_symmetric_key().await.unwrap().as_ref(),
            Some(&kept[0])
        );
    }
}

async fn the_symmetric_key_is_replaced_only_if_unchanged(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let store = storage.open().await;
    assert!(!store.replace_symmetric_key("absent", "new").await.unwrap());
    store.insert_symmetric_key_if_absent("old").await.unwrap();
    assert!(!store.replace_symmetric_key("stale", "new").await.unwrap());
    assert_eq!(
        store.read_symmetric_key().await.unwrap().as_deref(),
        Some("old")
    );
    assert!(store.replace_symmetric_key("old", "new").await.unwrap());
    store.close().await;
    let store = storage.open().await;
    assert_eq!(
        store.read_symmetric_key().await.unwrap().as_deref(),
        Some("new")
    );
}

async fn a_pending_symmetric_key_is_saved_once_and_promoted_atomically(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let store = storage.open().await;
    assert!(
        store
            .save_pending_symmetric_key_if_absent("p0")
            .await
            .is_err(),
        "needs a current key"
    );
    store.insert_symmetric_key_if_absent("old").await.unwrap();
    assert_eq!(store.read_pending_symmetric_key().await.unwrap(), None);
    assert_eq!(
        store
            .save_pending_symmetric_key_if_absent("p1")
            .await
            .unwrap(),
        "p1"
    );
    assert_eq!(
        store
            .save_pending_symmetric_key_if_absent("p2")
            .await
            .unwrap(),
        "p1",
        "kept"
    );
    assert_eq!(
        store.read_pending_symmetric_key().await.unwrap().as_deref(),
        Some("p1")
    );
    assert_eq!(
        store.read_symmetric_key().await.unwrap().as_deref(),
        Some("old"),
        "current unchanged"
    );
    assert!(!store.promote_pending_symmetric_key("stale").await.unwrap());
    assert_eq!(
        store.read_symmetric_key().await.unwrap().as_deref(),
        Some("old")
    );
    assert!(store.promote_pending_symmetric_key("old").await.unwrap());
    store.close().await;
    let store = storage.open().await;
    assert_eq!(
        store.read_symmetric_key().await.unwrap().as_deref(),
        Some("p1")
    );
    assert_eq!(store.read_pending_symmetric_key().await.unwrap(), None);
    assert!(
        !store.promote_pending_symmetric_key("p1").await.unwrap(),
        "nothing pending"
    );
}

async fn resealing_a_user_key_is_a_compare_and_swap(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let store = storage.open().await;
    let id = Uuid::new_v4();
    let mut original = row(id, "s1");
    original.last_access_date = Some(datetime!(2026-01-02 03:04:05 UTC));
    store.create_user_key(&original).await.unwrap();
    assert!(!store.reseal_user_key(id, "other", "s2").await.unwrap());
    assert!(store.reseal_user_key(id, "s1", "s2").await.unwrap());
    let resealed = store.read_user_key(id).await.unwrap().unwrap();
    assert_eq!(resealed.sealed_key, "s2");
    let kept = storage.kept(&original);
    assert_eq!(
        (
            resealed.creation_date,
            resealed.revision_date,
            resealed.last_access_date
        ),
        (
            kept.creation_date,
            kept.revision_date,
            kept.last_access_date
        ),
        "dates untouched"
    );
    assert!(
        !store
            .reseal_user_key(Uuid::new_v4(), "s1", "s3")
            .await
            .unwrap()
    );
}

async fn a_property_of_our_own_is_written_read_and_removed(backend: Backend) {
    let storage = storage_or_skip!(backend);
    let store = storage.open().await;
    // A database that never had one has no table for them: nothing upstream would not know.
    assert_eq!(store.read_property("UserKeysBound").await.unwrap(), None);
    store
        .write_property("UserKeysBound", Some("true"))
        .await
        .unwrap();
    store.write_property("Other", Some("1")).await.unwrap();
    assert_eq!(
        store
            .read_property("UserKeysBound")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    store.close().await;
    // Reopened (the schema check accepts the table of our own), and read by another handle.
    let store = storage.open().await;
    assert_eq!(
        store
            .read_property("UserKeysBound")
            .await
            .unwrap()
            .as_deref(),
        Some("true")
    );
    store.write_property("UserKeysBound", None).await.unwrap();
    assert_eq!(store.read_property("UserKeysBound").await.unwrap(), None);
    assert_eq!(
        store.read_property("Other").await.unwrap().as_deref(),
        Some("1")
    );
    store.write_property("UserKeysBound", None).await.unwrap();
}

/// The recovery wraps (`RecoveryWrapStore`), the same on every store: none in a database
/// that never had one, one per symmetric key (a save of the same key check replaces it, in
/// place and durably), kept across a reopen, and `retain` keeps exactly the key checks given.
async fn recovery_wraps_are_one_per_symmetric_key_and_retained_as_asked(backend: Backend) {
    use key_connector::store::StoredRecoveryWrap;
    let wrap = |check: &str, wrapped: &str| StoredRecoveryWrap {
        key_check: check.to_owned(),
        fingerprint: "f1".repeat(32),
        wrapped_key: wrapped.to_owned(),
    };
    let sorted = |mut wraps: Vec<StoredRecoveryWrap>| {
        wraps.sort_by(|a, b| a.key_check.cmp(&b.key_check));
        wraps
            .into_iter()
            .map(|w| (w.key_check, w.fingerprint, w.wrapped_key))
            .collect::<Vec<_>>()
    };
    let storage = storage_or_skip!(backend);
    let store = storage.open().await;
    assert!(store.read_recovery_wraps().await.unwrap().is_empty());
    store
        .save_recovery_wrap(&wrap("current", "wrapped-1"))
        .await
        .unwrap();
    store
        .save_recovery_wrap(&wrap("pending", "wrapped-2"))
        .await
        .unwrap();
    // The same symmetric key wrapped again (a new recovery key, say): replaced, not added.
    store
        .save_recovery_wrap(&wrap("current", "wrapped-3"))
        .await
        .unwrap();
    let expected = vec![
        (
            "current".to_owned(),
            "f1".repeat(32),
            "wrapped-3".to_owned(),
        ),
        (
            "pending".to_owned(),
            "f1".repeat(32),
            "wrapped-2".to_owned(),
        ),
    ];
    assert_eq!(sorted(store.read_recovery_wraps().await.unwrap()), expected);
    store.close().await;

    let store = storage.open().await;
    assert_eq!(sorted(store.read_recovery_wraps().await.unwrap()), expected);
    store
        .retain_recovery_wraps(&["pending".to_owned()])
        .await
        .unwrap();
    assert_eq!(
        sorted(store.read_recovery_wraps().await.unwrap()),
        expected[1..].to_vec()
    );
    store.retain_recovery_wraps(&[]).await.unwrap();
    assert!(store.read_recovery_wraps().await.unwrap().is_empty());
    store.close().await;
}

/// Someone who can write the database and has an SSO account copies a victim's stored key
/// into their own row. Upstream's form serves them the victim's key; once every key is bound
/// (`userKeyBinding=on`, `bind-user-keys`) the copy, bound or a legacy unbound one, is
/// refused with an answer that names nothing, and the victim still reads their key.
async fn a_copied_key_reaches_the_thief_until_keys_are_bound_and_is_refused_after(
    backend: Backend,
) {
    let storage = storage_or_skip!(backend);
    let idp = Arc::new(TestIdp::start().await);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let options = |user_key_binding| AppOptions {
        data_dir: Some(Arc::clone(&dir)),
        database: Some(storage.settings()),
        user_key_binding,
        ..AppOptions::default()
    };
    let (victim, thief) = (Uuid::new_v4(), Uuid::new_v4());
    let (victim_key, thief_key) = (random_key(), random_key());
    let app = spawn_app_with(Arc::clone(&idp), options(UserKeyBinding::Off)).await;
    for (user, key) in [(victim, &victim_key), (thief, &thief_key)] {
        let response = app.post_key(&idp.token_for(user), key).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    // A direct write to the database, as the attacker makes it.
    let database = storage.open().await;
    let sealed = async |user| {
        database
            .read_user_key(user)
            .await
            .unwrap()
            .unwrap()
            .sealed_key
    };
    let copy_into_thiefs_row = async |value: &str| {
        let current = sealed(thief).await;
        assert!(
            database
                .reseal_user_key(thief, &current, value)
                .await
                .unwrap()
        );
    };
    let (legacy, thiefs_own) = (sealed(victim).await, sealed(thief).await);

    copy_into_thiefs_row(&legacy).await;
    assert_eq!(
        app.read_key(&idp.token_for(thief)).await,
        Ok(victim_key.clone()),
        "upstream's form opens for whoever owns the row"
    );
    copy_into_thiefs_row(&thiefs_own).await;
    app.shutdown().await;

    let app = spawn_app_with(Arc::clone(&idp), options(UserKeyBinding::On)).await;
    let rsa_key = settings_for(StoreKind::Sqlite, dir.path(), &idp.url).rsa_key;
    let report = key_connector::operations::binding::bind_user_keys(
        &storage.settings(),
        &rsa_key,
        None,
        false,
    )
    .await
    .unwrap();
    assert!(report.completed, "{report:?}");
    assert_eq!((report.resealed, report.already), (2, 0));

    for copied in [sealed(victim).await, legacy] {
        copy_into_thiefs_row(&copied).await;
        let response = app.get_key(&idp.token_for(thief)).await;
        assert!(
            response.status().is_server_error() || response.status().is_client_error(),
            "{}",
            response.status()
        );
        let body = response.text().await.unwrap();
        for secret in [&victim_key, &thief_key, &copied] {
            assert!(!body.contains(secret.as_str()), "{body}");
        }
        assert!(!body.contains(&victim.to_string()), "{body}");
    }
    assert_eq!(app.read_key(&idp.token_for(victim)).await, Ok(victim_key));
    database.close().await;
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        pub(crate) mod sqlite_store {
            $(async fn $name() { super::$name(super::Backend::Sqlite).await; })*
            crate::tests! { multi_thread(2): [$($name),*] }
        }
        pub(crate) mod json_store {
            $(async fn $name() { super::$name(super::Backend::Json).await; })*
            crate::tests! { multi_thread(2): [$($name),*] }
        }
        pub(crate) mod postgresql_store {
            $(async fn $name() { super::$name(super::Backend::PostgreSql).await; })*
            crate::tests! { multi_thread(2): [$($name),*] }
        }
        pub(crate) mod mysql_store {
            $(async fn $name() { super::$name(super::Backend::MySql).await; })*
            crate::tests! { multi_thread(2): [$($name),*] }
        }
        pub(crate) mod sqlserver_store {
            $(async fn $name() { super::$name(super::Backend::SqlServer).await; })*
            crate::tests! { multi_thread(2): [$($name),*] }
        }
    };
}

conformance!(
    symmetric_key_is_set_once,
    create_read_and_refuse_a_second_create,
    put_creates_then_replaces_keeping_dates,
    last_access_updates_only_existing_rows,
    only_the_service_creates_a_missing_database,
    everything_survives_reopening,
    concurrent_creates_for_one_user_have_one_winner,
    concurrent_puts_end_with_one_written_value,
    replicas_racing_to_save_the_symmetric_key_agree_on_one,
    the_symmetric_key_is_replaced_only_if_unchanged,
    a_pending_symmetric_key_is_saved_once_and_promoted_atomically,
    resealing_a_user_key_is_a_compare_and_swap,
    a_property_of_our_own_is_written_read_and_removed,
    recovery_wraps_are_one_per_symmetric_key_and_retained_as_asked,
    a_copied_key_reaches_the_thief_until_keys_are_bound_and_is_refused_after,
);

// ---- SQLite specifics: upstream's exact schema and text forms ----

fn raw_sqlite(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}

async fn sqlite_schema_is_ef_cores_initial_create() {
    let dir = tempfile::tempdir().unwrap();
    let store = Backend::Sqlite.open(dir.path()).await;
    let id = Uuid::parse_str("0b5b7c2e-2f8e-4c1a-9d7e-3f2a1b0c9d8e").unwrap();
    store.create_user_key(&row(id, "sealed")).await.unwrap();
    store
        .record_last_access(&[(id, datetime!(2026-11-24 15:33:59 UTC))])
        .await
        .unwrap();
    store.close().await;

    let db = raw_sqlite(&dir.path().join("keys.db"));
    let tables: Vec<(String, String)> = db
        .prepare(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let names: Vec<&str> = tables.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["ApplicationDatas", "UserKeys", "__EFMigrationsHistory"]
    );
    let compact = |sql: &str| sql.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        compact(&tables[1].1),
        r#"CREATE TABLE "UserKeys" ( "Id" TEXT NOT NULL CONSTRAINT "PK_UserKeys" PRIMARY KEY, "Key" TEXT NULL, "CreationDate" TEXT NOT NULL, "RevisionDate" TEXT NULL, "LastAccessDate" TEXT NULL )"#
    );
    assert_eq!(
        compact(&tables[0].1),
        r#"CREATE TABLE "ApplicationDatas" ( "Id" INTEGER NOT NULL CONSTRAINT "PK_ApplicationDatas" PRIMARY KEY AUTOINCREMENT, "SymmetricKey" TEXT NULL )"#
    );
    let history: Vec<(String, String)> = db
        .prepare(r#"SELECT "MigrationId", "ProductVersion" FROM "__EFMigrationsHistory""#)
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        history,
        [(
            "20210820155938_InitialCreate".to_owned(),
            "5.0.9".to_owned()
        )]
    );
    let stored: (String, String, Option<String>, Option<String>) = db
        .query_row(
            r#"SELECT "Id", "CreationDate", "RevisionDate", "LastAccessDate" FROM "UserKeys""#,
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        stored.0, "0B5B7C2E-2F8E-4C1A-9D7E-3F2A1B0C9D8E",
        "upper-case GUID"
    );
    assert_eq!(stored.1, "2024-02-29 23:59:58.1234567", "EF Core date text");
    assert_eq!(stored.2, None);
    assert_eq!(stored.3.as_deref(), Some("2026-11-24 15:33:59"));
}

async fn sqlite_reads_a_database_made_as_upstream_makes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    {
        let db = raw_sqlite(&path);
        for statement in [
            r#"CREATE TABLE "__EFMigrationsHistory" ("MigrationId" TEXT NOT NULL CONSTRAINT "PK___EFMigrationsHistory" PRIMARY KEY, "ProductVersion" TEXT NOT NULL)"#,
            r#"CREATE TABLE "ApplicationDatas" ("Id" INTEGER NOT NULL CONSTRAINT "PK_ApplicationDatas" PRIMARY KEY AUTOINCREMENT, "SymmetricKey" TEXT NULL)"#,
            r#"CREATE TABLE "UserKeys" ("Id" TEXT NOT NULL CONSTRAINT "PK_UserKeys" PRIMARY KEY, "Key" TEXT NULL, "CreationDate" TEXT NOT NULL, "RevisionDate" TEXT NULL, "LastAccessDate" TEXT NULL)"#,
            r#"INSERT INTO "__EFMigrationsHistory" VALUES ('20210820155938_InitialCreate', '5.0.9')"#,
            r#"INSERT INTO "ApplicationDatas" ("SymmetricKey") VALUES ('wrapped-by-upstream')"#,
            r#"INSERT INTO "ApplicationDatas" ("SymmetricKey") VALUES ('a-second-row-from-a-race')"#,
            r#"INSERT INTO "UserKeys" VALUES ('0B5B7C2E-2F8E-4C1A-9D7E-3F2A1B0C9D8E', 'sealed', '2021-08-20 15:59:54.1234567', NULL, '2021-09-01 10:00:00')"#,
        ] {
            db.execute(statement, []).unwrap();
        }
    }
    let store = Backend::Sqlite.open(dir.path()).await;
    assert_eq!(
        store.read_symmetric_key().await.unwrap().as_deref(),
        Some("wrapped-by-upstream"),
        "the first row, as upstream's FirstOrDefault reads it"
    );
    let id = Uuid::parse_str("0b5b7c2e-2f8e-4c1a-9d7e-3f2a1b0c9d8e").unwrap();
    let stored = store.read_user_key(id).await.unwrap().unwrap();
    assert_eq!(stored.sealed_key, "sealed");
    assert_eq!(
        stored.creation_date,
        datetime!(2021-08-20 15:59:54.1234567 UTC)
    );
    assert_eq!(
        stored.last_access_date,
        Some(datetime!(2021-09-01 10:00:00 UTC))
    );
}

async fn sqlite_that_cannot_be_created_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let error = open_store(&Backend::Sqlite.settings(&dir.path().join("missing")))
        .await
        .err()
        .expect("refused");
    assert!(
        error
            .to_string()
            .contains("keyConnectorSettings__database__sqliteConnectionString"),
        "{error}"
    );
}

async fn sqlite_refuses_a_database_with_a_foreign_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.db");
    {
        let db = raw_sqlite(&path);
        db.execute_batch(
            r#"CREATE TABLE "UserKeys" ("Id" INTEGER, "Blob" BLOB); CREATE TABLE "ApplicationDatas" ("Id" INTEGER);"#,
        )
        .unwrap();
    }
    let error = open_store(&Backend::Sqlite.settings(dir.path()))
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("schema"), "{error}");
}

// ---- JSON specifics: upstream's exact document ----

async fn json_file_has_upstreams_exact_shape() {
    let dir = tempfile::tempdir().unwrap();
    let store = Backend::Json.open(dir.path()).await;
    store
        .insert_symmetric_key_if_absent("wrapped")
        .await
        .unwrap();
    let id = Uuid::parse_str("0B5B7C2E-2F8E-4C1A-9D7E-3F2A1B0C9D8E").unwrap();
    store.create_user_key(&row(id, "sealed")).await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("data.json")).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "symmetricKey": "wrapped",
            "userKey": [{
                "id": "0b5b7c2e-2f8e-4c1a-9d7e-3f2a1b0c9d8e",
                "key": "sealed",
                "creationDate": "2024-02-29T23:59:58.1234567Z",
                "revisionDate": null,
                "lastAccessDate": null
            }]
        })
    );
    assert!(
        text.contains("\n  \"symmetricKey\": \"wrapped\""),
        "indented like Newtonsoft:\n{text}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

async fn json_reads_any_property_case_and_keeps_unknown_properties() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.json");
    let id = Uuid::new_v4();
    std::fs::write(
        &path,
        serde_json::json!({
            "SymmetricKey": "wrapped",
            "other": {"kept": true},
            "userKey": [{"Id": id.to_string().to_uppercase(), "Key": "sealed",
                         "CreationDate": "2021-08-20T15:59:54.1234567Z", "RevisionDate": null,
                         "LastAccessDate": null, "extra": 1}]
        })
        .to_string(),
    )
    .unwrap();
    let store = Backend::Json.open(dir.path()).await;
    assert_eq!(
        store.read_symmetric_key().await.unwrap().as_deref(),
        Some("wrapped")
    );
    assert_eq!(
        store.read_user_key(id).await.unwrap().unwrap().sealed_key,
        "sealed"
    );
    store
        .put_user_key(id, "resealed", OffsetDateTime::now_utc())
        .await
        .unwrap();
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(value["other"]["kept"], true);
    assert_eq!(value["userKey"][0]["extra"], 1);
    assert_eq!(value["userKey"][0]["key"], "resealed");
}

async fn json_refuses_and_keeps_a_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.json");
    std::fs::write(&path, "{\"symmetricKey\": \"x\", \"userKey\": [").unwrap();
    let error = open_store(&Backend::Json.settings(dir.path()))
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("not valid JSON"), "{error}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"symmetricKey\": \"x\", \"userKey\": ["
    );
}

async fn two_json_stores_on_one_file_lose_nothing() {
    // Two handles stand in for two processes: each has its own in-memory copy.
    let dir = tempfile::tempdir().unwrap();
    let first = Backend::Json.open(dir.path()).await;
    let second = Backend::Json.open(dir.path()).await;
    let mut ids = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let id = Uuid::new_v4();
        ids.push(id);
        let store = if i % 2 == 0 {
            Arc::clone(&first)
        } else {
            Arc::clone(&second)
        };
        tasks.spawn(async move { store.create_user_key(&row(id, "k")).await.unwrap() });
    }
    while let Some(outcome) = tasks.join_next().await {
        assert_eq!(outcome.unwrap(), CreateOutcome::Created);
    }
    let reopened = Backend::Json.open(dir.path()).await;
    for id in ids {
        assert!(
            reopened.read_user_key(id).await.unwrap().is_some(),
            "{id} kept"
        );
        assert!(
            first.read_user_key(id).await.unwrap().is_some(),
            "{id} seen by the first"
        );
    }
}

// ---- SQL servers: faults at open ----

fn sql_settings(dialect: key_connector::config::SqlDialect, text: &str) -> DatabaseSettings {
    use key_connector::config::{SqlDialect, sql_connection};
    let connection = sql_connection::parse(dialect, text).unwrap();
    match dialect {
        SqlDialect::PostgreSql => DatabaseSettings::PostgreSql { connection },
        SqlDialect::MySql => DatabaseSettings::MySql { connection },
        SqlDialect::SqlServer => DatabaseSettings::SqlServer { connection },
    }
}

async fn an_unreachable_sql_server_is_unavailable_not_a_configuration_error() {
    use key_connector::config::SqlDialect;
    // A port nothing listens on, and one that accepts and hangs up at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let hang_up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_up_port = hang_up.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = hang_up.accept().await {
            drop(socket);
        }
    });
    for port in [closed, hang_up_port] {
        for (dialect, text) in [
            (
                SqlDialect::PostgreSql,
                format!("Host=127.0.0.1;Port={port};Database=kc;Username=u;Timeout=2"),
            ),
            (
                SqlDialect::MySql,
                format!("Server=127.0.0.1;Port={port};Database=kc;Uid=u;Connect Timeout=2"),
            ),
            (
                SqlDialect::SqlServer,
                format!(
                    "Server=tcp:127.0.0.1,{port};Database=kc;User Id=u;Password=p;Connect Timeout=2"
                ),
            ),
        ] {
            let started = std::time::Instant::now();
            let error = open_store(&sql_settings(dialect, &text))
                .await
                .err()
                .expect("fails");
            assert!(
                matches!(error, StoreError::Unavailable(_)),
                "{dialect:?} on {port}: {error}"
            );
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "{dialect:?}: {:?}",
                started.elapsed()
            );
        }
    }
}

/// A TDS listener that answers each pre-login saying it offers no encryption, then waits:
/// a SQL Server that `Encrypt=true` cannot use. Runs until the test ends.
async fn tds_listener_without_encryption() -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut header = [0u8; 8];
                if socket.read_exact(&mut header).await.is_err() {
                    return;
                }
                let length = usize::from(u16::from_be_bytes([header[2], header[3]]));
                let mut body = vec![0u8; length.saturating_sub(8)];
                if socket.read_exact(&mut body).await.is_err() {
                    return;
                }
                // PRELOGIN options VERSION (6 bytes at 11) and ENCRYPTION (1 byte at 17),
                // the terminator, then their data: ENCRYPT_NOT_SUP (2).
                let payload = [
                    0x00, 0x00, 0x0b, 0x00, 0x06, 0x01, 0x00, 0x11, 0x00, 0x01, 0xff, 0x10, 0x00,
                    0x00, 0x00, 0x00, 0x00, 0x02,
                ];
                let length = (8 + payload.len()) as u16;
                let mut packet = vec![0x04, 0x01];
                packet.extend_from_slice(&length.to_be_bytes());
                packet.extend_from_slice(&[0x00, 0x00, 0x01, 0x00]);
                packet.extend_from_slice(&payload);
                let _ = socket.write_all(&packet).await;
                let mut rest = Vec::new();
                let _ = socket.read_to_end(&mut rest).await;
            });
        }
    });
    port
}

/// `Encrypt=true` with a server that offers no encryption is a setting to fix, said at once,
/// by the service's store and by a read-only open (`backup --verify`) alike; before, the
/// read-only open asked its pool, which never says why it could not connect, and reported
/// "unavailable" once the connect timeout had passed.
async fn encryption_a_sql_server_does_not_offer_is_refused_at_once_naming_the_connection_string() {
    use key_connector::config::SqlDialect;
    let port = tds_listener_without_encryption().await;
    let settings = sql_settings(
        SqlDialect::SqlServer,
        &format!(
            "Server=tcp:127.0.0.1,{port};Database=kc;User Id=u;Password=p;Encrypt=true;Connect Timeout=5"
        ),
    );
    let started = std::time::Instant::now();
    let error = open_store(&settings).await.err().expect("refused");
    assert!(matches!(error, StoreError::Config(_)), "{error}");
    assert!(
        error.to_string().contains("`Encrypt`")
            && error.to_string().contains("sqlServerConnectionString"),
        "{error}"
    );
    let error = open_store_read_only(&settings, NamedBy::Argument("backup --verify"))
        .await
        .err()
        .expect("refused");
    assert!(matches!(error, StoreError::Config(_)), "{error}");
    assert!(
        error.to_string().contains("given to backup --verify"),
        "{error}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(4),
        "at once, not after the connect timeout: {:?}",
        started.elapsed()
    );
}

async fn a_refused_login_is_a_configuration_error_naming_the_setting() {
    use key_connector::config::SqlDialect;
    for (server, dialect, text) in [
        (
            Engine::PostgreSql,
            SqlDialect::PostgreSql,
            "Username=no_such_user_kc;Password=x".to_string(),
        ),
        (
            Engine::MySql,
            SqlDialect::MySql,
            "Uid=root;Pwd=certainly-wrong".to_string(),
        ),
        (
            Engine::SqlServer,
            SqlDialect::SqlServer,
            "User Id=sa;Password=certainly-wrong;TrustServerCertificate=true".to_string(),
        ),
    ] {
        let database = match TestDatabase::reserve(server).await {
            Ok(database) => database,
            Err(_) if !server.is_configured() => {
                eprintln!("SKIPPED (in part): no {server:?} server configured");
                continue;
            }
            Err(reason) => crate::skip_or_fail!("{reason}"),
        };
        let address = database.server_address().await;
        let text = match dialect {
            SqlDialect::PostgreSql => format!(
                "Host={};Port={};Database={};{text}",
                address.ip(),
                address.port(),
                database.name
            ),
            SqlDialect::MySql => format!(
                "Server={};Port={};Database={};{text}",
                address.ip(),
                address.port(),
                database.name
            ),
            SqlDialect::SqlServer => format!(
                "Server=tcp:{},{};Database={};{text}",
                address.ip(),
                address.port(),
                database.name
            ),
        };
        let error = open_store(&sql_settings(dialect, &text))
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(error, StoreError::Config(_)),
            "{server:?}: {error}"
        );
        let message = error.to_string();
        assert!(message.contains("ConnectionString"), "{message}");
        assert!(!message.contains("certainly-wrong"), "{message}");
    }
}

async fn tls_to_postgresql_is_used_when_the_connection_string_asks_for_it() {
    let database = match TestDatabase::reserve(Engine::PostgreSql).await {
        Ok(database) => database,
        Err(reason) => crate::skip_or_fail!("{reason}"),
    };
    let address = database.server_address().await;
    let encrypted = database.settings_via(address, "SSL Mode=Require;Application Name=kc-tls-test");
    let store = match open_store(&encrypted).await {
        Ok(store) => store,
        Err(StoreError::Config(message)) if message.to_string().contains("TLS") => {
            crate::skip_or_fail!("this PostgreSQL server has no TLS: {message}")
        }
        Err(error) => panic!("{error}"),
    };
    let id = Uuid::new_v4();
    store.create_user_key(&row(id, "over-tls")).await.unwrap();
    assert_eq!(
        store.read_user_key(id).await.unwrap().unwrap().sealed_key,
        "over-tls"
    );
    let ssl = database
        .column(
            "SELECT bool_and(s.ssl)::text FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
             WHERE a.application_name = 'kc-tls-test'",
        )
        .await;
    assert_eq!(
        ssl,
        [Some("true".to_owned())],
        "the store's connections are encrypted"
    );
    store.close().await;

    // The machine's server certificate is self-signed: full verification must refuse it,
    // at once and as a setting to fix, not as an outage to wait out.
    let verified = database.settings_via(address, "SSL Mode=VerifyFull");
    let error = open_store(&verified).await.err().expect("refused");
    assert!(matches!(error, StoreError::Config(_)), "{error}");
    assert!(error.to_string().contains("TLS"), "{error}");
}

async fn mysql_tls_required_is_used_or_refused_at_once() {
    let database = match TestDatabase::reserve(Engine::MySql).await {
        Ok(database) => database,
        Err(reason) => crate::skip_or_fail!("{reason}"),
    };
    database.create_empty().await;
    let have_ssl = database.column("SELECT CAST(@@have_ssl AS CHAR)").await;
    let address = database.server_address().await;
    let result = open_store(&database.settings_via(address, "SslMode=Required")).await;
    match (have_ssl.first().cloned().flatten().as_deref(), result) {
        (Some("YES"), Ok(store)) => store.ping().await.unwrap(),
        (Some("YES"), Err(error)) => panic!("TLS offered but not used: {error}"),
        // No TLS on the server: a setting to fix, reported at once, not retried forever.
        (_, Err(error)) => {
            assert!(matches!(error, StoreError::Config(_)), "{error}");
            assert!(error.to_string().contains("TLS"), "{error}");
        }
        (other, Ok(_)) => {
            panic!("connected with SslMode=Required to a server without TLS ({other:?})")
        }
    }
}

/// TLS to SQL Server as SqlClient's `Encrypt` and `TrustServerCertificate` ask. Without
/// checking the certificate the store's sessions are encrypted (the server says so); checked,
/// a certificate from a CA this host does not trust stops start-up at once saying how to
/// trust it, and `KC_TEST_SQLSERVER_CA` (a PEM file of the CA that issued the server's
/// certificate) named in `SSL_CERT_FILE` lets the real binary in.
async fn tls_to_sql_server_is_used_and_its_certificate_checked_against_the_trusted_cas() {
    use crate::support::binary::{
        a_private_ca_is_refused_then_trusted_through_ssl_cert_file, free_port, service_command,
        start_up_stops,
    };
    let database = crate::database_or_skip!(Engine::SqlServer);
    let address = database.server_address().await;
    let encrypted = database.settings_via(
        address,
        "Encrypt=true;TrustServerCertificate=true;Application Name=kc-tls-test",
    );
    let store = open_store(&encrypted).await.expect("opens over TLS");
    let id = Uuid::new_v4();
    store.create_user_key(&row(id, "over-tls")).await.unwrap();
    assert_eq!(
        store.read_user_key(id).await.unwrap().unwrap().sealed_key,
        "over-tls"
    );
    let unencrypted = database
        .column(
            "SELECT CAST(COUNT(*) AS nvarchar(10)) FROM sys.dm_exec_connections c \
             JOIN sys.dm_exec_sessions s ON c.session_id = s.session_id \
             WHERE s.program_name = 'kc-tls-test' AND c.encrypt_option <> 'TRUE'",
        )
        .await;
    assert_eq!(
        unencrypted,
        [Some("0".to_owned())],
        "every session of the store is encrypted"
    );
    store.close().await;
    // `Encrypt=false`: SqlClient still encrypts the login, and so does the store.
    let login_only = database.settings_via(address, "Encrypt=false");
    let store = open_store(&login_only).await.expect("opens");
    assert!(store.read_user_key(id).await.unwrap().is_some());
    store.close().await;

    let dir = tempfile::tempdir().unwrap();
    let idp = crate::support::TestIdp::start().await;
    let connection_string = format!(
        "{};Encrypt=true;TrustServerCertificate=false",
        database.connection_string()
    );
    let command_for = |port: u16| {
        let mut command = service_command(dir.path(), "sqlserver", &idp.url, port);
        command.env(
            Engine::SqlServer.connection_string_variable(),
            &connection_string,
        );
        command
    };
    // A CA that did not issue the server's certificate is the only one trusted.
    let foreign = crate::support::PrivateCaServer::for_names(&["localhost"]);
    let foreign_ca = dir.path().join("foreign-ca.pem");
    std::fs::write(&foreign_ca, &foreign.ca_pem).unwrap();
    let mut command = command_for(free_port());
    command.env("SSL_CERT_FILE", &foreign_ca);
    let stderr = start_up_stops(
        command,
        "a certificate from an untrusted CA must stop start-up, not be retried",
    )
    .await;
    assert!(
        stderr.contains("does not trust") && stderr.contains("SSL_CERT_FILE"),
        "{stderr}"
    );
    assert!(stderr.contains("sqlServerConnectionString"), "{stderr}");
    let password = &database.script_args()[9];
    assert!(
        password.is_empty() || !stderr.contains(password.as_str()),
        "no password: {stderr}"
    );

    match std::env::var("KC_TEST_SQLSERVER_CA") {
        Ok(path) => {
            let ca_pem = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("KC_TEST_SQLSERVER_CA `{path}`: {e}"));
            a_private_ca_is_refused_then_trusted_through_ssl_cert_file(
                dir.path(),
                &ca_pem,
                &idp,
                command_for,
            )
            .await;
        }
        Err(_) => eprintln!(
            "SKIPPED (in part): a verified TLS login needs KC_TEST_SQLSERVER_CA, the CA that issued the SQL Server's certificate"
        ),
    }
}

async fn sql_schema_states(server: Engine) {
    let q = |name: &str| server.quoted(name);
    let (id_type, date_type, text_type) = match server {
        Engine::PostgreSql => ("uuid", "timestamp without time zone", "text"),
        Engine::MySql => ("char(36)", "datetime(6)", "longtext"),
        Engine::SqlServer => ("uniqueidentifier", "datetime2", "nvarchar(max)"),
    };
    // Upstream's tables without EF's history (made by hand): the migration gets recorded.
    let database = crate::database_or_skip!(server);
    database.create_empty().await;
    let application_datas = match server {
        Engine::PostgreSql => {
            r#"CREATE TABLE "ApplicationDatas" ("Id" integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "SymmetricKey" text NULL)"#
        }
        Engine::MySql => {
            "CREATE TABLE `ApplicationDatas` (`Id` int NOT NULL AUTO_INCREMENT PRIMARY KEY, `SymmetricKey` longtext NULL)"
        }
        Engine::SqlServer => {
            "CREATE TABLE [ApplicationDatas] ([Id] int NOT NULL IDENTITY PRIMARY KEY, [SymmetricKey] nvarchar(max) NULL)"
        }
    };
    let user_keys = format!(
        "CREATE TABLE {} ({} {id_type} NOT NULL PRIMARY KEY, {} {text_type} NULL, {} {date_type} NOT NULL, {} {date_type} NULL, {} {date_type} NULL)",
        q("UserKeys"),
        q("Id"),
        q("Key"),
        q("CreationDate"),
        q("RevisionDate"),
        q("LastAccessDate")
    );
    database.execute(&[application_datas, &user_keys]).await;
    let store = open_store(&database.settings()).await.expect("opens");
    store.close().await;
    let history = database
        .column(&format!(
            "SELECT {} FROM {}",
            q("MigrationId"),
            q("__EFMigrationsHistory")
        ))
        .await;
    assert_eq!(history.len(), 1, "{history:?}");
    // And again: the tables are found, nothing is created or recorded twice.
    let store = open_store(&database.settings()).await.expect("reopens");
    store.close().await;

    // Only one of the tables: not a key connector database; refused, nothing created.
    let database = TestDatabase::reserve(server).await.unwrap();
    database.create_empty().await;
    database.execute(&[&user_keys]).await;
    let error = open_store(&database.settings())
        .await
        .err()
        .expect("refused");
    assert!(matches!(error, StoreError::Config(_)), "{error}");
    assert!(
        error.to_string().contains("only one of the tables"),
        "{error}"
    );

    // A foreign column type is refused, naming the column.
    let database = TestDatabase::reserve(server).await.unwrap();
    database.create_empty().await;
    let foreign = format!(
        "CREATE TABLE {} ({} {text_type} NOT NULL, {} {text_type} NULL, {} {date_type} NOT NULL, {} {date_type} NULL, {} {date_type} NULL)",
        q("UserKeys"),
        q("Id"),
        q("Key"),
        q("CreationDate"),
        q("RevisionDate"),
        q("LastAccessDate")
    );
    database.execute(&[application_datas, &foreign]).await;
    let error = open_store(&database.settings())
        .await
        .err()
        .expect("refused");
    assert!(error.to_string().contains("`Id`"), "{error}");
}

async fn postgresql_schema_states_are_handled_like_ef_and_foreign_schemas_refused() {
    sql_schema_states(Engine::PostgreSql).await;
}

async fn mysql_schema_states_are_handled_like_ef_and_foreign_schemas_refused() {
    sql_schema_states(Engine::MySql).await;
}

async fn sqlserver_schema_states_are_handled_like_ef_and_foreign_schemas_refused() {
    sql_schema_states(Engine::SqlServer).await;
}

crate::tests! {
    current_thread: [
        sqlite_schema_is_ef_cores_initial_create,
        sqlite_reads_a_database_made_as_upstream_makes_it,
        sqlite_that_cannot_be_created_names_the_setting,
        sqlite_refuses_a_database_with_a_foreign_schema,
        json_file_has_upstreams_exact_shape,
        json_reads_any_property_case_and_keeps_unknown_properties,
        json_refuses_and_keeps_a_corrupt_file,
        an_unreachable_sql_server_is_unavailable_not_a_configuration_error,
        encryption_a_sql_server_does_not_offer_is_refused_at_once_naming_the_connection_string,
        a_refused_login_is_a_configuration_error_naming_the_setting,
        tls_to_postgresql_is_used_when_the_connection_string_asks_for_it,
        mysql_tls_required_is_used_or_refused_at_once,
        postgresql_schema_states_are_handled_like_ef_and_foreign_schemas_refused,
        mysql_schema_states_are_handled_like_ef_and_foreign_schemas_refused,
        sqlserver_schema_states_are_handled_like_ef_and_foreign_schemas_refused,
    ],
    multi_thread(2): [
        two_json_stores_on_one_file_lose_nothing,
        tls_to_sql_server_is_used_and_its_certificate_checked_against_the_trusted_cas,
    ],
}
