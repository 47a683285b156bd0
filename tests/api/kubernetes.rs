//! The Kubernetes manifests in `deploy/kubernetes/`: rendered with `kubectl kustomize`, and
//! run with `podman kube play` as pods of the image `image.rs` builds, against a database of
//! the test's own on the machine's PostgreSQL.
//!
//! What podman cannot model is patched in by a test-only overlay, written here: host
//! networking with a port per pod (no CNI on these machines; the container ports go, as
//! podman maps none with host networking), the ports and the test identity provider in the
//! ConfigMap, and the PFX from a host directory (podman 4.3 writes a Secret volume's base64
//! text instead of its bytes; the password and connection string still come from a podman
//! secret through the manifests' `secretKeyRef`s, renamed to one of the test's own). Each replica is its own Deployment
//! (`-a`, `-b`), so that one can be replaced while the other serves, as a rolling update
//! with `maxUnavailable: 0` does. Not modelled: Services' load balancing (the test's client
//! picks a pod), PodDisruptionBudgets, NetworkPolicy enforcement, probes run by a kubelet,
//! scheduling across nodes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use uuid::Uuid;

use crate::image::{image, podman, podman_ok, text};
use crate::skip_or_fail;
use crate::support::binary::{free_port, read_key};
use crate::support::databases::{Engine, TestDatabase};
use crate::support::{TestIdp, random_key};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const PFX_PASSWORD: &str = "kubernetes-test-password";
/// The manifests' variables read from the Secret, and their keys in it.
const SECRET_REFS: [(&str, &str); 4] = [
    (
        "keyConnectorSettings__certificate__filesystemPassword",
        "pfx-password",
    ),
    (
        "keyConnectorSettings__database__postgreSqlConnectionString",
        "database-connection-string",
    ),
    (
        "keyConnectorSettings__database__mySqlConnectionString",
        "database-connection-string",
    ),
    (
        "keyConnectorSettings__database__sqlServerConnectionString",
        "database-connection-string",
    ),
];

fn deploy_dir(sub: &str) -> PathBuf {
    Path::new(MANIFEST_DIR).join("deploy/kubernetes").join(sub)
}

/// `kubectl kustomize DIR`: the rendered YAML, or why it cannot be rendered here.
fn kustomize(dir: &Path) -> Result<String, String> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|_| "kubectl is not installed (apt-get install kubernetes-client)".to_owned())?;
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout).unwrap())
}

macro_rules! rendered_or_skip {
    ($dir:expr) => {
        match kustomize(&$dir) {
            Ok(yaml) => yaml,
            Err(reason) => skip_or_fail!("{reason}"),
        }
    };
}

fn assert_contains_all(what: &str, yaml: &str, expected: &[&str]) {
    for needle in expected {
        assert!(yaml.contains(needle), "{what} lacks `{needle}`:\n{yaml}");
    }
}

fn the_kustomize_base_and_its_overlays_render_every_required_object() {
    let base = rendered_or_skip!(deploy_dir(""));
    let required = [
        "kind: ServiceAccount",
        "kind: ConfigMap",
        "kind: Deployment",
        "kind: Service\n",
        "kind: PodDisruptionBudget",
        "kind: NetworkPolicy",
        "replicas: 3",
        "maxUnavailable: 0",
        "topologySpreadConstraints:",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "- ALL",
        "type: RuntimeDefault",
        "automountServiceAccountToken: false",
        "startupProbe:",
        "readinessProbe:",
        "livenessProbe:",
        "path: /alive",
        "KEY_CONNECTOR_METRICS_URLS: http://+:9464",
        "containerPort: 9464",
        "key: pfx-password",
        "key: database-connection-string",
        "secretName: key-connector",
        "memory: 128Mi",
    ];
    assert_contains_all("the base", &base, &required);
    // No probe restarts or unreadies pods over a peer's outage: /health is no probe.
    assert!(!base.contains("path: /health"), "{base}");
    assert!(
        base.contains("keyConnectorSettings__database__provider: \"\""),
        "the base chooses no database"
    );

    let postgresql = rendered_or_skip!(deploy_dir("overlays/postgresql"));
    assert_contains_all("the postgresql overlay", &postgresql, &required);
    assert_contains_all(
        "the postgresql overlay",
        &postgresql,
        &["keyConnectorSettings__database__provider: postgresql"],
    );

    let nginx = rendered_or_skip!(deploy_dir("overlays/bitwarden-nginx"));
    assert_contains_all("the bitwarden-nginx overlay", &nginx, &required);
    assert_contains_all(
        "the bitwarden-nginx overlay",
        &nginx,
        &[
            "keyConnectorSettings__database__provider: postgresql",
            "kind: Ingress",
            "path: /key-connector(/|$)(.*)",
            "nginx.ingress.kubernetes.io/rewrite-target: /$2",
        ],
    );
}

