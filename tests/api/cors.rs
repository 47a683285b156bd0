//! CORS: exactly one origin, the web vault; preflights mirror what real clients request.

use reqwest::StatusCode;
use uuid::Uuid;

use crate::support::{WEB_VAULT_ORIGIN, random_key, spawn_app};

const CLIENT_HEADERS: &str = "authorization,content-type,accept,cache-control,pragma,bitwarden-client-name,bitwarden-client-version,device-type,device-identifier,bitwarden-package-type";

async fn preflight_from_the_web_vault_allows_what_clients_send() {
    let app = spawn_app().await;
    for method in ["GET", "POST", "PUT"] {
        let response = app
            .client
            .request(reqwest::Method::OPTIONS, app.url("/user-keys"))
            .header("origin", WEB_VAULT_ORIGIN)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", CLIENT_HEADERS)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{method}: {}",
            response.status()
        );
        let headers = response.headers();
        assert_eq!(headers["access-control-allow-origin"], WEB_VAULT_ORIGIN);
        assert_eq!(headers["access-control-allow-credentials"], "true");
        let methods = headers["access-control-allow-methods"].to_str().unwrap();
        assert!(methods.contains(method), "{methods}");
        let allowed = headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        for header in CLIENT_HEADERS.split(',') {
            assert!(allowed.contains(header), "{header} not in {allowed}");
        }
    }
}

async fn preflight_through_the_doubled_slash_path_works() {
    let app = spawn_app().await;
    let response = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("//user-keys"))
        .header("origin", WEB_VAULT_ORIGIN)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        WEB_VAULT_ORIGIN
    );
}

async fn a_foreign_origin_gets_no_cors_grant() {
    let app = spawn_app().await;
    for origin in [
        "https://evil.example",
        "https://vault.example.test.evil.example",
        "null",
    ] {
        let response = app
            .client
            .request(reqwest::Method::OPTIONS, app.url("/user-keys"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none(),
            "{origin} must not be allowed"
        );
    }
}

async fn actual_requests_from_the_web_vault_carry_the_grant() {
    let app = spawn_app().await;
    let token = app.token_for(Uuid::new_v4());
    app.post_key(&token, &random_key()).await;
    let response = app
        .client
        .get(app.url("/user-keys"))
        .header("origin", WEB_VAULT_ORIGIN)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        WEB_VAULT_ORIGIN
    );
    assert_eq!(
        response.headers()["access-control-allow-credentials"],
        "true"
    );
}

crate::tests! {
    current_thread: [
        preflight_from_the_web_vault_allows_what_clients_send,
        preflight_through_the_doubled_slash_path_works,
        a_foreign_origin_gets_no_cors_grant,
        actual_requests_from_the_web_vault_carry_the_grant,
    ],
}
