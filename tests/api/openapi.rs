//! `GET /openapi.json` describes exactly the routes the server has: every documented
//! operation answers with a documented status, every other method on a documented path is
//! 405, and paths that are not documented are 404.

use reqwest::Method;
use serde_json::Value;
use uuid::Uuid;

use crate::support::{random_key, spawn_app};

const METHODS: [&str; 7] = ["get", "post", "put", "delete", "patch", "head", "options"];

async fn the_openapi_document_matches_the_real_routes() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/openapi.json", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let spec: Value = response.json().await.unwrap();
    assert_eq!(spec["openapi"], "3.0.3");
    let paths = spec["paths"].as_object().expect("paths");
    assert_eq!(
        paths.keys().map(String::as_str).collect::<Vec<_>>(),
        ["/alive", "/now", "/health", "/user-keys", "/openapi.json"]
    );

    let token = app.idp.token_for(Uuid::new_v4());
    for (path, operations) in paths {
        for method in METHODS {
            // HEAD is answered for every GET route, OPTIONS by CORS handling: not documented.
            if method == "head" || method == "options" {
                continue;
            }
            let request = app
                .client
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    format!("{}{path}", app.base_url),
                )
                .bearer_auth(&token)
                .json(&serde_json::json!({ "key": random_key() }));
            let status = request.send().await.unwrap().status().as_u16();
            match operations.get(method) {
                Some(operation) => {
                    let documented = operation["responses"].as_object().expect("responses");
                    assert!(
                        documented.contains_key(&status.to_string()),
                        "{method} {path} answered {status}, documented: {:?}",
                        documented.keys().collect::<Vec<_>>()
                    );
                    if operation
                        .get("security")
                        .is_some_and(|s| s.as_array().is_some_and(Vec::is_empty))
                    {
                        // Anonymous operations work without a token.
                        let status = app
                            .client
                            .request(
                                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                                format!("{}{path}", app.base_url),
                            )
                            .send()
                            .await
                            .unwrap()
                            .status();
                        assert_eq!(status, 200, "{method} {path} without a token");
                    }
                }
                None => assert_eq!(
                    status, 405,
                    "{method} {path} is not documented but answered {status}"
                ),
            }
        }
    }
    // Authenticated operations refuse a request without a token, as documented.
    let status = app
        .client
        .get(format!("{}/user-keys", app.base_url))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    for undocumented in ["/", "/user-key", "/api/user-keys", "/metrics", "/swagger"] {
        let status = app
            .client
            .get(format!("{}{undocumented}", app.base_url))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "GET {undocumented}");
    }
}

crate::tests! {
    multi_thread(2): [
        the_openapi_document_matches_the_real_routes,
    ],
}
