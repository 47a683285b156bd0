//! The `awskms` RSA key provider: the symmetric key wrapped by a key in AWS KMS.
//!
//! Upstream calls KMS `Encrypt` to wrap and `Decrypt` (passing the same `KeyId`) to unwrap,
//! with `RSAES_OAEP_SHA_256` for an asymmetric RSA key or `SYMMETRIC_DEFAULT` when
//! `awsUseSymmetricEncryption` is true, and stores base64 of the raw `CiphertextBlob`
//! (the encoding is done by the symmetric-key bootstrap). This provider sends exactly
//! those requests, so a database written by either side unwraps on the other.
//!
//! The client is the official AWS SDK, configured the SDK's way: with `awsAccessKeyId` and
//! `awsAccessKeySecret` both empty it uses the default credential chain (environment,
//! profile, web identity, ECS, IMDS), and it honours `AWS_ENDPOINT_URL` /
//! `AWS_ENDPOINT_URL_KMS` so that KMS-compatible services can be used. Every call is
//! bounded (connect, per-attempt and whole-operation timeouts) and retried by the SDK's
//! standard retry policy. Failures are sorted into what an operator must fix
//! ([`KeyProviderError::Config`]), what may pass ([`KeyProviderError::Unavailable`]) and a
//! stored key this KMS key cannot decrypt ([`KeyProviderError::UnwrapFailed`]).
//!
//! Key material: the unwrapped key is moved into [`Zeroizing`] as soon as the SDK hands it
//! over; the SDK's own request and response buffers are outside this crate's control.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kms::Client;
use aws_sdk_kms::config::{Credentials, Region};
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{EncryptionAlgorithmSpec, KeySpec, KeyState, KeyUsageType};
use secrecy::ExposeSecret;
use zeroize::Zeroizing;

use super::AwsKmsSettings;
use super::{
    RSA_KEY_AWS_ACCESS_KEY_ID, RSA_KEY_AWS_ACCESS_KEY_SECRET, RSA_KEY_AWS_KEY_ID,
    RSA_KEY_AWS_REGION, RSA_KEY_AWS_USE_SYMMETRIC_ENCRYPTION,
};
use crate::config::setting_path::SECTION;
use crate::config::{SettingPath, SettingsGroup};
use crate::keys::remote::{TRUST_HINT, error_chain};
use crate::keys::{KeyProviderError, RsaKeyProvider};

/// Whole-operation bound for one KMS call, retries included.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound for one attempt, so a hung attempt leaves time for a retry.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The SDK's standard retry mode: first try plus two retries with jittered backoff.
const MAX_ATTEMPTS: u32 = 3;

/// The algorithm upstream uses for an asymmetric (RSA) KMS key.
pub const RSA_ALGORITHM: EncryptionAlgorithmSpec = EncryptionAlgorithmSpec::RsaesOaepSha256;
/// The algorithm upstream uses with `awsUseSymmetricEncryption`.
pub const SYMMETRIC_ALGORITHM: EncryptionAlgorithmSpec = EncryptionAlgorithmSpec::SymmetricDefault;

/// The settings this provider's messages name, in the group it was configured in.
struct AwsSettingNames {
    /// `awsKeyId`, both spellings.
    key_id: String,
    /// `awsRegion`, both spellings.
    region: String,
    /// The access key settings, and what leaving them empty means.
    credentials: String,
    /// `awsUseSymmetricEncryption`.
    mode: SettingPath,
}

impl AwsSettingNames {
    fn in_group(group: SettingsGroup) -> Self {
        Self {
            key_id: RSA_KEY_AWS_KEY_ID.in_group(group).both_spellings(),
            region: RSA_KEY_AWS_REGION.in_group(group).both_spellings(),
            credentials: format!(
                "{} and {} \
                 (when both are empty: the AWS default credential chain, e.g. AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity or the instance role)",
                RSA_KEY_AWS_ACCESS_KEY_ID.in_group(group),
                RSA_KEY_AWS_ACCESS_KEY_SECRET.in_group(group)
            ),
            mode: RSA_KEY_AWS_USE_SYMMETRIC_ENCRYPTION.in_group(group),
        }
    }
}

