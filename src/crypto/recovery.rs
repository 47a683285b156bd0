//! The break-glass recovery key: a second wrap of the symmetric key under an RSA public key
//! whose private half the operator keeps offline.
//!
//! The stored wrap is RSA-OAEP with SHA-256 (MGF1 SHA-256) of the 32-byte symmetric key,
//! kept beside two identifiers that reveal nothing about the key:
//! - the recovery key's *fingerprint*: SHA-256 of its `SubjectPublicKeyInfo` DER, lower-case
//!   hex (`openssl pkey -pubin -in recovery.pem -outform DER | sha256sum` prints it), so
//!   start-up can tell whether the stored wrap is for the configured key;
//! - the symmetric key's *key check*: HMAC-SHA256 keyed by the symmetric key over a fixed
//!   label, so each wrap names the symmetric key it holds. A symmetric-key rotation stages
//!   the new key's wrap before the new key is saved as pending, and the old key's wrap is
//!   removed only after the new key became current: whichever key is current has a wrap at
//!   every instant, without the wrap store sharing a transaction with `ApplicationDatas`.
//!
//! This module owns the formats and the policy (which wraps to write, which are stale, what
//! a mismatch is); where wraps are stored is [`crate::store::RecoveryWrapStore`]. Whoever
//! holds the recovery private key and the database can read every user key: that is the
//! point of it, and the README says so.

use std::path::Path;

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{
    OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
    PrivateDecryptingKey, PublicEncryptingKey,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::SYMMETRIC_KEY_LEN;
use crate::config::ConfigError;
use crate::config::catalog::RECOVERY_KEY_PUBLIC_KEY_PATH;
use crate::store::{RecoveryWrapStore, StoreError, StoredRecoveryWrap};

/// The smallest recovery key accepted: it protects every user key for years, offline.
pub const MIN_RECOVERY_KEY_BITS: usize = 3072;

/// PKCS#1 `rsaEncryption`.
const RSA_ENCRYPTION_OID: &str = "1.2.840.113549.1.1.1";

/// What the key check is computed over (keyed by the symmetric key).
const KEY_CHECK_LABEL: &[u8] = b"key-connector recovery wrap: symmetric key check v1";

/// Why a recovery wrap could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("RSA-OAEP encryption under the recovery key failed")]
    WrapFailed,
    /// The private key is not the one the wrap was made for, or the wrap was altered.
    #[error(
        "the recovery wrap of symmetric key {key_check} does not decrypt with this private key (fingerprint {fingerprint})"
    )]
    UnwrapFailed {
        key_check: String,
        fingerprint: String,
    },
    #[error(
        "the recovery wrap of symmetric key {0} is damaged: it does not decrypt to the key it names"
    )]
    Damaged(String),
    #[error("the recovery private key cannot be used: {0}")]
    PrivateKey(String),
}

/// The configured recovery public key (`recoveryKey:publicKeyPath`).
pub struct RecoveryPublicKey {
    key: OaepPublicEncryptingKey,
    fingerprint: String,
    bits: usize,
}

impl std::fmt::Debug for RecoveryPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryPublicKey")
            .field("fingerprint", &self.fingerprint)
            .field("bits", &self.bits)
            .finish()
    }
}

