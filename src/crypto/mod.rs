//! Sealing user keys under the database's symmetric key.
//!
//! Two stored forms ([`SealedForm`]), told apart by a prefix that no value of the other can
//! begin with:
//! - unbound, upstream's byte for byte: AES-256-GCM, random 12-byte nonce, no associated
//!   data, stored as base64 of `ciphertext || tag (16) || nonce (12)`. It opens for whichever
//!   user owns the row it is in;
//! - bound, this service's own: [`BOUND_PREFIX`] then the same base64, sealed with the owner's
//!   user id (its 16 bytes, RFC 4122 order) as associated data, so it opens only for that
//!   user: copied into another user's row, it is refused.
//!
//! Which form new seals take, and whether unbound ones are still accepted, is
//! [`binding`]'s policy. The symmetric key itself is created and unwrapped by
//! [`symmetric_key`].

pub mod binding;
pub mod recovery;
pub mod symmetric_key;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use uuid::Uuid;
use zeroize::Zeroizing;

/// Length of the database's symmetric key: AES-256.
pub const SYMMETRIC_KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// What a bound user key starts with. `:` is outside base64's alphabet, so no value in
/// upstream's form (plain standard base64) can start with it, and none in this form is
/// mistaken for one: the form is read, never guessed.
pub const BOUND_PREFIX: &str = "kc1:";

/// How a user key is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealedForm {
    /// Upstream's: no associated data, readable by the official service.
    Unbound,
    /// This service's: the owner's id is authenticated; the official service cannot read it.
    Bound,
}

impl SealedForm {
    /// The form of a stored value, and its base64 body.
    pub fn split(sealed: &str) -> (Self, &str) {
        let sealed = sealed.trim();
        match sealed.strip_prefix(BOUND_PREFIX) {
            Some(body) => (SealedForm::Bound, body),
            None => (SealedForm::Unbound, sealed),
        }
    }

    /// The form of a stored value.
    pub fn of(sealed: &str) -> Self {
        Self::split(sealed).0
    }
}

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
    #[error("a symmetric key must be 32 bytes (AES-256)")]
    WrongKeyLength,
    #[error(
        "the stored key does not open: sealed under another symmetric key, bound to another user, or altered"
    )]
    Unauthentic,
    #[error("the system random generator failed")]
    Random,
    #[error("AES-GCM sealing failed")]
    SealFailed,
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
            UnboundKey::new(&AES_256_GCM, symmetric_key).map_err(|_| SealError::WrongKeyLength)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            fallback: None,
            random: SystemRandom::new(),
        })
    }

    /// Also opens keys sealed under `symmetric_key`; sealing keeps using the main key.
    pub fn with_fallback(mut self, symmetric_key: &[u8]) -> Result<Self, SealError> {
        let unbound =
            UnboundKey::new(&AES_256_GCM, symmetric_key).map_err(|_| SealError::WrongKeyLength)?;
        self.fallback = Some(LessSafeKey::new(unbound));
        Ok(self)
    }

    /// Encrypts `owner`'s key into the stored `form`.
    pub fn seal_user_key(
        &self,
        key: &UserKey,
        owner: Uuid,
        form: SealedForm,
    ) -> Result<String, SealError> {
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
                associated_data(&owner, form),
                &mut buffer[..],
            )
            .map_err(|_| SealError::SealFailed)?;
        buffer.extend_from_slice(tag.as_ref());
        buffer.extend_from_slice(&nonce_bytes);
        let body = STANDARD.encode(&buffer[..]);
        Ok(match form {
            SealedForm::Unbound => body,
            SealedForm::Bound => format!("{BOUND_PREFIX}{body}"),
        })
    }

    /// Decrypts `owner`'s stored key, in either form; fails if it was altered, sealed under
    /// another key, or (bound) sealed for another user.
    pub fn open_user_key(&self, sealed: &str, owner: Uuid) -> Result<UserKey, SealError> {
        match (Self::open_with(&self.key, sealed, owner), &self.fallback) {
            (Err(SealError::Unauthentic), Some(fallback)) => {
                Self::open_with(fallback, sealed, owner)
            }
            (result, _) => result,
        }
    }

    /// Decrypts with the main key only (never the fallback).
    pub fn open_with_main_key(&self, sealed: &str, owner: Uuid) -> Result<UserKey, SealError> {
        Self::open_with(&self.key, sealed, owner)
    }

    fn open_with(key: &LessSafeKey, sealed: &str, owner: Uuid) -> Result<UserKey, SealError> {
        let (form, body) = SealedForm::split(sealed);
        let mut data = Zeroizing::new(STANDARD.decode(body).map_err(|_| SealError::NotBase64)?);
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
                associated_data(&owner, form),
                &mut data[..],
            )
            .map_err(|_| SealError::Unauthentic)?
            .len();
        data.truncate(plain_len);
        Ok(UserKey(data))
    }
}

