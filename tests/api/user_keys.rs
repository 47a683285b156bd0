//! `/alive`, `/now`, `/health` and `/user-keys` through HTTP, including every bad input.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use crate::support::{StoreKind, random_key, spawn_app, spawn_app_on};

async fn alive_and_now_answer_the_utc_time_as_a_json_string() {
    let app = spawn_app().await;
    for path in ["/alive", "/now"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json")
        );
        let body: Value = response.json().await.unwrap();
        let text = body.as_str().expect("a JSON string");
        let parsed = key_connector::dotnet_time::parse(text).unwrap();
        let age = time::OffsetDateTime::now_utc() - parsed;
        assert!(age.whole_seconds().abs() < 60, "{text} is not now");
        assert!(text.ends_with('Z') && text.contains('T'), "{text}");
    }
}

async fn every_response_carries_a_request_id_of_the_services_own_making() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/alive")).send().await.unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(Uuid::parse_str(&generated).is_ok(), "{generated}");
    let response = app
        .client
        .get(app.url("/user-keys"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // A client's id would let it choose what the logs say: the service sets its own.
    let replaced = response.headers()["x-request-id"].to_str().unwrap();
    assert!(Uuid::parse_str(replaced).is_ok(), "{replaced}");
    assert_ne!(replaced, generated);
    // Outside every route as well, and on a method no route has.
    for (method, path, status) in [
        (Method::GET, "/no-such-path", StatusCode::NOT_FOUND),
        (Method::DELETE, "/user-keys", StatusCode::METHOD_NOT_ALLOWED),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        assert!(
            response.headers().contains_key("x-request-id"),
            "{method} {path}"
        );
    }
}

async fn health_is_healthy_in_plain_text() {
    let app = spawn_app().await;
    let response = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "Healthy");
}

async fn full_flow(store: StoreKind) {
    let app = spawn_app_on(store).await;
    let token = app.token_for(Uuid::new_v4());
    let key = random_key();

    assert_eq!(app.read_key(&token).await, Err(404));

    let response = app.post_key(&token, &key).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len(), 0, "empty 200 body");

    let response = app.get_key(&token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "key": key }),
        "camelCase `key`, nothing else"
    );

    let other = random_key();
    let response = app.post_key(&token, &other).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let error: Value = response.json().await.unwrap();
    assert!(error["message"].as_str().unwrap().contains("already"));
    assert_eq!(
        app.read_key(&token).await,
        Ok(key.clone()),
        "POST over a key changes nothing"
    );

    let response = app.put_key(&token, &other).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.bytes().await.unwrap().len(), 0);
    assert_eq!(app.read_key(&token).await, Ok(other));
}

async fn sqlite_get_post_get_put_flow_follows_the_contract() {
    full_flow(StoreKind::Sqlite).await;
}

async fn json_get_post_get_put_flow_follows_the_contract() {
    full_flow(StoreKind::Json).await;
}

async fn put_creates_a_key_for_a_new_user() {
    let app = spawn_app().await;
    let token = app.token_for(Uuid::new_v4());
    let key = random_key();
    assert_eq!(app.put_key(&token, &key).await.status(), StatusCode::OK);
    assert_eq!(app.read_key(&token).await, Ok(key));
}

async fn users_only_ever_see_their_own_key() {
    let app = spawn_app().await;
    let (alice, bob) = (app.token_for(Uuid::new_v4()), app.token_for(Uuid::new_v4()));
    let alice_key = random_key();
    assert_eq!(
        app.post_key(&alice, &alice_key).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.read_key(&bob).await, Err(404));
    let bob_key = random_key();
    assert_eq!(app.put_key(&bob, &bob_key).await.status(), StatusCode::OK);
    assert_eq!(app.read_key(&alice).await, Ok(alice_key));
    assert_eq!(app.read_key(&bob).await, Ok(bob_key));
}

