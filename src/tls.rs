//! HTTPS listeners, configured the way ASP.NET operators configure Kestrel.
//!
//! An `https://` entry in `ASPNETCORE_URLS` is served with Kestrel's default certificate:
//! `Kestrel__Certificates__Default__Path` (a PKCS#12 `.pfx`, or a PEM certificate chain),
//! `Kestrel__Certificates__Default__Password` (the PFX's password) and
//! `Kestrel__Certificates__Default__KeyPath` (the PEM private key, with a PEM chain).
//! Names are case-insensitive; the `ASPNETCORE_` prefixed forms are read too. TLS is rustls
//! on aws-lc-rs, TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN.
//!
//! Serving is `crate::connections`, the same for TLS and plain listeners.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use secrecy::{ExposeSecret, SecretString};

const PATH: &str = "Kestrel__Certificates__Default__Path";
const PASSWORD: &str = "Kestrel__Certificates__Default__Password";
const KEY_PATH: &str = "Kestrel__Certificates__Default__KeyPath";

/// Kestrel's default certificate settings.
#[derive(Debug, Clone)]
pub struct HttpsCertificateSettings {
    pub path: PathBuf,
    pub password: Option<SecretString>,
    pub key_path: Option<PathBuf>,
}

impl HttpsCertificateSettings {
    /// Reads the `Kestrel__Certificates__Default__*` variables from `vars`; `None` without a path.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Option<Self> {
        let mut path = None;
        let mut password = None;
        let mut key_path = None;
        for (name, value) in vars {
            let name = name.to_ascii_lowercase();
            let name = name.strip_prefix("aspnetcore_").unwrap_or(&name);
            if value.is_empty() {
                continue;
            }
            if name == PATH.to_ascii_lowercase() {
                path = Some(PathBuf::from(value));
            } else if name == PASSWORD.to_ascii_lowercase() {
                password = Some(SecretString::from(value));
            } else if name == KEY_PATH.to_ascii_lowercase() {
                key_path = Some(PathBuf::from(value));
            }
        }
        path.map(|path| Self {
            path,
            password,
            key_path,
        })
    }

    /// Loads the certificate and key into a rustls server configuration.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, String> {
        let (chain, key) = match &self.key_path {
            Some(key_path) => {
                let chain = CertificateDer::pem_file_iter(&self.path)
                    .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| {
                        format!(
                            "{PATH}: cannot read PEM certificates from {}: {e}",
                            self.path.display()
                        )
                    })?;
                let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
                    format!(
                        "{KEY_PATH}: cannot read a PEM private key from {}: {e}",
                        key_path.display()
                    )
                })?;
                (chain, key)
            }
            None => {
                let bytes = std::fs::read(&self.path)
                    .map_err(|e| format!("{PATH}: cannot read {}: {e}", self.path.display()))?;
                let password = self.password.as_ref().map(|p| p.expose_secret());
                let identity = crate::pkcs12::tls_identity(&bytes, password)
                    .map_err(|e| format!("{PATH} ({}): {e}", self.path.display()))?;
                let chain = identity
                    .chain
                    .into_iter()
                    .map(CertificateDer::from)
                    .collect();
                let key =
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key_pkcs8.to_vec()));
                (chain, key)
            }
        };
        if chain.is_empty() {
            return Err(format!(
                "{PATH}: {} holds no certificate",
                self.path.display()
            ));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| format!("{PATH}: the certificate and key do not work together: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kestrel_variables_are_read_case_insensitively_with_or_without_prefix() {
        let vars = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        assert!(HttpsCertificateSettings::from_vars(vars(&[("PATH", "/usr/bin")])).is_none());
        let settings = HttpsCertificateSettings::from_vars(vars(&[
            (
                "KESTREL__CERTIFICATES__DEFAULT__PATH",
                "/etc/bitwarden/kc.pfx",
            ),
            ("ASPNETCORE_Kestrel__Certificates__Default__Password", "pw"),
        ]))
        .unwrap();
        assert_eq!(settings.path, PathBuf::from("/etc/bitwarden/kc.pfx"));
        assert_eq!(settings.password.unwrap().expose_secret(), "pw");
        assert!(settings.key_path.is_none());
        assert!(
            !format!(
                "{:?}",
                HttpsCertificateSettings::from_vars(vars(&[(PATH, "/a"), (PASSWORD, "hunter2")]))
            )
            .contains("hunter2")
        );
    }
}
