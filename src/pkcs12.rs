//! Reading the RSA private key out of a PKCS#12 (PFX) file, and writing one for development.
//!
//! Operators bring PFX files made by many tools: OpenSSL 3's default (PBES2, AES-256-CBC,
//! PBKDF2-SHA256, SHA-256 MAC), `openssl pkcs12 -legacy` (RC2-40 and 3DES, SHA-1 MAC), and
//! .NET's `X509Certificate2.Export` (3DES, SHA-1 MAC). `p12-keystore` decodes all of them; this
//! module adds the policy: exactly one RSA private key, precise errors, and the "empty
//! password" versus "no password" ambiguity that .NET and OpenSSL resolve by trying both.
//! For keys kept in an HSM the file may hold only the certificate
//! (`openssl pkcs12 -export -nokeys`); [`rsa_public_key_spki`] reads the public key then.

mod absent_password;

use p12_keystore::{
    Certificate, KeyStore, KeyStoreEntry, Pkcs12Archive, PrivateKey, PrivateKeyChain,
};
use zeroize::Zeroizing;

/// PKCS#8 `rsaEncryption` algorithm identifier.
const RSA_ENCRYPTION_OID: &str = "1.2.840.113549.1.1.1";
/// id-ecPublicKey, named in the error for EC keys.
const EC_PUBLIC_KEY_OID: &str = "1.2.840.10045.2.1";

/// Said where an RSA key is refused: the sizes the RSA implementation accepts.
pub(crate) const RSA_KEY_SIZES: &str = "RSA keys of 2048 to 8192 bits are supported";

/// Why a PKCS#12 file could not be used. Messages never contain the password.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    #[error("the file is not a PKCS#12 (.pfx/.p12) file")]
    NotPkcs12,
    #[error("the password does not open this PKCS#12 file")]
    WrongPassword,
    #[error("the PKCS#12 file holds no private key (was it exported without one?)")]
    NoPrivateKey,
    #[error("the PKCS#12 file holds {0} private keys; exactly one is required")]
    SeveralPrivateKeys(usize),
    #[error("the PKCS#12 file holds {0}; an RSA key is required")]
    NotRsa(&'static str),
    #[error("the PKCS#12 file holds neither a private key nor a certificate")]
    NoCertificate,
    #[error(
        "the PKCS#12 file holds {0} end-entity RSA certificates and no private key; export only the key's certificate"
    )]
    SeveralCertificates(usize),
    #[error("the PKCS#12 file cannot be read: {0}")]
    Unreadable(String),
    #[error("cannot create a PKCS#12 file: {0}")]
    Generate(String),
}

/// Returns the PKCS#8 DER of the file's only RSA private key.
pub fn private_key_pkcs8(
    bytes: &[u8],
    password: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    let archive = open_archive(bytes, password.unwrap_or(""))?;
    let mut keys = archive.keys.iter().map(|bag| &bag.key);
    let key = keys.next().ok_or(Pkcs12Error::NoPrivateKey)?;
    let others = keys.filter(|other| other.as_der() != key.as_der()).count();
    if others > 0 {
        return Err(Pkcs12Error::SeveralPrivateKeys(others + 1));
    }
    let oid = key.oid().to_string();
    if oid != RSA_ENCRYPTION_OID {
        return Err(Pkcs12Error::NotRsa(if oid == EC_PUBLIC_KEY_OID {
            "an EC key"
        } else {
            "a key that is not RSA"
        }));
    }
    Ok(Zeroizing::new(key.as_der().to_vec()))
}

