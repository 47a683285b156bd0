//! The `pkcs11` RSA key provider: a private key that never leaves a PKCS#11 token (an HSM,
//! a smart card, SoftHSM).
//!
//! Unwrapping runs inside the token (`CKM_RSA_PKCS_OAEP`, SHA-1, MGF1-SHA-1, as upstream).
//! Wrapping needs only the public key, so it runs here with aws-lc-rs: the public key comes
//! from the certificate provider when one is configured (upstream's only way), otherwise from
//! the token (a public-key object with the same label or id, or the private key's modulus).
//!
//! The library's state is process-wide (`C_Initialize`, the login of a token), so one
//! context serves every session, and one logged-in session is kept behind a mutex: a
//! `Session` must not be used from two threads at once. Every call into the library runs on
//! the blocking pool. A session that breaks (token removed, library restarted) is dropped and
//! reopened on the next call, so `/health` reports the outage and recovers on its own. The
//! PIN is never logged, and a PIN the token rejected is not retried behind the operator's
//! back: tokens lock after a few wrong tries.

use std::ffi::c_ulong;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use aws_lc_rs::rsa::{OAEP_SHA1_MGF1SHA1, OaepPublicEncryptingKey, PublicEncryptingKey};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use zeroize::Zeroizing;

use super::{Pkcs11KeySelector, Pkcs11Settings, Pkcs11UserType};
use super::{
    RSA_KEY_PKCS11_LIBRARY_PATH, RSA_KEY_PKCS11_LOGIN_PIN, RSA_KEY_PKCS11_LOGIN_USER_TYPE,
    RSA_KEY_PKCS11_PRIVATE_KEY_ID, RSA_KEY_PKCS11_PRIVATE_KEY_LABEL, RSA_KEY_PKCS11_PROVIDER,
    RSA_KEY_PKCS11_SLOT_TOKEN_SERIAL_NUMBER,
};
use crate::config::{SettingPath, SettingsGroup};
use crate::keys::certificate::CERTIFICATE_PROVIDER;
use crate::keys::certificate::CertificateFile;
use crate::keys::{KeyProviderError, RsaKeyProvider};
use crate::pkcs12;

/// The `CKA_ID` upstream searches for: the id as a native `CK_ULONG` (8 little-endian bytes on
/// x86-64 and aarch64 Linux), which is how Pkcs11Interop encodes a numeric attribute.
pub fn private_key_id_bytes(id: u64) -> Result<Vec<u8>, KeyProviderError> {
    private_key_id_bytes_in(id, SettingsGroup::Main)
}

/// [`private_key_id_bytes`] for the settings of `group`.
fn private_key_id_bytes_in(id: u64, group: SettingsGroup) -> Result<Vec<u8>, KeyProviderError> {
    let native = c_ulong::try_from(id).map_err(|_| {
        KeyProviderError::config(format!(
            "pkcs11PrivateKeyId {id} does not fit this platform's CK_ULONG \
             ({})",
            RSA_KEY_PKCS11_PRIVATE_KEY_ID.in_group(group)
        ))
    })?;
    Ok(native.to_ne_bytes().to_vec())
}

/// An RSA key on a PKCS#11 token.
pub struct Pkcs11KeyProvider {
    description: String,
    public: Arc<OaepPublicEncryptingKey>,
    token: Arc<Token>,
}

/// The token side: the library, how to log in, which key, and the one open session.
struct Token {
    context: Pkcs11,
    serial: String,
    user_type: Pkcs11UserType,
    pin: Option<cryptoki::types::AuthPin>,
    selector: Pkcs11KeySelector,
    /// `CKA_LABEL` or `CKA_ID` bytes to search for.
    template: Attribute,
    session: Mutex<Option<OpenSession>>,
    /// Set when the token refused the PIN after start-up; logging in again could lock it.
    pin_rejected: AtomicBool,
    /// A call that ran out of time and has not returned yet: its "finished" flag. Until it
    /// returns, new calls are answered as an outage at once instead of queueing behind it.
    /// Shared by every provider of this process on the same token (see [`stuck_call_of`]).
    stuck_call: StuckCall,
    /// The settings group the token was configured in, which messages name.
    group: SettingsGroup,
}

