//! Sealing user keys under the database's symmetric key.
//!
//! Format (upstream's, byte for byte): AES-256-GCM, random 12-byte nonce, no associated data,
//! stored as base64 of `ciphertext || tag (16) || nonce (12)`. The symmetric key itself is
//! created and unwrapped by [`symmetric_key`].

pub mod recovery;
pub mod symmetric_key;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// Length of the database's symmetric key: AES-256.
pub const SYMMETRIC_KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// A user's key in clear, as the client sent it (the decoded bytes of its base64).
pub struct UserKey(Zeroizing<Vec<u8>>);

impl UserKey {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Standard base64, as the API returns it.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.as_bytes()))
    }
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserKey(<{} bytes redacted>)", self.0.len())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the stored key is not base64")]
    NotBase64,
    #[error("the stored key is too short to hold a tag and a nonce")]
    TooShort,
    #[error("the stored key does not decrypt under this database's symmetric key")]
    Unauthentic,
    #[error("the system random generator failed")]
    Random,
}

/// AES-256-GCM under the database's symmetric key. Cheap to clone? No: hold it in an `Arc`.
pub struct UserKeyCipher {
    key: LessSafeKey,
    /// A second key that also opens (never seals): the other side of a symmetric-key
    /// rotation that was interrupted (see `operations::rotate`).
    fallback: Option<LessSafeKey>,
    random: SystemRandom,
}

impl std::fmt::Debug for UserKeyCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserKeyCipher(<AES-256-GCM key redacted>)")
    }
}

impl UserKeyCipher {
    /// Takes the 32-byte symmetric key; the caller's copy stays zeroizing.
    pub fn new(symmetric_key: &[u8]) -> Result<Self, SealError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, symmetric_key).map_err(|_| SealError::TooShort)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            fallback: None,
            random: SystemRandom::new(),
        })
    }

    /// Also opens keys sealed under `symmetric_key`; sealing keeps using the main key.
    pub fn with_fallback(mut self, symmetric_key: &[u8]) -> Result<Self, SealError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, symmetric_key).map_err(|_| SealError::TooShort)?;
        self.fallback = Some(LessSafeKey::new(unbound));
        Ok(self)
    }

    /// Encrypts a user key into upstream's stored form.
    pub fn seal_user_key(&self, key: &UserKey) -> Result<String, SealError> {
        let mut nonce_bytes = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce_bytes)
            .map_err(|_| SealError::Random)?;
        let mut buffer = Zeroizing::new(Vec::with_capacity(
            key.as_bytes().len() + TAG_LEN + NONCE_LEN,
        ));
        buffer.extend_from_slice(key.as_bytes());
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::empty(),
                &mut buffer[..],
            )
            .map_err(|_| SealError::Random)?;
        buffer.extend_from_slice(tag.as_ref());
        buffer.extend_from_slice(&nonce_bytes);
        Ok(STANDARD.encode(&buffer[..]))
    }

    /// Decrypts a stored key; fails if it was altered or sealed under another key.
    pub fn open_user_key(&self, sealed: &str) -> Result<UserKey, SealError> {
        match (Self::open_with(&self.key, sealed), &self.fallback) {
            (Err(SealError::Unauthentic), Some(fallback)) => Self::open_with(fallback, sealed),
            (result, _) => result,
        }
    }

    /// Decrypts with the main key only (never the fallback).
    pub fn open_with_main_key(&self, sealed: &str) -> Result<UserKey, SealError> {
        Self::open_with(&self.key, sealed)
    }

    fn open_with(key: &LessSafeKey, sealed: &str) -> Result<UserKey, SealError> {
        let mut data = Zeroizing::new(
            STANDARD
                .decode(sealed.trim())
                .map_err(|_| SealError::NotBase64)?,
        );
        if data.len() < TAG_LEN + NONCE_LEN {
            return Err(SealError::TooShort);
        }
        let nonce_start = data.len() - NONCE_LEN;
        let nonce_bytes: [u8; NONCE_LEN] = data[nonce_start..]
            .try_into()
            .map_err(|_| SealError::TooShort)?;
        data.truncate(nonce_start);
        // `open_in_place` expects ciphertext || tag, which is what is left.
        let plain_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::empty(),
                &mut data[..],
            )
            .map_err(|_| SealError::Unauthentic)?
            .len();
        data.truncate(plain_len);
        Ok(UserKey(data))
    }
}

/// Fresh random bytes for a new symmetric key.
pub fn generate_symmetric_key() -> Result<Zeroizing<Vec<u8>>, SealError> {
    let mut key = Zeroizing::new(vec![0u8; SYMMETRIC_KEY_LEN]);
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| SealError::Random)?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> UserKeyCipher {
        UserKeyCipher::new(&[7u8; 32]).unwrap()
    }

    #[test]
    fn sealed_form_is_ciphertext_tag_nonce() {
        let sealed = cipher()
            .seal_user_key(&UserKey::new(b"hello".to_vec()))
            .unwrap();
        let raw = STANDARD.decode(&sealed).unwrap();
        assert_eq!(raw.len(), 5 + TAG_LEN + NONCE_LEN);
    }

    #[test]
    fn open_reverses_seal_and_nonces_differ() {
        let c = cipher();
        let key = UserKey::new((0u8..64).collect());
        let a = c.seal_user_key(&key).unwrap();
        let b = c.seal_user_key(&key).unwrap();
        assert_ne!(a, b, "a fresh nonce per seal");
        assert_eq!(c.open_user_key(&a).unwrap().as_bytes(), key.as_bytes());
    }

    #[test]
    fn open_rejects_tampering_and_other_keys() {
        let sealed = cipher()
            .seal_user_key(&UserKey::new(b"secret".to_vec()))
            .unwrap();
        let other = UserKeyCipher::new(&[8u8; 32]).unwrap();
        assert!(matches!(
            other.open_user_key(&sealed),
            Err(SealError::Unauthentic)
        ));
        let mut raw = STANDARD.decode(&sealed).unwrap();
        raw[0] ^= 1;
        assert!(matches!(
            cipher().open_user_key(&STANDARD.encode(raw)),
            Err(SealError::Unauthentic)
        ));
        assert!(matches!(
            cipher().open_user_key("AAAA"),
            Err(SealError::TooShort)
        ));
        assert!(matches!(
            cipher().open_user_key("%%"),
            Err(SealError::NotBase64)
        ));
    }
}
