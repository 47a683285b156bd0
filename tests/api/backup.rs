//! Backups that are proven to restore: `backup --to` of the real binary while the service
//! takes writes, then a restore drill (destroy the database, restore the copy, serve
//! again); `backup --verify` of copies that are damaged, checked with the wrong RSA key, or
//! restored from `pg_dump` into a fresh PostgreSQL database, or copied on SQL Server.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::skip_or_fail;
use crate::support::binary::{Service, free_port, run_to_end, service_command};
use crate::support::databases::{Engine as Server, TestDatabase};
use crate::support::{TestIdp, random_key};

/// One write the service acknowledged (answered 200), in the order they were answered.
#[derive(Clone)]
struct Ack {
    user: Uuid,
    token: String,
    key: String,
}

/// Writes keys from a task until stopped: new users (POST) and new keys for the `churned`
/// users (PUT), recording each acknowledged write.
struct Writer {
    acks: Arc<Mutex<Vec<Ack>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(base_url: &str, idp: &Arc<TestIdp>, acks: Vec<Ack>, churned: Vec<Ack>) -> Self {
        let acks = Arc::new(Mutex::new(acks));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (acks, stop, idp) = (Arc::clone(&acks), Arc::clone(&stop), Arc::clone(idp));
            let url = format!("{base_url}/user-keys");
            async move {
                let client = reqwest::Client::new();
                let mut round = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let key = random_key();
                    let (user, token, request) = if round.is_multiple_of(2) || churned.is_empty() {
                        let user = Uuid::new_v4();
                        let token = idp.token_for(user);
                        (user, token, client.post(&url))
                    } else {
                        let old = &churned[round % churned.len()];
                        (old.user, old.token.clone(), client.put(&url))
                    };
                    let answer = request
                        .bearer_auth(&token)
                        .json(&serde_json::json!({ "key": key }))
                        .send()
                        .await;
                    if answer.is_ok_and(|a| a.status() == StatusCode::OK) {
                        acks.lock().unwrap().push(Ack { user, token, key });
                    }
                }
            }
        });
        Self { acks, stop, task }
    }

    /// How many writes were acknowledged so far.
    fn acknowledged(&self) -> usize {
        self.acks.lock().unwrap().len()
    }

    async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.acks.lock().unwrap().clone()
    }
}

/// Stores `count` keys through the API (sequentially, each acknowledged).
async fn seed(service_url: &str, idp: &TestIdp, count: usize) -> Vec<Ack> {
    let client = reqwest::Client::new();
    let mut acks = Vec::new();
    for _ in 0..count {
        let user = Uuid::new_v4();
        let ack = Ack {
            user,
            token: idp.token_for(user),
            key: random_key(),
        };
        assert_eq!(
            crate::support::binary::post_key_at(&client, service_url, &ack.token, &ack.key).await,
            StatusCode::OK
        );
        acks.push(ack);
    }
    acks
}