/// Returns the `SubjectPublicKeyInfo` DER of the file's RSA key: the private key's public half
/// when the file has one, otherwise the public key of its only end-entity RSA certificate.
pub fn rsa_public_key_spki(bytes: &[u8], password: Option<&str>) -> Result<Vec<u8>, Pkcs12Error> {
    let archive = open_archive(bytes, password.unwrap_or(""))?;
    if !archive.keys.is_empty() {
        let pkcs8 = private_key_pkcs8(bytes, password)?;
        let private = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8).map_err(|e| {
            Pkcs12Error::Unreadable(format!("unusable RSA private key ({e}; {})", RSA_KEY_SIZES))
        })?;
        let public = private.public_key();
        let der: aws_lc_rs::encoding::PublicKeyX509Der<'static> =
            aws_lc_rs::encoding::AsDer::as_der(&public).map_err(|e| {
                Pkcs12Error::Unreadable(format!("unusable RSA public key ({e}; {})", RSA_KEY_SIZES))
            })?;
        return Ok(der.as_ref().to_vec());
    }
    if archive.certs.is_empty() {
        return Err(Pkcs12Error::NoCertificate);
    }
    let mut rsa = Vec::new();
    let mut saw_other_algorithm = false;
    for bag in &archive.certs {
        let (_, certificate) = x509_parser::parse_x509_certificate(bag.cert.as_der())
            .map_err(|e| Pkcs12Error::Unreadable(format!("a certificate cannot be parsed: {e}")))?;
        let spki = certificate.public_key();
        if spki.algorithm.algorithm.to_id_string() != RSA_ENCRYPTION_OID {
            saw_other_algorithm = true;
            continue;
        }
        rsa.push((certificate.is_ca(), spki.raw.to_vec()));
    }
    // A chain exported with `-nokeys` also carries CA certificates; the key's own is the leaf.
    let leaves: Vec<_> = rsa.iter().filter(|(is_ca, _)| !is_ca).collect();
    let candidates: Vec<&Vec<u8>> = if leaves.is_empty() {
        rsa.iter().map(|(_, spki)| spki).collect()
    } else {
        leaves.into_iter().map(|(_, spki)| spki).collect()
    };
    let mut distinct = candidates;
    distinct.sort();
    distinct.dedup();
    match distinct.as_slice() {
        [] if saw_other_algorithm => Err(Pkcs12Error::NotRsa("a certificate whose key is not RSA")),
        [] => Err(Pkcs12Error::NoCertificate),
        [only] => Ok(only.to_vec()),
        several => Err(Pkcs12Error::SeveralCertificates(several.len())),
    }
}

/// A certificate in a PKCS#12 file, as a certificate store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// SHA-1 of the certificate's DER, upper-case hex: what .NET and Windows call its thumbprint.
    pub thumbprint: String,
    /// The subject's distinguished name, for messages.
    pub subject: String,
}

/// The thumbprint and subject of every certificate in the file.
pub fn certificates(
    bytes: &[u8],
    password: Option<&str>,
) -> Result<Vec<CertificateSummary>, Pkcs12Error> {
    let archive = open_archive(bytes, password.unwrap_or(""))?;
    archive
        .certs
        .iter()
        .map(|bag| {
            let der = bag.cert.as_der();
            let digest =
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
            let thumbprint = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
            let subject = x509_parser::parse_x509_certificate(der)
                .map(|(_, certificate)| certificate.subject().to_string())
                .map_err(|e| {
                    Pkcs12Error::Unreadable(format!("a certificate cannot be parsed: {e}"))
                })?;
            Ok(CertificateSummary {
                thumbprint,
                subject,
            })
        })
        .collect()
}

/// Decodes the archive, treating a missing password and an empty one alike (PKCS#12 encodes
/// them differently; tools disagree on which one "no password" means).
fn open_archive(bytes: &[u8], password: &str) -> Result<Pkcs12Archive, Pkcs12Error> {
    match Pkcs12Archive::from_pkcs12(bytes, password) {
        Ok(archive) => Ok(archive),
        Err(first) => {
            if let Some(error) = classify(&first) {
                return Err(error);
            }
            if password.is_empty() {
                // `p12-keystore` encodes "" as an empty BMPString with terminator; .NET and
                // some other tools write "no password" as a zero-length secret instead.
                return absent_password::open(bytes);
            }
            Err(Pkcs12Error::WrongPassword)
        }
    }
}

