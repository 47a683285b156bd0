//! The `store` certificate source: a certificate with its private key in the .NET
//! `CurrentUser\My` X.509 store, chosen by SHA-1 thumbprint, as upstream does.
//!
//! On Linux .NET keeps that store as one PKCS#12 file per certificate, without a password,
//! in `$HOME/.dotnet/corefx/cryptography/x509stores/my/`, named after the thumbprint
//! (`{THUMBPRINT}.pfx`, or `{THUMBPRINT}.1.pfx` and so on when that name is taken). .NET
//! reads every file and matches on the certificate itself, and so does this module: a file's
//! name is only a hint. `certificate:storeDirectory` (not an upstream setting) points at the
//! store when it is mounted elsewhere, e.g. a volume taken from upstream's container.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::CertificateFile;
use super::StoreCertificateSettings;
use super::{CERTIFICATE_STORE_DIRECTORY, CERTIFICATE_STORE_THUMBPRINT};
use crate::config::{SettingPath, SettingsGroup};
use crate::keys::KeyProviderError;
use crate::pkcs12;

/// Where .NET keeps the `CurrentUser\My` store below the user's home directory.
pub const DOTNET_STORE_BELOW_HOME: &str = ".dotnet/corefx/cryptography/x509stores/my";
/// How many of the store's certificates an error lists.
const LISTED: usize = 20;

/// Finds the store's file holding the configured certificate.
pub(super) async fn read(
    settings: &StoreCertificateSettings,
    group: SettingsGroup,
) -> Result<CertificateFile, KeyProviderError> {
    let names = StoreSettingNames::in_group(group);
    let directory = match &settings.directory {
        Some(directory) => directory.clone(),
        None => default_directory(settings.home.as_deref(), &names)?,
    };
    let thumbprint = settings.thumbprint.clone();
    let (path, bytes) = tokio::task::spawn_blocking(move || find(&directory, &thumbprint, &names))
        .await
        .map_err(|e| {
            KeyProviderError::config(format!("certificate store search failed: {e}")).caused_by(e)
        })??;
    Ok(CertificateFile::new(
        bytes,
        None,
        format!(
            "certificate {} from the store file {}",
            settings.thumbprint,
            path.display()
        ),
        CERTIFICATE_STORE_THUMBPRINT.in_group(group),
    ))
}

/// The store's settings in the group they were configured in, as messages name them.
struct StoreSettingNames {
    thumbprint: SettingPath,
    directory: SettingPath,
}

impl StoreSettingNames {
    fn in_group(group: SettingsGroup) -> Self {
        Self {
            thumbprint: CERTIFICATE_STORE_THUMBPRINT.in_group(group),
            directory: CERTIFICATE_STORE_DIRECTORY.in_group(group),
        }
    }
}

/// .NET's location below the home directory (`HOME`, as the settings read it).
fn default_directory(
    home: Option<&Path>,
    names: &StoreSettingNames,
) -> Result<PathBuf, KeyProviderError> {
    let directory_setting = names.directory;
    match home {
        Some(home) => Ok(home.join(DOTNET_STORE_BELOW_HOME)),
        None => Err(KeyProviderError::config(format!(
            "HOME is not set, so the .NET certificate store cannot be found; set {directory_setting}"
        ))),
    }
}

/// One `.pfx` file of the store, as far as it could be read.
struct StoreEntry {
    path: PathBuf,
    contents: Result<Vec<pkcs12::CertificateSummary>, String>,
}

/// Reads every `.pfx` file and returns the one holding the certificate `thumbprint`.
fn find(
    directory: &Path,
    thumbprint: &str,
    names: &StoreSettingNames,
) -> Result<(PathBuf, Zeroizing<Vec<u8>>), KeyProviderError> {
    let StoreSettingNames {
        thumbprint: thumbprint_setting,
        directory: directory_setting,
    } = names;
    let listing = std::fs::read_dir(directory).map_err(|e| {
        KeyProviderError::config(format!(
            "cannot read the certificate store {} ({directory_setting}, default $HOME/{DOTNET_STORE_BELOW_HOME}): {e}",
            directory.display()
        ))
        .caused_by(e)
    })?;
    let mut paths: Vec<PathBuf> = listing
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("pfx"))
        })
        .collect();
    // .NET's own name for the certificate first, then the others in a stable order.
    let expected_name = format!("{thumbprint}.pfx");
    paths.sort_by_key(|path| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (!name.eq_ignore_ascii_case(&expected_name), name)
    });

    let mut entries = Vec::new();
    for path in paths {
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => Zeroizing::new(bytes),
            Err(e) => {
                entries.push(StoreEntry {
                    path,
                    contents: Err(e.to_string()),
                });
                continue;
            }
        };
        // .NET writes store files without a password.
        match pkcs12::certificates(&bytes, None) {
            Ok(certificates) => {
                if certificates.iter().any(|c| c.thumbprint == thumbprint) {
                    return Ok((path, bytes));
                }
                entries.push(StoreEntry {
                    path,
                    contents: Ok(certificates),
                });
            }
            Err(e) => entries.push(StoreEntry {
                path,
                contents: Err(e.to_string()),
            }),
        }
    }
    // A file under .NET's name for the certificate that cannot be opened is most likely it.
    if let Some(named) = entries.iter().find(|entry| {
        entry.contents.is_err()
            && entry.path.file_name().is_some_and(|name| {
                name.to_string_lossy()
                    .to_ascii_uppercase()
                    .starts_with(&format!("{thumbprint}."))
            })
    }) {
        let reason = named.contents.as_ref().err().cloned().unwrap_or_default();
        return Err(KeyProviderError::config(format!(
            "the certificate store file {} is named for thumbprint {thumbprint} ({thumbprint_setting}) but cannot be opened \
             without a password: {reason}; re-export it without a password \
             (`openssl pkcs12 -in OLD.pfx -nodes | openssl pkcs12 -export -passout pass: -out {thumbprint}.pfx`)",
            named.path.display()
        )));
    }
    Err(KeyProviderError::config(format!(
        "no certificate with thumbprint {thumbprint} ({thumbprint_setting}) in the certificate store {}; {}",
        directory.display(),
        describe(&entries)
    )))
}

/// What the store holds, for the error message.
fn describe(entries: &[StoreEntry]) -> String {
    if entries.is_empty() {
        return "it holds no .pfx files".into();
    }
    let mut lines = Vec::new();
    for entry in entries {
        let name = entry
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match &entry.contents {
            Ok(certificates) => lines.extend(
                certificates
                    .iter()
                    .map(|c| format!("{} {} ({name})", c.thumbprint, c.subject)),
            ),
            Err(reason) => lines.push(format!("{name}: unreadable ({reason})")),
        }
    }
    let more = lines.len().saturating_sub(LISTED);
    lines.truncate(LISTED);
    let mut text = format!("it holds: {}", lines.join("; "));
    if more > 0 {
        text.push_str(&format!("; and {more} more"));
    }
    text
}