/// Which kind of KMS key, chosen by `awsUseSymmetricEncryption`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KmsKeyMode {
    /// An RSA key pair with usage `ENCRYPT_DECRYPT`: `RSAES_OAEP_SHA_256`.
    Rsa,
    /// A symmetric key (`SYMMETRIC_DEFAULT` spec): `SYMMETRIC_DEFAULT`.
    Symmetric,
}

impl KmsKeyMode {
    fn from_settings(settings: &AwsKmsSettings) -> Self {
        if settings.use_symmetric_encryption {
            Self::Symmetric
        } else {
            Self::Rsa
        }
    }

    /// The `EncryptionAlgorithm` sent with both `Encrypt` and `Decrypt`.
    pub fn algorithm(self) -> EncryptionAlgorithmSpec {
        match self {
            Self::Rsa => RSA_ALGORITHM,
            Self::Symmetric => SYMMETRIC_ALGORITHM,
        }
    }
}

/// Which KMS call failed, to word the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Probe,
    Encrypt,
    Decrypt,
}

/// A KMS failure reduced to what decides its classification.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// KMS answered with an error.
    Service {
        code: String,
        message: String,
        status: u16,
    },
    /// No answer: connection refused, DNS, TLS, timeout.
    Unreachable(String),
    /// The request could not be made (no region, no credentials, bad input).
    Local(String),
    /// The endpoint's TLS certificate is not trusted here; waiting does not fix that.
    UntrustedCertificate(String),
}

impl<E, R> From<&SdkError<E, R>> for Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + HttpStatus + Send + Sync + 'static,
{
    fn from(error: &SdkError<E, R>) -> Self {
        let detail = error_chain(error);
        if let Some(reason) = crate::keys::remote::untrusted_certificate(error) {
            return Failure::UntrustedCertificate(reason);
        }
        if let Some(failure) = credential_failure(error, &detail) {
            return failure;
        }
        match error {
            SdkError::ServiceError(context) => Failure::Service {
                code: context.err().code().unwrap_or("Unknown").to_owned(),
                message: context.err().message().unwrap_or_default().to_owned(),
                status: context.raw().status_code(),
            },
            SdkError::TimeoutError(_) => Failure::Unreachable(detail),
            SdkError::DispatchFailure(failure) if failure.is_io() || failure.is_timeout() => {
                Failure::Unreachable(detail)
            }
            SdkError::ResponseError(_) => Failure::Unreachable(detail),
            _ if is_credential_trouble(&detail) => {
                // The default chain timing out (e.g. IMDS slow at boot) may pass.
                if detail.to_ascii_lowercase().contains("timed out") {
                    Failure::Unreachable(detail)
                } else {
                    Failure::Local(detail)
                }
            }
            SdkError::DispatchFailure(_) => Failure::Unreachable(detail),
            _ => Failure::Local(detail),
        }
    }
}