/// Errors that are not a wrong password: the file is not PKCS#12, or it opened but holds
/// something this reader does not take. `None` for what a wrong password causes (a MAC that
/// does not verify, a decryption that does not unpad).
fn classify(error: &p12_keystore::error::Error) -> Option<Pkcs12Error> {
    use p12_keystore::error::Error as E;
    match error {
        E::DerError(_) | E::InvalidVersion | E::UnsupportedContentType => {
            Some(Pkcs12Error::NotPkcs12)
        }
        E::UnsupportedEncryptionScheme | E::UnsupportedMacAlgorithm => {
            Some(Pkcs12Error::Unreadable(format!(
                "{error}; re-export it with `openssl pkcs12 -export`"
            )))
        }
        // Checked before the password is tried: key-derivation iterations above 1,000,000.
        E::InvalidParameters => Some(Pkcs12Error::Unreadable(
            "its key-derivation or MAC parameters are out of range (more than 1,000,000 iterations?); \
             re-export it with `openssl pkcs12 -export`"
                .into(),
        )),
        // A certificate or key that does not parse: not the password's fault.
        E::X509Error(_) | E::UnsupportedCertificateType | E::InvalidPrivateKey => Some(
            Pkcs12Error::Unreadable(format!("a certificate or key in it is not usable: {error}")),
        ),
        _ => None,
    }
}

/// A new RSA key in a self-signed certificate, as a PKCS#12 file written the way OpenSSL 3
/// does by default (PBES2 with AES-256, SHA-256 MAC). For the development quickstart and
/// tests; production keys come from the operator.
pub fn generate_self_signed_pfx(
    bits: usize,
    common_name: &str,
    password: Option<&str>,
) -> Result<Vec<u8>, Pkcs12Error> {
    let size = match bits {
        2048 => rcgen::RsaKeySize::_2048,
        3072 => rcgen::RsaKeySize::_3072,
        4096 => rcgen::RsaKeySize::_4096,
        other => {
            return Err(Pkcs12Error::Generate(format!(
                "unsupported RSA size {other}; use 2048, 3072 or 4096"
            )));
        }
    };
    let generate = |e: &dyn std::fmt::Display| Pkcs12Error::Generate(e.to_string());
    let signing_key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, size)
        .map_err(|e| generate(&e))?;
    let pkcs8 = Zeroizing::new(signing_key.serialize_der());
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| generate(&e))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let certificate = params.self_signed(&signing_key).map_err(|e| generate(&e))?;

    let certificate = Certificate::from_der(certificate.der()).map_err(|e| generate(&e))?;
    let private_key = PrivateKey::from_der(&pkcs8).map_err(|e| generate(&e))?;
    let local_key_id = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY,
        certificate.as_der(),
    );
    let chain = PrivateKeyChain::new(local_key_id.as_ref().to_vec(), private_key, [certificate]);
    let mut store = KeyStore::new();
    store.add_entry(common_name, KeyStoreEntry::PrivateKeyChain(chain));
    store
        .writer(password.unwrap_or(""))
        .write()
        .map_err(|e| generate(&e))
}

/// A certificate chain (leaf first) and its private key, for an HTTPS listener.
pub struct TlsIdentity {
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: Zeroizing<Vec<u8>>,
}

