//! The real `key-connector` binary: command line, configuration errors, signals, and
//! durability of acknowledged writes across `kill -9`.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use uuid::Uuid;

use crate::support::binary::*;
use crate::support::{TestIdp, random_key};

const BINARY: &str = env!("CARGO_BIN_EXE_key-connector");

fn version_and_help_describe_the_binary() {
    let output = Command::new(BINARY).arg("--version").output().unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains(env!("CARGO_PKG_VERSION")));

    let output = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "serve",
        "dev",
        "--config",
        "keyConnectorSettings__database__provider",
        "keyConnectorSettings__certificate__filesystemPath",
        "ASPNETCORE_URLS",
    ] {
        assert!(help.contains(expected), "--help lacks {expected}:\n{help}");
    }
}

fn a_missing_setting_stops_start_up_naming_the_environment_variable() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .current_dir(dir.path())
        .env_clear()
        .env(
            "keyConnectorSettings__webVaultUri",
            "https://vault.example.test",
        )
        .env(
            "keyConnectorSettings__identityServerUri",
            "https://identity.example.test",
        )
        .env("keyConnectorSettings__rsaKey__provider", "certificate")
        .env("keyConnectorSettings__certificate__provider", "filesystem")
        .env(
            "keyConnectorSettings__certificate__filesystemPath",
            "key.pfx",
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("keyConnectorSettings__database__provider"),
        "{stderr}"
    );
}

fn a_wrong_certificate_password_stops_start_up_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let output = service_command(dir.path(), "sqlite", "http://127.0.0.1:9", free_port())
        .env(
            "keyConnectorSettings__certificate__filesystemPassword",
            "wrong",
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("password"), "{stderr}");
    assert!(
        !stderr.contains("wrong"),
        "the password itself is never logged: {stderr}"
    );
}

async fn acknowledged_writes_survive_kill_9(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let idp = Arc::new(TestIdp::start().await);
    let client = reqwest::Client::new();
    let mut service = Service::start(dir.path(), store, &idp.url).await;

    let mut written = Vec::new();
    for _ in 0..20 {
        let token = idp.token_for(Uuid::new_v4());
        let key = random_key();
        assert_eq!(
            service.post_key(&client, &token, &key).await,
            StatusCode::OK
        );
        written.push((token, key));
    }
    service.signal("KILL");
    service.wait_exit(Duration::from_secs(5));

    let service = Service::start(dir.path(), store, &idp.url).await;
    for (token, key) in &written {
        assert_eq!(
            read_key(&client, &service.base_url, token).await.as_ref(),
            Ok(key)
        );
    }
}

async fn sqlite_acknowledged_writes_survive_kill_9() {
    acknowledged_writes_survive_kill_9("sqlite").await;
}

async fn json_acknowledged_writes_survive_kill_9() {
    acknowledged_writes_survive_kill_9("json").await;
}