/// The "finished" flag of a call into the library that ran out of time, if any.
type StuckCall = Arc<Mutex<Option<Arc<AtomicBool>>>>;

/// The stuck-call state of the token `serial` in `library`, shared across providers: start-up
/// retries build a new provider each time, and must not log in again while an earlier
/// attempt's login is still pending in the library (with a wrong PIN, each attempt would
/// count against the token's retry limit and could lock it). Process-wide on purpose: a
/// loaded PKCS#11 library and its sessions are process-wide state too.
fn stuck_call_of(library: &std::path::Path, serial: &str) -> StuckCall {
    type Registry = Mutex<std::collections::HashMap<(std::path::PathBuf, String), StuckCall>>;
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    let mut registry = REGISTRY
        .get_or_init(Registry::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    Arc::clone(
        registry
            .entry((library.to_path_buf(), serial.to_owned()))
            .or_default(),
    )
}

struct OpenSession {
    session: Session,
    private_key: ObjectHandle,
}

impl Pkcs11KeyProvider {
    /// Loads the library, logs in to the token, finds the key and its public half.
    /// Messages name the settings of `group`, where the key was configured.
    pub async fn open(
        settings: &Pkcs11Settings,
        group: SettingsGroup,
    ) -> Result<Self, KeyProviderError> {
        let certificate = match &settings.certificate {
            Some(source) => Some(CertificateFile::read(source, group).await?),
            None => None,
        };
        let library_path = settings.library_path.clone();
        let template = match &settings.key {
            Pkcs11KeySelector::Label(label) => Attribute::Label(label.as_bytes().to_vec()),
            Pkcs11KeySelector::Id(id) => Attribute::Id(private_key_id_bytes_in(*id, group)?),
        };
        let library = library_path.clone();
        let context = blocking(move || load_library(&library, group)).await?;
        let token = Token {
            context,
            serial: settings.token_serial.clone(),
            user_type: settings.user_type,
            pin: settings.pin.clone(),
            selector: settings.key.clone(),
            template,
            session: Mutex::new(None),
            pin_rejected: AtomicBool::new(false),
            stuck_call: stuck_call_of(&library_path, &settings.token_serial),
            group,
        };
        let token = Arc::new(token);
        let token_public = token
            .call(|token| {
                let mut guard = token.lock();
                let open = token.open_session()?;
                let public = token.token_public_key(&open)?;
                *guard = Some(open);
                Ok(public)
            })
            .await?;

        let (public_der, source) = match certificate {
            Some(file) => {
                let bytes = Arc::clone(&file.bytes);
                let password = file.password.clone();
                let spki = blocking(move || {
                    Ok(pkcs12::rsa_public_key_spki(
                        &bytes,
                        password.as_deref().map(String::as_str),
                    ))
                })
                .await?
                .map_err(|e| file.error(e))?;
                if let Some(on_token) = &token_public
                    && !same_rsa_key(&spki, on_token)
                {
                    return Err(KeyProviderError::config(format!(
                        "the public key of the {} does not belong to the private key on the token; \
                         configure the certificate of that key ({})",
                        file.description,
                        SettingPath::certificate("*").in_group(group)
                    )));
                }
                (spki, file.description)
            }
            None => match token_public {
                Some(public) => (public.spki(), "public key read from the token".to_owned()),
                None => {
                    return Err(KeyProviderError::config(format!(
                        "the token does not reveal the public key of {}; configure its certificate \
                         ({})",
                        token.selector_text(),
                        CERTIFICATE_PROVIDER.in_group(group)
                    )));
                }
            },
        };
        let unusable = |e: &dyn std::fmt::Display| {
            KeyProviderError::config(format!(
                "unusable RSA public key ({e}; {})",
                crate::keys::RSA_KEY_SIZES
            ))
        };
        let public = PublicEncryptingKey::from_der(&public_der).map_err(|e| unusable(&e))?;
        let public = OaepPublicEncryptingKey::new(public).map_err(|e| unusable(&e))?;
        let description = format!(
            "PKCS#11 token {} via {}, private key {} (RSA {}-bit, OAEP SHA-1; {source})",
            token.serial,
            library_path.display(),
            token.selector_text(),
            public.key_size_bits(),
        );
        Ok(Self {
            description,
            public: Arc::new(public),
            token,
        })
    }
}

#[async_trait]
impl RsaKeyProvider for Pkcs11KeyProvider {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn wrap_symmetric_key(&self, key: &[u8]) -> Result<Vec<u8>, KeyProviderError> {
        let public = Arc::clone(&self.public);
        let plain = Zeroizing::new(key.to_vec());
        blocking(move || crate::keys::oaep_encrypt(&public, &OAEP_SHA1_MGF1SHA1, &plain)).await
    }

    async fn unwrap_symmetric_key(
        &self,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        let wrapped = wrapped.to_vec();
        self.token.call(move |token| token.decrypt(&wrapped)).await
    }

    async fn check_health(&self) -> Result<(), KeyProviderError> {
        self.token
            .call(|token| {
                token.with_session(|open| {
                    open.session.get_session_info()?;
                    open.session
                        .get_attributes(open.private_key, &[AttributeType::KeyType])?;
                    Ok(())
                })
            })
            .await
    }
}

/// Runs a library call on the blocking pool.
/// A call that has not returned by then is reported as an outage (a network HSM that hangs);
/// its thread stays parked in the library until the library lets go.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, KeyProviderError> + Send + 'static,
) -> Result<T, KeyProviderError> {
    match tokio::time::timeout(TOKEN_CALL_TIMEOUT, tokio::task::spawn_blocking(work)).await {
        Ok(finished) => finished.map_err(|e| {
            KeyProviderError::unavailable(format!("PKCS#11 task failed: {e}")).caused_by(e)
        })?,
        Err(_) => Err(KeyProviderError::unavailable(format!(
            "the PKCS#11 library did not return within {} s",
            TOKEN_CALL_TIMEOUT.as_secs()
        ))),
    }
}