/// The file's private key (any algorithm rustls accepts) and its certificate chain: the
/// certificate with the key's local key id first (or the first one), then the others.
pub fn tls_identity(bytes: &[u8], password: Option<&str>) -> Result<TlsIdentity, Pkcs12Error> {
    let archive = open_archive(bytes, password.unwrap_or(""))?;
    let bag = archive.keys.first().ok_or(Pkcs12Error::NoPrivateKey)?;
    let key_id = bag.local_key_id.as_ref().map(|id| id.as_ref().to_vec());
    let mut certs: Vec<_> = archive.certs.iter().collect();
    if let Some(position) = certs
        .iter()
        .position(|c| c.local_key_id.is_some() && c.local_key_id == key_id)
    {
        let leaf = certs.remove(position);
        certs.insert(0, leaf);
    }
    let mut chain: Vec<Vec<u8>> = Vec::new();
    for cert in certs {
        let der = cert.cert.as_der().to_vec();
        if !chain.contains(&der) {
            chain.push(der);
        }
    }
    Ok(TlsIdentity {
        chain,
        key_pkcs8: Zeroizing::new(bag.key.as_der().to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_pfx_round_trips_with_and_without_password() {
        for password in [Some("secret"), None] {
            let pfx = generate_self_signed_pfx(2048, "test", password).unwrap();
            let key = private_key_pkcs8(&pfx, password).unwrap();
            aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&key).unwrap();
        }
    }

    #[test]
    fn wrong_password_and_garbage_are_told_apart() {
        let pfx = generate_self_signed_pfx(2048, "test", Some("right")).unwrap();
        assert!(matches!(
            private_key_pkcs8(&pfx, Some("wrong")),
            Err(Pkcs12Error::WrongPassword)
        ));
        assert!(matches!(
            private_key_pkcs8(&pfx, None),
            Err(Pkcs12Error::WrongPassword)
        ));
        assert!(matches!(
            private_key_pkcs8(b"definitely not der", None),
            Err(Pkcs12Error::NotPkcs12)
        ));
        assert!(matches!(
            private_key_pkcs8(&[], None),
            Err(Pkcs12Error::NotPkcs12)
        ));
        assert!(matches!(
            private_key_pkcs8(&pfx[..pfx.len() / 2], Some("right")),
            Err(Pkcs12Error::NotPkcs12)
        ));
    }

    #[test]
    fn the_public_key_of_a_pfx_with_a_private_key_is_that_keys() {
        let pfx = generate_self_signed_pfx(2048, "test", Some("pw")).unwrap();
        let spki = rsa_public_key_spki(&pfx, Some("pw")).unwrap();
        let private = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(
            &private_key_pkcs8(&pfx, Some("pw")).unwrap(),
        )
        .unwrap();
        let expected: aws_lc_rs::encoding::PublicKeyX509Der<'static> =
            aws_lc_rs::encoding::AsDer::as_der(&private.public_key()).unwrap();
        assert_eq!(spki, expected.as_ref());
        aws_lc_rs::rsa::PublicEncryptingKey::from_der(&spki).unwrap();
        assert!(matches!(
            rsa_public_key_spki(&pfx, Some("wrong")),
            Err(Pkcs12Error::WrongPassword)
        ));
    }

    #[test]
    fn certificates_are_listed_by_sha1_thumbprint_and_subject() {
        let pfx = generate_self_signed_pfx(2048, "listed", Some("pw")).unwrap();
        let archive = open_archive(&pfx, "pw").unwrap();
        let der = archive.certs[0].cert.as_der();
        let expected: String =
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der)
                .as_ref()
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect();
        let listed = certificates(&pfx, Some("pw")).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].thumbprint, expected);
        assert_eq!(listed[0].thumbprint.len(), 40);
        assert_eq!(listed[0].subject, "CN=listed");
        assert!(matches!(
            certificates(&pfx, None),
            Err(Pkcs12Error::WrongPassword)
        ));
    }

    #[test]
    fn messages_never_contain_the_password() {
        let pfx = generate_self_signed_pfx(2048, "test", Some("hunter2")).unwrap();
        let error = private_key_pkcs8(&pfx, Some("swordfish")).unwrap_err();
        assert!(!error.to_string().contains("swordfish"));
        assert!(!format!("{error:?}").contains("swordfish"));
    }
}