async fn sigterm_finishes_in_flight_requests_flushes_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let idp = Arc::new(TestIdp::start().await);
    let client = reqwest::Client::new();
    let port = free_port();
    let mut command = service_command(dir.path(), "sqlite", &idp.url, port);
    // tower-http's `started processing request`: the line that says a request reached the
    // service.
    command.env("RUST_LOG", "info,tower_http=debug");
    let mut service = Service::spawn(command, port).wait_ready().await;
    const REQUEST_STARTED: &str = "started processing request";

    let reader = idp.token_for(Uuid::new_v4());
    let reader_key = random_key();
    assert_eq!(
        service.post_key(&client, &reader, &reader_key).await,
        StatusCode::OK
    );
    // A read whose LastAccessDate is only pending in memory when the signal arrives.
    let read = client
        .get(format!("{}/user-keys", service.base_url))
        .bearer_auth(&reader)
        .header("x-request-id", "read-before-the-signal")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let read: serde_json::Value = read.json().await.unwrap();
    assert_eq!(read["key"], reader_key.as_str());
    // Its audit line comes after every earlier request's start line in the service's
    // stderr: once it has been read, the count below can grow only by the request in flight.
    service
        .wait_for_log("read-before-the-signal", 1, Duration::from_secs(10))
        .await;

    // A request in flight: its body arrives in two halves around the signal.
    let writer = idp.token_for(Uuid::new_v4());
    let key = random_key();
    let body = format!(r#"{{"key":"{key}"}}"#);
    let (first, second) = body.split_at(body.len() / 2);
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let started = service.log_lines_with(REQUEST_STARTED);
    let in_flight = tokio::spawn({
        let client = client.clone();
        let url = format!("{}/user-keys", service.base_url);
        async move {
            client
                .post(url)
                .bearer_auth(writer)
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
        }
    });
    sender.send(Ok(first.as_bytes().to_vec())).await.unwrap();
    service
        .wait_for_log(REQUEST_STARTED, started + 1, Duration::from_secs(10))
        .await;
    service.signal("TERM");
    service
        .wait_for_log(
            "shutting down: finishing in-flight requests",
            1,
            Duration::from_secs(10),
        )
        .await;
    sender.send(Ok(second.as_bytes().to_vec())).await.unwrap();
    drop(sender);
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(response.status(), StatusCode::OK);

    let status = service.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");

    let last_access: Option<String> = {
        use rusqlite::OptionalExtension;
        rusqlite::Connection::open(dir.path().join("keys.db"))
            .unwrap()
            .query_row(
                r#"SELECT "LastAccessDate" FROM "UserKeys" WHERE "LastAccessDate" IS NOT NULL"#,
                [],
                |r| r.get(0),
            )
            .optional()
            .unwrap()
    };
    assert!(
        last_access.is_some(),
        "LastAccessDate was flushed on shutdown"
    );
}

fn json_log_format_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .current_dir(dir.path())
        .env_clear()
        .env("KEY_CONNECTOR_LOG_FORMAT", "json")
        .env(
            "keyConnectorSettings__webVaultUri",
            "https://vault.example.test",
        )
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["level"].is_string(), "{line}");
    }
}

async fn prometheus_metrics_are_served_on_their_own_listener_only() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let metrics_port = free_port();
    let mut command = service_command(dir.path(), "sqlite", &idp.url, port);
    command.env(
        "KEY_CONNECTOR_METRICS_URLS",
        format!("http://127.0.0.1:{metrics_port}"),
    );
    let service = Service::spawn(command, port).wait_ready().await;
    let client = reqwest::Client::new();
    let user = Uuid::new_v4();
    assert_eq!(
        service
            .post_key(&client, &idp.token_for(user), &random_key())
            .await,
        StatusCode::OK
    );
    assert!(
        read_key(&client, &service.base_url, &idp.token_for(user))
            .await
            .is_ok()
    );
    let status = client
        .get(format!("{}/user-keys", service.base_url))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Made-up methods must not mint label values: they count as `other`.
    for method in ["FROBNICATE", "XYZZY"] {
        let status = client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                format!("{}/user-keys", service.base_url),
            )
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }
    // Not on the API port (which the reverse proxy exposes).
    let status = client
        .get(format!("{}/metrics", service.base_url))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NOT_FOUND);

    let response = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for expected in [
        r#"key_connector_http_requests_total{method="POST",route="/user-keys",status="200"} 1"#,
        r#"key_connector_http_requests_total{method="GET",route="/user-keys",status="200"} 1"#,
        r#"key_connector_http_requests_total{method="GET",route="/user-keys",status="401"} 1"#,
        r#"key_connector_http_requests_total{method="GET",route="/alive",status="200"}"#,
        r#"key_connector_auth_failures_total{reason="missing_token"} 1"#,
        r#"key_connector_rsa_key_operations_total{operation="wrap",outcome="ok"} 1"#,
        r#"key_connector_http_request_duration_seconds_bucket{method="POST",route="/user-keys",le="+Inf"} 1"#,
        r#"key_connector_rsa_key_operation_duration_seconds_count{operation="wrap"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
    assert!(!text.contains(&user.to_string()), "no user ids in labels");
    assert!(
        text.contains(
            r#"key_connector_http_requests_total{method="other",route="/user-keys",status="405"} 2"#
        ),
        "made-up methods are `other`:\n{text}"
    );
    assert!(
        !text.contains("FROBNICATE") && !text.contains("XYZZY"),
        "{text}"
    );
}