/// Bound for one call into the PKCS#11 library (login and key search included).
const TOKEN_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn load_library(path: &std::path::Path, group: SettingsGroup) -> Result<Pkcs11, KeyProviderError> {
    let library_env = RSA_KEY_PKCS11_LIBRARY_PATH.in_group(group);
    if !path.exists() {
        return Err(KeyProviderError::config(format!(
            "the PKCS#11 library {} does not exist ({library_env}, or {})",
            path.display(),
            RSA_KEY_PKCS11_PROVIDER.in_group(group)
        )));
    }
    let context = Pkcs11::new(path).map_err(|e| {
        KeyProviderError::config(format!(
            "cannot load the PKCS#11 library {} ({library_env}): {e}",
            path.display()
        ))
        .caused_by(e)
    })?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another part of this process (a second provider, a test) initialised it first.
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(context),
        Err(e) => Err(KeyProviderError::config(format!(
            "the PKCS#11 library {} failed to initialise ({library_env}): {e}{}",
            path.display(),
            initialise_hint(path)
        ))
        .caused_by(e)),
    }
}

/// What a library that refuses to initialise usually lacks. Yubico's module refuses
/// without its configuration file, which names the `yubihsm-connector` to use.
fn initialise_hint(path: &std::path::Path) -> &'static str {
    let is_yubihsm = path
        .file_name()
        .is_some_and(|name| name.to_string_lossy().contains("yubihsm"));
    if is_yubihsm {
        "; the YubiHSM module needs its configuration: set YUBIHSM_PKCS11_CONF to a \
         yubihsm_pkcs11.conf naming the connector (e.g. `connector = http://yubihsm-connector:12345`)"
    } else {
        ""
    }
}

