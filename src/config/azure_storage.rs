//! Azure Storage connection strings (`certificate:azureStorageConnectionString`).
//!
//! The form the Azure SDKs and the portal use: `DefaultEndpointsProtocol=https;
//! AccountName=...;AccountKey=...;EndpointSuffix=core.windows.net`, or an explicit
//! `BlobEndpoint=...` with a key or a `SharedAccessSignature=...`, or
//! `UseDevelopmentStorage=true` for the Azurite emulator. This module only parses: it turns
//! the text into the blob endpoint and the credential, and never echoes a value in an error.

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

use super::connection_string::ConnectionString;

/// The account every Azure Storage emulator (Azurite, the legacy emulator) serves.
pub const DEVELOPMENT_ACCOUNT_NAME: &str = "devstoreaccount1";
/// The emulator's published account key (not a secret: the same in every installation).
pub const DEVELOPMENT_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Where the emulator's blob service listens by default.
const DEVELOPMENT_BLOB_HOST: &str = "http://127.0.0.1:10000";

/// A storage account's blob service and how to authenticate to it.
#[derive(Debug, Clone)]
pub struct AzureStorageAccount {
    /// The blob service URL without a trailing `/`, e.g.
    /// `https://account.blob.core.windows.net` or `http://127.0.0.1:10000/devstoreaccount1`.
    pub blob_endpoint: String,
    pub credential: AzureStorageCredential,
}

/// How requests are authorized.
#[derive(Debug, Clone)]
pub enum AzureStorageCredential {
    /// `AccountName` and `AccountKey`: every request signed with the Shared Key scheme.
    SharedKey {
        account_name: String,
        /// The base64 account key, checked to decode when parsed.
        account_key: SecretString,
    },
    /// `SharedAccessSignature`: the token's query parameters appended to every URL.
    SharedAccessSignature(SecretString),
    /// Only an endpoint: a container with public read access.
    Anonymous,
}

impl AzureStorageAccount {
    /// Parses a connection string. Errors name the keyword at fault, never a value.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parsed = ConnectionString::parse(text)?;
        for keyword in parsed.keywords() {
            match keyword {
                "usedevelopmentstorage"
                | "developmentstorageproxyuri"
                | "defaultendpointsprotocol"
                | "accountname"
                | "accountkey"
                | "sharedaccesssignature"
                | "endpointsuffix"
                | "blobendpoint" => {}
                // Endpoints of the other storage services: not used to fetch a blob.
                "blobsecondaryendpoint"
                | "queueendpoint"
                | "queuesecondaryendpoint"
                | "tableendpoint"
                | "tablesecondaryendpoint"
                | "fileendpoint"
                | "filesecondaryendpoint" => {}
                other => {
                    return Err(format!(
                        "keyword `{other}` is not an Azure Storage connection-string keyword"
                    ));
                }
            }
        }

        match parsed.get(&["usedevelopmentstorage"]) {
            Some(value) if value.eq_ignore_ascii_case("true") => {
                let host = match parsed.get(&["developmentstorageproxyuri"]) {
                    // The emulator's port stays; the proxy only replaces the host.
                    Some(proxy) => format!("{}:10000", proxy.trim_end_matches('/')),
                    None => DEVELOPMENT_BLOB_HOST.to_owned(),
                };
                return Ok(Self {
                    blob_endpoint: format!("{host}/{DEVELOPMENT_ACCOUNT_NAME}"),
                    credential: AzureStorageCredential::SharedKey {
                        account_name: DEVELOPMENT_ACCOUNT_NAME.to_owned(),
                        account_key: SecretString::from(DEVELOPMENT_ACCOUNT_KEY),
                    },
                });
            }
            Some(value) if !value.eq_ignore_ascii_case("false") => {
                return Err("`UseDevelopmentStorage` must be true or false".into());
            }
            _ => {}
        }

        let account_name = parsed.get(&["accountname"]).filter(|name| !name.is_empty());
        let blob_endpoint = match parsed.get(&["blobendpoint"]).filter(|e| !e.is_empty()) {
            Some(endpoint) => {
                let lower = endpoint.to_ascii_lowercase();
                if !(lower.starts_with("https://") || lower.starts_with("http://")) {
                    return Err("`BlobEndpoint` is not an absolute http:// or https:// URL".into());
                }
                endpoint.trim_end_matches('/').to_owned()
            }
            None => {
                let account = account_name.ok_or(
                    "`AccountName` is missing (or give `BlobEndpoint`, or `UseDevelopmentStorage=true`)",
                )?;
                let protocol = match parsed
                    .get(&["defaultendpointsprotocol"])
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    None | Some("" | "https") => "https",
                    Some("http") => "http",
                    Some(_) => {
                        return Err("`DefaultEndpointsProtocol` must be https or http".into());
                    }
                };
                let suffix = parsed
                    .get(&["endpointsuffix"])
                    .filter(|s| !s.is_empty())
                    .unwrap_or("core.windows.net");
                format!("{protocol}://{account}.blob.{suffix}")
            }
        };

        let key = parsed.get(&["accountkey"]).filter(|k| !k.is_empty());
        let sas = parsed
            .get(&["sharedaccesssignature"])
            .filter(|s| !s.is_empty());
        let credential = match (key, sas) {
            (Some(_), Some(_)) => {
                return Err("give either `AccountKey` or `SharedAccessSignature`, not both".into());
            }
            (Some(key), None) => {
                let account_name = account_name.ok_or(
                    "`AccountName` is missing: the account key signs requests in its name",
                )?;
                if base64::engine::general_purpose::STANDARD
                    .decode(key)
                    .map_or(true, |bytes| bytes.is_empty())
                {
                    return Err(
                        "`AccountKey` is not base64; copy the key from the storage account's access keys"
                            .into(),
                    );
                }
                AzureStorageCredential::SharedKey {
                    account_name: account_name.to_owned(),
                    account_key: SecretString::from(key.to_owned()),
                }
            }
            (None, Some(sas)) => AzureStorageCredential::SharedAccessSignature(SecretString::from(
                sas.trim_start_matches('?').to_owned(),
            )),
            (None, None) => AzureStorageCredential::Anonymous,
        };
        Ok(Self {
            blob_endpoint,
            credential,
        })
    }

    /// The account name, when the credential carries one (for logs).
    pub fn account_name(&self) -> Option<&str> {
        match &self.credential {
            AzureStorageCredential::SharedKey { account_name, .. } => Some(account_name),
            _ => None,
        }
    }
}