async fn every_key_read_and_write_leaves_an_audit_line_with_the_request_ids_and_never_the_key() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut command = service_command(dir.path(), "sqlite", &idp.url, port);
    command.env("KEY_CONNECTOR_LOG_FORMAT", "json");
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{base}/alive"))
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "service did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let user = Uuid::new_v4();
    let token = idp.token_for(user);
    let key = random_key();
    // Each request's status and the id the service gave it.
    let send = async |method: reqwest::Method, request_id: &'static str, body: Option<&str>| {
        let mut request = client
            .request(method, format!("{base}/user-keys"))
            .bearer_auth(&token)
            .header("x-request-id", request_id);
        if let Some(key) = body {
            request = request.json(&serde_json::json!({ "key": key }));
        }
        let response = request.send().await.unwrap();
        let id = response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        (response.status().as_u16(), id)
    };
    let mut service_ids = Vec::new();
    for (method, client_id, body, status) in [
        (reqwest::Method::GET, "audit-read-1", None, 404),
        (reqwest::Method::POST, "audit-create-1", Some(&key), 200),
        (reqwest::Method::POST, "audit-create-2", Some(&key), 400),
        (reqwest::Method::PUT, "audit-put-1", Some(&key), 200),
        (reqwest::Method::GET, "audit-read-2", None, 200),
    ] {
        let (answered, id) = send(method, client_id, body.map(String::as_str)).await;
        assert_eq!(answered, status, "{client_id}");
        service_ids.push(id);
    }
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    // Its stderr ends with it: every line it wrote is read once the reader is done.
    reader.join().unwrap();

    let lines = lines.lock().unwrap().clone();
    let audits: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect();
    let expected = [
        ("audit-read-1", "read", "not_found"),
        ("audit-create-1", "create", "ok"),
        ("audit-create-2", "create", "rejected"),
        ("audit-put-1", "put", "ok"),
        ("audit-read-2", "read", "ok"),
    ];
    assert_eq!(audits.len(), expected.len(), "{audits:#?}");
    for ((audit, (client_id, action, outcome)), service_id) in
        audits.iter().zip(expected).zip(&service_ids)
    {
        assert_eq!(audit["action"], action, "{audit}");
        assert_eq!(audit["outcome"], outcome, "{audit}");
        assert_eq!(audit["user_id"], user.to_string(), "{audit}");
        assert_eq!(audit["request_id"], service_id.as_str(), "{audit}");
        assert_eq!(
            audit["client_request_id"],
            format!("\"{client_id}\""),
            "{audit}"
        );
    }
    assert!(
        !lines.iter().any(|l| l.contains(&key)),
        "the key never appears in logs"
    );
    assert!(
        !lines.iter().any(|l| l.contains(&token)),
        "the token never appears in logs"
    );
}
async fn the_serilog_section_sets_the_level_and_writes_serilog_named_log_files() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let logs = dir.path().join("logs");
    let mut command = service_command(dir.path(), "json", &idp.url, port);
    command
        // Upstream's settings decide the level when RUST_LOG is not set.
        .env_remove("RUST_LOG")
        .env("Serilog__MinimumLevel__Default", "Warning")
        .env("Serilog__WriteTo__0__Name", "File")
        .env("Serilog__WriteTo__0__Args__path", logs.join("log.txt"))
        .env("Serilog__WriteTo__0__Args__rollingInterval", "Day")
        // Something to warn about.
        .env(
            "keyConnectorSettings__webVaultUrl",
            "https://typo.example.test",
        );
    let service = Service::spawn(command, port).wait_ready().await;
    service.stores_and_serves_a_key(&idp).await;
    drop(service);
    let today = time::OffsetDateTime::now_utc();
    let file = logs.join(format!(
        "log{:04}{:02}{:02}.txt",
        today.year(),
        u8::from(today.month()),
        today.day()
    ));
    let log = std::fs::read_to_string(&file).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains(" [WRN] unknown setting `keyConnectorSettings:webVaultUrl`")),
        "{log}"
    );
    assert!(
        !log.contains("[INF]"),
        "Information is below Warning: {log}"
    );
    let first = log.lines().next().unwrap();
    // `2026-12-01 19:45:32.123 +00:00 [WRN] ...`
    assert_eq!(&first[23..35], " +00:00 [WRN", "{first}");
}

