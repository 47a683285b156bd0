//! HTTPS listeners from `ASPNETCORE_URLS`, with Kestrel's certificate settings, through the
//! real binary: a PFX, a PEM chain and key, and a clear refusal without a certificate.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use uuid::Uuid;

use crate::skip_or_fail;
use crate::support::binary::{free_port, service_command};
use crate::support::tls::{openssl, openssl_available};
use crate::support::{TestIdp, random_key};

/// A CA-less self-signed server certificate for localhost, as PEM and as a PFX.
fn server_certificate(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            // A server certificate, not a CA (webpki refuses a CA as the end entity).
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ],
    );
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "server.key",
            "-in",
            "server.crt",
            "-out",
            "server.pfx",
            "-passout",
            "pass:tls-pw",
        ],
    );
}

fn client_trusting(dir: &Path) -> reqwest::Client {
    let pem = std::fs::read(dir.join("server.crt")).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn serves_https(extra: &[(&str, String)]) {
    if !openssl_available() {
        skip_or_fail!("openssl is not installed");
    }
    let dir = tempfile::tempdir().unwrap();
    server_certificate(dir.path());
    let idp = Arc::new(TestIdp::start().await);
    let (http_port, https_port) = (free_port(), free_port());
    let mut command = service_command(dir.path(), "sqlite", &idp.url, http_port);
    command.env(
        "ASPNETCORE_URLS",
        format!("http://127.0.0.1:{http_port};https://localhost:{https_port}"),
    );
    for (name, value) in extra {
        command.env(
            name,
            value.replace("{dir}", &dir.path().display().to_string()),
        );
    }
    let mut child = command.spawn().unwrap();
    let client = client_trusting(dir.path());
    let base = format!("https://localhost:{https_port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match client.get(format!("{base}/alive")).send().await {
            Ok(response) if response.status() == StatusCode::OK => break,
            Ok(response) => format!("status {}", response.status()),
            Err(error) => format!("{error:?}"),
        };
        if let Ok(Some(status)) = child.try_wait() {
            panic!("service exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "HTTPS listener did not come up: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let user = Uuid::new_v4();
    let key = random_key();
    let response = client
        .post(format!("{base}/user-keys"))
        .bearer_auth(idp.token_for(user))
        .json(&serde_json::json!({ "key": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "h2 by ALPN");
    let body: serde_json::Value = client
        .get(format!("{base}/user-keys"))
        .bearer_auth(idp.token_for(user))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["key"], key);
    // The plain listener serves the same data.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{http_port}/user-keys"))
        .bearer_auth(idp.token_for(user))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    // SIGTERM stops the HTTPS listener too.
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn https_with_a_pfx_from_kestrel_settings() {
    serves_https(&[
        (
            "Kestrel__Certificates__Default__Path",
            "{dir}/server.pfx".into(),
        ),
        ("Kestrel__Certificates__Default__Password", "tls-pw".into()),
    ])
    .await;
}

async fn https_with_a_pem_certificate_and_key() {
    serves_https(&[
        (
            "ASPNETCORE_Kestrel__Certificates__Default__Path",
            "{dir}/server.crt".into(),
        ),
        (
            "ASPNETCORE_Kestrel__Certificates__Default__KeyPath",
            "{dir}/server.key".into(),
        ),
    ])
    .await;
}

fn https_without_a_certificate_stops_start_up_saying_what_to_set() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let output = service_command(dir.path(), "sqlite", "http://127.0.0.1:9", port)
        .env("ASPNETCORE_URLS", format!("https://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Kestrel__Certificates__Default__Path"),
        "{stderr}"
    );
}

crate::tests! {
    multi_thread(2): [
        https_with_a_pfx_from_kestrel_settings,
        https_with_a_pem_certificate_and_key,
    ],
    sync: [
        https_without_a_certificate_stops_start_up_saying_what_to_set,
    ],
}
