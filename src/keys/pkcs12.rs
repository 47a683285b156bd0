//! Reading the RSA private key out of a PKCS#12 (PFX) file.
//!
//! Placeholder: see the PKCS#12 work item.

/// Why a PKCS#12 file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    #[error("{0}")]
    Invalid(String),
}

/// Returns the PKCS#8 DER of the file's RSA private key.
pub fn private_key_pkcs8(
    _bytes: &[u8],
    _password: Option<&str>,
) -> Result<zeroize::Zeroizing<Vec<u8>>, Pkcs12Error> {
    Err(Pkcs12Error::Invalid(
        "PKCS#12 reading is not built yet".into(),
    ))
}