/// The HTTP status of a raw response, for errors without a known code.
trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_kms::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// A failure of the credential chain among `error`'s causes, sorted: a provider that timed
/// out or could not reach its endpoint (IMDS, the ECS agent, STS for web identity, all of
/// which may still be coming up at boot) may pass; no credentials anywhere, a bad profile or
/// a refused role will not.
fn credential_failure(error: &(dyn std::error::Error + 'static), detail: &str) -> Option<Failure> {
    use aws_credential_types::provider::error::CredentialsError;
    let failure =
        crate::keys::remote::causes(error).find_map(|e| e.downcast_ref::<CredentialsError>())?;
    let may_pass = match failure {
        CredentialsError::ProviderTimedOut(_) => true,
        // A connector error: the provider's request got no HTTP answer at all. (An I/O
        // error alone may be an unreadable token file, which waiting does not fix.)
        CredentialsError::ProviderError(_) => crate::keys::remote::causes(failure)
            .any(|e| e.is::<aws_sdk_kms::error::ConnectorError>()),
        _ => false,
    };
    Some(if may_pass {
        Failure::Unreachable(detail.to_owned())
    } else {
        Failure::Local(detail.to_owned())
    })
}

/// Whether the SDK could not resolve credentials (an operator problem, not an outage).
fn is_credential_trouble(detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    detail.contains("credential") || detail.contains("identity")
}

/// Sorts a KMS failure into the provider's error kinds, naming what to fix.
fn classify(
    operation: Operation,
    failure: Failure,
    key_id: &str,
    group: SettingsGroup,
) -> KeyProviderError {
    let AwsSettingNames {
        key_id: key_id_setting,
        region: region_setting,
        credentials: credential_settings,
        mode: mode_setting,
    } = AwsSettingNames::in_group(group);
    match failure {
        Failure::Unreachable(detail) => {
            KeyProviderError::unavailable(format!("AWS KMS did not answer: {detail}"))
        }
        Failure::UntrustedCertificate(reason) => KeyProviderError::config(format!(
            "the AWS KMS endpoint presented a certificate this host does not trust ({reason}); {TRUST_HINT}, \
             or check AWS_ENDPOINT_URL"
        )),
        Failure::Local(detail) => KeyProviderError::config(format!(
            "cannot call AWS KMS: {detail}; check the credentials ({credential_settings}) and the region ({region_setting})"
        )),
        Failure::Service {
            code,
            message,
            status,
        } => {
            let said = if message.is_empty() {
                code.clone()
            } else {
                format!("{code}: {message}")
            };
            match code.as_str() {
                "InvalidCiphertextException" | "IncorrectKeyException"
                    if operation == Operation::Decrypt =>
                {
                    KeyProviderError::unwrap_failed(format!(
                        "AWS KMS key `{key_id}` cannot decrypt the stored symmetric key ({said}): it was wrapped by another KMS key, \
                         or with the other mode of {mode_setting}"
                    ))
                }
                // For Decrypt, KMS also answers AccessDenied when the ciphertext names a
                // key these credentials cannot use, i.e. another key.
                "AccessDeniedException" if operation == Operation::Decrypt => {
                    KeyProviderError::unwrap_failed(format!(
                        "AWS KMS refused to decrypt the stored symmetric key with key `{key_id}` ({said}): either it was wrapped by \
                         another KMS key, or the credentials lack kms:Decrypt on {key_id_setting}"
                    ))
                }
                "NotFoundException" | "InvalidArnException" => KeyProviderError::config(format!(
                    "AWS KMS key `{key_id}` does not exist in this region ({said}); check {key_id_setting} and {region_setting}"
                )),
                "AccessDeniedException" => KeyProviderError::config(format!(
                    "AWS KMS denied access to key `{key_id}` ({said}); grant these credentials kms:Encrypt and kms:Decrypt, \
                     and kms:GetPublicKey for an RSA key, on {key_id_setting}, or check {credential_settings}"
                )),
                "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "IncompleteSignature"
                | "InvalidClientTokenId"
                | "MissingAuthenticationToken"
                | "ExpiredTokenException" => KeyProviderError::config(format!(
                    "AWS rejected the credentials ({said}); check {credential_settings}"
                )),
                "DisabledException" | "KMSInvalidStateException" => {
                    KeyProviderError::config(format!(
                        "AWS KMS key `{key_id}` cannot be used in its current state ({said}); enable it or check {key_id_setting}"
                    ))
                }
                "InvalidKeyUsageException" | "UnsupportedOperationException" => {
                    KeyProviderError::config(format!(
                        "AWS KMS key `{key_id}` does not fit the mode set by {mode_setting} ({said}): use an RSA key with usage \
                         ENCRYPT_DECRYPT when it is false, a SYMMETRIC_DEFAULT key when it is true"
                    ))
                }
                "ThrottlingException"
                | "KMSInternalException"
                | "DependencyTimeoutException"
                | "KeyUnavailableException"
                | "LimitExceededException" => {
                    KeyProviderError::unavailable(format!("AWS KMS: {said}"))
                }
                _ if status >= 500 || status == 429 => {
                    KeyProviderError::unavailable(format!("AWS KMS: {said} (HTTP {status})"))
                }
                _ => KeyProviderError::config(format!(
                    "AWS KMS refused the request for key `{key_id}` ({said}, HTTP {status}); check {key_id_setting} and {mode_setting}"
                )),
            }
        }
    }
}

/// A KMS key and a client for it.
pub struct AwsKmsKeyProvider {
    client: Client,
    key_id: String,
    mode: KmsKeyMode,
    description: String,
    /// Symmetric mode: the credentials may not `DescribeKey` (upstream never calls it), so
    /// the key is checked with `Encrypt` instead.
    describe_denied: std::sync::atomic::AtomicBool,
    /// The settings group the key was configured in, which messages name.
    group: SettingsGroup,
}

impl AwsKmsKeyProvider {
    /// Builds the client the SDK's way (environment, profile, `AWS_ENDPOINT_URL`) and checks
    /// that the key exists, is usable and fits the configured mode. Messages name the
    /// settings of `group`, where the key was configured.
    pub async fn open(
        settings: &AwsKmsSettings,
        group: SettingsGroup,
    ) -> Result<Self, KeyProviderError> {
        Self::open_reaching(settings, group, None).await
    }

    /// Like [`AwsKmsKeyProvider::open`], with the KMS endpoint given here instead of by
    /// `AWS_ENDPOINT_URL`.
    pub async fn open_with(
        settings: &AwsKmsSettings,
        group: SettingsGroup,
        endpoint_url: &str,
    ) -> Result<Self, KeyProviderError> {
        Self::open_reaching(settings, group, Some(endpoint_url)).await
    }

    async fn open_reaching(
        settings: &AwsKmsSettings,
        group: SettingsGroup,
        endpoint_url: Option<&str>,
    ) -> Result<Self, KeyProviderError> {
        let AwsSettingNames {
            region: region_setting,
            ..
        } = AwsSettingNames::in_group(group);
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                    .operation_timeout(OPERATION_TIMEOUT)
                    .build(),
            );
        if let Some(region) = &settings.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(credentials) = &settings.credentials {
            loader = loader.credentials_provider(Credentials::new(
                credentials.access_key_id.clone(),
                credentials.secret_access_key.expose_secret().to_owned(),
                None,
                None,
                SECTION,
            ));
        }
        if let Some(url) = endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let config = loader.load().await;
        let Some(region) = config.region().map(|r| r.to_string()) else {
            return Err(KeyProviderError::config(format!(
                "no AWS region: set {region_setting}, or AWS_REGION"
            )));
        };
        let endpoint = config
            .endpoint_url()
            .map(|url| format!(" at {url}"))
            .unwrap_or_default();
        let mode = KmsKeyMode::from_settings(settings);
        let provider = Self {
            client: Client::new(&config),
            key_id: settings.key_id.clone(),
            mode,
            description: format!(
                "AWS KMS key {} in {region}{endpoint} ({})",
                settings.key_id,
                mode.algorithm().as_str()
            ),
            describe_denied: std::sync::atomic::AtomicBool::new(false),
            group,
        };
        provider.probe().await?;
        Ok(provider)
    }

    /// Asks KMS about the key and checks it can wrap in the configured mode. RSA mode uses
    /// `GetPublicKey`, as upstream's health check does; symmetric mode uses `DescribeKey`.
    async fn probe(&self) -> Result<(), KeyProviderError> {
        let (spec, usage, algorithms, state) = match self.mode {
            KmsKeyMode::Rsa => {
                let output = self
                    .client
                    .get_public_key()
                    .key_id(&self.key_id)
                    .send()
                    .await
                    .map_err(|e| self.failed(Operation::Probe, e))?;
                if output.public_key().is_none_or(|k| k.as_ref().is_empty()) {
                    return Err(KeyProviderError::unavailable(
                        "AWS KMS returned no public key",
                    ));
                }
                (
                    output.key_spec,
                    output.key_usage,
                    output.encryption_algorithms.unwrap_or_default(),
                    None,
                )
            }
            KmsKeyMode::Symmetric => {
                use std::sync::atomic::Ordering;
                if self.describe_denied.load(Ordering::Relaxed) {
                    return self.encrypt_probe().await;
                }
                let output = match self.client.describe_key().key_id(&self.key_id).send().await {
                    Ok(output) => output,
                    Err(error) => {
                        let failure = Failure::from(&error);
                        if matches!(&failure, Failure::Service { code, .. } if code == "AccessDeniedException")
                        {
                            tracing::warn!(
                                key = %self.key_id,
                                "kms:DescribeKey is not granted (the official service never asks for it); \
                                 checking the key with kms:Encrypt instead"
                            );
                            self.describe_denied.store(true, Ordering::Relaxed);
                            return self.encrypt_probe().await;
                        }
                        return Err(
                            classify(Operation::Probe, failure, &self.key_id, self.group)
                                .caused_by(error),
                        );
                    }
                };
                let Some(metadata) = output.key_metadata else {
                    return Err(KeyProviderError::unavailable("AWS KMS described no key"));
                };
                (
                    metadata.key_spec,
                    metadata.key_usage,
                    metadata.encryption_algorithms.unwrap_or_default(),
                    metadata.key_state,
                )
            }
        };
        check_key_fits(
            self.mode,
            &self.key_id,
            spec.as_ref(),
            usage.as_ref(),
            &algorithms,
            state.as_ref(),
            self.group,
        )
    }

    /// Proves the key encrypts in the configured mode, for credentials that may not describe
    /// it: the least a policy that works with upstream must grant.
    async fn encrypt_probe(&self) -> Result<(), KeyProviderError> {
        self.wrap_symmetric_key(b"key-connector health check")
            .await
            .map(drop)
    }

    fn failed<E, R>(&self, operation: Operation, error: SdkError<E, R>) -> KeyProviderError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + HttpStatus + Send + Sync + 'static,
    {
        classify(operation, Failure::from(&error), &self.key_id, self.group).caused_by(error)
    }
}

