//! The `azurestorage` certificate source: a PKCS#12 file stored as a blob in an Azure Storage
//! account, found by the connection string, container and blob name, as upstream does.
//!
//! Why not the Azure SDK: the official crate (`azure_storage_blob`, 1.x) authenticates only
//! with Entra ID token credentials; it takes no connection string and no account key (Shared
//! Key support is an open request upstream of it), which is exactly what operators configure
//! here. Its predecessor (`azure_storage_blobs`) does take them but is retired and unmaintained.
//! Downloading one blob is a single `GET`, so this module signs it itself with the documented
//! Shared Key scheme (HMAC-SHA256 over the canonicalized request, "Authorize with Shared Key"
//! in the Azure Storage REST reference), with aws-lc-rs for the HMAC and reqwest for HTTP,
//! both already in the service.
//!
//! Unlike upstream, the container is not created when missing: a missing container means a
//! wrong setting, and creating it would need write permission the service should not hold.

use std::fmt::Write as _;

use base64::Engine;
use secrecy::ExposeSecret;

use super::AzureStorageCertificateSettings;
use super::{
    CERTIFICATE_AZURE_STORAGE_CONNECTION_STRING, CERTIFICATE_AZURE_STORAGE_CONTAINER,
    CERTIFICATE_AZURE_STORAGE_FILE_NAME, CERTIFICATE_AZURE_STORAGE_FILE_PASSWORD,
};
use super::{CertificateFile, remote};
use crate::config::{AzureStorageCredential, SettingsGroup};
use crate::keys::KeyProviderError;

/// The REST API version requests are made in (supported by Azure and by Azurite).
pub const API_VERSION: &str = "2021-12-02";

/// Downloads the blob holding the PKCS#12 file.
pub(super) async fn download(
    settings: &AzureStorageCertificateSettings,
    group: SettingsGroup,
) -> Result<CertificateFile, KeyProviderError> {
    let connection_var = CERTIFICATE_AZURE_STORAGE_CONNECTION_STRING.in_group(group);
    let account = &settings.account;
    let url = blob_url(
        &account.blob_endpoint,
        &settings.container,
        &settings.file_name,
    )
    .map_err(|e| {
        KeyProviderError::config(format!(
            "the blob endpoint in {connection_var} does not make a URL with the container and file name: {e}"
        ))
    })?;
    let location = format!(
        "blob `{}` in container `{}` at {}",
        settings.file_name, settings.container, account.blob_endpoint
    );
    let date = http_date(time::OffsetDateTime::now_utc());
    let mut to_send = url.clone();
    let mut authorization = None;
    match &account.credential {
        AzureStorageCredential::SharedKey { account_name, .. } => {
            let key = account.credential.decoded_account_key().ok_or_else(|| {
                KeyProviderError::config(format!(
                    "the account key in {connection_var} is not base64"
                ))
            })?;
            let to_sign = string_to_sign(
                "GET",
                &SignedHeaders {
                    content_length: None,
                    content_type: None,
                    ms_headers: &[("x-ms-date", &date), ("x-ms-version", API_VERSION)],
                },
                &canonicalized_resource(account_name, &url),
            );
            let mut value = reqwest::header::HeaderValue::from_str(&shared_key_authorization(
                account_name,
                &key,
                &to_sign,
            ))
            .map_err(|_| {
                KeyProviderError::config(format!(
                    "the account name in {connection_var} has characters an HTTP header cannot carry"
                ))
            })?;
            value.set_sensitive(true);
            authorization = Some(value);
        }
        AzureStorageCredential::SharedAccessSignature(sas) => {
            to_send.set_query(Some(sas.expose_secret()));
        }
        AzureStorageCredential::Anonymous => {}
    }
    let mut request = remote::client()?
        .get(to_send)
        .header("x-ms-date", &date)
        .header("x-ms-version", API_VERSION);
    if let Some(authorization) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, authorization);
    }

    let peer = format!("Azure Storage at {}", account.blob_endpoint);
    let response = request
        .send()
        .await
        .map_err(|e| remote::unreachable(&peer, e))?;
    let status = response.status();
    let error_code = response
        .headers()
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = remote::read_body(response, &peer).await?;
    if !status.is_success() {
        return Err(status_error(
            status,
            &error_code,
            settings,
            &location,
            group,
        ));
    }
    Ok(CertificateFile::new(
        body,
        settings.password.as_ref(),
        format!("certificate from {location}"),
        CERTIFICATE_AZURE_STORAGE_FILE_PASSWORD.in_group(group),
    ))
}

