//! TLS for stand-ins of remote services (private CAs no system trusts), and OpenSSL for the
//! certificate files operators bring.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// A TLS server identity for stand-ins of remote services: a fresh private CA and a server
/// certificate it issued for `names`.
pub struct PrivateCaServer {
    pub config: Arc<rustls::ServerConfig>,
    pub ca_der: Vec<u8>,
    pub ca_pem: String,
    /// The server certificate and its private key (PKCS#8), as PEM, for a server that is
    /// not ours (a real Vault, say) to serve.
    pub leaf_pem: String,
    pub leaf_key_pem: String,
}

impl PrivateCaServer {
    pub fn for_names(names: &[&str]) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "private test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = rcgen::CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        Self {
            config: Arc::new(config),
            ca_der: ca.der().to_vec(),
            ca_pem: ca.pem(),
            leaf_pem: leaf.pem(),
            leaf_key_pem: leaf_key.serialize_pem(),
        }
    }
}

/// A stand-in served over HTTPS as `https://localhost:PORT`, under a private CA of its own
/// that no system trusts. Stops when dropped.
pub struct LocalTlsStandIn {
    pub url: String,
    pub ca_pem: String,
    stop: tokio_util::sync::CancellationToken,
}

/// Serves `router` over TLS with `config` until `stop`, as the service serves HTTPS.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    config: std::sync::Arc<rustls::ServerConfig>,
    router: axum::Router,
    stop: tokio_util::sync::CancellationToken,
) {
    use key_connector::connections::{self, ConnectionGate, ConnectionLimits};
    connections::serve(
        listener,
        Some(tokio_rustls::TlsAcceptor::from(config)),
        router,
        std::sync::Arc::new(ConnectionLimits::default()),
        ConnectionGate::new(1024, 1024),
        stop,
    )
    .await;
}

impl LocalTlsStandIn {
    pub async fn serve(router: axum::Router) -> Self {
        let server = PrivateCaServer::for_names(&["localhost"]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}",
            listener.local_addr().unwrap().port()
        );
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(serve_tls(listener, server.config, router, stop.clone()));
        Self {
            url,
            ca_pem: server.ca_pem,
            stop,
        }
    }
}

impl Drop for LocalTlsStandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `openssl pkcs12 -export` of the PEM files `key` and `cert` in `dir` into `out`, under
/// `password`, with `extra` arguments.
pub fn export_pfx(dir: &Path, key: &str, cert: &str, out: &str, password: &str, extra: &[&str]) {
    let passout = format!("pass:{password}");
    let mut args = vec![
        "pkcs12", "-export", "-inkey", key, "-in", cert, "-out", out, "-passout", &passout,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

pub fn openssl_available() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}