/// The RSA public key as the token reports it.
struct TokenPublicKey {
    modulus: Vec<u8>,
    exponent: Vec<u8>,
}

impl TokenPublicKey {
    /// `SubjectPublicKeyInfo` DER with algorithm `rsaEncryption`.
    fn spki(&self) -> Vec<u8> {
        let rsa_public_key = der(
            0x30,
            &[der_integer(&self.modulus), der_integer(&self.exponent)].concat(),
        );
        let algorithm = der(
            0x30,
            &[
                // 1.2.840.113549.1.1.1
                vec![
                    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
                ],
                vec![0x05, 0x00],
            ]
            .concat(),
        );
        let bit_string = der(0x03, &[&[0u8][..], &rsa_public_key].concat());
        der(0x30, &[algorithm, bit_string].concat())
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn der_integer(unsigned_be: &[u8]) -> Vec<u8> {
    let trimmed = strip_leading_zeros(unsigned_be);
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der(0x02, &content)
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// Whether a certificate's `SubjectPublicKeyInfo` holds the token's modulus and exponent.
fn same_rsa_key(spki: &[u8], token: &TokenPublicKey) -> bool {
    use x509_parser::prelude::FromDer;
    use x509_parser::public_key::PublicKey;
    let Ok((_, info)) = x509_parser::x509::SubjectPublicKeyInfo::from_der(spki) else {
        return false;
    };
    match info.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            strip_leading_zeros(rsa.modulus) == strip_leading_zeros(&token.modulus)
                && strip_leading_zeros(rsa.exponent) == strip_leading_zeros(&token.exponent)
        }
        _ => false,
    }
}

/// Library errors after which the session cannot be trusted and is reopened.
fn session_lost(error: &CkError) -> bool {
    matches!(
        error,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::TokenNotRecognized
                | RvError::ObjectHandleInvalid
                | RvError::KeyHandleInvalid
                | RvError::UserNotLoggedIn
                | RvError::CryptokiNotInitialized
                // An operation left unfinished on the session (a call abandoned midway):
                // waiting does not clear it, a new session does.
                | RvError::OperationActive
                | RvError::FunctionCanceled,
            _
        )
    )
}