/// Whether what KMS says about the key allows the configured mode's algorithm.
fn check_key_fits(
    mode: KmsKeyMode,
    key_id: &str,
    spec: Option<&KeySpec>,
    usage: Option<&KeyUsageType>,
    algorithms: &[EncryptionAlgorithmSpec],
    state: Option<&KeyState>,
    group: SettingsGroup,
) -> Result<(), KeyProviderError> {
    let AwsSettingNames {
        key_id: key_id_setting,
        mode: mode_setting,
        ..
    } = AwsSettingNames::in_group(group);
    if let Some(state) = state
        && *state != KeyState::Enabled
    {
        return Err(KeyProviderError::config(format!(
            "AWS KMS key `{key_id}` is {}, not Enabled; enable it or change {key_id_setting}",
            state.as_str()
        )));
    }
    if usage.is_some_and(|u| *u != KeyUsageType::EncryptDecrypt) {
        return Err(KeyProviderError::config(format!(
            "AWS KMS key `{key_id}` has usage {}, but wrapping needs ENCRYPT_DECRYPT; change {key_id_setting}",
            usage.map(KeyUsageType::as_str).unwrap_or_default()
        )));
    }
    let algorithm = mode.algorithm();
    if !algorithms.is_empty() && !algorithms.contains(&algorithm) {
        let spec = spec.map(KeySpec::as_str).unwrap_or("unknown");
        let hint = match mode {
            KmsKeyMode::Rsa => format!(
                "set {mode_setting}=true for a symmetric key, or use an RSA key with usage ENCRYPT_DECRYPT"
            ),
            KmsKeyMode::Symmetric => {
                format!("set {mode_setting}=false for an RSA key, or use a SYMMETRIC_DEFAULT key")
            }
        };
        return Err(KeyProviderError::config(format!(
            "AWS KMS key `{key_id}` ({spec}) does not support {}; {hint}",
            algorithm.as_str()
        )));
    }
    Ok(())
}