impl RecoveryPublicKey {
    /// Reads the file named by `recoveryKey:publicKeyPath`: a PEM `PUBLIC KEY`, or an X.509
    /// certificate in PEM or DER. Refuses keys that are not RSA or under 3072 bits; every
    /// message names the setting.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let at = |message: String| ConfigError::at(RECOVERY_KEY_PUBLIC_KEY_PATH, message);
        let bytes = std::fs::read(path).map_err(|e| {
            at(format!(
                "cannot read the recovery public key {}: {e}",
                path.display()
            ))
            .caused_by(e)
        })?;
        let spki = spki_of(&bytes).map_err(|why| at(format!("{}: {why}", path.display())))?;
        Self::from_spki(&spki).map_err(|why| at(format!("{}: {why}", path.display())))
    }

    /// The key of a DER `SubjectPublicKeyInfo`; the reason in words when it is refused.
    pub fn from_spki(spki: &[u8]) -> Result<Self, String> {
        use x509_parser::prelude::FromDer;
        let (_, info) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki)
            .map_err(|e| format!("not a public key ({e})"))?;
        if info.algorithm.algorithm.to_id_string() != RSA_ENCRYPTION_OID {
            return Err(format!(
                "the key is not an RSA key (algorithm {}); the recovery key must be RSA of at least {MIN_RECOVERY_KEY_BITS} bits",
                info.algorithm.algorithm.to_id_string()
            ));
        }
        let public = PublicEncryptingKey::from_der(spki).map_err(|e| {
            format!(
                "unusable RSA public key ({e}; {})",
                crate::pkcs12::RSA_KEY_SIZES
            )
        })?;
        let bits = public.key_size_bits();
        if bits < MIN_RECOVERY_KEY_BITS {
            return Err(format!(
                "the RSA key has {bits} bits; a recovery key must have at least {MIN_RECOVERY_KEY_BITS}"
            ));
        }
        let key = OaepPublicEncryptingKey::new(public)
            .map_err(|e| format!("unusable RSA public key ({e})"))?;
        Ok(Self {
            key,
            fingerprint: fingerprint(spki),
            bits,
        })
    }

    /// SHA-256 of the key's `SubjectPublicKeyInfo`, lower-case hex.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn bits(&self) -> usize {
        self.bits
    }

    /// Wraps `symmetric_key` under this key (RSA-OAEP SHA-256).
    pub fn wrap(&self, symmetric_key: &[u8]) -> Result<StoredRecoveryWrap, RecoveryError> {
        let mut out = vec![0u8; self.key.ciphertext_size()];
        let written = self
            .key
            .encrypt(&OAEP_SHA256_MGF1SHA256, symmetric_key, &mut out, None)
            .map_err(|_| RecoveryError::WrapFailed)?
            .len();
        out.truncate(written);
        Ok(StoredRecoveryWrap {
            key_check: key_check(symmetric_key),
            fingerprint: self.fingerprint.clone(),
            wrapped_key: STANDARD.encode(out),
        })
    }
}

/// The `SubjectPublicKeyInfo` DER of a PEM public key or certificate, or a DER certificate
/// or public key.
fn spki_of(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let text_start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    if bytes[text_start..].starts_with(b"-----BEGIN") {
        let (_, pem) = x509_parser::pem::parse_x509_pem(&bytes[text_start..])
            .map_err(|e| format!("not a readable PEM file ({e})"))?;
        return match pem.label.as_str() {
            "PUBLIC KEY" => Ok(pem.contents),
            "CERTIFICATE" => certificate_spki(&pem.contents),
            "RSA PUBLIC KEY" => Err(
                "a PKCS#1 `RSA PUBLIC KEY`; convert it with `openssl rsa -RSAPublicKey_in -pubout`"
                    .into(),
            ),
            label if label.contains("PRIVATE KEY") => Err(format!(
                "a private key (`{label}`); give only the public key here and keep the private key offline"
            )),
            label => Err(format!(
                "PEM `{label}`; a `PUBLIC KEY` or a `CERTIFICATE` is required"
            )),
        };
    }
    certificate_spki(bytes).or_else(|certificate_error| {
        use x509_parser::prelude::FromDer;
        match x509_parser::x509::SubjectPublicKeyInfo::from_der(bytes) {
            Ok(([], _)) => Ok(bytes.to_vec()),
            _ => Err(format!(
                "neither a PEM `PUBLIC KEY` or `CERTIFICATE` nor a DER certificate ({certificate_error})"
            )),
        }
    })
}

fn certificate_spki(der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate ({e})"))?;
    Ok(certificate.public_key().raw.to_vec())
}

/// SHA-256 of a `SubjectPublicKeyInfo` DER, lower-case hex.
pub fn fingerprint(spki: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki).as_ref())
}