/// The blob's URL: the endpoint (which may carry the account as a path, as emulators do),
/// then the container and the blob name, percent-encoded with its `/` kept.
pub fn blob_url(
    endpoint: &str,
    container: &str,
    blob: &str,
) -> Result<reqwest::Url, impl std::error::Error> {
    let mut text = format!("{}/{container}/", endpoint.trim_end_matches('/'));
    for byte in blob.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/') {
            text.push(char::from(byte));
        } else {
            let _ = write!(text, "%{byte:02X}");
        }
    }
    reqwest::Url::parse(&text)
}

/// The standard headers of a request that enter its signature (the others are empty here).
pub struct SignedHeaders<'a> {
    /// `Content-Length`; none or zero is signed as empty (API versions from 2015-02-21).
    pub content_length: Option<u64>,
    pub content_type: Option<&'a str>,
    /// Every `x-ms-*` header sent, names in lower case.
    pub ms_headers: &'a [(&'a str, &'a str)],
}

/// The Shared Key string to sign for the Blob service:
/// the verb, twelve standard headers, the `x-ms-` headers, the canonicalized resource.
pub fn string_to_sign(
    method: &str,
    headers: &SignedHeaders<'_>,
    canonicalized_resource: &str,
) -> String {
    let length = headers
        .content_length
        .filter(|l| *l > 0)
        .map(|l| l.to_string())
        .unwrap_or_default();
    let mut ms: Vec<(String, String)> = headers
        .ms_headers
        .iter()
        .map(|(name, value)| {
            (
                name.trim().to_ascii_lowercase(),
                value.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    ms.sort();
    let mut text = String::new();
    // VERB, Content-Encoding, Content-Language, Content-Length, Content-MD5, Content-Type,
    // Date, If-Modified-Since, If-Match, If-None-Match, If-Unmodified-Since, Range.
    for field in [
        method,
        "",
        "",
        &length,
        "",
        headers.content_type.unwrap_or(""),
        "",
        "",
        "",
        "",
        "",
        "",
    ] {
        text.push_str(field);
        text.push('\n');
    }
    for (name, value) in ms {
        let _ = writeln!(text, "{name}:{value}");
    }
    text.push_str(canonicalized_resource);
    text
}

/// `/{account}{encoded path}`, then each query parameter as `\n{name}:{values}`, names in
/// lower case and sorted, a parameter's values sorted and joined by commas.
pub fn canonicalized_resource(account_name: &str, url: &reqwest::Url) -> String {
    let mut text = format!("/{account_name}{}", url.path());
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in url.query_pairs() {
        let name = name.to_ascii_lowercase();
        match params.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value.into_owned()),
            None => params.push((name, vec![value.into_owned()])),
        }
    }
    params.sort();
    for (name, mut values) in params {
        values.sort();
        let _ = write!(text, "\n{name}:{}", values.join(","));
    }
    text
}

/// `SharedKey {account}:{base64 HMAC-SHA256 of the string to sign under the account key}`.
pub fn shared_key_authorization(
    account_name: &str,
    account_key: &[u8],
    string_to_sign: &str,
) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, account_key);
    let signature = aws_lc_rs::hmac::sign(&key, string_to_sign.as_bytes());
    format!(
        "SharedKey {account_name}:{}",
        base64::engine::general_purpose::STANDARD.encode(signature.as_ref())
    )
}

/// RFC 1123 date in GMT, as `x-ms-date` wants it: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(now: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    now.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_default()
}

