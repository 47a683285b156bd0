//! PKCS#12 files protected by the *absent* password, as .NET writes its certificate store.
//!
//! RFC 7292 derives keys from the password as a NUL-terminated BMPString, so the empty
//! password is two zero bytes; "no password at all" is a zero-length input instead, a
//! different key. .NET exports with a null password that way (its `X509Store` on Linux keeps
//! every certificate so), and `p12-keystore` can only express the first. This module decodes
//! the second for the layout such files have: a SHA-1 or SHA-2 HMAC, and bags encrypted with
//! `pbeWithSHAAnd3-KeyTripleDES-CBC` (or not at all). It uses the same ASN.1 types and PKCS#12
//! key derivation as `p12-keystore`, and hands back the same archive type.

use cbc::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
use cms::content_info::ContentInfo;
use cms::encrypted_data::EncryptedData;
use der::asn1::{ContextSpecific, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use p12_keystore::{Certificate, LocalKeyId, Pkcs12Archive, PrivateKey};
use p12_keystore::{CertificateBag, PrivateKeyBag};
use pkcs12::kdf::{Pkcs12KeyType, derive_key};
use pkcs12::pbe_params::EncryptedPrivateKeyInfo;
use pkcs12::pfx::Pfx;
use pkcs12::safe_bag::SafeContents;
use pkcs12::{CertBag, MacData};
use zeroize::Zeroizing;

use super::Pkcs12Error;

const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const TRIPLE_DES_PBE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1.3");
const SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const LOCAL_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.21");
const X509_CERTIFICATE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.22.1");
/// More rounds than any real file uses: a hostile file must not pin a CPU.
const MAX_ITERATIONS: i32 = 10_000_000;

/// No password at all (a zero-length key-derivation input).
const ABSENT: &[u8] = &[];

/// Decodes `bytes` as a PKCS#12 file protected by the absent password. `WrongPassword` when
/// its MAC or encryption does not open that way either.
pub(super) fn open(bytes: &[u8]) -> Result<Pkcs12Archive, Pkcs12Error> {
    let unreadable = |e: der::Error| Pkcs12Error::Unreadable(e.to_string());
    let pfx = Pfx::from_der(bytes).map_err(|_| Pkcs12Error::NotPkcs12)?;
    if pfx.auth_safe.content_type != DATA {
        return Err(Pkcs12Error::NotPkcs12);
    }
    let auth_safe = OctetString::from_der(&pfx.auth_safe.content.to_der().map_err(unreadable)?)
        .map_err(unreadable)?;
    if let Some(mac) = &pfx.mac_data {
        verify_mac(mac, auth_safe.as_bytes())?;
    }
    let safes: Vec<ContentInfo> = Vec::from_der(auth_safe.as_bytes()).map_err(unreadable)?;
    let mut archive = Pkcs12Archive::default();
    for safe in safes {
        let contents = match safe.content_type {
            DATA => Zeroizing::new(
                OctetString::from_der(&safe.content.to_der().map_err(unreadable)?)
                    .map_err(unreadable)?
                    .as_bytes()
                    .to_vec(),
            ),
            ENCRYPTED_DATA => {
                let encrypted =
                    EncryptedData::from_der(&safe.content.to_der().map_err(unreadable)?)
                        .map_err(unreadable)?;
                let info = encrypted.enc_content_info;
                match info.encrypted_content {
                    Some(data) => decrypt(&info.content_enc_alg, data.as_bytes())?,
                    None => continue,
                }
            }
            _ => return Err(Pkcs12Error::NotPkcs12),
        };
        read_bags(&contents, &mut archive)?;
    }
    Ok(archive)
}

fn verify_mac(mac: &MacData, data: &[u8]) -> Result<(), Pkcs12Error> {
    let salt = mac.mac_salt.as_bytes();
    let iterations = checked_iterations(mac.iterations)?;
    let (algorithm, key) = match mac.mac.algorithm.oid {
        SHA1 => (
            aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            derive_key::<sha1::Sha1>(ABSENT, salt, Pkcs12KeyType::Mac, iterations, 20),
        ),
        SHA256 => (
            aws_lc_rs::hmac::HMAC_SHA256,
            derive_key::<sha2::Sha256>(ABSENT, salt, Pkcs12KeyType::Mac, iterations, 32),
        ),
        other => {
            return Err(Pkcs12Error::Unreadable(format!(
                "MAC algorithm {other} is not supported for a file without a password"
            )));
        }
    };
    let key = aws_lc_rs::hmac::Key::new(algorithm, &Zeroizing::new(key));
    aws_lc_rs::hmac::verify(&key, data, mac.mac.digest.as_bytes())
        .map_err(|_| Pkcs12Error::WrongPassword)
}

/// `pbeWithSHAAnd3-KeyTripleDES-CBC` with the absent password.
fn decrypt(
    algorithm: &cms::cert::x509::spki::AlgorithmIdentifierOwned,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Pkcs12Error> {
    if algorithm.oid != TRIPLE_DES_PBE {
        return Err(Pkcs12Error::Unreadable(format!(
            "encryption {} is not supported for a file without a password; re-export it with `openssl pkcs12 -export`",
            algorithm.oid
        )));
    }
    let parameters = algorithm
        .parameters
        .as_ref()
        .ok_or_else(|| Pkcs12Error::Unreadable("PBE parameters are missing".into()))?;
    let parameters = pkcs12::pbe_params::Pkcs12PbeParams::from_der(
        &parameters
            .to_der()
            .map_err(|e| Pkcs12Error::Unreadable(e.to_string()))?,
    )
    .map_err(|e| Pkcs12Error::Unreadable(e.to_string()))?;
    let salt = parameters.salt.as_bytes();
    let iterations = checked_iterations(parameters.iterations)?;
    let key = Zeroizing::new(derive_key::<sha1::Sha1>(
        ABSENT,
        salt,
        Pkcs12KeyType::EncryptionKey,
        iterations,
        24,
    ));
    let iv = derive_key::<sha1::Sha1>(ABSENT, salt, Pkcs12KeyType::Iv, iterations, 8);
    let cipher = cbc::Decryptor::<des::TdesEde3>::new_from_slices(&key, &iv)
        .map_err(|_| Pkcs12Error::Unreadable("bad 3DES key or IV length".into()))?;
    cipher
        .decrypt_padded_vec::<Pkcs7>(data)
        .map(Zeroizing::new)
        .map_err(|_| Pkcs12Error::WrongPassword)
}

fn checked_iterations(iterations: i32) -> Result<i32, Pkcs12Error> {
    if (1..=MAX_ITERATIONS).contains(&iterations) {
        Ok(iterations)
    } else {
        Err(Pkcs12Error::Unreadable(format!(
            "{iterations} key-derivation iterations is out of range"
        )))
    }
}

/// Adds the key and certificate bags of one `SafeContents`; other bags are ignored.
fn read_bags(contents: &[u8], archive: &mut Pkcs12Archive) -> Result<(), Pkcs12Error> {
    let unreadable = |e: &dyn std::fmt::Display| Pkcs12Error::Unreadable(e.to_string());
    let bags = SafeContents::from_der(contents).map_err(|e| unreadable(&e))?;
    for bag in bags {
        let local_key_id = bag.bag_attributes.as_ref().and_then(|attributes| {
            attributes
                .iter()
                .find(|a| a.oid == LOCAL_KEY_ID)
                .and_then(|a| a.values.iter().next())
                .and_then(|value| value.to_der().ok())
                .and_then(|der| OctetString::from_der(&der).ok())
                .map(|id| id.as_bytes().to_vec())
        });
        match bag.bag_id {
            SHROUDED_KEY_BAG => {
                let shrouded: ContextSpecific<EncryptedPrivateKeyInfo> =
                    ContextSpecific::from_der(&bag.bag_value).map_err(|e| unreadable(&e))?;
                let pkcs8 = decrypt(
                    &shrouded.value.encryption_algorithm,
                    shrouded.value.encrypted_data.as_bytes(),
                )?;
                archive.keys.push(PrivateKeyBag {
                    friendly_name: None,
                    local_key_id: local_key_id.map(LocalKeyId::from),
                    key: PrivateKey::from_der(&pkcs8).map_err(|e| unreadable(&e))?,
                });
            }
            pkcs12::PKCS_12_CERT_BAG_OID => {
                let certificate: ContextSpecific<CertBag> =
                    ContextSpecific::from_der(&bag.bag_value).map_err(|e| unreadable(&e))?;
                if certificate.value.cert_id != X509_CERTIFICATE {
                    continue;
                }
                archive.certs.push(CertificateBag {
                    friendly_name: None,
                    local_key_id,
                    trusted: false,
                    cert: Certificate::from_der(certificate.value.cert_value.as_bytes())
                        .map_err(|e| unreadable(&e))?,
                });
            }
            _ => {}
        }
    }
    Ok(())
}
