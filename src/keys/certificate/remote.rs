//! HTTP for the remote certificate sources (`vault`, `azurestorage`): the client's bounds for
//! one fetch at start-up, and bodies read up to a limit. Failures are sorted by
//! [`crate::keys::remote::unreachable`].

use std::time::Duration;

use zeroize::Zeroizing;

use crate::keys::KeyProviderError;
pub(super) use crate::keys::remote::unreachable;

/// How long connecting may take before the peer counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A PKCS#12 file is a few kilobytes; anything this large is not one.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The client for one fetch at start-up.
pub(super) fn client() -> Result<reqwest::Client, KeyProviderError> {
    crate::keys::remote::http_client(CONNECT_TIMEOUT, REQUEST_TIMEOUT)
}

/// The response body, at most [`MAX_BODY_BYTES`], in memory that is wiped when dropped.
pub(super) async fn read_body(
    response: reqwest::Response,
    peer: &str,
) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
    crate::keys::remote::read_capped_body(
        response,
        peer,
        MAX_BODY_BYTES,
        "that is not a certificate",
    )
    .await
}
