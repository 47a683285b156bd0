//! A TCP proxy the tests control, standing between the service and its database to cut,
//! black-hole and restore the connection while the service runs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward bytes both ways.
    Forward,
    /// Refuse: close new connections at once and cut the open ones, like a stopped server.
    Down,
    /// Accept and never answer, like a hung server or a dropped route.
    BlackHole,
}

pub struct Proxy {
    pub address: SocketAddr,
    mode: watch::Sender<Mode>,
    tasks: Arc<Mutex<JoinSet<()>>>,
    acceptor: tokio::task::JoinHandle<()>,
    /// Connections accepted so far, in any mode.
    accepted: Arc<AtomicUsize>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (mode, mut watcher) = watch::channel(Mode::Forward);
        let tasks = Arc::new(Mutex::new(JoinSet::new()));
        let connections = Arc::clone(&tasks);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        let acceptor = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                // Mark the current mode seen, so that each connection's copy wakes only on
                // a later change.
                let current = *watcher.borrow_and_update();
                let mut watcher = watcher.clone();
                match current {
                    Mode::Down => drop(client),
                    Mode::BlackHole => {
                        connections.lock().unwrap().spawn(async move {
                            // Hold the socket until the mode changes, then drop it.
                            let _ = watcher.changed().await;
                            drop(client);
                        });
                    }
                    Mode::Forward => {
                        connections.lock().unwrap().spawn(async move {
                            let Ok(mut server) = TcpStream::connect(upstream).await else {
                                return;
                            };
                            let mut client = client;
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                // Any change of mode cuts forwarded connections.
                                _ = watcher.changed() => {}
                            }
                        });
                    }
                }
            }
        });
        Self {
            address,
            mode,
            tasks,
            acceptor,
            accepted,
        }
    }

    /// Waits until the proxy has accepted `count` connections in all (a client retrying
    /// against a peer that is down, say); panics after `within`.
    pub async fn wait_for_connections(&self, count: usize, within: Duration) {
        tokio::time::timeout(within, async {
            while self.accepted.load(Ordering::SeqCst) < count {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} of {count} connections within {within:?}",
                self.accepted.load(Ordering::SeqCst)
            )
        });
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
        // Reap finished connection tasks.
        let mut tasks = self.tasks.lock().unwrap();
        while tasks.try_join_next().is_some() {}
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.tasks.lock().unwrap().abort_all();
    }
}

/// Start-up with a remote key service down waits and retries, then serves once it answers:
/// `settings_via(proxy_url)` configures the RSA key provider to reach the service at
/// `upstream` through a proxy that refuses connections until start-up has tried twice.
pub async fn start_up_waits_for_the_key_service(
    upstream: SocketAddr,
    settings_via: impl FnOnce(&str) -> key_connector::keys::RsaKeySettings,
) {
    use crate::support::{AppOptions, TestIdp, random_key, try_spawn_app_with};
    let proxy = Proxy::start(upstream).await;
    proxy.set(Mode::Down);
    let settings = settings_via(&format!("http://{}", proxy.address));
    let idp = Arc::new(TestIdp::start().await);
    let starting = tokio::spawn(async move {
        try_spawn_app_with(
            idp,
            AppOptions {
                rsa_key: Some(settings),
                ..AppOptions::default()
            },
        )
        .await
    });
    // Tried, and tried again: start-up is retrying, not failed.
    proxy.wait_for_connections(2, Duration::from_secs(30)).await;
    assert!(
        !starting.is_finished(),
        "start-up must wait for the key service"
    );
    proxy.set(Mode::Forward);
    let app = tokio::time::timeout(Duration::from_secs(30), starting)
        .await
        .expect("start-up finishes once the key service answers")
        .unwrap()
        .unwrap_or_else(|e| panic!("start-up failed: {e}"));
    let token = app.token_for(uuid::Uuid::new_v4());
    assert_eq!(app.post_key(&token, &random_key()).await.status(), 200);
}
