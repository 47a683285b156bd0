//! Database outages under load, through a proxy the test controls: answers during the fault
//! are 503 with `Retry-After` (never 404, which would tell a client the user has no key),
//! every answer comes in bounded time, the service recovers on its own, and no acknowledged
//! write is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use key_connector::config::Intervals;
use key_connector::config::intervals::Backoff;
use reqwest::StatusCode;
use uuid::Uuid;

use crate::support::databases::{Engine, TestDatabase};
use crate::support::proxy::{Mode, Proxy};
use crate::support::{
    AppOptions, TestApp, TestIdp, random_key, spawn_app_with, try_spawn_app_with,
};

/// Short timeouts so that the test runs in seconds; the defaults are 5 s each.
const FAST_TIMEOUTS: &str = "Timeout=2;Command Timeout=2";

async fn proxy_to(database: &TestDatabase) -> Proxy {
    Proxy::start(database.server_address().await).await
}

#[derive(Default)]
struct LoadReport {
    read_statuses: HashMap<u16, usize>,
    write_statuses: HashMap<u16, usize>,
    acknowledged: Vec<(Uuid, String)>,
}

impl LoadReport {
    fn reads(&self, status: u16) -> usize {
        self.read_statuses.get(&status).copied().unwrap_or(0)
    }

    fn writes(&self, status: u16) -> usize {
        self.write_statuses.get(&status).copied().unwrap_or(0)
    }
}

