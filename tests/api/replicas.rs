//! Several replicas of the real binary on one database: started at the same moment on an
//! empty database they end with exactly one symmetric key and all serve every key; racing
//! first POSTs for one user give one 200 and 400s; no replica caches keys.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use uuid::Uuid;

use crate::support::binary::{Service, free_port, read_key, service_command};
use crate::support::databases::Engine;
use crate::support::{TestIdp, random_key};

const REPLICAS: usize = 4;

async fn replicas_share_one_truth(server: Engine) {
    let database = crate::database_or_skip!(server);
    let dir = tempfile::tempdir().unwrap();
    let idp = Arc::new(TestIdp::start().await);
    // Every command is built (and the shared certificate written) before any is started,
    // so the processes start within milliseconds of each other on a database that does not
    // exist yet.
    let commands: Vec<_> = (0..REPLICAS)
        .map(|_| {
            let port = free_port();
            let mut command = service_command(dir.path(), server.provider(), &idp.url, port);
            command.env(
                server.connection_string_variable(),
                database.connection_string(),
            );
            (command, port)
        })
        .collect();
    let starting: Vec<Service> = commands
        .into_iter()
        .map(|(command, port)| Service::spawn(command, port))
        .collect();
    let mut replicas = Vec::new();
    for service in starting {
        replicas.push(service.wait_ready().await);
    }

    let symmetric_keys = database
        .column(&format!(
            "SELECT {} FROM {}",
            server.quoted("SymmetricKey"),
            server.quoted("ApplicationDatas")
        ))
        .await;
    assert_eq!(symmetric_keys.len(), 1, "exactly one symmetric key row");
    let history = database
        .column(&format!(
            "SELECT {} FROM {}",
            server.quoted("MigrationId"),
            server.quoted("__EFMigrationsHistory")
        ))
        .await;
    assert_eq!(history.len(), 1, "the migration recorded once: {history:?}");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    // A key stored through one replica is served by every other.
    for (i, writer) in replicas.iter().enumerate() {
        let user = Uuid::new_v4();
        let key = random_key();
        assert_eq!(
            writer.post_key(&client, &idp.token_for(user), &key).await,
            StatusCode::OK,
            "POST on replica {i}"
        );
        for reader in &replicas {
            assert_eq!(
                read_key(&client, &reader.base_url, &idp.token_for(user)).await,
                Ok(key.clone())
            );
        }
    }

    // Simultaneous first POSTs for one user, one per replica: one 200, the others 400.
    for _ in 0..10 {
        let user = Uuid::new_v4();
        let token = idp.token_for(user);
        let mut attempts = tokio::task::JoinSet::new();
        for replica in &replicas {
            let client = client.clone();
            let url = format!("{}/user-keys", replica.base_url);
            let token = token.clone();
            let key = random_key();
            attempts.spawn(async move {
                let status = client
                    .post(url)
                    .bearer_auth(token)
                    .json(&serde_json::json!({ "key": key }))
                    .send()
                    .await
                    .unwrap()
                    .status();
                (status, key)
            });
        }
        let mut winners = Vec::new();
        while let Some(result) = attempts.join_next().await {
            let (status, key) = result.unwrap();
            match status {
                StatusCode::OK => winners.push(key),
                StatusCode::BAD_REQUEST => {}
                other => panic!("a racing POST answered {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one POST wins");
        for replica in &replicas {
            assert_eq!(
                read_key(&client, &replica.base_url, &token).await,
                Ok(winners[0].clone())
            );
        }
    }

    // No replica caches keys: a PUT on one is what the next GET on any other returns.
    let user = Uuid::new_v4();
    let token = idp.token_for(user);
    for (i, writer) in replicas.iter().enumerate() {
        let key = random_key();
        let status = client
            .put(format!("{}/user-keys", writer.base_url))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "key": key }))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK);
        let reader = &replicas[(i + 1) % replicas.len()];
        assert_eq!(read_key(&client, &reader.base_url, &token).await, Ok(key));
    }
}

async fn postgresql_replicas_started_together_share_one_symmetric_key_and_every_user_key() {
    replicas_share_one_truth(Engine::PostgreSql).await;
}

async fn mysql_replicas_started_together_share_one_symmetric_key_and_every_user_key() {
    replicas_share_one_truth(Engine::MySql).await;
}

/// Several instances on one SQL Server database serialise on `sp_getapplock`.
async fn sqlserver_replicas_started_together_share_one_symmetric_key_and_every_user_key() {
    replicas_share_one_truth(Engine::SqlServer).await;
}

crate::tests! {
    multi_thread(2): [
        postgresql_replicas_started_together_share_one_symmetric_key_and_every_user_key,
        mysql_replicas_started_together_share_one_symmetric_key_and_every_user_key,
        sqlserver_replicas_started_together_share_one_symmetric_key_and_every_user_key,
    ],
}