fn the_key_rotation_jobs_run_the_admin_commands_as_the_pods_run() {
    for (file, args) in [
        ("rotate-rsa-key.yaml", r#"args: ["rotate-rsa-key"]"#),
        (
            "rotate-symmetric-key.yaml",
            r#"args: ["rotate-symmetric-key", "--service-stopped"]"#,
        ),
    ] {
        let job = std::fs::read_to_string(deploy_dir("jobs").join(file)).unwrap();
        assert_contains_all(
            file,
            &job,
            &[
                "kind: Job",
                args,
                "restartPolicy: Never",
                "runAsNonRoot: true",
                "readOnlyRootFilesystem: true",
                "automountServiceAccountToken: false",
                "name: key-connector",
                "key: database-connection-string",
            ],
        );
    }
}

/// One replica's Deployment from `overlays/postgresql`, with the test-only patch.
struct Replica {
    /// `-a` or `-b` and a run id: another run on the same machine gets pods of its own.
    suffix: String,
    port: u16,
    metrics_port: u16,
}

impl Replica {
    fn pod(&self) -> String {
        format!("key-connector{}-pod-0", self.suffix)
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Renders the replica with the image tag `tag` into `dir/<suffix>/rendered.yaml`.
    fn render(&self, dir: &Path, idp_url: &str, secret: &str, tag: &str) -> PathBuf {
        let overlay = dir.join(self.suffix.trim_start_matches('-'));
        std::fs::create_dir_all(&overlay).unwrap();
        std::fs::write(
            overlay.join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\n\
                 kind: Kustomization\n\
                 bases:\n  - {base}\n\
                 nameSuffix: {suffix}\n\
                 images:\n  - name: key-connector\n    newName: localhost/key-connector\n    newTag: {tag}\n\
                 patchesStrategicMerge:\n  - deployment.yaml\n  - configmap.yaml\n",
                base = relative_to(&overlay, &deploy_dir("overlays/postgresql")),
                suffix = self.suffix,
            ),
        )
        .unwrap();
        // Settings in the ConfigMap, as an operator's overlay changes them (podman 4.3 lets
        // `envFrom` win over `env`, where Kubernetes does the opposite).
        std::fs::write(
            overlay.join("configmap.yaml"),
            format!(
                "apiVersion: v1\n\
                 kind: ConfigMap\n\
                 metadata:\n  name: key-connector\n\
                 data:\n\
                 \x20 ASPNETCORE_URLS: http://127.0.0.1:{port}\n\
                 \x20 KEY_CONNECTOR_METRICS_URLS: http://127.0.0.1:{metrics}\n\
                 \x20 keyConnectorSettings__identityServerUri: {idp_url}\n",
                port = self.port,
                metrics = self.metrics_port,
            ),
        )
        .unwrap();
        std::fs::write(
            overlay.join("deployment.yaml"),
            format!(
                "apiVersion: apps/v1\n\
                 kind: Deployment\n\
                 metadata:\n  name: key-connector\n\
                 spec:\n  replicas: 1\n  template:\n    spec:\n      hostNetwork: true\n\
                 \x20     containers:\n        - name: key-connector\n          ports: null\n          env:\n\
                 {secret_refs}\
                 \x20     volumes:\n        - name: rsa-key\n          secret: null\n\
                 \x20         hostPath:\n            path: {pfx_dir}\n            type: Directory\n",
                pfx_dir = dir.join("pfx").display(),
                secret_refs = SECRET_REFS
                    .iter()
                    .map(|(variable, key)| format!(
                        "            - name: {variable}\n              valueFrom:\n                secretKeyRef:\n                  name: {secret}\n                  key: {key}\n"
                    ))
                    .collect::<String>(),
            ),
        )
        .unwrap();
        let yaml = kustomize(&overlay).expect("kubectl renders");
        let rendered = overlay.join("rendered.yaml");
        std::fs::write(&rendered, yaml).unwrap();
        rendered
    }

    fn logs(&self) -> String {
        text(&podman(&["logs", &format!("{}-key-connector", self.pod())]))
    }

    async fn wait_until_alive(&self, client: &reqwest::Client) {
        let started = Instant::now();
        loop {
            if client
                .get(format!("{}/alive", self.base_url()))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
            {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "pod {} did not come up: {}",
                self.pod(),
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `target` as a path relative to `from` (kustomize refuses absolute bases).
fn relative_to(from: &Path, target: &Path) -> String {
    let from = from.canonicalize().unwrap();
    let target = target.canonicalize().unwrap();
    let ups = from.components().count() - 1;
    let down = target.strip_prefix("/").unwrap();
    format!("{}{}", "../".repeat(ups), down.display())
}

/// Everything the test made in podman, removed when dropped.
struct Cluster {
    rendered: Vec<PathBuf>,
    secrets: Vec<String>,
    tags: Vec<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for file in &self.rendered {
            let _ = podman(&["kube", "down", &file.display().to_string()]);
        }
        for secret in &self.secrets {
            let _ = podman(&["secret", "rm", secret]);
        }
        for tag in &self.tags {
            let _ = podman(&["rmi", tag]);
        }
    }
}

fn play(file: &Path, replace: bool) {
    let file = file.display().to_string();
    let mut args = vec!["kube", "play"];
    if replace {
        args.push("--replace");
    }
    args.push(&file);
    podman_ok(&args);
}

/// The secret as podman 4.3's `kube play` reads a `secretKeyRef`: a JSON object of base64
/// values, named as the Kubernetes Secret.
fn create_podman_secret(name: &str, dir: &Path, values: &[(&str, &str)]) {
    use base64::Engine;
    let object: serde_json::Map<String, serde_json::Value> = values
        .iter()
        .map(|(key, value)| {
            (
                (*key).to_owned(),
                base64::engine::general_purpose::STANDARD
                    .encode(value)
                    .into(),
            )
        })
        .collect();
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::Value::Object(object).to_string()).unwrap();
    let _ = podman(&["secret", "rm", name]);
    podman_ok(&["secret", "create", name, &file.display().to_string()]);
}

/// Writes keys for new users through the pods in turn until `stop`; returns every write
/// a pod acknowledged (200), with the token that reads it.
async fn write_until_stopped(
    client: reqwest::Client,
    urls: Vec<String>,
    idp: Arc<TestIdp>,
    stop: Arc<AtomicBool>,
) -> Vec<(String, String)> {
    let mut acknowledged = Vec::new();
    let mut turn = 0;
    while !stop.load(Ordering::SeqCst) {
        let token = idp.token_for(Uuid::new_v4());
        let key = random_key();
        let url = &urls[turn % urls.len()];
        turn += 1;
        if let Ok(response) = client
            .put(format!("{url}/user-keys"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "key": key }))
            .send()
            .await
            && response.status() == StatusCode::OK
        {
            acknowledged.push((token, key));
        }
    }
    acknowledged
}

async fn pods_from_the_manifests_share_one_key_lose_no_write_to_a_kill_and_keep_serving_through_a_rolling_replacement()
 {
    let image = match image() {
        Ok(image) => image,
        Err(reason) => skip_or_fail!("{reason}"),
    };
    if let Err(reason) = kustomize(&deploy_dir("")) {
        skip_or_fail!("{reason}");
    }
    let database = match TestDatabase::reserve(Engine::PostgreSql).await {
        Ok(database) => database,
        Err(reason) => skip_or_fail!("{reason}"),
    };
    let idp = Arc::new(TestIdp::start().await);
    let dir = tempfile::tempdir().unwrap();
    // The pods run as the manifests' non-root user: the PFX must be readable to it.
    let pfx_dir = dir.path().join("pfx");
    std::fs::create_dir(&pfx_dir).unwrap();
    let pfx = key_connector::pkcs12::generate_self_signed_pfx(
        2048,
        "kubernetes test",
        Some(PFX_PASSWORD),
    )
    .unwrap();
    std::fs::write(pfx_dir.join("key.pfx"), pfx).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for (path, mode) in [(dir.path(), 0o755), (&pfx_dir, 0o755)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::set_permissions(
        pfx_dir.join("key.pfx"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let run = &Uuid::new_v4().simple().to_string()[..8];
    let replicas = [
        Replica {
            suffix: format!("-a-{run}"),
            port: free_port(),
            metrics_port: free_port(),
        },
        Replica {
            suffix: format!("-b-{run}"),
            port: free_port(),
            metrics_port: free_port(),
        },
    ];
    let tag = image.rsplit(':').next().unwrap();
    let mut cluster = Cluster {
        rendered: Vec::new(),
        secrets: Vec::new(),
        tags: Vec::new(),
    };
    // The Secret the manifests name, under a name of this test's own (podman's secrets are
    // the machine's): the patch points every secretKeyRef at it.
    let secret = format!("key-connector-test-{}", Uuid::new_v4().simple());
    create_podman_secret(
        &secret,
        dir.path(),
        &[
            ("pfx-password", PFX_PASSWORD),
            ("database-connection-string", &database.connection_string()),
        ],
    );
    cluster.secrets.push(secret.clone());
    for replica in &replicas {
        cluster
            .rendered
            .push(replica.render(dir.path(), &idp.url, &secret, tag));
    }
    // Both pods start at once on the empty database.
    let started = Instant::now();
    std::thread::scope(|scope| {
        for file in &cluster.rendered {
            scope.spawn(|| play(file, false));
        }
    });
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    for replica in &replicas {
        replica.wait_until_alive(&client).await;
    }
    eprintln!("two pods serving in {:.1?}", started.elapsed());

    // As the manifests say: non-root, read-only root, no capabilities.
    for replica in &replicas {
        let container = format!("{}-key-connector", replica.pod());
        let said = podman_ok(&[
            "inspect",
            "--format",
            "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.NetworkMode}}",
            &container,
        ]);
        assert_eq!(said.trim(), "10001:10001 true host", "{container}");
        let pid = podman_ok(&["inspect", "--format", "{{.State.Pid}}", &container]);
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
        assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        assert!(status.contains("Seccomp:\t2"), "a seccomp filter: {status}");
        let environ = std::fs::read(format!("/proc/{}/environ", pid.trim())).unwrap();
        assert!(
            environ
                .split(|b| *b == 0)
                .any(|entry| entry == b"HOME=/home/bitwarden"),
            "the image user's home for an id the image does not know"
        );
        // Prometheus scrapes each pod's metrics port.
        let metrics = client
            .get(format!("http://127.0.0.1:{}/metrics", replica.metrics_port))
            .send()
            .await
            .unwrap();
        assert_eq!(metrics.status(), StatusCode::OK);
        let metrics = metrics.text().await.unwrap();
        assert!(metrics.contains("key_connector_"), "{metrics}");
    }

    // One symmetric key, and every key served by every pod.
    let symmetric_keys = database
        .column(r#"SELECT "SymmetricKey" FROM "ApplicationDatas""#)
        .await;
    assert_eq!(symmetric_keys.len(), 1, "exactly one symmetric key");
    for writer in &replicas {
        let token = idp.token_for(Uuid::new_v4());
        let key = random_key();
        let status = client
            .post(format!("{}/user-keys", writer.base_url()))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "key": key }))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK);
        for reader in &replicas {
            assert_eq!(
                read_key(&client, &reader.base_url(), &token).await,
                Ok(key.clone())
            );
        }
    }

    // A pod killed under traffic loses no acknowledged write.
    let urls: Vec<String> = replicas.iter().map(Replica::base_url).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_until_stopped(
        client.clone(),
        urls.clone(),
        Arc::clone(&idp),
        Arc::clone(&stop),
    ));
    let before_kill = wait_for_rows(&database, 20).await;
    podman_ok(&["pod", "kill", "--signal=KILL", &replicas[0].pod()]);
    // Writes go on through the other pod.
    wait_for_rows(&database, before_kill + 20).await;
    stop.store(true, Ordering::SeqCst);
    let acknowledged = writer.await.unwrap();
    podman_ok(&["pod", "start", &replicas[0].pod()]);
    replicas[0].wait_until_alive(&client).await;
    for (token, key) in &acknowledged {
        for replica in &replicas {
            assert_eq!(
                read_key(&client, &replica.base_url(), token).await.as_ref(),
                Ok(key),
                "an acknowledged write read from {}",
                replica.pod()
            );
        }
    }
    eprintln!(
        "{} writes acknowledged around the kill, all readable on both pods",
        acknowledged.len()
    );

    // A rolling replacement by a new image, one pod at a time, keeps serving: a client that
    // tries the pods in turn (as a Service would route) is always answered.
    let next_tag = format!("k8s-next-{}", Uuid::new_v4().simple());
    let next_image = format!("localhost/key-connector:{next_tag}");
    podman_ok(&["tag", image, &next_image]);
    cluster.tags.push(next_image.clone());
    let (token, key) = (idp.token_for(Uuid::new_v4()), random_key());
    let status = client
        .put(format!("{}/user-keys", urls[1]))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "key": key }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::OK);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let (client, urls, stop, token, key) = (
            client.clone(),
            urls.clone(),
            Arc::clone(&stop),
            token.clone(),
            key.clone(),
        );
        async move {
            let (mut reads, mut unanswered) = (0, 0);
            while !stop.load(Ordering::SeqCst) {
                let mut answered = false;
                for url in &urls {
                    if key_read(&client, url, &token).await.as_ref() == Some(&key) {
                        answered = true;
                        break;
                    }
                }
                reads += 1;
                if !answered {
                    unanswered += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (reads, unanswered)
        }
    });
    for (replica, file) in replicas.iter().zip(&cluster.rendered) {
        let next = replica.render(dir.path(), &idp.url, &secret, &next_tag);
        assert_eq!(&next, file, "rendered in place");
        play(&next, true);
        replica.wait_until_alive(&client).await;
        let running = podman_ok(&[
            "inspect",
            "--format",
            "{{.ImageName}}",
            &format!("{}-key-connector", replica.pod()),
        ]);
        assert_eq!(running.trim(), next_image);
    }
    stop.store(true, Ordering::SeqCst);
    let (reads, unanswered) = reader.await.unwrap();
    assert!(reads > 10, "the reader kept reading: {reads}");
    assert_eq!(
        unanswered, 0,
        "{unanswered} of {reads} reads went unanswered"
    );
    eprintln!("rolling replacement: {reads} reads, all answered");
    drop(cluster);
    drop(database);
}

