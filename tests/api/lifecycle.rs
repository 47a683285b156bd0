//! Restarts, the symmetric key's safety rules, and many clients writing one user at once.

use std::sync::Arc;

use key_connector::startup::StartupError;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::support::{
    AppOptions, StoreKind, TestApp, TestIdp, random_key, spawn_app_with, try_spawn_app_with,
};

async fn keys_survive_a_restart(store: StoreKind) {
    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            store,
            ..AppOptions::default()
        },
    )
    .await;
    let users: Vec<(String, String)> = (0..10)
        .map(|_| (idp.token_for(Uuid::new_v4()), random_key()))
        .collect();
    for (token, key) in &users {
        assert_eq!(app.post_key(token, key).await.status(), StatusCode::OK);
    }
    let data_dir = app.shutdown().await;

    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            store,
            data_dir: Some(data_dir),
            ..AppOptions::default()
        },
    )
    .await;
    for (token, key) in &users {
        assert_eq!(app.read_key(token).await.as_ref(), Ok(key));
    }
}

async fn sqlite_keys_survive_a_restart() {
    keys_survive_a_restart(StoreKind::Sqlite).await;
}

async fn json_keys_survive_a_restart() {
    keys_survive_a_restart(StoreKind::Json).await;
}

async fn another_certificate_refuses_to_start(store: StoreKind) {
    let idp = Arc::new(TestIdp::start().await);
    let app = spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            store,
            ..AppOptions::default()
        },
    )
    .await;
    let token = idp.token_for(Uuid::new_v4());
    let key = random_key();
    assert_eq!(app.post_key(&token, &key).await.status(), StatusCode::OK);
    let data_dir = app.shutdown().await;
    let store_file = match store {
        StoreKind::Sqlite => data_dir.path().join("keys.db"),
        StoreKind::Json => data_dir.path().join("data.json"),
    };
    let before = std::fs::read(&store_file).unwrap();

    // Replace the certificate with another key pair, same password.
    let other =
        key_connector::pkcs12::generate_self_signed_pfx(2048, "another", Some("test-password"))
            .unwrap();
    std::fs::write(data_dir.path().join("key.pfx"), other).unwrap();
    let error = try_spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            store,
            data_dir: Some(Arc::clone(&data_dir)),
            ..AppOptions::default()
        },
    )
    .await
    .err()
    .expect("start-up must fail");
    assert!(matches!(error, StartupError::SymmetricKey(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains("cannot be unwrapped"), "{message}");
    if store == StoreKind::Json {
        assert_eq!(
            std::fs::read(&store_file).unwrap(),
            before,
            "nothing was rewritten"
        );
    }
}

async fn sqlite_database_under_another_certificate_refuses_to_start_and_keeps_its_key() {
    another_certificate_refuses_to_start(StoreKind::Sqlite).await;
}

async fn json_file_under_another_certificate_refuses_to_start_and_keeps_its_key() {
    another_certificate_refuses_to_start(StoreKind::Json).await;
}

async fn concurrent_writes_for_one_user_end_consistent(store: StoreKind) {
    let idp = Arc::new(TestIdp::start().await);
    let app = Arc::new(
        spawn_app_with(
            Arc::clone(&idp),
            AppOptions {
                store,
                ..AppOptions::default()
            },
        )
        .await,
    );
    let token = Arc::new(idp.token_for(Uuid::new_v4()));

    let mut posts = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (app, token) = (Arc::clone(&app), Arc::clone(&token));
        posts.spawn(async move {
            let key = random_key();
            let status = app.post_key(&token, &key).await.status();
            (status, key)
        });
    }
    let mut winners = Vec::new();
    while let Some(result) = posts.join_next().await {
        let (status, key) = result.unwrap();
        match status {
            StatusCode::OK => winners.push(key),
            StatusCode::BAD_REQUEST => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one POST wins");
    assert_eq!(app.read_key(&token).await.as_ref(), Ok(&winners[0]));

    let mut puts = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (app, token) = (Arc::clone(&app), Arc::clone(&token));
        puts.spawn(async move {
            let key = random_key();
            assert_eq!(app.put_key(&token, &key).await.status(), StatusCode::OK);
            key
        });
    }
    let mut written = Vec::new();
    while let Some(result) = puts.join_next().await {
        written.push(result.unwrap());
    }
    let final_key = app.read_key(&token).await.unwrap();
    assert!(
        written.contains(&final_key),
        "the final key is one that was written"
    );
}

async fn sqlite_concurrent_writes_for_one_user_end_consistent() {
    concurrent_writes_for_one_user_end_consistent(StoreKind::Sqlite).await;
}

async fn json_concurrent_writes_for_one_user_end_consistent() {
    concurrent_writes_for_one_user_end_consistent(StoreKind::Json).await;
}

/// The application with access dates written every `flush`, and a user who has a key.
async fn app_with_a_key_flushing_every(
    idp: &Arc<TestIdp>,
    flush: std::time::Duration,
) -> (TestApp, Uuid, String) {
    let intervals = key_connector::config::Intervals {
        last_access_flush: flush,
        ..Default::default()
    };
    let app = spawn_app_with(
        Arc::clone(idp),
        AppOptions {
            intervals,
            ..AppOptions::default()
        },
    )
    .await;
    let user = Uuid::new_v4();
    let token = idp.token_for(user);
    assert_eq!(
        app.post_key(&token, &random_key()).await.status(),
        StatusCode::OK
    );
    (app, user, token)
}

async fn get_records_last_access_without_a_write_per_request() {
    let idp = Arc::new(TestIdp::start().await);
    // No periodic flush within the test: only a write per request could store the date.
    let (app, user, token) =
        app_with_a_key_flushing_every(&idp, std::time::Duration::from_secs(24 * 3600)).await;
    for _ in 0..5 {
        assert!(app.read_key(&token).await.is_ok());
    }
    // Pending in memory, not yet in the database.
    let stored = app
        .state_store()
        .read_user_key(user)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.last_access_date, None);
    let before = time::OffsetDateTime::now_utc();
    let path = app.store_path();
    let _data_dir = app.shutdown().await;
    let store =
        key_connector::store::open_store(&key_connector::config::DatabaseSettings::Sqlite {
            connection: key_connector::config::SqliteConnection {
                path,
                read_only: false,
            },
        })
        .await
        .unwrap();
    let stored = store.read_user_key(user).await.unwrap().unwrap();
    let last = stored.last_access_date.expect("flushed on shutdown");
    assert!(last <= before && (before - last).whole_seconds() < 60);
}

async fn pending_last_access_dates_are_written_every_flush_interval_while_serving() {
    let idp = Arc::new(TestIdp::start().await);
    let (app, user, token) =
        app_with_a_key_flushing_every(&idp, std::time::Duration::from_millis(50)).await;
    assert!(app.read_key(&token).await.is_ok());
    // Written by the periodic flush, the service still running.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stored = app
            .state_store()
            .read_user_key(user)
            .await
            .unwrap()
            .unwrap();
        if stored.last_access_date.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the access date was not written within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

crate::tests! {
    current_thread: [
        sqlite_keys_survive_a_restart,
        json_keys_survive_a_restart,
        sqlite_database_under_another_certificate_refuses_to_start_and_keeps_its_key,
        json_file_under_another_certificate_refuses_to_start_and_keeps_its_key,
        get_records_last_access_without_a_write_per_request,
        pending_last_access_dates_are_written_every_flush_interval_while_serving,
    ],
    multi_thread(2): [
        sqlite_concurrent_writes_for_one_user_end_consistent,
        json_concurrent_writes_for_one_user_end_consistent,
    ],
}