/// The public name of a symmetric key: HMAC-SHA256 keyed by it, lower-case hex.
pub fn key_check(symmetric_key: &[u8]) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, symmetric_key);
    hex(aws_lc_rs::hmac::sign(&key, KEY_CHECK_LABEL).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The offline private half of a recovery key, from a PKCS#12 (PFX) file.
pub struct RecoveryPrivateKey {
    key: OaepPrivateDecryptingKey,
    fingerprint: String,
}

impl std::fmt::Debug for RecoveryPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryPrivateKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl RecoveryPrivateKey {
    /// The RSA private key of a PFX file's bytes (`password` `None` or empty for none).
    pub fn from_pfx(bytes: &[u8], password: Option<&str>) -> Result<Self, RecoveryError> {
        let pkcs8 = crate::pkcs12::private_key_pkcs8(bytes, password)
            .map_err(|e| RecoveryError::PrivateKey(e.to_string()))?;
        let private = PrivateDecryptingKey::from_pkcs8(&pkcs8).map_err(|e| {
            RecoveryError::PrivateKey(format!(
                "not a usable RSA key ({e}; {})",
                crate::pkcs12::RSA_KEY_SIZES
            ))
        })?;
        let public: PublicKeyX509Der<'static> = private
            .public_key()
            .as_der()
            .map_err(|e| RecoveryError::PrivateKey(format!("unusable public half ({e})")))?;
        let fingerprint = fingerprint(public.as_ref());
        let key = OaepPrivateDecryptingKey::new(private)
            .map_err(|e| RecoveryError::PrivateKey(format!("unusable RSA key ({e})")))?;
        Ok(Self { key, fingerprint })
    }

    /// SHA-256 of the public half's `SubjectPublicKeyInfo`: the fingerprint its wraps carry.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The symmetric key held by `wrap`, checked against the key check it names.
    pub fn unwrap(&self, wrap: &StoredRecoveryWrap) -> Result<Zeroizing<Vec<u8>>, RecoveryError> {
        let failed = || RecoveryError::UnwrapFailed {
            key_check: wrap.key_check.clone(),
            fingerprint: self.fingerprint.clone(),
        };
        let ciphertext = STANDARD
            .decode(wrap.wrapped_key.trim())
            .map_err(|_| RecoveryError::Damaged(wrap.key_check.clone()))?;
        let mut out = Zeroizing::new(vec![0u8; self.key.min_output_size()]);
        let written = self
            .key
            .decrypt(&OAEP_SHA256_MGF1SHA256, &ciphertext, &mut out, None)
            .map_err(|_| failed())?
            .len();
        out.truncate(written);
        if out.len() != SYMMETRIC_KEY_LEN || key_check(&out) != wrap.key_check {
            return Err(RecoveryError::Damaged(wrap.key_check.clone()));
        }
        Ok(out)
    }
}

/// A symmetric key recovered from its wrap, with the key check that names it.
pub struct RecoveredSymmetricKey {
    pub key_check: String,
    pub key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for RecoveredSymmetricKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveredSymmetricKey")
            .field("key_check", &self.key_check)
            .finish_non_exhaustive()
    }
}

/// Every symmetric key the database holds a recovery wrap of for `private` (wraps made for
/// other recovery keys are passed over). The public way, for `recover` and for backup
/// verification, to open the stored recovery wraps with the offline key. Empty when the
/// database has no wrap for this key.
pub async fn unwrap_recovery_wraps(
    store: &dyn RecoveryWrapStore,
    private: &RecoveryPrivateKey,
) -> Result<Vec<RecoveredSymmetricKey>, RecoveryError> {
    let wraps = store.read_recovery_wraps().await?;
    wraps
        .iter()
        .filter(|wrap| wrap.fingerprint == private.fingerprint)
        .map(|wrap| {
            Ok(RecoveredSymmetricKey {
                key_check: wrap.key_check.clone(),
                key: private.unwrap(wrap)?,
            })
        })
        .collect()
}

/// How the stored wrap of one symmetric key relates to the configured recovery key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WrapState {
    /// A wrap for the configured key is stored.
    Current,
    /// None was stored; one was written now.
    Written,
    /// None is stored (and none was written: a read-only check).
    Missing,
    /// The stored wrap is for another recovery key, kept as it is.
    Mismatch { stored_fingerprint: String },
    /// The stored wrap was for another recovery key and was replaced, as asked.
    Replaced { stored_fingerprint: String },
}

/// The state of the current symmetric key's wrap (and the pending key's, during a rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryStatus {
    pub configured_fingerprint: String,
    pub current: WrapState,
    pub pending: Option<WrapState>,
}

impl RecoveryStatus {
    /// Whether every wrap is for the configured key.
    pub fn is_current(&self) -> bool {
        let fine = |state: &WrapState| {
            matches!(
                state,
                WrapState::Current | WrapState::Written | WrapState::Replaced { .. }
            )
        };
        fine(&self.current) && self.pending.as_ref().is_none_or(fine)
    }
}