/// The key of `token`'s user as the pod at `url` answers it, or `None` for any other answer
/// or a transport error (a pod going away closes its kept-alive connections: a proxy or a
/// client retries such a GET on another pod, as the reader here does).
async fn key_read(client: &reqwest::Client, url: &str, token: &str) -> Option<String> {
    let response = client
        .get(format!("{url}/user-keys"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    if response.status() != StatusCode::OK {
        return None;
    }
    let body: serde_json::Value = response.json().await.ok()?;
    body["key"].as_str().map(str::to_owned)
}

/// Waits until the test database holds at least `rows` user keys; returns how many.
async fn wait_for_rows(database: &TestDatabase, rows: usize) -> usize {
    let started = Instant::now();
    loop {
        let count = database
            .column(r#"SELECT "Id"::text FROM "UserKeys""#)
            .await
            .len();
        if count >= rows {
            return count;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{count} of {rows} keys written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

crate::tests! {
    multi_thread(2): [
        pods_from_the_manifests_share_one_key_lose_no_write_to_a_kill_and_keep_serving_through_a_rolling_replacement,
    ],
    sync: [
        the_kustomize_base_and_its_overlays_render_every_required_object,
        the_key_rotation_jobs_run_the_admin_commands_as_the_pods_run,
    ],
}
