//! The `gcpkms` RSA key provider: the symmetric key wrapped by an asymmetric-decryption key
//! version in Google Cloud KMS.
//!
//! Upstream encrypts locally with the key version's public key (`GetPublicKey`, RSA-OAEP with
//! SHA-256 and MGF1-SHA-256) and decrypts with `AsymmetricDecrypt`, storing base64 of the raw
//! RSA ciphertext. This provider does the same, so a database written by either side unwraps
//! on the other. The public key is fetched once at start-up and checked: the key version must
//! be an `RSA_DECRYPT_OAEP_*_SHA256` key, because any other algorithm could not decrypt what
//! upstream's SHA-256 padding wrote.
//!
//! The client is Google's official `google-cloud-kms-v1` crate over its REST transport, with
//! credentials found the Google way (Application Default Credentials, as upstream's .NET
//! client): `GOOGLE_APPLICATION_CREDENTIALS` (service-account key, workload identity
//! federation, impersonation), the gcloud user credentials, or the metadata server on Google
//! Cloud. `KEY_CONNECTOR_GCP_KMS_ENDPOINT` points it at another endpoint, such as a Private
//! Service Connect address.
//!
//! Every call is bounded (per-attempt timeout and a whole-operation limit) and retried on
//! transient failures; `AsymmetricDecrypt` is marked idempotent for that, which it is. Payload
//! integrity is checked with the CRC32C fields KMS offers for that purpose.
//!
//! Key material: the unwrapped key is copied into [`Zeroizing`] memory at once; the client's
//! own response buffers are outside this crate's control.

use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use base64::Engine;
use google_cloud_gax::error::Error as GaxError;
use google_cloud_gax::error::rpc::Code;
use google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder;
use google_cloud_gax::options::RequestOptionsBuilder;
use google_cloud_gax::retry_policy::{Aip194Strict, RetryPolicyExt};
use google_cloud_kms_v1::client::KeyManagementService;
use google_cloud_kms_v1::model::crypto_key_version::CryptoKeyVersionAlgorithm;
use zeroize::Zeroizing;

use super::GcpKmsSettings;
use super::{RSA_KEY_GOOGLE_CLOUD_KEY_VERSION_ID, RSA_KEY_GOOGLE_CLOUD_PROJECT_ID};
use crate::config::SettingsGroup;
use crate::keys::remote::error_chain;
use crate::keys::{KeyProviderError, RsaKeyProvider};

/// Names another KMS endpoint (e.g. `https://cloudkms-xyz.p.googleapis.com`).
pub use super::GCP_KMS_ENDPOINT_VAR as ENDPOINT_VAR;

/// Bound for one attempt, so that a hung attempt leaves time for a retry.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound for one operation, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_ATTEMPTS: u32 = 3;
/// Bound for a whole call, token request and client set-up included (the SDK's time limit
/// covers only its retries of the RPC itself).
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `call` under [`CALL_TIMEOUT`]; running out of time is an outage.
async fn bounded<T>(
    what: &str,
    call: impl Future<Output = Result<T, KeyProviderError>>,
) -> Result<T, KeyProviderError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| {
            Err(KeyProviderError::unavailable(format!(
                "Google Cloud did not answer {what} within {} s",
                CALL_TIMEOUT.as_secs()
            )))
        })
}

/// The key version's settings as messages name them: the first in full, the others by
/// their last part.
fn key_settings(group: SettingsGroup) -> String {
    format!(
        "{}, __googleCloudLocationId, \
         __googleCloudKeyringId, __googleCloudKeyId and __googleCloudKeyVersionId",
        RSA_KEY_GOOGLE_CLOUD_PROJECT_ID.in_group(group)
    )
}
const CREDENTIALS_HINT: &str = "Google Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS naming a \
     service-account key or workload-identity configuration, or the service account of the Google Cloud host";

/// CRC32C (Castagnoli), the checksum KMS uses for its integrity fields.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

fn crc32c(bytes: &[u8]) -> i64 {
    i64::from(CRC32C.checksum(bytes))
}