impl Token {
    /// Runs `work` on the blocking pool, bounded by [`TOKEN_CALL_TIMEOUT`]. A call that runs
    /// out of time keeps its thread until the library returns; meanwhile further calls fail
    /// fast rather than each parking another thread behind the session lock.
    async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Token) -> Result<T, KeyProviderError> + Send + 'static,
    ) -> Result<T, KeyProviderError> {
        {
            let mut stuck = self
                .stuck_call
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match stuck.as_ref() {
                Some(finished) if !finished.load(Ordering::SeqCst) => {
                    return Err(KeyProviderError::unavailable(format!(
                        "PKCS#11 token {}: an earlier call has not returned after {} s",
                        self.serial,
                        TOKEN_CALL_TIMEOUT.as_secs()
                    )));
                }
                Some(_) => *stuck = None,
                None => {}
            }
        }
        let finished = Arc::new(AtomicBool::new(false));
        let (token, done) = (Arc::clone(self), Arc::clone(&finished));
        let result = blocking(move || {
            // Set however `work` ends, a panic included.
            struct MarkDone(Arc<AtomicBool>);
            impl Drop for MarkDone {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let _done = MarkDone(done);
            work(&token)
        })
        .await;
        if !finished.load(Ordering::SeqCst) {
            *self
                .stuck_call
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(finished);
        }
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OpenSession>> {
        // A panic while holding the lock leaves at worst a stale session, which the next
        // call replaces if it fails.
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn selector_text(&self) -> String {
        match &self.selector {
            Pkcs11KeySelector::Label(label) => {
                format!(
                    "labelled `{label}` ({})",
                    RSA_KEY_PKCS11_PRIVATE_KEY_LABEL.in_group(self.group)
                )
            }
            Pkcs11KeySelector::Id(id) => {
                format!(
                    "with id {id} ({})",
                    RSA_KEY_PKCS11_PRIVATE_KEY_ID.in_group(self.group)
                )
            }
        }
    }

    /// Runs `operation` on the open session, opening one first if needed; a session that
    /// turns out broken is replaced once. Errors here are outages, not configuration.
    fn with_session<T>(
        &self,
        mut operation: impl FnMut(&OpenSession) -> Result<T, CkError>,
    ) -> Result<T, KeyProviderError> {
        let mut guard = self.lock();
        let mut fresh = false;
        if guard.is_none() {
            *guard = Some(self.open_session().map_err(as_outage)?);
            fresh = true;
        }
        loop {
            let open = guard.as_ref().expect("a session was just opened");
            match operation(open) {
                Ok(value) => return Ok(value),
                Err(error) if session_lost(&error) && !fresh => {
                    tracing::warn!(%error, token = %self.serial, "PKCS#11 session lost; reopening");
                    *guard = None;
                    *guard = Some(self.open_session().map_err(as_outage)?);
                    fresh = true;
                }
                Err(error) => {
                    if session_lost(&error) {
                        *guard = None;
                    }
                    return Err(KeyProviderError::unavailable(format!(
                        "PKCS#11 token {}: {error}",
                        self.serial
                    )));
                }
            }
        }
    }

    fn decrypt(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyProviderError> {
        let group = self.group;
        let pin_env = RSA_KEY_PKCS11_LOGIN_PIN.in_group(group);
        let mechanism = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
            MechanismType::SHA1,
            PkcsMgfType::MGF1_SHA1,
            PkcsOaepSource::empty(),
        ));
        let mut refused = None;
        let result = self.with_session(|open| {
            match open.session.decrypt(&mechanism, open.private_key, wrapped) {
                Ok(plain) => Ok(Some(Zeroizing::new(plain))),
                Err(error) if session_lost(&error) => Err(error),
                // Anything else is the token's verdict on this ciphertext and this key.
                Err(CkError::Pkcs11(rv, _)) => {
                    refused = Some(rv);
                    Ok(None)
                }
                Err(other) => Err(other),
            }
        });
        match (result?, refused) {
            (Some(plain), _) => Ok(plain),
            (None, Some(RvError::KeyFunctionNotPermitted)) => {
                Err(KeyProviderError::config(format!(
                    "the private key {} on token {} may not decrypt (CKA_DECRYPT is false)",
                    self.selector_text(),
                    self.serial
                )))
            }
            (None, Some(RvError::MechanismInvalid | RvError::MechanismParamInvalid)) => {
                Err(KeyProviderError::config(format!(
                    "token {} does not offer RSA-OAEP with SHA-1 (CKM_RSA_PKCS_OAEP), which Key Connector databases use",
                    self.serial
                )))
            }
            // The token is short of memory or busy: that passes, the ciphertext is not at fault.
            (None, Some(rv @ (RvError::DeviceMemory | RvError::HostMemory))) => {
                Err(KeyProviderError::unavailable(format!(
                    "PKCS#11 token {} could not decrypt now ({rv:?})",
                    self.serial
                )))
            }
            (None, Some(RvError::PinExpired)) => Err(KeyProviderError::config(format!(
                "the PIN of PKCS#11 token {} has expired; set a new one on the token and in {pin_env}",
                self.serial
            ))),
            (None, Some(rv @ (RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange))) => {
                Err(KeyProviderError::unwrap_failed(format!(
                    "RSA-OAEP decryption in PKCS#11 token {} failed ({rv:?}): the stored symmetric key was not wrapped by the private key {}",
                    self.serial,
                    self.selector_text()
                )))
            }
            // Tokens differ in what they answer for a bad OAEP padding (FUNCTION_FAILED,
            // GENERAL_ERROR, DATA_INVALID, ...); the likely cause is named, not asserted.
            (None, rv) => Err(KeyProviderError::unwrap_failed(format!(
                "RSA-OAEP decryption in PKCS#11 token {} failed ({}): most likely the stored symmetric key was not wrapped by the private key {}",
                self.serial,
                rv.map(|rv| format!("{rv:?}")).unwrap_or_default(),
                self.selector_text()
            ))),
        }
    }

    /// Finds the token by serial, opens a read-write session (upstream does; an SO login
    /// needs one), logs in and finds exactly one private key. Errors name the setting.
    fn open_session(&self) -> Result<OpenSession, KeyProviderError> {
        let slot = self.find_slot()?;
        let session = self.context.open_rw_session(slot).map_err(|e| {
            KeyProviderError::unavailable(format!(
                "cannot open a session on PKCS#11 token {}: {e}",
                self.serial
            ))
            .caused_by(e)
        })?;
        self.login(&session)?;
        let private_key = self.find_private_key(&session)?;
        Ok(OpenSession {
            session,
            private_key,
        })
    }

    fn find_slot(&self) -> Result<Slot, KeyProviderError> {
        let group = self.group;
        let serial_env = RSA_KEY_PKCS11_SLOT_TOKEN_SERIAL_NUMBER.in_group(group);
        let slots = self.context.get_slots_with_token().map_err(|e| {
            KeyProviderError::unavailable(format!("cannot list PKCS#11 slots: {e}")).caused_by(e)
        })?;
        let mut present = Vec::new();
        for slot in slots {
            // A slot whose token cannot answer is skipped, as upstream does.
            let Ok(info) = self.context.get_token_info(slot) else {
                continue;
            };
            let serial = info.serial_number().trim();
            if serial.eq_ignore_ascii_case(&self.serial) {
                return Ok(slot);
            }
            present.push(format!("`{serial}` ({})", info.label().trim()));
        }
        Err(KeyProviderError::config(format!(
            "no PKCS#11 token with serial number `{}` ({serial_env}); tokens present: {}",
            self.serial,
            if present.is_empty() {
                "none".to_owned()
            } else {
                present.join(", ")
            }
        )))
    }

    fn login(&self, session: &Session) -> Result<(), KeyProviderError> {
        let group = self.group;
        let pin_env = RSA_KEY_PKCS11_LOGIN_PIN.in_group(group);
        let user_type_env = RSA_KEY_PKCS11_LOGIN_USER_TYPE.in_group(group);
        if self.pin_rejected.load(Ordering::Relaxed) {
            return Err(KeyProviderError::config(format!(
                "PKCS#11 login failed earlier: wrong PIN? ({pin_env}); not retrying, so the token does not lock; restart after fixing it"
            )));
        }
        let user_type = match self.user_type {
            Pkcs11UserType::User => UserType::User,
            Pkcs11UserType::SecurityOfficer => UserType::So,
            Pkcs11UserType::ContextSpecific => UserType::ContextSpecific,
        };
        let mut result = session.login(user_type, self.pin.as_ref());
        if self.user_type == Pkcs11UserType::ContextSpecific
            && matches!(
                result,
                Err(CkError::Pkcs11(
                    RvError::OperationNotInitialized | RvError::UserTypeInvalid,
                    _
                ))
            )
        {
            // Upstream logs in as CKU_CONTEXT_SPECIFIC right after opening the session. A
            // token that follows the standard accepts that only inside an operation, to
            // re-authenticate the user; the user's own login is what such a token needs.
            tracing::info!(
                token = %self.serial,
                "the token accepts a context-specific login only inside an operation; logging in as user with the same PIN"
            );
            result = session.login(UserType::User, self.pin.as_ref());
        }
        match result {
            // Login is per application and token: another session of ours already did it.
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinInvalid | RvError::PinLenRange,
                _,
            )) => {
                self.pin_rejected.store(true, Ordering::Relaxed);
                Err(KeyProviderError::config(format!(
                    "PKCS#11 login failed: wrong PIN? ({pin_env})"
                )))
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(KeyProviderError::config(format!(
                "PKCS#11 login failed: the PIN of token {} is locked ({pin_env})",
                self.serial
            ))),
            Err(CkError::Pkcs11(RvError::UserPinNotInitialized, _)) => {
                Err(KeyProviderError::config(format!(
                    "PKCS#11 login failed: token {} has no user PIN yet; initialise it, or log in as `so` ({user_type_env})",
                    self.serial
                )))
            }
            Err(CkError::Pkcs11(
                rv @ (RvError::UserTypeInvalid
                | RvError::UserAnotherAlreadyLoggedIn
                | RvError::SessionReadOnlyExists
                | RvError::OperationNotInitialized),
                _,
            )) => Err(KeyProviderError::config(format!(
                "PKCS#11 login failed: token {} refused this login user type ({rv:?}) ({user_type_env})",
                self.serial
            ))),
            Err(CkError::PinNotSet) => Err(KeyProviderError::config(format!(
                "PKCS#11 login failed: no PIN given ({pin_env})"
            ))),
            Err(e) => Err(KeyProviderError::unavailable(format!(
                "PKCS#11 login to token {} failed: {e}",
                self.serial
            ))
            .caused_by(e)),
        }
    }

    fn key_template(&self, class: ObjectClass) -> Vec<Attribute> {
        vec![
            Attribute::Class(class),
            Attribute::Token(true),
            self.template.clone(),
        ]
    }

    /// The token's keys of `class` that match the configured label or id.
    fn find_keys(
        &self,
        session: &Session,
        class: ObjectClass,
    ) -> Result<Vec<ObjectHandle>, KeyProviderError> {
        session
            .find_objects(&self.key_template(class))
            .map_err(|e| {
                KeyProviderError::unavailable(format!(
                    "cannot search PKCS#11 token {}: {e}",
                    self.serial
                ))
                .caused_by(e)
            })
    }

    fn find_private_key(&self, session: &Session) -> Result<ObjectHandle, KeyProviderError> {
        let group = self.group;
        let user_type_env = RSA_KEY_PKCS11_LOGIN_USER_TYPE.in_group(group);
        let found = self.find_keys(session, ObjectClass::PRIVATE_KEY)?;
        let key = match found.as_slice() {
            [key] => *key,
            [] => {
                return Err(KeyProviderError::config(format!(
                    "no private key {} on PKCS#11 token {} (is it visible to the `{}` login? {user_type_env})",
                    self.selector_text(),
                    self.serial,
                    match self.user_type {
                        Pkcs11UserType::User => "user",
                        Pkcs11UserType::SecurityOfficer => "so",
                        Pkcs11UserType::ContextSpecific => "context_specific",
                    }
                )));
            }
            several => {
                return Err(KeyProviderError::config(format!(
                    "{} private keys {} on PKCS#11 token {}; exactly one must match: give it a unique label or id",
                    several.len(),
                    self.selector_text(),
                    self.serial
                )));
            }
        };
        let attributes = session
            .get_attributes(
                key,
                &[AttributeType::KeyType, AttributeType::AlwaysAuthenticate],
            )
            .map_err(|e| {
                KeyProviderError::unavailable(format!(
                    "cannot read the private key's attributes on token {}: {e}",
                    self.serial
                ))
                .caused_by(e)
            })?;
        let is_rsa = attributes
            .iter()
            .any(|a| matches!(a, Attribute::KeyType(kind) if *kind == KeyType::RSA));
        if !is_rsa {
            return Err(KeyProviderError::config(format!(
                "the private key {} on token {} is not an RSA key",
                self.selector_text(),
                self.serial
            )));
        }
        // Such a key needs a PIN entry inside every decryption; refusing it here beats an
        // unwrap that fails at every start-up as if the token were away.
        if attributes
            .iter()
            .any(|a| matches!(a, Attribute::AlwaysAuthenticate(true)))
        {
            return Err(KeyProviderError::config(format!(
                "the private key {} on token {} demands a new login for every use (CKA_ALWAYS_AUTHENTICATE), \
                 which is not supported; use a key without it",
                self.selector_text(),
                self.serial
            )));
        }
        Ok(key)
    }

    /// The public key from a public-key object with the same label or id, or from the
    /// private key's own attributes; `None` if the token reveals neither.
    fn token_public_key(
        &self,
        open: &OpenSession,
    ) -> Result<Option<TokenPublicKey>, KeyProviderError> {
        let read = |object: ObjectHandle| -> Option<TokenPublicKey> {
            let attributes = open
                .session
                .get_attributes(
                    object,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .ok()?;
            let mut modulus = None;
            let mut exponent = None;
            for attribute in attributes {
                match attribute {
                    Attribute::Modulus(n) if !n.is_empty() => modulus = Some(n),
                    Attribute::PublicExponent(e) if !e.is_empty() => exponent = Some(e),
                    _ => {}
                }
            }
            Some(TokenPublicKey {
                modulus: modulus?,
                exponent: exponent?,
            })
        };
        let public_objects = self.find_keys(&open.session, ObjectClass::PUBLIC_KEY)?;
        if let [public] = public_objects.as_slice()
            && let Some(key) = read(*public)
        {
            return Ok(Some(key));
        }
        Ok(read(open.private_key))
    }
}

/// After start-up every failure to reach the token is an outage: retrying may help.
fn as_outage(error: KeyProviderError) -> KeyProviderError {
    match error {
        KeyProviderError::Config { message, .. }
        | KeyProviderError::UnwrapFailed { message, .. } => KeyProviderError::unavailable(message),
        unavailable => unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_native_unsigned_longs_like_pkcs11interop() {
        assert_eq!(
            private_key_id_bytes(1).unwrap(),
            1u64.to_le_bytes()[..std::mem::size_of::<c_ulong>()].to_vec()
        );
        if cfg!(all(
            target_pointer_width = "64",
            target_endian = "little",
            unix
        )) {
            assert_eq!(
                private_key_id_bytes(0x0102).unwrap(),
                vec![0x02, 0x01, 0, 0, 0, 0, 0, 0]
            );
        }
    }

    #[test]
    fn token_components_encode_as_a_key_aws_lc_accepts() {
        let private =
            aws_lc_rs::rsa::PrivateDecryptingKey::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .unwrap();
        let expected = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
            &private.public_key(),
        )
        .unwrap();
        let (_, info) = <x509_parser::x509::SubjectPublicKeyInfo as x509_parser::prelude::FromDer<
            _,
        >>::from_der(expected.as_ref())
        .unwrap();
        let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = info.parsed() else {
            panic!("not RSA");
        };
        // Tokens may return the modulus with or without a leading zero byte.
        let token = TokenPublicKey {
            modulus: [&[0u8][..], rsa.modulus].concat(),
            exponent: rsa.exponent.to_vec(),
        };
        assert_eq!(token.spki(), expected.as_ref());
        assert!(same_rsa_key(expected.as_ref(), &token));
        let other = TokenPublicKey {
            modulus: rsa.modulus.iter().map(|b| b ^ 1).collect(),
            exponent: rsa.exponent.to_vec(),
        };
        assert!(!same_rsa_key(expected.as_ref(), &other));
    }
}