/// Reads known users' keys and creates new users until told to stop, noting every answer
/// in `report` as it comes (the test waits on what the load has seen).
async fn load(
    app: Arc<TestApp>,
    known: Vec<Uuid>,
    stop: Arc<AtomicBool>,
    report: Arc<Mutex<LoadReport>>,
) {
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        let user = known[round % known.len()];
        let status = app
            .get_key(&app.idp.token_for(user))
            .await
            .status()
            .as_u16();
        *report
            .lock()
            .unwrap()
            .read_statuses
            .entry(status)
            .or_default() += 1;

        let newcomer = Uuid::new_v4();
        let key = random_key();
        let status = app
            .post_key(&app.idp.token_for(newcomer), &key)
            .await
            .status()
            .as_u16();
        {
            let mut report = report.lock().unwrap();
            *report.write_statuses.entry(status).or_default() += 1;
            if status == 200 {
                report.acknowledged.push((newcomer, key));
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until what the load has seen satisfies `condition`; fails the test after `within`.
async fn wait_for_load(
    report: &Mutex<LoadReport>,
    within: Duration,
    what: &str,
    condition: impl Fn(&LoadReport) -> bool,
) {
    let deadline = Instant::now() + within;
    while !condition(&report.lock().unwrap()) {
        if Instant::now() >= deadline {
            let report = report.lock().unwrap();
            panic!(
                "{what} not seen within {within:?}: reads {:?}, writes {:?}",
                report.read_statuses, report.write_statuses
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn outage_under_load(server: Engine) {
    let database = crate::database_or_skip!(server);
    let proxy = proxy_to(&database).await;
    let idp = Arc::new(TestIdp::start().await);
    let app = Arc::new(
        spawn_app_with(
            Arc::clone(&idp),
            AppOptions {
                database: Some(database.settings_via(proxy.address, FAST_TIMEOUTS)),
                ..AppOptions::default()
            },
        )
        .await,
    );
    let mut known = HashMap::new();
    for _ in 0..10 {
        let user = Uuid::new_v4();
        let key = random_key();
        assert_eq!(
            app.post_key(&idp.token_for(user), &key).await.status(),
            StatusCode::OK
        );
        known.insert(user, key);
    }
    let probe = *known.keys().next().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let background = tokio::spawn(load(
        Arc::clone(&app),
        known.keys().copied().collect(),
        Arc::clone(&stop),
        Arc::clone(&report),
    ));
    wait_for_load(
        &report,
        Duration::from_secs(15),
        "a read and a write",
        |r| r.reads(200) > 0 && r.writes(200) > 0,
    )
    .await;

    // The server goes away: connections cut, new ones refused. The load meets it.
    proxy.set(Mode::Down);
    wait_for_load(&report, Duration::from_secs(15), "a 503 read", |r| {
        r.reads(503) > 0
    })
    .await;
    let response = app.get_key(&idp.token_for(probe)).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["message"].is_string(), "{body}");
    let response = app
        .post_key(&idp.token_for(Uuid::new_v4()), &random_key())
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    // What the Kubernetes probes ask (deploy/kubernetes) still answers: no probe restarts or
    // unreadies a pod over the database's outage, and `/health` (the RSA key) is unaffected.
    for path in ["/alive", "/health"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "{path} during the outage"
        );
    }

    // The server hangs: answers still come, bounded by the command timeout.
    proxy.set(Mode::BlackHole);
    let response = tokio::time::timeout(Duration::from_secs(8), app.get_key(&idp.token_for(probe)))
        .await
        .expect("an answer within the timeouts while the database hangs");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);

    // The server comes back: the service recovers without a restart.
    proxy.set(Mode::Forward);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if app.read_key(&idp.token_for(probe)).await.as_ref() == Ok(&known[&probe]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 15 s of the database returning"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The load, too, reads and writes again.
    let (reads, writes) = {
        let report = report.lock().unwrap();
        (report.reads(200), report.writes(200))
    };
    wait_for_load(&report, Duration::from_secs(15), "recovery", |r| {
        r.reads(200) > reads && r.writes(200) > writes
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    background.await.unwrap();
    let report = Arc::try_unwrap(report)
        .ok()
        .expect("the load has stopped")
        .into_inner()
        .unwrap();

    for status in report.read_statuses.keys() {
        assert!(
            [200, 503].contains(status),
            "a read of an existing key answered {status}: {:?}",
            report.read_statuses
        );
    }
    for status in report.write_statuses.keys() {
        assert!(
            [200, 503].contains(status),
            "a write answered {status}: {:?}",
            report.write_statuses
        );
    }
    assert!(report.reads(503) > 0, "the load saw the outage");
    assert!(report.reads(200) > 0);
    for (user, key) in known
        .iter()
        .chain(report.acknowledged.iter().map(|(u, k)| (u, k)))
    {
        assert_eq!(
            app.read_key(&idp.token_for(*user)).await.as_ref(),
            Ok(key),
            "acknowledged key of {user}"
        );
    }
}

async fn start_up_waits_for_the_database(server: Engine) {
    let database = crate::database_or_skip!(server);
    let proxy = proxy_to(&database).await;
    proxy.set(Mode::Down);
    let idp = Arc::new(TestIdp::start().await);
    let settings = database.settings_via(proxy.address, FAST_TIMEOUTS);
    let starting = tokio::spawn(try_spawn_app_with(
        Arc::clone(&idp),
        AppOptions {
            database: Some(settings),
            intervals: Intervals {
                start_up_retry: Backoff {
                    first: Duration::from_millis(50),
                    max: Duration::from_millis(200),
                },
                ..Intervals::default()
            },
            ..AppOptions::default()
        },
    ));
    // One connection an attempt while the server is down: tried, and tried twice again.
    proxy.wait_for_connections(3, Duration::from_secs(30)).await;
    assert!(
        !starting.is_finished(),
        "start-up must keep retrying, not give up"
    );
    proxy.set(Mode::Forward);
    let app = tokio::time::timeout(Duration::from_secs(30), starting)
        .await
        .expect("started within 30 s of the database returning")
        .unwrap()
        .map_err(|e| e.to_string())
        .expect("started");
    let user = Uuid::new_v4();
    let key = random_key();
    assert_eq!(
        app.post_key(&idp.token_for(user), &key).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.read_key(&idp.token_for(user)).await, Ok(key));
}

async fn postgresql_outage_under_load_answers_503_and_recovers_losing_nothing() {
    outage_under_load(Engine::PostgreSql).await;
}

async fn mysql_outage_under_load_answers_503_and_recovers_losing_nothing() {
    outage_under_load(Engine::MySql).await;
}

async fn postgresql_start_up_retries_until_the_database_answers() {
    start_up_waits_for_the_database(Engine::PostgreSql).await;
}

async fn mysql_start_up_retries_until_the_database_answers() {
    start_up_waits_for_the_database(Engine::MySql).await;
}

async fn sqlserver_outage_under_load_answers_503_and_recovers_losing_nothing() {
    outage_under_load(Engine::SqlServer).await;
}

async fn sqlserver_start_up_retries_until_the_database_answers() {
    start_up_waits_for_the_database(Engine::SqlServer).await;
}

crate::tests! {
    multi_thread(2): [
        postgresql_outage_under_load_answers_503_and_recovers_losing_nothing,
        mysql_outage_under_load_answers_503_and_recovers_losing_nothing,
        postgresql_start_up_retries_until_the_database_answers,
        mysql_start_up_retries_until_the_database_answers,
        sqlserver_outage_under_load_answers_503_and_recovers_losing_nothing,
        sqlserver_start_up_retries_until_the_database_answers,
    ],
}