/// Where and as whom to reach KMS. The default is what [`GcpKmsKeyProvider::open`] uses:
/// `KEY_CONNECTOR_GCP_KMS_ENDPOINT` or Google's endpoint, and Application Default Credentials.
#[derive(Default)]
pub struct GcpKmsConnection {
    pub endpoint: Option<String>,
    pub credentials: Option<google_cloud_auth::credentials::Credentials>,
}

impl GcpKmsConnection {
    /// The connection the settings describe: their endpoint, if any, and Application
    /// Default Credentials.
    pub fn of(settings: &GcpKmsSettings) -> Self {
        Self {
            endpoint: settings.endpoint.clone(),
            credentials: None,
        }
    }
}

/// A KMS key version: its public key for wrapping, a client for unwrapping.
pub struct GcpKmsKeyProvider {
    client: KeyManagementService,
    key_version: String,
    public_key: OaepPublicEncryptingKey,
    description: String,
    /// The settings group the key was configured in, which messages name.
    group: SettingsGroup,
}

impl GcpKmsKeyProvider {
    /// Connects with Application Default Credentials and loads the key version's public key.
    /// Messages name the settings of `group`, where the key was configured.
    pub async fn open(
        settings: &GcpKmsSettings,
        group: SettingsGroup,
    ) -> Result<Self, KeyProviderError> {
        Self::open_with(settings, group, GcpKmsConnection::of(settings)).await
    }

    /// Like [`GcpKmsKeyProvider::open`], reaching KMS as `connection` says.
    pub async fn open_with(
        settings: &GcpKmsSettings,
        group: SettingsGroup,
        connection: GcpKmsConnection,
    ) -> Result<Self, KeyProviderError> {
        let key_version = settings.key_version_name();
        let mut builder = KeyManagementService::builder()
            .with_retry_policy(
                Aip194Strict
                    .with_attempt_limit(MAX_ATTEMPTS)
                    .with_time_limit(OPERATION_TIMEOUT),
            )
            .with_backoff_policy(
                ExponentialBackoffBuilder::new()
                    .with_initial_delay(Duration::from_millis(200))
                    .with_maximum_delay(Duration::from_secs(2))
                    .build()
                    .map_err(|e| {
                        KeyProviderError::config(format!("retry backoff: {e}")).caused_by(e)
                    })?,
            );
        let at = match &connection.endpoint {
            Some(endpoint) => {
                builder = builder.with_endpoint(endpoint.clone());
                format!(" at {endpoint}")
            }
            None => String::new(),
        };
        if let Some(credentials) = connection.credentials {
            builder = builder.with_credentials(credentials);
        }
        let client = bounded("while setting up the client", async {
            builder.build().await.map_err(|e| {
                KeyProviderError::config(format!(
                    "cannot set up the Google Cloud KMS client: {}; credentials come from the {CREDENTIALS_HINT}",
                    error_chain(&e)
                ))
                .caused_by(e)
            })
        })
        .await?;
        let public_key = fetch_public_key(&client, &key_version, group).await?;
        Ok(Self {
            client,
            description: format!(
                "Google Cloud KMS key version {key_version}{at} (RSA-OAEP SHA-256)"
            ),
            key_version,
            public_key,
            group,
        })
    }
}