#[async_trait]
impl RsaKeyProvider for AwsKmsKeyProvider {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn wrap_symmetric_key(&self, key: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
        let output = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(key))
            .encryption_algorithm(self.mode.algorithm())
            .send()
            .await
            .map_err(|e| self.failed(Operation::Encrypt, e))?;
        match output.ciphertext_blob {
            Some(blob) if !blob.as_ref().is_empty() => Ok(blob.into_inner()),
            _ => Err(KeyProviderError::unavailable(
                "AWS KMS Encrypt returned no ciphertext",
            )),
        }
    }

    async fn unwrap_symmetric_key(
        &self,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        // Upstream passes KeyId on Decrypt too: KMS then refuses a ciphertext of another key
        // instead of silently using whichever key the (symmetric) ciphertext names.
        let output = self
            .client
            .decrypt()
            .key_id(&self.key_id)
            .ciphertext_blob(Blob::new(wrapped))
            .encryption_algorithm(self.mode.algorithm())
            .send()
            .await
            .map_err(|e| self.failed(Operation::Decrypt, e))?;
        match output.plaintext {
            Some(blob) => Ok(Zeroizing::new(blob.into_inner())),
            None => Err(KeyProviderError::unavailable(
                "AWS KMS Decrypt returned no plaintext",
            )),
        }
    }

    /// Asks KMS about the key each time: `GetPublicKey` in RSA mode (what upstream's health
    /// check does), `DescribeKey` in symmetric mode (upstream has no health check there; a
    /// cheap read that needs no key material is the closest honest answer), or `Encrypt`
    /// when the credentials may not describe the key.
    async fn check_health(&self) -> Result<(), KeyProviderError> {
        self.probe().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: &str, status: u16) -> Failure {
        Failure::Service {
            code: code.into(),
            message: "said".into(),
            status,
        }
    }

    #[test]
    fn algorithms_are_the_strings_upstream_sends() {
        assert_eq!(KmsKeyMode::Rsa.algorithm().as_str(), "RSAES_OAEP_SHA_256");
        assert_eq!(
            KmsKeyMode::Symmetric.algorithm().as_str(),
            "SYMMETRIC_DEFAULT"
        );
        let rsa = AwsKmsSettings {
            credentials: None,
            region: None,
            key_id: "k".into(),
            use_symmetric_encryption: false,
        };
        assert_eq!(KmsKeyMode::from_settings(&rsa), KmsKeyMode::Rsa);
        let symmetric = AwsKmsSettings {
            use_symmetric_encryption: true,
            ..rsa
        };
        assert_eq!(KmsKeyMode::from_settings(&symmetric), KmsKeyMode::Symmetric);
    }

    #[test]
    fn a_ciphertext_kms_refuses_is_unwrap_failed_only_on_decrypt() {
        for code in [
            "InvalidCiphertextException",
            "IncorrectKeyException",
            "AccessDeniedException",
        ] {
            let error = classify(
                Operation::Decrypt,
                service(code, 400),
                "k1",
                SettingsGroup::Main,
            );
            assert!(
                matches!(error, KeyProviderError::UnwrapFailed { message: ref m, .. } if m.contains("k1") && m.contains(code)),
                "{code}: {error:?}"
            );
        }
        for operation in [Operation::Encrypt, Operation::Probe] {
            let error = classify(
                operation,
                service("AccessDeniedException", 400),
                "k1",
                SettingsGroup::Main,
            );
            assert!(
                matches!(error, KeyProviderError::Config { message: ref m, .. } if m.contains("keyConnectorSettings__rsaKey__awsKeyId")),
                "{error:?}"
            );
        }
    }

    #[test]
    fn operator_mistakes_are_config_errors_naming_the_setting() {
        let cases = [
            (
                "NotFoundException",
                "keyConnectorSettings__rsaKey__awsKeyId",
            ),
            (
                "InvalidArnException",
                "keyConnectorSettings__rsaKey__awsKeyId",
            ),
            (
                "UnrecognizedClientException",
                "keyConnectorSettings__rsaKey__awsAccessKeyId",
            ),
            (
                "InvalidSignatureException",
                "keyConnectorSettings__rsaKey__awsAccessKeySecret",
            ),
            (
                "DisabledException",
                "keyConnectorSettings__rsaKey__awsKeyId",
            ),
            (
                "InvalidKeyUsageException",
                "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
            ),
            (
                "UnsupportedOperationException",
                "keyConnectorSettings__rsaKey__awsUseSymmetricEncryption",
            ),
            ("SomethingNew", "keyConnectorSettings__rsaKey__awsKeyId"),
        ];
        for (code, setting) in cases {
            for operation in [Operation::Probe, Operation::Encrypt, Operation::Decrypt] {
                let error = classify(operation, service(code, 400), "k1", SettingsGroup::Main);
                assert!(
                    matches!(error, KeyProviderError::Config { message: ref m, .. } if m.contains(setting)),
                    "{code} on {operation:?}: {error:?}"
                );
            }
        }
        let local = classify(
            Operation::Probe,
            Failure::Local("no credentials".into()),
            "k1",
            SettingsGroup::Main,
        );
        assert!(
            matches!(local, KeyProviderError::Config { message: ref m, .. } if m.contains("AWS_ACCESS_KEY_ID")),
            "{local:?}"
        );
    }

    #[test]
    fn outages_and_throttling_are_unavailable() {
        for (code, status) in [
            ("ThrottlingException", 400),
            ("KMSInternalException", 500),
            ("DependencyTimeoutException", 503),
            ("KeyUnavailableException", 500),
            ("ServiceUnavailable", 503),
            ("SlowDown", 429),
        ] {
            for operation in [Operation::Probe, Operation::Encrypt, Operation::Decrypt] {
                let error = classify(operation, service(code, status), "k1", SettingsGroup::Main);
                assert!(
                    matches!(error, KeyProviderError::Unavailable { .. }),
                    "{code}: {error:?}"
                );
            }
        }
        let error = classify(
            Operation::Decrypt,
            Failure::Unreachable("connection refused".into()),
            "k1",
            SettingsGroup::Main,
        );
        assert!(matches!(error, KeyProviderError::Unavailable { .. }));
    }

    #[test]
    fn the_key_must_fit_the_mode() {
        let rsa_algorithms = [
            EncryptionAlgorithmSpec::RsaesOaepSha1,
            EncryptionAlgorithmSpec::RsaesOaepSha256,
        ];
        let symmetric_algorithms = [EncryptionAlgorithmSpec::SymmetricDefault];
        let encrypt = Some(&KeyUsageType::EncryptDecrypt);
        let enabled = Some(&KeyState::Enabled);
        let rsa = Some(&KeySpec::Rsa2048);
        let aes = Some(&KeySpec::SymmetricDefault);

        assert!(
            check_key_fits(
                KmsKeyMode::Rsa,
                "k",
                rsa,
                encrypt,
                &rsa_algorithms,
                None,
                SettingsGroup::Main
            )
            .is_ok()
        );
        assert!(
            check_key_fits(
                KmsKeyMode::Symmetric,
                "k",
                aes,
                encrypt,
                &symmetric_algorithms,
                enabled,
                SettingsGroup::Main
            )
            .is_ok()
        );
        let wrong_mode = [
            check_key_fits(
                KmsKeyMode::Rsa,
                "k",
                aes,
                encrypt,
                &symmetric_algorithms,
                None,
                SettingsGroup::Main,
            ),
            check_key_fits(
                KmsKeyMode::Symmetric,
                "k",
                rsa,
                encrypt,
                &rsa_algorithms,
                enabled,
                SettingsGroup::Main,
            ),
        ];
        for error in wrong_mode {
            assert!(
                matches!(error, Err(KeyProviderError::Config { message: ref m, .. }) if m.contains("keyConnectorSettings__rsaKey__awsUseSymmetricEncryption")),
                "{error:?}"
            );
        }
        let signing = check_key_fits(
            KmsKeyMode::Rsa,
            "k",
            rsa,
            Some(&KeyUsageType::SignVerify),
            &[],
            None,
            SettingsGroup::Main,
        );
        assert!(
            matches!(signing, Err(KeyProviderError::Config { message: ref m, .. }) if m.contains("SIGN_VERIFY")),
            "{signing:?}"
        );
        let disabled = check_key_fits(
            KmsKeyMode::Symmetric,
            "k",
            aes,
            encrypt,
            &symmetric_algorithms,
            Some(&KeyState::Disabled),
            SettingsGroup::Main,
        );
        assert!(
            matches!(disabled, Err(KeyProviderError::Config { message: ref m, .. }) if m.contains("Disabled")),
            "{disabled:?}"
        );
    }
}