async fn a_key_copied_into_another_users_row_is_refused_with_an_audit_line_once_keys_are_bound() {
    let idp = Arc::new(TestIdp::start().await);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let with_binding = |mut command: Command| {
        command
            .env("KEY_CONNECTOR_LOG_FORMAT", "json")
            .env("keyConnectorSettings__userKeyBinding", "on");
        command
    };
    let mut child = with_binding(service_command(dir.path(), "sqlite", &idp.url, port))
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client
        .get(format!("{base}/alive"))
        .send()
        .await
        .is_ok_and(|r| r.status() == StatusCode::OK)
    {
        assert!(Instant::now() < deadline, "service did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (victim, thief) = (Uuid::new_v4(), Uuid::new_v4());
    let victim_key = random_key();
    for user in [victim, thief] {
        let response = client
            .post(format!("{base}/user-keys"))
            .bearer_auth(idp.token_for(user))
            .json(&serde_json::json!({ "key": if user == victim { victim_key.clone() } else { random_key() } }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    // Every key bound and recorded so, while the service runs.
    let output = with_binding(service_command(dir.path(), "sqlite", &idp.url, free_port()))
        .arg("bind-user-keys")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    // The attacker writes the database directly: the victim's value into their own row.
    let connection = rusqlite::Connection::open(dir.path().join("keys.db")).unwrap();
    let victims: String = connection
        .query_row(
            r#"SELECT "Key" FROM "UserKeys" WHERE "Id" = ?1"#,
            [victim.to_string().to_uppercase()],
            |row| row.get(0),
        )
        .unwrap();
    connection
        .execute(
            r#"UPDATE "UserKeys" SET "Key" = ?1 WHERE "Id" = ?2"#,
            [victims.clone(), thief.to_string().to_uppercase()],
        )
        .unwrap();

    let response = client
        .get(format!("{base}/user-keys"))
        .bearer_auth(idp.token_for(thief))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let body = response.text().await.unwrap();
    assert!(
        !body.contains(&victim_key) && !body.contains(&victims),
        "{body}"
    );

    // The audit line says so, waited for (the log is written by a background thread).
    let deadline = Instant::now() + Duration::from_secs(10);
    let audit = loop {
        let found = lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| {
                v["target"] == "audit" && v["user_id"] == thief.to_string() && v["action"] == "read"
            });
        if let Some(audit) = found {
            break audit;
        }
        assert!(
            Instant::now() < deadline,
            "no audit line for the refused read"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(audit["outcome"], "refused", "{audit}");
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    assert!(
        !lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&victim_key)),
        "the key never appears in logs"
    );
}

crate::tests! {
    multi_thread(2): [
        sqlite_acknowledged_writes_survive_kill_9,
        json_acknowledged_writes_survive_kill_9,
        sigterm_finishes_in_flight_requests_flushes_and_exits_zero,
        prometheus_metrics_are_served_on_their_own_listener_only,
        every_key_read_and_write_leaves_an_audit_line_with_the_request_ids_and_never_the_key,
        the_serilog_section_sets_the_level_and_writes_serilog_named_log_files,
        a_key_copied_into_another_users_row_is_refused_with_an_audit_line_once_keys_are_bound,
    ],
    sync: [
        version_and_help_describe_the_binary,
        a_missing_setting_stops_start_up_naming_the_environment_variable,
        a_wrong_certificate_password_stops_start_up_with_a_clear_message,
        json_log_format_writes_one_json_object_per_line,
    ],
}
