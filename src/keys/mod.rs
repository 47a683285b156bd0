//! Who wraps the symmetric key: the organisation's RSA key.
//!
//! [`RsaKeyProvider`] is the second seam of the service. A provider wraps the 256-bit
//! symmetric key once when a database is new and unwraps it once at start-up; it never sees
//! a user key. Each provider is a folder below `keys/` (its `settings` module: typed settings,
//! catalog rows, parsing; and the provider itself); the registry below, one line a provider,
//! is the only place that knows them all. Through it this module reads `rsaKey:provider` and
//! the settings of the provider named (`RsaKeySettings::read`). The wrapping algorithm is
//! fixed per provider by upstream's choice (certificate and PKCS#11: RSA-OAEP with SHA-1),
//! so that existing databases unwrap.

pub mod health;
pub(crate) mod remote;
pub mod vault_login;

use std::sync::Arc;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::config::catalog::{GroupValues, KnownSetting, SettingValues, settings_catalog};
use crate::config::{ConfigError, ConfigSource, SettingPath, SettingsGroup};
/// Said where a provider refuses an RSA key (kept with the PFX reading, which says it too).
pub(crate) use crate::pkcs12::RSA_KEY_SIZES;

/// Declares the registry from one line per provider: the modules, [`RsaKeySettings`] (one
/// variant a provider), the names `rsaKey:provider` accepts, the dispatch of parsing to each
/// provider's settings and of opening to its opener, and for a provider behind a Cargo
/// feature the answer of a build made without it.
macro_rules! key_providers {
    ($($variant:ident($module:ident::$settings:ident) = $name:literal,
       opened by $provider:ident::$open:ident $(, if feature $feature:literal)?;)+) => {
        $(pub mod $module;)+

        /// `rsaKey:provider` and the settings of the provider it names.
        #[derive(Debug)]
        pub enum RsaKeySettings {
            $(#[doc = concat!("`", $name, "`: see [`", stringify!($module), "`].")]
            $variant($module::$settings),)+
        }

        /// The names `rsaKey:provider` accepts, as `--help` lists them.
        pub const PROVIDER_CHOICES: &str = key_providers!(@joined $($name),+);

        /// The names `rsaKey:provider` accepts, in the registry's order.
        const PROVIDER_NAMES: &[&str] = &[$($name),+];

        fn registered_providers() -> Vec<RegisteredProvider> {
            vec![$(RegisteredProvider {
                upstream_order: <$module::$settings as ProviderSettings>::UPSTREAM_ORDER,
                catalog_rows: <$module::$settings as ProviderSettings>::CATALOG_ROWS,
                check_typed_values: <$module::$settings as ProviderSettings>::check_typed_values,
            }),+]
        }

        impl RsaKeySettings {
            /// The settings of provider `name` (lower case) in `group`; `None` for a name
            /// that is no provider.
            pub(crate) fn parse(
                name: &str,
                input: &GroupValues<'_>,
            ) -> Option<Result<Self, ConfigError>> {
                match name {
                    $($name => Some(
                        <$module::$settings as ProviderSettings>::parse(input).map(Self::$variant),
                    ),)+
                    _ => None,
                }
            }
        }

        /// Opens the configured provider, with `group` so that its messages name the
        /// settings the operator set.
        async fn open_uninstrumented(
            settings: &RsaKeySettings,
            group: SettingsGroup,
        ) -> Result<Arc<dyn RsaKeyProvider>, KeyProviderError> {
            match settings {
                $(
                    $(#[cfg(feature = $feature)])?
                    RsaKeySettings::$variant(settings) => Ok(Arc::new(
                        $module::$provider::$open(settings, group).await?,
                    )),
                    $(
                        #[cfg(not(feature = $feature))]
                        RsaKeySettings::$variant(_) => Err(<$module::$settings as ProviderSettings>
                            ::left_out_of_build($feature, group)),
                    )?
                )+
            }
        }
    };
    (@joined $first:literal $(, $rest:literal)*) => {
        concat!($first $(, " | ", $rest)*)
    };
}

// The registry: every RSA key provider, one line each, in the order messages and `--help`
// name them. A line is `Variant(folder::SettingsType) = "name", opened by Provider::open`,
// and `if feature "..."` when a Cargo feature brings its SDK. The folder below `keys/` is the
// provider: its `settings` module (built in every build) holds the typed settings, their
// catalog rows and their parsing ([`ProviderSettings`]); the opener takes the settings and
// the group they were configured in.
key_providers! {
    Certificate(certificate::CertificateSettings) = "certificate", opened by CertificateKeyProvider::open;
    Pkcs11(pkcs11::Pkcs11Settings) = "pkcs11", opened by Pkcs11KeyProvider::open, if feature "pkcs11";
    AwsKms(awskms::AwsKmsSettings) = "awskms", opened by AwsKmsKeyProvider::open, if feature "awskms";
    AzureKeyVault(azurekv::AzureKeyVaultKeySettings) = "azurekv", opened by AzureKeyVaultKeyProvider::open, if feature "azurekv";
    GcpKms(gcpkms::GcpKmsSettings) = "gcpkms", opened by GcpKmsKeyProvider::open, if feature "gcpkms";
    VaultTransit(vaulttransit::VaultTransitSettings) = "vaulttransit", opened by VaultTransitKeyProvider::open;
}

settings_catalog! {
    RSA_KEY_PROVIDER_SETTINGS;
    RSA_KEY_PROVIDER = SettingPath::rsa_key("provider"), None, PROVIDER_CHOICES;
}

impl RsaKeySettings {
    /// `rsaKey:provider` (in `group`) and the settings of the provider it names, parsed by
    /// that provider.
    pub(crate) fn read(
        values: &SettingValues,
        source: &ConfigSource,
        group: SettingsGroup,
    ) -> Result<Self, ConfigError> {
        let input = GroupValues::of(values, source, group);
        let provider_path = input.at(RSA_KEY_PROVIDER);
        let provider = input.require_setting(RSA_KEY_PROVIDER, &provider_names_listed())?;
        check_typed_provider_values(&input)?;
        let name = provider.trim().to_ascii_lowercase();
        Self::parse(&name, &input).unwrap_or_else(|| {
            Err(ConfigError::at(
                provider_path,
                format!(
                    "`{name}` is not an RSA key provider; use {}",
                    provider_names_listed()
                ),
            ))
        })
    }
}

/// What the registry needs from a provider's settings: its catalog rows and its parsing.
pub(crate) trait ProviderSettings: Sized {
    /// The provider's rows of the settings catalog.
    const CATALOG_ROWS: &'static [KnownSetting];
    /// Where upstream's `KeyConnectorSettings` declares these settings: `--help` lists the
    /// providers' rows, and their values are checked, in this order.
    const UPSTREAM_ORDER: u8;

    /// Checks the values upstream's typed settings refuse whichever provider is configured
    /// (a boolean that is not one, say).
    fn check_typed_values(_input: &GroupValues<'_>) -> Result<(), ConfigError> {
        Ok(())
    }

    /// The provider's settings in `input`'s group; errors name the setting in that group.
    fn parse(input: &GroupValues<'_>) -> Result<Self, ConfigError>;

    /// What opening the provider answers in a build made without its Cargo `feature`.
    #[allow(
        dead_code,
        reason = "only a build without some provider's feature opens none"
    )]
    fn left_out_of_build(feature: &str, _group: SettingsGroup) -> KeyProviderError {
        missing_feature(feature)
    }
}