impl AzureStorageCredential {
    /// The decoded account key of a Shared Key credential.
    pub fn decoded_account_key(&self) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        match self {
            AzureStorageCredential::SharedKey { account_key, .. } => {
                base64::engine::general_purpose::STANDARD
                    .decode(account_key.expose_secret())
                    .ok()
                    .map(zeroize::Zeroizing::new)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_string_builds_the_public_endpoint() {
        let account = AzureStorageAccount::parse(
            "DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey=c2VjcmV0;EndpointSuffix=core.windows.net",
        )
        .unwrap();
        assert_eq!(
            account.blob_endpoint,
            "https://contoso.blob.core.windows.net"
        );
        assert_eq!(account.account_name(), Some("contoso"));
        assert_eq!(
            &account.credential.decoded_account_key().unwrap()[..],
            b"secret"
        );
    }

    #[test]
    fn protocol_and_suffix_have_the_sdk_defaults_and_sovereign_clouds_work() {
        let account =
            AzureStorageAccount::parse("AccountName=contoso;AccountKey=c2VjcmV0").unwrap();
        assert_eq!(
            account.blob_endpoint,
            "https://contoso.blob.core.windows.net"
        );
        let account = AzureStorageAccount::parse(
            "DefaultEndpointsProtocol=http;AccountName=contoso;AccountKey=c2VjcmV0;EndpointSuffix=core.chinacloudapi.cn",
        )
        .unwrap();
        assert_eq!(
            account.blob_endpoint,
            "http://contoso.blob.core.chinacloudapi.cn"
        );
    }

    #[test]
    fn development_storage_is_azurites_well_known_account() {
        let account = AzureStorageAccount::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(
            account.blob_endpoint,
            "http://127.0.0.1:10000/devstoreaccount1"
        );
        assert_eq!(account.account_name(), Some("devstoreaccount1"));
        let account = AzureStorageAccount::parse(
            "UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://azurite",
        )
        .unwrap();
        assert_eq!(
            account.blob_endpoint,
            "http://azurite:10000/devstoreaccount1"
        );
    }

    #[test]
    fn an_explicit_blob_endpoint_wins_and_a_sas_needs_no_account() {
        let account = AzureStorageAccount::parse(
            "BlobEndpoint=http://127.0.0.1:10001/devstoreaccount1/;SharedAccessSignature=?sv=2021-12-02&sig=abc",
        )
        .unwrap();
        assert_eq!(
            account.blob_endpoint,
            "http://127.0.0.1:10001/devstoreaccount1"
        );
        let AzureStorageCredential::SharedAccessSignature(sas) = &account.credential else {
            panic!("a SAS credential");
        };
        assert_eq!(sas.expose_secret(), "sv=2021-12-02&sig=abc");
        let anonymous =
            AzureStorageAccount::parse("BlobEndpoint=https://contoso.blob.core.windows.net")
                .unwrap();
        assert!(matches!(
            anonymous.credential,
            AzureStorageCredential::Anonymous
        ));
    }

    #[test]
    fn broken_strings_are_refused_without_echoing_the_key() {
        for (text, expected) in [
            ("AccountKey=c2VjcmV0", "AccountName"),
            ("AccountName=a;AccountKey=not base64!", "not base64"),
            (
                "AccountName=a;AccountKey=c2VjcmV0;SharedAccessSignature=sig=1",
                "not both",
            ),
            ("AccountName=a;Colour=blue", "colour"),
            ("UseDevelopmentStorage=maybe", "true or false"),
            (
                "AccountName=a;DefaultEndpointsProtocol=ftp",
                "https or http",
            ),
            ("BlobEndpoint=contoso.blob.core.windows.net", "absolute"),
        ] {
            let error = AzureStorageAccount::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("c2VjcmV0"), "{error}");
        }
        let debug = format!(
            "{:?}",
            AzureStorageAccount::parse("AccountName=a;AccountKey=c2VjcmV0").unwrap()
        );
        assert!(!debug.contains("c2VjcmV0"), "{debug}");
    }
}