/// The storage service's refusal, sorted: settings to fix, or a service to wait for.
fn status_error(
    status: reqwest::StatusCode,
    error_code: &str,
    settings: &AzureStorageCertificateSettings,
    location: &str,
    group: SettingsGroup,
) -> KeyProviderError {
    let connection_var = CERTIFICATE_AZURE_STORAGE_CONNECTION_STRING.in_group(group);
    let container_var = CERTIFICATE_AZURE_STORAGE_CONTAINER.in_group(group);
    let file_name_var = CERTIFICATE_AZURE_STORAGE_FILE_NAME.in_group(group);
    let code = if error_code.is_empty() {
        String::new()
    } else {
        format!(" {error_code}")
    };
    match (status.as_u16(), error_code) {
        (404, "ContainerNotFound") => KeyProviderError::config(format!(
            "the storage account has no container `{}` ({container_var})",
            settings.container
        )),
        (404, _) => KeyProviderError::config(format!(
            "the storage account has no {location} (404{code}); check {file_name_var} and {container_var}"
        )),
        (401 | 403, _) => KeyProviderError::config(format!(
            "the storage account refused to serve the {location} ({status}{code}); check the AccountKey or SharedAccessSignature in {connection_var} and its permissions"
        )),
        (408 | 429 | 500..=599, _) => KeyProviderError::unavailable(format!(
            "Azure Storage answered {status}{code} for the {location}"
        )),
        _ => KeyProviderError::config(format!(
            "Azure Storage answered {status}{code} for the {location}; check {connection_var}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc1123_gmt() {
        let date = time::macros::datetime!(1994-11-06 08:49:37 UTC);
        assert_eq!(http_date(date), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn the_canonicalized_resource_has_the_account_the_path_and_sorted_parameters() {
        let url = blob_url(
            "http://127.0.0.1:10000/devstoreaccount1/",
            "certs",
            "a b/key.pfx",
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:10000/devstoreaccount1/certs/a%20b/key.pfx"
        );
        assert_eq!(
            canonicalized_resource("devstoreaccount1", &url),
            "/devstoreaccount1/devstoreaccount1/certs/a%20b/key.pfx"
        );
        let url = reqwest::Url::parse(
            "https://myaccount.blob.core.windows.net/mycontainer?restype=container&comp=metadata&Include=b&include=a",
        )
        .unwrap();
        assert_eq!(
            canonicalized_resource("myaccount", &url),
            "/myaccount/mycontainer\ncomp:metadata\ninclude:a,b\nrestype:container"
        );
    }

    #[test]
    fn the_string_to_sign_follows_the_blob_service_layout() {
        let text = string_to_sign(
            "PUT",
            &SignedHeaders {
                content_length: Some(11),
                content_type: Some("application/octet-stream"),
                ms_headers: &[
                    ("x-ms-version", API_VERSION),
                    ("X-Ms-Date", "Sun, 06 Nov 1994 08:49:37 GMT"),
                    ("x-ms-blob-type", " BlockBlob "),
                ],
            },
            "/acct/c/b",
        );
        assert_eq!(
            text,
            "PUT\n\n\n11\n\napplication/octet-stream\n\n\n\n\n\n\n\
             x-ms-blob-type:BlockBlob\nx-ms-date:Sun, 06 Nov 1994 08:49:37 GMT\nx-ms-version:2021-12-02\n/acct/c/b"
        );
        let get = string_to_sign(
            "GET",
            &SignedHeaders {
                content_length: Some(0),
                content_type: None,
                ms_headers: &[],
            },
            "/acct/c/b",
        );
        assert_eq!(get, "GET\n\n\n\n\n\n\n\n\n\n\n\n/acct/c/b");
    }

    #[test]
    fn the_signature_is_hmac_sha256_under_the_decoded_key() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), RFC 4231 style vector.
        let authorization = shared_key_authorization(
            "acct",
            b"key",
            "The quick brown fox jumps over the lazy dog",
        );
        assert_eq!(
            authorization,
            "SharedKey acct:97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
        );
    }
}