impl std::fmt::Display for WrapState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WrapState::Current => f.write_str("stored for the configured recovery key"),
            WrapState::Written => f.write_str("was missing; written now"),
            WrapState::Missing => f.write_str(
                "MISSING: the service writes it at its next start (it needs the RSA key to)",
            ),
            WrapState::Mismatch { stored_fingerprint } => write!(
                f,
                "stored for ANOTHER recovery key (fingerprint {stored_fingerprint}), kept; run \
                 `key-connector replace-recovery-wrap` to replace it"
            ),
            WrapState::Replaced { stored_fingerprint } => write!(
                f,
                "replaced the wrap made for recovery key {stored_fingerprint}"
            ),
        }
    }
}

/// What to do with a stored wrap made for another recovery key than the configured one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMismatch {
    /// Keep it and say so: it may be the one whose private key the operator holds offline.
    Keep,
    /// Replace it with a wrap for the configured key (the operator asked).
    Replace,
}

/// Makes sure each of `keys` (the current symmetric key, then the pending one of an
/// unfinished rotation) has a recovery wrap, writing the missing ones; with
/// [`OnMismatch::Replace`], also replaces wraps made for another recovery key. With
/// `forget_others`, then removes the wraps of symmetric keys that are neither (left behind
/// by a finished rotation or a lost start-up race). Logs a warning naming both
/// fingerprints for every mismatch kept.
pub async fn keep_recovery_wraps_current(
    store: &dyn RecoveryWrapStore,
    recovery: &RecoveryPublicKey,
    current: &[u8],
    pending: Option<&[u8]>,
    on_mismatch: OnMismatch,
    forget_others: bool,
) -> Result<RecoveryStatus, RecoveryError> {
    let stored = store.read_recovery_wraps().await?;
    let mut states = Vec::new();
    for key in std::iter::once(current).chain(pending) {
        let check = key_check(key);
        let found = stored.iter().find(|wrap| wrap.key_check == check);
        let state = match found {
            Some(wrap) if wrap.fingerprint == recovery.fingerprint => WrapState::Current,
            Some(wrap) if on_mismatch == OnMismatch::Keep => {
                tracing::warn!(
                    stored_fingerprint = %wrap.fingerprint,
                    configured_fingerprint = %recovery.fingerprint,
                    "the stored recovery wrap was made for another recovery key than the one configured \
                     (keyConnectorSettings__recoveryKey__publicKeyPath); it is kept, since its private key \
                     may be the one held offline. Run `key-connector replace-recovery-wrap` to replace it"
                );
                WrapState::Mismatch {
                    stored_fingerprint: wrap.fingerprint.clone(),
                }
            }
            Some(wrap) => {
                store.save_recovery_wrap(&recovery.wrap(key)?).await?;
                tracing::info!(
                    old_fingerprint = %wrap.fingerprint,
                    fingerprint = %recovery.fingerprint,
                    "recovery wrap replaced"
                );
                WrapState::Replaced {
                    stored_fingerprint: wrap.fingerprint.clone(),
                }
            }
            None => {
                store.save_recovery_wrap(&recovery.wrap(key)?).await?;
                tracing::info!(fingerprint = %recovery.fingerprint, "recovery wrap written");
                WrapState::Written
            }
        };
        states.push(state);
    }
    if forget_others {
        let mut keep = vec![key_check(current)];
        keep.extend(pending.map(key_check));
        if stored.iter().any(|wrap| !keep.contains(&wrap.key_check)) {
            store.retain_recovery_wraps(&keep).await?;
        }
    }
    let mut states = states.into_iter();
    Ok(RecoveryStatus {
        configured_fingerprint: recovery.fingerprint.clone(),
        current: states.next().unwrap_or(WrapState::Missing),
        pending: states.next(),
    })
}