/// One registered provider, as the catalog and validation see it.
struct RegisteredProvider {
    upstream_order: u8,
    catalog_rows: &'static [KnownSetting],
    check_typed_values: fn(&GroupValues<'_>) -> Result<(), ConfigError>,
}

/// The registered providers in upstream's order of their settings.
fn in_upstream_order() -> Vec<RegisteredProvider> {
    let mut providers = registered_providers();
    providers.sort_by_key(|provider| provider.upstream_order);
    providers
}

/// The catalog rows of `rsaKey:provider`, then of every provider, as the settings catalog
/// lists them.
pub(crate) fn provider_settings() -> impl Iterator<Item = &'static KnownSetting> {
    RSA_KEY_PROVIDER_SETTINGS.iter().chain(
        in_upstream_order()
            .into_iter()
            .flat_map(|provider| provider.catalog_rows),
    )
}

/// Checks every provider's typed values in `group` (see
/// [`ProviderSettings::check_typed_values`]).
fn check_typed_provider_values(input: &GroupValues<'_>) -> Result<(), ConfigError> {
    in_upstream_order()
        .iter()
        .try_for_each(|provider| (provider.check_typed_values)(input))
}

/// The provider names for messages: `certificate, pkcs11, ... or gcpkms`.
fn provider_names_listed() -> String {
    match PROVIDER_NAMES.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, others)) => format!("{} or {last}", others.join(", ")),
        None => String::new(),
    }
}

/// What a provider's SDK, I/O or crypto library reported underneath a [`KeyProviderError`].
pub type ProviderFailure = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a provider could not open, wrap, unwrap or prove its health. The message says it in
/// words (naming the setting to check); `source` keeps the error underneath, where there is
/// one, for callers that walk the chain. Text is made of it only at the HTTP and CLI edges.
#[derive(Debug, thiserror::Error)]
pub enum KeyProviderError {
    /// The provider is configured wrongly (missing file, wrong password, ...).
    #[error("{message}")]
    Config {
        message: String,
        #[source]
        source: Option<ProviderFailure>,
    },
    /// The provider could not be reached now; retrying may help.
    #[error("the RSA key provider is unavailable: {message}")]
    Unavailable {
        message: String,
        #[source]
        source: Option<ProviderFailure>,
    },
    /// The wrapped key could not be unwrapped with this RSA key.
    #[error("{message}")]
    UnwrapFailed {
        message: String,
        #[source]
        source: Option<ProviderFailure>,
    },
}

