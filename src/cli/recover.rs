//! The recovery-key commands: `recover` (the break-glass path when the RSA key is lost) and
//! `replace-recovery-wrap`. Each loads the service's settings, runs its task from
//! [`crate::operations`] and returns what to print.
//!
//! The recovery private key's password is never a command-line argument (the command line
//! is visible to every local user in `ps`): it comes from the environment variable
//! [`PASSWORD_VAR`] or from a file.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{CommandError, Outcome};
use crate::config::{ConfigSource, SettingsGroup};
use crate::crypto::recovery::{RecoveryPrivateKey, RecoveryStatus};
use crate::operations::break_glass::RecoverReport;
use crate::settings;

/// The environment variable holding the recovery PFX's password.
pub const PASSWORD_VAR: &str = "KEY_CONNECTOR_RECOVERY_KEY_PASSWORD";

/// Which settings name the RSA key `recover` wraps the symmetric key under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecoveryTarget {
    /// `keyConnectorSettings:rotateTo:rsaKey` (and `rotateTo:certificate`), as for
    /// `rotate-rsa-key`.
    RotateTo,
    /// The service's own `keyConnectorSettings:rsaKey` (and `certificate`), already pointed
    /// at the new key.
    RsaKey,
}

/// What `recover` did.
pub struct RecoverOutcome {
    report: RecoverReport,
    target: RecoveryTarget,
}

impl fmt::Display for RecoverOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let report = &self.report;
        writeln!(
            f,
            "recovered: the symmetric key{} (recovery key {}) is now wrapped by {}; all {} user keys verified under it.",
            if report.pending_recovered {
                " and the pending key of the unfinished rotation"
            } else {
                ""
            },
            report.fingerprint,
            report.new_provider,
            report.user_keys
        )?;
        match self.target {
            RecoveryTarget::RotateTo => writeln!(
                f,
                "Next: set keyConnectorSettings__rsaKey__* / __certificate__* to the values of __rotateTo__* and start the service."
            ),
            RecoveryTarget::RsaKey => writeln!(f, "Next: start the service with these settings."),
        }
    }
}

impl Outcome for RecoverOutcome {}

/// Reads the recovery PFX and its password (from `password_file`, else [`PASSWORD_VAR`];
/// none when neither is set). Every command taking the recovery key reads it this way.
pub(super) fn recovery_private_key(
    source: &ConfigSource,
    pfx: &Path,
    password_file: Option<&Path>,
) -> Result<RecoveryPrivateKey, CommandError> {
    let password = match password_file {
        Some(path) => {
            let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                CommandError::Refused(format!(
                    "cannot read the recovery key's password file {} (--recovery-key-password-file): {e}",
                    path.display()
                ))
            })?);
            Some(Zeroizing::new(
                text.trim_end_matches(['\r', '\n']).to_owned(),
            ))
        }
        None => source
            .var(PASSWORD_VAR)
            .map(|p| Zeroizing::new(p.to_owned())),
    };
    let bytes = Zeroizing::new(std::fs::read(pfx).map_err(|e| {
        CommandError::Refused(format!(
            "cannot read the recovery key {} (--recovery-key): {e}",
            pfx.display()
        ))
    })?);
    RecoveryPrivateKey::from_pfx(&bytes, password.as_deref().map(String::as_str)).map_err(|e| {
        CommandError::Refused(format!(
            "the recovery key {} (--recovery-key; its password from {PASSWORD_VAR} or --recovery-key-password-file): {e}",
            pfx.display()
        ))
    })
}

/// `recover --recovery-key FILE.pfx --to-rsa-key rotate-to|rsa-key`.
pub async fn recover(
    source: &ConfigSource,
    recovery_key: PathBuf,
    password_file: Option<PathBuf>,
    target: RecoveryTarget,
) -> Result<RecoverOutcome, CommandError> {
    let loaded = settings::load(source)?;
    let settings = &loaded.settings;
    let private = recovery_private_key(source, &recovery_key, password_file.as_deref())?;
    let (to, group) = match target {
        RecoveryTarget::RsaKey => (&settings.rsa_key, SettingsGroup::Main),
        RecoveryTarget::RotateTo => match &settings.rotate_to {
            Some(rotate_to) => (rotate_to, SettingsGroup::RotateTo),
            None => {
                return Err(CommandError::Refused(
                    "--to-rsa-key rotate-to: no new RSA key: set keyConnectorSettings__rotateTo__rsaKey__provider and its settings \
                     (e.g. keyConnectorSettings__rotateTo__certificate__filesystemPath), as for rsaKey/certificate"
                        .into(),
                ));
            }
        },
    };
    let report =
        crate::operations::break_glass::recover(&settings.database, &private, to, group, true)
            .await?;
    Ok(RecoverOutcome { report, target })
}

/// What `replace-recovery-wrap` did.
pub struct ReplaceOutcome(RecoveryStatus);

impl fmt::Display for ReplaceOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "recovery wrap for recovery key {}: current key: {}",
            self.0.configured_fingerprint, self.0.current
        )?;
        if let Some(pending) = &self.0.pending {
            writeln!(f, "pending key: {pending}")?;
        }
        Ok(())
    }
}

impl Outcome for ReplaceOutcome {}

pub async fn replace_recovery_wrap(source: &ConfigSource) -> Result<ReplaceOutcome, CommandError> {
    let loaded = settings::load(source)?;
    let status = crate::operations::recovery_wraps::replace_recovery_wrap(&loaded.settings).await?;
    Ok(ReplaceOutcome(status))
}