/// What a seal authenticates besides the key: nothing (upstream's form), or the owner.
fn associated_data(owner: &Uuid, form: SealedForm) -> Aad<&[u8]> {
    match form {
        SealedForm::Unbound => Aad::from(&[][..]),
        SealedForm::Bound => Aad::from(&owner.as_bytes()[..]),
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

    fn seal(form: SealedForm, owner: Uuid, key: &[u8]) -> String {
        cipher()
            .seal_user_key(&UserKey::new(key.to_vec()), owner, form)
            .unwrap()
    }

    #[test]
    fn sealed_form_is_ciphertext_tag_nonce() {
        let sealed = seal(SealedForm::Unbound, Uuid::new_v4(), b"hello");
        let raw = STANDARD.decode(&sealed).unwrap();
        assert_eq!(raw.len(), 5 + TAG_LEN + NONCE_LEN);
    }

    #[test]
    fn open_reverses_seal_and_nonces_differ() {
        let c = cipher();
        let key = UserKey::new((0u8..64).collect());
        let owner = Uuid::new_v4();
        for form in [SealedForm::Unbound, SealedForm::Bound] {
            let a = c.seal_user_key(&key, owner, form).unwrap();
            let b = c.seal_user_key(&key, owner, form).unwrap();
            assert_ne!(a, b, "a fresh nonce per seal");
            assert_eq!(
                c.open_user_key(&a, owner).unwrap().as_bytes(),
                key.as_bytes()
            );
            assert_eq!(SealedForm::of(&a), form);
        }
    }

    #[test]
    fn an_unbound_key_opens_for_any_owner_as_upstreams_does() {
        let sealed = seal(SealedForm::Unbound, Uuid::new_v4(), b"victim's key");
        let thief = Uuid::new_v4();
        assert_eq!(
            cipher().open_user_key(&sealed, thief).unwrap().as_bytes(),
            b"victim's key"
        );
    }

    #[test]
    fn a_bound_key_opens_only_for_its_owner() {
        let owner = Uuid::new_v4();
        let sealed = seal(SealedForm::Bound, owner, b"victim's key");
        assert!(sealed.starts_with(BOUND_PREFIX));
        assert!(matches!(
            cipher().open_user_key(&sealed, Uuid::new_v4()),
            Err(SealError::Unauthentic)
        ));
        assert_eq!(
            cipher().open_user_key(&sealed, owner).unwrap().as_bytes(),
            b"victim's key"
        );
    }

    #[test]
    fn a_form_cannot_be_passed_off_as_the_other() {
        let owner = Uuid::new_v4();
        let bound = seal(SealedForm::Bound, owner, b"k");
        let stripped = bound.strip_prefix(BOUND_PREFIX).unwrap();
        assert!(matches!(
            cipher().open_user_key(stripped, owner),
            Err(SealError::Unauthentic)
        ));
        let unbound = seal(SealedForm::Unbound, owner, b"k");
        assert!(matches!(
            cipher().open_user_key(&format!("{BOUND_PREFIX}{unbound}"), owner),
            Err(SealError::Unauthentic)
        ));
    }

    #[test]
    fn no_upstream_value_is_read_as_bound() {
        // Upstream stores plain standard base64, whose alphabet has no `:`.
        for sealed in ["a2MxOg==", "kc1A", "KC1:AAAA", " a2MxOg== "] {
            assert_eq!(SealedForm::of(sealed), SealedForm::Unbound, "{sealed}");
        }
        assert!(STANDARD.decode("kc1:AAAA").is_err());
    }

    #[test]
    fn open_rejects_tampering_and_other_keys() {
        let owner = Uuid::new_v4();
        let sealed = seal(SealedForm::Unbound, owner, b"secret");
        let other = UserKeyCipher::new(&[8u8; 32]).unwrap();
        assert!(matches!(
            other.open_user_key(&sealed, owner),
            Err(SealError::Unauthentic)
        ));
        let mut raw = STANDARD.decode(&sealed).unwrap();
        raw[0] ^= 1;
        assert!(matches!(
            cipher().open_user_key(&STANDARD.encode(raw), owner),
            Err(SealError::Unauthentic)
        ));
        assert!(matches!(
            cipher().open_user_key("AAAA", owner),
            Err(SealError::TooShort)
        ));
        assert!(matches!(
            cipher().open_user_key("%%", owner),
            Err(SealError::NotBase64)
        ));
    }
}