impl KeyProviderError {
    /// A configuration problem, said in `message`.
    pub fn config(message: impl Into<String>) -> Self {
        Self::Config {
            message: message.into(),
            source: None,
        }
    }

    /// An outage, said in `message`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// A wrapped key this RSA key cannot unwrap, said in `message`.
    pub fn unwrap_failed(message: impl Into<String>) -> Self {
        Self::UnwrapFailed {
            message: message.into(),
            source: None,
        }
    }

    /// The same error, keeping `failure` as its cause.
    pub fn caused_by(mut self, failure: impl Into<ProviderFailure>) -> Self {
        let (Self::Config { source, .. }
        | Self::Unavailable { source, .. }
        | Self::UnwrapFailed { source, .. }) = &mut self;
        *source = Some(failure.into());
        self
    }

    /// The message, without the kind's prefix.
    pub fn message(&self) -> &str {
        let (Self::Config { message, .. }
        | Self::Unavailable { message, .. }
        | Self::UnwrapFailed { message, .. }) = self;
        message
    }
}

#[async_trait]
pub trait RsaKeyProvider: Send + Sync + 'static {
    /// Names the provider and key for logs and reports, without secrets.
    fn describe(&self) -> String;

    /// Encrypts the symmetric key for storage.
    async fn wrap_symmetric_key(&self, key: &[u8]) -> Result<Vec<u8>, KeyProviderError>;

    /// Decrypts a stored symmetric key.
    async fn unwrap_symmetric_key(
        &self,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError>;

    /// Proves the provider can still produce its public key (upstream's `/health`).
    async fn check_health(&self) -> Result<(), KeyProviderError>;
}

/// Builds the configured provider, loading its key material. Its calls are measured
/// (see [`crate::metrics`]).
/// `group` is where the settings came from; messages name the settings in that group.
pub async fn open_rsa_key_provider(
    settings: &RsaKeySettings,
    group: SettingsGroup,
) -> Result<Arc<dyn RsaKeyProvider>, KeyProviderError> {
    let provider = open_uninstrumented(settings, group).await?;
    Ok(Arc::new(Measured { provider }))
}

/// A provider whose calls are counted and timed.
struct Measured {
    provider: Arc<dyn RsaKeyProvider>,
}

impl Measured {
    fn finish<T>(
        &self,
        operation: &'static str,
        started: std::time::Instant,
        result: Result<T, KeyProviderError>,
    ) -> Result<T, KeyProviderError> {
        crate::metrics::rsa_key_operation(operation, result.is_ok(), started);
        result
    }
}

#[async_trait]
impl RsaKeyProvider for Measured {
    fn describe(&self) -> String {
        self.provider.describe()
    }

    async fn wrap_symmetric_key(&self, key: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
        let started = std::time::Instant::now();
        let result = self.provider.wrap_symmetric_key(key).await;
        self.finish("wrap", started, result)
    }

    async fn unwrap_symmetric_key(
        &self,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        let started = std::time::Instant::now();
        let result = self.provider.unwrap_symmetric_key(wrapped).await;
        self.finish("unwrap", started, result)
    }

    async fn check_health(&self) -> Result<(), KeyProviderError> {
        let started = std::time::Instant::now();
        let result = self.provider.check_health().await;
        self.finish("health", started, result)
    }
}

/// A provider configured in a build made without its Cargo feature.
#[allow(
    dead_code,
    reason = "only a build without some provider's feature asks for this"
)]
fn missing_feature(feature: &str) -> KeyProviderError {
    KeyProviderError::config(format!(
        "provider `{feature}` is configured, but this build was made without the Cargo feature `{feature}`; \
         rebuild with `--features {feature}` (the default build has every provider)"
    ))
}

/// RSA-OAEP encryption with a public key, as every provider that wraps locally does.
pub(crate) fn oaep_encrypt(
    public: &aws_lc_rs::rsa::OaepPublicEncryptingKey,
    algorithm: &'static aws_lc_rs::rsa::OaepAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>, KeyProviderError> {
    let mut out = vec![0u8; public.ciphertext_size()];
    let written = public
        .encrypt(algorithm, plaintext, &mut out, None)
        .map_err(|_| KeyProviderError::config("RSA-OAEP encryption failed"))?
        .len();
    out.truncate(written);
    Ok(out)
}

/// What opening `settings` answers when it must refuse them as a configuration error: how
/// the providers' tests check a build made without their feature.
#[cfg(test)]
#[allow(
    dead_code,
    reason = "only the tests of a build without some provider's feature ask"
)]
pub(crate) async fn configuration_refusal(settings: &RsaKeySettings) -> String {
    match open_rsa_key_provider(settings, SettingsGroup::Main).await {
        Err(KeyProviderError::Config { message, .. }) => message,
        Err(other) => panic!("{settings:?} must be refused as a configuration error: {other}"),
        Ok(_) => panic!("{settings:?} must be refused"),
    }
}