/// `GetPublicKey`, checked for integrity and for an algorithm that fits upstream's padding.
async fn fetch_public_key(
    client: &KeyManagementService,
    key_version: &str,
    group: SettingsGroup,
) -> Result<OaepPublicEncryptingKey, KeyProviderError> {
    let response = bounded("GetPublicKey", async {
        client
            .get_public_key()
            .set_name(key_version)
            .with_attempt_timeout(ATTEMPT_TIMEOUT)
            .send()
            .await
            .map_err(|e| classify(Operation::PublicKey, &e, key_version, group))
    })
    .await?;
    if let Some(expected) = response.pem_crc32c
        && crc32c(response.pem.as_bytes()) != expected
    {
        return Err(KeyProviderError::unavailable(
            "Google Cloud KMS returned a public key whose CRC32C does not match; it was damaged in transit",
        ));
    }
    let fits = matches!(
        response.algorithm,
        CryptoKeyVersionAlgorithm::RsaDecryptOaep2048Sha256
            | CryptoKeyVersionAlgorithm::RsaDecryptOaep3072Sha256
            | CryptoKeyVersionAlgorithm::RsaDecryptOaep4096Sha256
    );
    if !fits {
        return Err(KeyProviderError::config(format!(
            "Google Cloud KMS key version {key_version} has algorithm {}, but the symmetric key is wrapped with RSA-OAEP SHA-256 \
             (as upstream does); create the key with purpose ASYMMETRIC_DECRYPT and an RSA_DECRYPT_OAEP_*_SHA256 algorithm",
            response.algorithm.name().unwrap_or("UNKNOWN")
        )));
    }
    let der = spki_from_pem(&response.pem).ok_or_else(|| {
        KeyProviderError::unavailable(
            "Google Cloud KMS returned a public key that is not a PEM SubjectPublicKeyInfo",
        )
    })?;
    let key = PublicEncryptingKey::from_der(&der).map_err(|e| {
        KeyProviderError::config(format!(
            "the public key of Google Cloud KMS key version {key_version} is not a usable RSA key ({e}; {})",
            crate::keys::RSA_KEY_SIZES
        ))
        .caused_by(e)
    })?;
    OaepPublicEncryptingKey::new(key).map_err(|e| {
        KeyProviderError::config(format!(
            "the public key of Google Cloud KMS key version {key_version} cannot do RSA-OAEP: {e}"
        ))
        .caused_by(e)
    })
}

/// The DER inside a `-----BEGIN PUBLIC KEY-----` block.
fn spki_from_pem(pem: &str) -> Option<Vec<u8>> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PUBLIC KEY-----")?
        .trim_end()
        .strip_suffix("-----END PUBLIC KEY-----")?;
    let base64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(base64)
        .ok()
}

#[async_trait]
impl RsaKeyProvider for GcpKmsKeyProvider {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn wrap_symmetric_key(&self, key: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
        crate::keys::oaep_encrypt(&self.public_key, &OAEP_SHA256_MGF1SHA256, key)
    }

    async fn unwrap_symmetric_key(
        &self,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        let response = bounded("AsymmetricDecrypt", async {
            self.client
                .asymmetric_decrypt()
                .set_name(&self.key_version)
                .set_ciphertext(wrapped.to_vec())
                .set_ciphertext_crc32c(crc32c(wrapped))
                .with_idempotency(true)
                .with_attempt_timeout(ATTEMPT_TIMEOUT)
                .send()
                .await
                .map_err(|e| classify(Operation::Decrypt, &e, &self.key_version, self.group))
        })
        .await?;
        let plaintext = Zeroizing::new(response.plaintext.to_vec());
        // `bytes::Bytes` cannot be wiped in place; it is dropped here, the copy above is
        // wiped when the caller drops it.
        drop(response.plaintext);
        if !response.verified_ciphertext_crc32c {
            return Err(KeyProviderError::unavailable(
                "Google Cloud KMS did not confirm the ciphertext's CRC32C; the request may have been damaged in transit",
            ));
        }
        if response
            .plaintext_crc32c
            .is_some_and(|expected| expected != crc32c(&plaintext))
        {
            return Err(KeyProviderError::unavailable(
                "the plaintext from Google Cloud KMS does not match its CRC32C; it was damaged in transit",
            ));
        }
        Ok(plaintext)
    }

    /// `GetPublicKey`, as upstream's health check calls it: proves credentials, permission and
    /// that the key version is still enabled.
    async fn check_health(&self) -> Result<(), KeyProviderError> {
        fetch_public_key(&self.client, &self.key_version, self.group)
            .await
            .map(drop)
    }
}

/// Which call failed, to word the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    PublicKey,
    Decrypt,
}

