//! Calls to remote key services (Vault, Azure, AWS, Google): one HTTP client builder with
//! bounded waits, and the error-chain reading that sorts failures into "fix the settings"
//! (an untrusted certificate) and "the service is down, retry" (no answer).

use crate::keys::KeyProviderError;

/// What to do about a peer certificate this host does not trust.
pub(crate) const TRUST_HINT: &str = "add the issuing CA to the system's trusted certificates \
     (/usr/local/share/ca-certificates and update-ca-certificates), or name a PEM file of trusted CAs in SSL_CERT_FILE";

/// The TLS certificate failure among `error`'s causes, if any: the peer presented a
/// certificate this host does not trust (unknown issuer, wrong name, expired). Waiting does
/// not fix that, so callers report it as a configuration error rather than an outage.
pub(crate) fn untrusted_certificate(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    causes(error)
        .filter_map(|e| e.downcast_ref::<rustls::Error>())
        .find(|tls| matches!(tls, rustls::Error::InvalidCertificate(_)))
        .map(ToString::to_string)
}

/// `error`, then each of its sources in turn. An I/O error's wrapped error counts as its
/// source, because TLS stacks wrap the rustls error in an I/O error (sometimes in two) whose
/// `source()` does not always lead to it.
pub(crate) fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static))
            .or_else(|| e.source())
    })
}

/// An error and its sources, each once, without an SDK's Debug dump.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in causes(error) {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// An HTTP client for calls to remote key services, with bounded waits, on the service's
/// rustls/aws-lc-rs stack and the system's trusted roots.
pub(crate) fn http_client(
    connect_timeout: std::time::Duration,
    request_timeout: std::time::Duration,
) -> Result<reqwest::Client, KeyProviderError> {
    reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .timeout(request_timeout)
        .user_agent(concat!("key-connector/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            KeyProviderError::config(format!("cannot build an HTTP client: {e}")).caused_by(e)
        })
}

/// A request that got no answer: the peer is down, unreachable or too slow. The text never
/// carries the URL (a SAS token lives in its query).
/// A certificate the host does not trust is a configuration error instead: retrying cannot
/// fix it.
pub(crate) fn unreachable(peer: &str, error: reqwest::Error) -> KeyProviderError {
    let error = error.without_url();
    if let Some(reason) = untrusted_certificate(&error) {
        return KeyProviderError::config(format!(
            "{peer} presented a TLS certificate this host does not trust ({reason}); {}",
            TRUST_HINT
        ))
        .caused_by(error);
    }
    KeyProviderError::unavailable(format!("{peer} did not answer: {}", error_chain(&error)))
        .caused_by(error)
}

/// `response`'s body, at most `max_bytes` of it (a larger one is refused, saying `too_large`
/// after the size), in memory that is wiped when dropped: answers may carry key material.
pub(crate) async fn read_capped_body(
    mut response: reqwest::Response,
    peer: &str,
    max_bytes: usize,
    too_large: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, KeyProviderError> {
    let mut body = zeroize::Zeroizing::new(Vec::new());
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max_bytes {
                    return Err(KeyProviderError::config(format!(
                        "{peer} answered with more than {max_bytes} bytes; {too_large}"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => return Err(unreachable(peer, error)),
        }
    }
}