/// The state of the stored wraps for `current` (and `pending`), without writing anything.
pub async fn recovery_status(
    store: &dyn RecoveryWrapStore,
    recovery: &RecoveryPublicKey,
    current: &[u8],
    pending: Option<&[u8]>,
) -> Result<RecoveryStatus, RecoveryError> {
    let stored = store.read_recovery_wraps().await?;
    let state = |key: &[u8]| {
        let check = key_check(key);
        match stored.iter().find(|wrap| wrap.key_check == check) {
            Some(wrap) if wrap.fingerprint == recovery.fingerprint => WrapState::Current,
            Some(wrap) => WrapState::Mismatch {
                stored_fingerprint: wrap.fingerprint.clone(),
            },
            None => WrapState::Missing,
        }
    };
    Ok(RecoveryStatus {
        configured_fingerprint: recovery.fingerprint.clone(),
        current: state(current),
        pending: pending.map(state),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_pair(bits: usize) -> (Vec<u8>, Vec<u8>) {
        let pfx = crate::pkcs12::generate_self_signed_pfx(bits, "recovery", Some("pw")).unwrap();
        let spki = crate::pkcs12::rsa_public_key_spki(&pfx, Some("pw")).unwrap();
        (pfx, spki)
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let body = STANDARD.encode(der);
        let lines: Vec<_> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn a_wrap_opens_with_the_private_half_and_names_its_key_and_recovery_key() {
        let (pfx, spki) = key_pair(3072);
        let public = RecoveryPublicKey::from_spki(&spki).unwrap();
        let private = RecoveryPrivateKey::from_pfx(&pfx, Some("pw")).unwrap();
        assert_eq!(public.fingerprint(), private.fingerprint());
        assert_eq!(public.fingerprint().len(), 64);
        let symmetric = [9u8; 32];
        let wrap = public.wrap(&symmetric).unwrap();
        assert_eq!(wrap.key_check, key_check(&symmetric));
        assert_ne!(wrap.key_check, key_check(&[8u8; 32]));
        assert_eq!(private.unwrap(&wrap).unwrap().as_slice(), &symmetric);

        let mut altered = wrap.clone();
        altered.key_check = key_check(&[8u8; 32]);
        assert!(matches!(
            private.unwrap(&altered),
            Err(RecoveryError::Damaged(_))
        ));
        let (other_pfx, _) = key_pair(3072);
        let other = RecoveryPrivateKey::from_pfx(&other_pfx, Some("pw")).unwrap();
        assert!(matches!(
            other.unwrap(&wrap),
            Err(RecoveryError::UnwrapFailed { .. })
        ));
    }

    #[test]
    fn small_and_foreign_keys_are_refused_naming_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let (_, small) = key_pair(2048);
        let path = dir.path().join("small.pem");
        std::fs::write(&path, pem("PUBLIC KEY", &small)).unwrap();
        let error = RecoveryPublicKey::load(&path).unwrap_err().to_string();
        assert!(
            error.contains("keyConnectorSettings__recoveryKey__publicKeyPath"),
            "{error}"
        );
        assert!(
            error.contains("keyConnectorSettings:recoveryKey:publicKeyPath"),
            "{error}"
        );
        assert!(
            error.contains("2048 bits; a recovery key must have at least 3072"),
            "{error}"
        );

        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        std::fs::write(&path, ec.public_key_pem()).unwrap();
        let error = RecoveryPublicKey::load(&path).unwrap_err().to_string();
        assert!(error.contains("not an RSA key"), "{error}");

        std::fs::write(&path, ec.serialize_pem()).unwrap();
        let error = RecoveryPublicKey::load(&path).unwrap_err().to_string();
        assert!(error.contains("a private key"), "{error}");

        let missing = dir.path().join("absent.pem");
        let error = RecoveryPublicKey::load(&missing).unwrap_err().to_string();
        assert!(
            error.contains("cannot read the recovery public key"),
            "{error}"
        );
    }

    #[test]
    fn a_pem_public_key_and_a_der_or_pem_certificate_give_the_same_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let (_, spki) = key_pair(3072);
        let path = dir.path().join("key.pem");
        std::fs::write(&path, pem("PUBLIC KEY", &spki)).unwrap();
        let from_pem = RecoveryPublicKey::load(&path).unwrap();
        assert_eq!(from_pem.bits(), 3072);
        assert_eq!(from_pem.fingerprint(), fingerprint(&spki));

        let params = rcgen::CertificateParams::new(vec!["recovery".into()]).unwrap();
        // rcgen does not generate RSA keys: sign the certificate with one made here.
        let rsa = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa3072).unwrap();
        let pkcs8 =
            aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&rsa).unwrap();
        let signer = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
        let certificate = params.self_signed(&signer).unwrap();
        std::fs::write(&path, certificate.der().as_ref()).unwrap();
        let from_der = RecoveryPublicKey::load(&path).unwrap();
        std::fs::write(&path, certificate.pem()).unwrap();
        let from_certificate_pem = RecoveryPublicKey::load(&path).unwrap();
        assert_eq!(from_der.fingerprint(), from_certificate_pem.fingerprint());
        assert_eq!(from_der.bits(), 3072);
    }
}