/// After a restore from a backup begun once `before` writes were acknowledged: every key
/// acknowledged before it is served, exactly as last written then (or as a later write
/// made it); a user first written during the backup has no key or one it was given.
async fn restored_service_serves_every_key_acknowledged_before_the_backup(
    base_url: &str,
    acks: &[Ack],
    before: usize,
) {
    let client = reqwest::Client::new();
    let mut by_user: HashMap<Uuid, (Option<&Ack>, Vec<&Ack>)> = HashMap::new();
    for (index, ack) in acks.iter().enumerate() {
        let entry = by_user.entry(ack.user).or_default();
        if index < before {
            entry.0 = Some(ack);
        } else {
            entry.1.push(ack);
        }
    }
    let mut exact = 0;
    for (user, (last_before, later)) in &by_user {
        let last_before = *last_before;
        let token = last_before
            .or(later.first().copied())
            .map(|a| &a.token)
            .unwrap();
        let served = crate::support::binary::read_key(&client, base_url, token).await;
        let later_keys: Vec<&str> = later.iter().map(|a| a.key.as_str()).collect();
        match (last_before, served) {
            (Some(ack), Ok(key)) if later.is_empty() => {
                assert_eq!(key, ack.key, "user {user}: the restored key differs");
                exact += 1;
            }
            (Some(ack), Ok(key)) => assert!(
                key == ack.key || later_keys.contains(&key.as_str()),
                "user {user}: the restored key is none of the keys acknowledged from the backup's start on"
            ),
            (Some(_), Err(status)) => {
                panic!(
                    "user {user}: acknowledged before the backup, answered {status} after the restore"
                )
            }
            (None, Ok(key)) => assert!(
                later_keys.contains(&key.as_str()),
                "user {user}: the restored key was never written"
            ),
            (None, Err(status)) => assert_eq!(status, 404, "user {user}"),
        }
    }
    assert!(exact > 0, "some keys were checked byte for byte");
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The real binary running `backup ARGS` with the service's settings for `store` in `dir`.
fn backup_command(dir: &Path, store: &str, idp_url: &str, args: &[&str]) -> Command {
    let mut command = service_command(dir, store, idp_url, free_port());
    command.arg("backup").args(args);
    command
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The files of `store`'s database in `dir`, all of which a restore replaces.
fn database_files(dir: &Path, store: &str) -> (PathBuf, Vec<PathBuf>) {
    let main = dir.join(if store == "json" {
        "data.json"
    } else {
        "keys.db"
    });
    let companions = ["-wal", "-shm", "-journal", ".lock"]
        .iter()
        .map(|suffix| PathBuf::from(format!("{}{suffix}", main.display())))
        .collect();
    (main, companions)
}

async fn a_backup_taken_under_writes_restores_every_acknowledged_key(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let idp = Arc::new(TestIdp::start().await);
    let service = Service::start(dir.path(), store, &idp.url).await;
    let stable = seed(&service.base_url, &idp, 10).await;
    let churned = seed(&service.base_url, &idp, 5).await;
    let seeded: Vec<Ack> = stable.iter().chain(&churned).cloned().collect();

    let writer = Writer::start(&service.base_url, &idp, seeded, churned);
    while writer.acknowledged() < 30 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let backup = dir.path().join("backups").join("keys.backup");
    std::fs::create_dir(backup.parent().unwrap()).unwrap();
    let before = writer.acknowledged();
    let (status, said) = run_to_end(backup_command(
        dir.path(),
        store,
        &idp.url,
        &["--to", path_arg(&backup)],
    ))
    .await;
    let acks = writer.finish().await;
    assert!(status.success(), "{said}");
    assert!(said.contains("backup written"), "{said}");
    assert!(said.contains("verified: all"), "{said}");
    assert!(acks.len() > before, "writes went on while the backup ran");
    assert_eq!(mode_of(&backup), 0o600, "the backup is owner-only");
    let leftovers: Vec<_> = std::fs::read_dir(backup.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file is left: {leftovers:?}"
    );

    // Disaster: the service and every file of its database are gone.
    drop(service);
    let (main, companions) = database_files(dir.path(), store);
    for file in std::iter::once(&main).chain(&companions) {
        let _ = std::fs::remove_file(file);
    }
    std::fs::copy(&backup, &main).unwrap();

    let service = Service::start(dir.path(), store, &idp.url).await;
    restored_service_serves_every_key_acknowledged_before_the_backup(
        &service.base_url,
        &acks,
        before,
    )
    .await;
}

async fn sqlite_backup_taken_under_writes_restores_every_acknowledged_key() {
    a_backup_taken_under_writes_restores_every_acknowledged_key("sqlite").await;
}

async fn json_backup_taken_under_writes_restores_every_acknowledged_key() {
    a_backup_taken_under_writes_restores_every_acknowledged_key("json").await;
}

/// Replaces the sealed key of `user` in the SQLite file `path` by one with a flipped byte.
fn damage_sealed_key(path: &Path, user: Uuid) {
    let connection = rusqlite::Connection::open(path).unwrap();
    let id = user.hyphenated().to_string().to_uppercase();
    let sealed: String = connection
        .query_row(
            r#"SELECT "Key" FROM "UserKeys" WHERE "Id" = ?1"#,
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let mut bytes = STANDARD.decode(sealed).unwrap();
    bytes[3] ^= 0x01;
    let changed = connection
        .execute(
            r#"UPDATE "UserKeys" SET "Key" = ?1 WHERE "Id" = ?2"#,
            [STANDARD.encode(bytes), id],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

async fn a_damaged_key_or_the_wrong_rsa_key_fails_the_check_naming_what_failed() {
    let dir = tempfile::tempdir().unwrap();
    let idp = Arc::new(TestIdp::start().await);
    let service = Service::start(dir.path(), "sqlite", &idp.url).await;
    let users = seed(&service.base_url, &idp, 6).await;
    drop(service);
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_to_end(backup_command(dir.path(), "sqlite", &idp.url, &args))
    };
    let arg = |path: &Path| path.display().to_string();

    let good = dir.path().join("good.db");
    let (status, said) = run(vec!["--to".into(), arg(&good)]).await;
    assert!(status.success(), "{said}");
    assert!(said.contains("all 6 user keys"), "{said}");
    assert_eq!(mode_of(&good), 0o600);

    // A copy with one damaged key: the check fails and names that user only.
    let damaged = dir.path().join("damaged.db");
    std::fs::copy(&good, &damaged).unwrap();
    let victim = &users[2];
    damage_sealed_key(&damaged, victim.user);
    let (status, said) = run(vec!["--verify".into(), arg(&damaged)]).await;
    assert!(!status.success(), "{said}");
    assert!(said.contains(&format!("user {}", victim.user)), "{said}");
    assert!(said.contains("5 of 6 user keys decrypted"), "{said}");
    for other in users.iter().filter(|u| u.user != victim.user) {
        assert!(!said.contains(&other.user.to_string()), "{said}");
    }
    for ack in &users {
        assert!(
            !said.contains(&ack.key),
            "no key material is printed: {said}"
        );
    }

    // The same damage in the live database: `--to` leaves nothing under the asked name.
    damage_sealed_key(&dir.path().join("keys.db"), victim.user);
    let asked = dir.path().join("nightly.db");
    let (status, said) = run(vec!["--to".into(), arg(&asked)]).await;
    assert!(!status.success(), "{said}");
    assert!(said.contains("FAILED"), "{said}");
    assert!(said.contains(&format!("user {}", victim.user)), "{said}");
    assert!(
        !asked.exists(),
        "a failed backup does not look like a good one"
    );
    let failed = dir.path().join("nightly.db.failed");
    assert_eq!(
        mode_of(&failed),
        0o600,
        "the failed copy is kept, owner-only"
    );

    // The good copy checked with another RSA key: the symmetric key does not unwrap.
    let other_pfx = dir.path().join("other.pfx");
    let bytes = key_connector::pkcs12::generate_self_signed_pfx(2048, "other", Some("pw")).unwrap();
    std::fs::write(&other_pfx, bytes).unwrap();
    let with_other_key = |args: &[&str]| {
        let mut command = backup_command(dir.path(), "sqlite", &idp.url, args);
        command.env(
            "keyConnectorSettings__certificate__filesystemPath",
            &other_pfx,
        );
        run_to_end(command)
    };
    let (status, said) = with_other_key(&["--verify", path_arg(&good)]).await;
    assert!(!status.success(), "{said}");
    assert!(
        said.contains("cannot be unwrapped by the configured RSA key"),
        "{said}"
    );
    let unverifiable = dir.path().join("other-key.db");
    let (status, said) = with_other_key(&["--to", path_arg(&unverifiable)]).await;
    assert!(!status.success(), "{said}");
    assert!(!unverifiable.exists(), "{said}");
}

async fn backup_refuses_to_overwrite_or_to_write_over_the_live_database() {
    let dir = tempfile::tempdir().unwrap();
    let idp = Arc::new(TestIdp::start().await);
    let service = Service::start(dir.path(), "sqlite", &idp.url).await;
    seed(&service.base_url, &idp, 2).await;
    let run = |args: &[&str]| run_to_end(backup_command(dir.path(), "sqlite", &idp.url, args));

    let live = dir.path().join("keys.db");
    let live_before = std::fs::read(&live).unwrap();
    let (status, said) = run(&["--to", path_arg(&live), "--force"]).await;
    assert!(!status.success(), "{said}");
    assert!(said.contains("live database"), "{said}");
    assert_eq!(std::fs::read(&live).unwrap(), live_before);

    let existing = dir.path().join("existing.db");
    std::fs::write(&existing, b"an older backup").unwrap();
    let (status, said) = run(&["--to", path_arg(&existing)]).await;
    assert!(!status.success(), "{said}");
    assert!(said.contains("--force"), "{said}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"an older backup");

    let (status, said) = run(&["--to", path_arg(&existing), "--force"]).await;
    assert!(status.success(), "{said}");
    assert!(said.contains("all 2 user keys"), "{said}");
    assert_eq!(mode_of(&existing), 0o600);

    let (status, said) = run(&["--verify", path_arg(&dir.path().join("absent.db"))]).await;
    assert!(!status.success(), "{said}");
    // The operator gave the file on the command line, not in the settings.
    assert!(said.contains("given to backup --verify"), "{said}");
    assert!(!said.contains("sqliteConnectionString"), "{said}");
    assert!(
        !dir.path().join("absent.db").exists(),
        "verify creates nothing"
    );
}

/// `pg_dump`/`pg_restore` against `database`, with its address and user.
fn pg_tool(tool: &str, database: &TestDatabase) -> Command {
    let args = database.script_args();
    let mut command = Command::new(tool);
    command
        .args(["-h", &args[3], "-p", &args[5], "-U", &args[7]])
        .env("PGPASSWORD", &args[9]);
    command
}

fn pg_tools_present() -> bool {
    ["pg_dump", "pg_restore"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Everything a check could change in a PostgreSQL copy, as text.
async fn postgres_contents(database: &TestDatabase) -> Vec<Option<String>> {
    let mut contents = database
        .column(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' ORDER BY 1",
        )
        .await;
    contents.extend(
        database
            .column(
                r#"SELECT concat_ws('|', "Id"::text, "Key", "CreationDate"::text,
                       "RevisionDate"::text, "LastAccessDate"::text)
                   FROM "UserKeys" ORDER BY "Id""#,
            )
            .await,
    );
    contents.extend(
        database
            .column(r#"SELECT concat_ws('|', "Id"::text, "SymmetricKey") FROM "ApplicationDatas" ORDER BY "Id""#)
            .await,
    );
    contents.extend(
        database
            .column(r#"SELECT "MigrationId" FROM "__EFMigrationsHistory" ORDER BY 1"#)
            .await,
    );
    contents
}

async fn postgresql_dump_taken_under_writes_restores_and_verifies_without_changes() {
    if !pg_tools_present() {
        skip_or_fail!("pg_dump and pg_restore are not installed");
    }
    let (original, restored, empty) = match (
        TestDatabase::reserve(Server::PostgreSql).await,
        TestDatabase::reserve(Server::PostgreSql).await,
        TestDatabase::reserve(Server::PostgreSql).await,
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(reason), ..) | (_, Err(reason), _) | (.., Err(reason)) => skip_or_fail!("{reason}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let idp = Arc::new(TestIdp::start().await);
    let on = |database: &TestDatabase, args: &[&str]| {
        let mut command = backup_command(dir.path(), "postgresql", &idp.url, args);
        command.env(
            "keyConnectorSettings__database__postgreSqlConnectionString",
            database.connection_string(),
        );
        command
    };
    let serve = |database: &TestDatabase| {
        let port = free_port();
        let mut command = service_command(dir.path(), "postgresql", &idp.url, port);
        command.env(
            "keyConnectorSettings__database__postgreSqlConnectionString",
            database.connection_string(),
        );
        Service::spawn(command, port).wait_ready()
    };

    let service = serve(&original).await;
    let stable = seed(&service.base_url, &idp, 10).await;
    let churned = seed(&service.base_url, &idp, 5).await;
    let seeded: Vec<Ack> = stable.iter().chain(&churned).cloned().collect();
    let writer = Writer::start(&service.base_url, &idp, seeded, churned);
    while writer.acknowledged() < 30 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    // The server's own tool takes the dump; `backup --to` says so.
    let (status, said) = run_to_end(on(&original, &["--to", "x.db"])).await;
    assert!(!status.success() && said.contains("pg_dump"), "{said}");
    let dump = dir.path().join("keys.dump");
    let before = writer.acknowledged();
    let mut pg_dump = pg_tool("pg_dump", &original);
    pg_dump.args(["-Fc", "-f", path_arg(&dump), &original.name]);
    let (status, said) = run_to_end(pg_dump).await;
    let acks = writer.finish().await;
    assert!(status.success(), "pg_dump: {said}");
    drop(service);

    // Disaster: the database is gone. The dump goes into a fresh database.
    drop(original);
    restored.create_empty().await;
    let mut pg_restore = pg_tool("pg_restore", &restored);
    pg_restore.args(["--no-owner", "-d", &restored.name, path_arg(&dump)]);
    let (status, said) = run_to_end(pg_restore).await;
    assert!(status.success(), "pg_restore: {said}");

    let contents = postgres_contents(&restored).await;
    let (status, said) =
        run_to_end(on(&restored, &["--verify", &restored.connection_string()])).await;
    assert!(status.success(), "{said}");
    assert!(said.contains("verified: all"), "{said}");
    assert!(said.contains("nothing was written"), "{said}");
    assert_eq!(
        postgres_contents(&restored).await,
        contents,
        "--verify changed nothing"
    );

    // A database the dump was never restored into fails, and gets no schema from the check.
    empty.create_empty().await;
    let (status, said) = run_to_end(on(&restored, &["--verify", &empty.connection_string()])).await;
    assert!(!status.success(), "{said}");
    assert!(said.contains("not a key connector database"), "{said}");
    assert!(
        empty
            .column("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'")
            .await
            .is_empty(),
        "--verify created no table"
    );

    let service = serve(&restored).await;
    restored_service_serves_every_key_acknowledged_before_the_backup(
        &service.base_url,
        &acks,
        before,
    )
    .await;
}

async fn mysql_dump_restored_into_a_fresh_database_verifies_without_changes_and_serves() {
    let tools = ["mysqldump", "mysql"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !tools {
        skip_or_fail!("mysqldump and mysql are not installed");
    }
    let (original, restored) = match (
        TestDatabase::reserve(Server::MySql).await,
        TestDatabase::reserve(Server::MySql).await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(reason), _) | (_, Err(reason)) => skip_or_fail!("{reason}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let idp = Arc::new(TestIdp::start().await);
    let with_database = |mut command: Command, database: &TestDatabase| {
        command.env(
            "keyConnectorSettings__database__mySqlConnectionString",
            database.connection_string(),
        );
        command
    };
    let serve = |database: &TestDatabase| {
        let port = free_port();
        let command = service_command(dir.path(), "mysql", &idp.url, port);
        Service::spawn(with_database(command, database), port).wait_ready()
    };
    let service = serve(&original).await;
    let acks = seed(&service.base_url, &idp, 8).await;
    drop(service);

    let args = original.script_args();
    let client = |tool: &str| {
        let mut command = Command::new(tool);
        command.args(["-h", &args[3], "-P", &args[5], "-u", &args[7]]);
        if !args[9].is_empty() {
            command.env("MYSQL_PWD", &args[9]);
        }
        command
    };
    let dump = dir.path().join("keys.sql");
    let mut mysqldump = client("mysqldump");
    mysqldump.args([
        "--single-transaction",
        "--result-file",
        path_arg(&dump),
        &original.name,
    ]);
    let (status, said) = run_to_end(mysqldump).await;
    assert!(status.success(), "mysqldump: {said}");
    drop(original);

    restored.create_empty().await;
    let mut load = client("mysql");
    load.arg(&restored.name)
        .stdin(std::fs::File::open(&dump).unwrap());
    let (status, said) = run_to_end(load).await;
    assert!(status.success(), "mysql: {said}");

    let before = mysql_contents(&restored).await;
    let verify = backup_command(
        dir.path(),
        "mysql",
        &idp.url,
        &["--verify", &restored.connection_string()],
    );
    let (status, said) = run_to_end(with_database(verify, &restored)).await;
    assert!(status.success(), "{said}");
    assert!(said.contains("all 8 user keys"), "{said}");
    assert_eq!(
        mysql_contents(&restored).await,
        before,
        "--verify changed nothing"
    );

    // A refusal of the copy's connection string names the argument, not the setting.
    let wrong_password = restored
        .connection_string()
        .split(';')
        .filter(|part| {
            let key = part
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            key != "pwd" && key != "password"
        })
        .chain(["Pwd=not-the-password"])
        .collect::<Vec<_>>()
        .join(";");
    let verify = backup_command(
        dir.path(),
        "mysql",
        &idp.url,
        &["--verify", &wrong_password],
    );
    let (status, said) = run_to_end(with_database(verify, &restored)).await;
    assert!(!status.success(), "{said}");
    assert!(said.contains("refused the user name or password"), "{said}");
    assert!(said.contains("given to backup --verify"), "{said}");
    assert!(!said.contains("mySqlConnectionString"), "{said}");
    assert!(!said.contains("not-the-password"), "{said}");

    let service = serve(&restored).await;
    restored_service_serves_every_key_acknowledged_before_the_backup(
        &service.base_url,
        &acks,
        acks.len(),
    )
    .await;
}

/// Every row of a MySQL copy, as text.
async fn mysql_contents(database: &TestDatabase) -> Vec<Option<String>> {
    let mut rows = database
        .column(
            "SELECT CONCAT_WS('|', `Id`, `Key`, `CreationDate`, `RevisionDate`, `LastAccessDate`) \
             FROM `UserKeys` ORDER BY `Id`",
        )
        .await;
    rows.extend(
        database
            .column("SELECT CONCAT_WS('|', `Id`, `SymmetricKey`) FROM `ApplicationDatas`")
            .await,
    );
    rows
}

/// Every row of a SQL Server copy, as text.
async fn sqlserver_contents(database: &TestDatabase) -> Vec<Option<String>> {
    let mut rows = database
        .column(
            "SELECT CONCAT_WS('|', CAST([Id] AS nvarchar(36)), [Key], \
             CONVERT(nvarchar(40), [CreationDate], 121), CONVERT(nvarchar(40), [RevisionDate], 121), \
             CONVERT(nvarchar(40), [LastAccessDate], 121)) FROM [UserKeys] ORDER BY [Id]",
        )
        .await;
    rows.extend(
        database
            .column("SELECT CONCAT_WS('|', CAST([Id] AS nvarchar(12)), [SymmetricKey]) FROM [ApplicationDatas] ORDER BY [Id]")
            .await,
    );
    rows.extend(
        database
            .column("SELECT [MigrationId] FROM [__EFMigrationsHistory] ORDER BY 1")
            .await,
    );
    rows
}

/// A SQL Server copy is taken and restored with SQL Server's own `BACKUP DATABASE` and
/// `RESTORE DATABASE`, which Babelfish for PostgreSQL does not have: here the copy is made
/// the way a restore leaves it, upstream's tables with every row, copied across databases
/// in T-SQL (which runs on both).
async fn sqlserver_copy_verifies_without_changes_and_an_empty_database_is_refused() {
    use key_connector::store::sqlserver::{CREATE_HISTORY, CREATE_SCHEMA};
    let original = crate::database_or_skip!(Server::SqlServer);
    let copy = crate::database_or_skip!(Server::SqlServer);
    let empty = crate::database_or_skip!(Server::SqlServer);
    let dir = tempfile::tempdir().unwrap();
    let idp = Arc::new(TestIdp::start().await);
    let on = |database: &TestDatabase, mut command: Command| {
        command.env(
            Server::SqlServer.connection_string_variable(),
            database.connection_string(),
        );
        command
    };
    let serve = |database: &TestDatabase| {
        let port = free_port();
        let command = service_command(dir.path(), "sqlserver", &idp.url, port);
        Service::spawn(on(database, command), port).wait_ready()
    };
    let service = serve(&original).await;
    let acks = seed(&service.base_url, &idp, 8).await;
    drop(service);

    // `backup --to` names the server's own tool.
    let (status, said) = run_to_end(on(
        &original,
        backup_command(dir.path(), "sqlserver", &idp.url, &["--to", "x.db"]),
    ))
    .await;
    assert!(
        !status.success() && said.contains("BACKUP DATABASE"),
        "{said}"
    );

    copy.create_empty().await;
    let from = |table: &str| format!("[{}].[dbo].[{table}]", original.name);
    copy.execute(&[
        CREATE_HISTORY,
        CREATE_SCHEMA[0],
        CREATE_SCHEMA[1],
        &format!(
            "INSERT INTO [__EFMigrationsHistory] SELECT [MigrationId], [ProductVersion] FROM {}",
            from("__EFMigrationsHistory")
        ),
        &format!(
            "SET IDENTITY_INSERT [ApplicationDatas] ON; \
             INSERT INTO [ApplicationDatas] ([Id], [SymmetricKey]) SELECT [Id], [SymmetricKey] FROM {}; \
             SET IDENTITY_INSERT [ApplicationDatas] OFF",
            from("ApplicationDatas")
        ),
        &format!(
            "INSERT INTO [UserKeys] ([Id], [Key], [CreationDate], [RevisionDate], [LastAccessDate]) \
             SELECT [Id], [Key], [CreationDate], [RevisionDate], [LastAccessDate] FROM {}",
            from("UserKeys")
        ),
    ])
    .await;
    drop(original);

    let contents = sqlserver_contents(&copy).await;
    let verify = |database: &TestDatabase, target: &str| {
        on(
            database,
            backup_command(dir.path(), "sqlserver", &idp.url, &["--verify", target]),
        )
    };
    let (status, said) = run_to_end(verify(&copy, &copy.connection_string())).await;
    assert!(status.success(), "{said}");
    assert!(said.contains("all 8 user keys"), "{said}");
    assert!(said.contains("nothing was written"), "{said}");
    assert_eq!(
        sqlserver_contents(&copy).await,
        contents,
        "--verify changed nothing"
    );

    // A database the copy was never made into fails, and gets no schema from the check.
    empty.create_empty().await;
    let (status, said) = run_to_end(verify(&copy, &empty.connection_string())).await;
    assert!(!status.success(), "{said}");
    assert!(said.contains("not a key connector database"), "{said}");
    assert!(
        empty
            .column("SELECT CAST(name AS nvarchar(128)) FROM sys.tables")
            .await
            .is_empty(),
        "--verify created no table"
    );

    // A refusal of the copy's connection string names the argument, not the setting.
    let wrong_password = copy
        .connection_string()
        .split(';')
        .filter(|part| {
            let key = part.split('=').next().unwrap_or("").trim();
            !key.eq_ignore_ascii_case("pwd") && !key.eq_ignore_ascii_case("password")
        })
        .chain(["Password=not-the-password"])
        .collect::<Vec<_>>()
        .join(";");
    let (status, said) = run_to_end(verify(&copy, &wrong_password)).await;
    assert!(!status.success(), "{said}");
    assert!(said.contains("refused the login"), "{said}");
    assert!(said.contains("given to backup --verify"), "{said}");
    assert!(!said.contains("sqlServerConnectionString"), "{said}");
    assert!(!said.contains("not-the-password"), "{said}");

    let service = serve(&copy).await;
    restored_service_serves_every_key_acknowledged_before_the_backup(
        &service.base_url,
        &acks,
        acks.len(),
    )
    .await;
}

crate::tests! {
    multi_thread(2): [
        sqlite_backup_taken_under_writes_restores_every_acknowledged_key,
        json_backup_taken_under_writes_restores_every_acknowledged_key,
        a_damaged_key_or_the_wrong_rsa_key_fails_the_check_naming_what_failed,
        backup_refuses_to_overwrite_or_to_write_over_the_live_database,
        postgresql_dump_taken_under_writes_restores_and_verifies_without_changes,
        mysql_dump_restored_into_a_fresh_database_verifies_without_changes_and_serves,
        sqlserver_copy_verifies_without_changes_and_an_empty_database_is_refused,
    ],
}