async fn request_property_names_are_case_insensitive() {
    let app = spawn_app().await;
    let token = app.token_for(Uuid::new_v4());
    let key = random_key();
    let response = app
        .client
        .post(app.url("/user-keys"))
        .bearer_auth(&token)
        .header("content-type", "application/json; charset=utf-8")
        .body(format!(r#"{{"Key":"{key}"}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(app.read_key(&token).await, Ok(key));
}

async fn doubled_slash_trailing_slash_and_upper_case_paths_reach_the_route() {
    let app = spawn_app().await;
    let token = app.token_for(Uuid::new_v4());
    let key = random_key();
    assert_eq!(app.post_key(&token, &key).await.status(), StatusCode::OK);
    for path in ["//user-keys", "/user-keys/", "/User-Keys", "///user-keys//"] {
        let response = app
            .client
            .get(app.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["key"], key.as_str(), "{path}");
    }
    let response = app.client.get(app.url("//alive")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

async fn unknown_paths_and_methods_get_json_errors() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(app.url("/nothing-here"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let _: Value = response.json().await.unwrap();
    let token = app.token_for(Uuid::new_v4());
    let response = app
        .client
        .delete(app.url("/user-keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let _: Value = response.json().await.unwrap();
}

/// Every way a body can be wrong: 4xx with a JSON body, and the stored key is untouched.
async fn every_bad_body_is_a_4xx_with_json_and_changes_nothing() {
    let app = spawn_app().await;
    let token = app.token_for(Uuid::new_v4());
    let key = random_key();
    assert_eq!(app.post_key(&token, &key).await.status(), StatusCode::OK);
    let fresh_token = app.token_for(Uuid::new_v4());

    let oversized = format!(r#"{{"key":"{}"}}"#, "A".repeat(70 * 1024));
    let cases: Vec<(&str, Option<&str>, String, u16)> = vec![
        (
            "not JSON",
            Some("application/json"),
            "this is not json".into(),
            400,
        ),
        (
            "truncated JSON",
            Some("application/json"),
            r#"{"key":"AQID""#.into(),
            400,
        ),
        ("array", Some("application/json"), "[]".into(), 400),
        (
            "key named twice, spelt the same",
            Some("application/json"),
            r#"{"key":"AQID","key":"BBBB"}"#.into(),
            400,
        ),
        ("string", Some("application/json"), r#""AQID""#.into(), 400),
        ("missing key", Some("application/json"), "{}".into(), 400),
        (
            "other property only",
            Some("application/json"),
            r#"{"value":"AQID"}"#.into(),
            400,
        ),
        (
            "null key",
            Some("application/json"),
            r#"{"key":null}"#.into(),
            400,
        ),
        (
            "number key",
            Some("application/json"),
            r#"{"key":42}"#.into(),
            400,
        ),
        (
            "object key",
            Some("application/json"),
            r#"{"key":{"a":1}}"#.into(),
            400,
        ),
        (
            "empty key",
            Some("application/json"),
            r#"{"key":""}"#.into(),
            400,
        ),
        (
            "non-base64 key",
            Some("application/json"),
            r#"{"key":"not base64!"}"#.into(),
            400,
        ),
        (
            "bad padding",
            Some("application/json"),
            r#"{"key":"AQI"}"#.into(),
            400,
        ),
        ("empty body", Some("application/json"), String::new(), 400),
        (
            "no content type",
            None,
            format!(r#"{{"key":"{key}"}}"#),
            415,
        ),
        (
            "text/plain",
            Some("text/plain"),
            format!(r#"{{"key":"{key}"}}"#),
            415,
        ),
        (
            "form",
            Some("application/x-www-form-urlencoded"),
            "key=AQID".into(),
            415,
        ),
        ("oversized", Some("application/json"), oversized, 413),
    ];
    for method in [Method::POST, Method::PUT] {
        for (name, content_type, body, expected) in &cases {
            for target in [&token, &fresh_token] {
                let mut request = app
                    .client
                    .request(method.clone(), app.url("/user-keys"))
                    .bearer_auth(target)
                    .body(body.clone());
                if let Some(content_type) = content_type {
                    request = request.header("content-type", *content_type);
                }
                let response = request.send().await.unwrap();
                assert_eq!(response.status().as_u16(), *expected, "{method} {name}");
                let error: Value = response
                    .json()
                    .await
                    .unwrap_or_else(|e| panic!("{method} {name}: body is not JSON: {e}"));
                assert!(error["message"].is_string(), "{method} {name}: {error}");
            }
        }
    }
    assert_eq!(
        app.read_key(&token).await,
        Ok(key),
        "the existing key is unchanged"
    );
    assert_eq!(
        app.read_key(&fresh_token).await,
        Err(404),
        "no key was created"
    );
}

async fn keys_of_any_length_round_trip_byte_for_byte() {
    use base64::Engine;
    let app = spawn_app().await;
    for length in [1usize, 16, 32, 64, 100, 1000, 40_000] {
        let token = app.token_for(Uuid::new_v4());
        let bytes: Vec<u8> = (0..length).map(|i| (i * 31 % 256) as u8).collect();
        let key = base64::engine::general_purpose::STANDARD.encode(&bytes);
        assert_eq!(
            app.put_key(&token, &key).await.status(),
            StatusCode::OK,
            "{length}"
        );
        assert_eq!(app.read_key(&token).await, Ok(key), "{length}");
    }
}

async fn key_answers_are_never_cached_nor_sniffed() {
    let app = spawn_app().await;
    let token = app.token_for(Uuid::new_v4());
    let missing = app.get_key(&token).await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let stored = app.post_key(&token, &random_key()).await;
    assert_eq!(stored.status(), StatusCode::OK);
    let found = app.get_key(&token).await;
    assert_eq!(found.status(), StatusCode::OK);
    let unauthenticated = app.client.get(app.url("/user-keys")).send().await.unwrap();
    assert_eq!(unauthenticated.status(), StatusCode::UNAUTHORIZED);
    for response in [&missing, &stored, &found, &unauthenticated] {
        assert_eq!(response.headers()["cache-control"], "no-store");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
    // Anonymous endpoints keep their caching as they are.
    let alive = app.client.get(app.url("/alive")).send().await.unwrap();
    assert!(alive.headers().get("cache-control").is_none());
}

crate::tests! {
    current_thread: [
        alive_and_now_answer_the_utc_time_as_a_json_string,
        every_response_carries_a_request_id_of_the_services_own_making,
        health_is_healthy_in_plain_text,
        sqlite_get_post_get_put_flow_follows_the_contract,
        json_get_post_get_put_flow_follows_the_contract,
        put_creates_a_key_for_a_new_user,
        users_only_ever_see_their_own_key,
        request_property_names_are_case_insensitive,
        doubled_slash_trailing_slash_and_upper_case_paths_reach_the_route,
        unknown_paths_and_methods_get_json_errors,
        every_bad_body_is_a_4xx_with_json_and_changes_nothing,
        keys_of_any_length_round_trip_byte_for_byte,
        key_answers_are_never_cached_nor_sniffed,
    ],
}