/// Sorts a KMS failure into what an operator must fix, what may pass, and a stored key this
/// key version cannot decrypt.
fn classify(
    operation: Operation,
    error: &GaxError,
    key_version: &str,
    group: SettingsGroup,
) -> KeyProviderError {
    let key_settings = key_settings(group);
    let detail = error_chain(error);
    if let Some(reason) = crate::keys::remote::untrusted_certificate(error) {
        return KeyProviderError::config(format!(
            "Google Cloud presented a TLS certificate this host does not trust ({reason}); {}",
            crate::keys::remote::TRUST_HINT
        ));
    }
    if error.is_authentication() {
        let transient = std::error::Error::source(error)
            .and_then(|s| s.downcast_ref::<google_cloud_gax::error::CredentialsError>())
            .is_some_and(|c| c.is_transient());
        // Without a credentials file, Google's discovery falls back to the metadata server;
        // when its name does not resolve, this host is not on Google Cloud and waiting will
        // not change that (upstream's .NET client refuses to start in the same case).
        let no_metadata_server =
            detail.contains("metadata.google.internal") && detail.contains("dns error");
        return if transient && !no_metadata_server {
            KeyProviderError::unavailable(format!("no Google Cloud access token yet: {detail}"))
        } else {
            KeyProviderError::config(format!(
                "Google Cloud credentials are not usable: {detail}; they come from the {CREDENTIALS_HINT}"
            ))
        };
    }
    let Some(status) = error.status() else {
        // An HTTP answer that is not Google's error body: a proxy, or not Cloud KMS at all
        // (a wrong KEY_CONNECTOR_GCP_KMS_ENDPOINT). A refusal will not pass by waiting.
        return match error.http_status_code() {
            Some(code) if (400..500).contains(&code) && code != 408 && code != 429 => {
                KeyProviderError::config(format!(
                    "the Cloud KMS endpoint answered HTTP {code} without a Google error ({detail}); \
                     check {ENDPOINT_VAR} (when set) and any HTTPS proxy in between"
                ))
            }
            _ => {
                KeyProviderError::unavailable(format!("Google Cloud KMS did not answer: {detail}"))
            }
        };
    };
    let said = format!("{:?}: {}", status.code, status.message);
    match status.code {
        Code::InvalidArgument if operation == Operation::Decrypt => {
            KeyProviderError::unwrap_failed(format!(
                "Google Cloud KMS key version {key_version} cannot decrypt the stored symmetric key ({said}): \
                 it was wrapped by another key or key version; check {key_settings}"
            ))
        }
        Code::NotFound => KeyProviderError::config(format!(
            "Google Cloud KMS key version {key_version} does not exist ({said}); check {key_settings}"
        )),
        Code::PermissionDenied => KeyProviderError::config(format!(
            "Google Cloud KMS denied access to {key_version} ({said}); grant the credentials' principal \
             roles/cloudkms.cryptoKeyDecrypter and roles/cloudkms.publicKeyViewer on the key"
        )),
        Code::Unauthenticated => KeyProviderError::config(format!(
            "Google Cloud KMS rejected the credentials ({said}); they come from the {CREDENTIALS_HINT}"
        )),
        Code::FailedPrecondition => KeyProviderError::config(format!(
            "Google Cloud KMS key version {key_version} cannot be used in its current state ({said}); \
             enable it or name another version in {}",
            RSA_KEY_GOOGLE_CLOUD_KEY_VERSION_ID.in_group(group)
        )),
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Internal
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Unknown => KeyProviderError::unavailable(format!("Google Cloud KMS: {said}")),
        _ => KeyProviderError::config(format!(
            "Google Cloud KMS refused the request for {key_version} ({said}); check {key_settings}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli() {
        // RFC 3720's check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn pem_public_keys_decode_and_other_blocks_do_not() {
        let pem = "-----BEGIN PUBLIC KEY-----\nAAEC\nAw==\n-----END PUBLIC KEY-----\n";
        assert_eq!(spki_from_pem(pem), Some(vec![0, 1, 2, 3]));
        assert_eq!(
            spki_from_pem("-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----"),
            None
        );
    }
}
