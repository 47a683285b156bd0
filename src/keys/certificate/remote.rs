//! HTTP for the remote certificate sources (`vault`, `azurestorage`): one client with bounded
//! waits, bodies read up to a limit, and failures sorted into "fix the settings" and "the
//! service is down, retry". Error texts never carry a URL: a SAS token lives in the query.

use std::error::Error as _;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::keys::KeyProviderError;

/// How long connecting may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A PKCS#12 file is a few kilobytes; anything this large is not one.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The client for one fetch at start-up.
pub(super) fn client() -> Result<reqwest::Client, KeyProviderError> {
    crate::keys::http_client(CONNECT_TIMEOUT, REQUEST_TIMEOUT)
}

/// A request that got no answer: the peer is down, unreachable or too slow.
/// A certificate the host does not trust is a configuration error instead: retrying cannot
/// fix it.
pub(super) fn unreachable(peer: &str, error: reqwest::Error) -> KeyProviderError {
    if let Some(reason) = crate::keys::untrusted_certificate(&error) {
        return KeyProviderError::Config(format!(
            "{peer} presented a TLS certificate this host does not trust ({reason}); {}",
            crate::keys::TRUST_HINT
        ));
    }
    KeyProviderError::Unavailable(format!("{peer} did not answer: {}", describe(error)))
}

/// The response body, at most [`MAX_BODY_BYTES`], in memory that is wiped when dropped.
pub(super) async fn read_body(
    mut response: reqwest::Response,
    peer: &str,
) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
    let mut body = Zeroizing::new(Vec::new());
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(KeyProviderError::Config(format!(
                        "{peer} answered with more than {MAX_BODY_BYTES} bytes; that is not a certificate"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(error) => return Err(unreachable(peer, error)),
        }
    }
}

/// The error and its causes, without the URL.
fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
