//! A stand-in for the one Bitwarden server endpoint the SDK's Key Connector registration calls
//! besides the Key Connector itself: `POST /accounts/set-key-connector-key`, where the client
//! leaves the user key wrapped by the Key Connector key (and the account's keys). It answers
//! 200 and keeps what it was sent, as the server would for the user's next login.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;
use tokio::task::JoinHandle;

/// The request bodies the stand-in was sent, in order.
type Received = Arc<Mutex<Vec<Value>>>;

/// A running stand-in; it stops when dropped.
pub struct BitwardenServer {
    /// The API base URL (`ClientSettings::api_url`).
    pub url: String,
    received: Received,
    task: JoinHandle<()>,
}

impl BitwardenServer {
    pub async fn start() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let router = axum::Router::new()
            .route(
                "/accounts/set-key-connector-key",
                post(set_key_connector_key),
            )
            .with_state(Arc::clone(&received));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            url,
            received,
            task,
        }
    }

    /// The `keyConnectorKeyWrappedUserKey` of every `set-key-connector-key` request, in order.
    pub fn wrapped_user_keys(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|body| {
                body["keyConnectorKeyWrappedUserKey"]
                    .as_str()
                    .expect("set-key-connector-key carries keyConnectorKeyWrappedUserKey")
                    .to_owned()
            })
            .collect()
    }
}

async fn set_key_connector_key(State(received): State<Received>, Json(body): Json<Value>) {
    received.lock().unwrap().push(body);
}

impl Drop for BitwardenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
