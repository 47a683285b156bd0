//! `backup --to FILE` and `backup --verify FILE|CONNECTION`: load the settings, open the
//! configured RSA key (or read the offline recovery key, `--recovery-key`), run
//! [`crate::operations::backup`] and say what came of it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::{CommandError, Outcome};
use crate::config::ConfigSource;
use crate::operations::backup::{
    self, BackupReport, BackupRequest, ConfiguredRsaKey, FAILED_SUFFIX, OfflineRecoveryKey,
    SymmetricKeySource, VerifyReport,
};
use crate::settings;

/// `--recovery-key FILE.pfx [--recovery-key-password-file FILE]`.
pub struct RecoveryKeyFile {
    pub pfx: PathBuf,
    pub password_file: Option<PathBuf>,
}

/// What `backup` was asked to do.
pub enum BackupCommand {
    /// Write a verified copy of the live file store to `to`.
    To { to: PathBuf, force: bool },
    /// Check a copy at `target` (a file, or a connection string of the configured provider).
    Verify { target: String },
}

/// What `backup` did.
pub enum BackupOutcome {
    Written(BackupReport),
    Verified(VerifyReport),
}

fn seconds(elapsed: Duration) -> String {
    format!("{:.1} s", elapsed.as_secs_f64())
}

impl fmt::Display for BackupOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupOutcome::Written(report) => {
                if report.verification.passed() {
                    writeln!(
                        f,
                        "backup written: {} ({} bytes, {} user keys checked, {})",
                        report.path.display(),
                        report.bytes,
                        report.verification.user_keys,
                        seconds(report.elapsed)
                    )?;
                } else {
                    writeln!(
                        f,
                        "backup FAILED its check and was NOT written under the name asked for; \
                         the copy is kept for inspection as {} ({} bytes, {}): do not rely on it",
                        report.path.display(),
                        report.bytes,
                        seconds(report.elapsed)
                    )?;
                }
                write!(f, "{}", report.verification)
            }
            BackupOutcome::Verified(report) => {
                write!(f, "{}", report.verification)?;
                writeln!(
                    f,
                    "checked {} user keys in {}; nothing was written to the copy",
                    report.verification.user_keys,
                    seconds(report.elapsed)
                )
            }
        }
    }
}

impl Outcome for BackupOutcome {
    fn succeeded(&self) -> bool {
        match self {
            BackupOutcome::Written(report) => report.verification.passed(),
            BackupOutcome::Verified(report) => report.verification.passed(),
        }
    }
}

pub async fn backup(
    source: &ConfigSource,
    command: BackupCommand,
    recovery: Option<RecoveryKeyFile>,
) -> Result<BackupOutcome, CommandError> {
    let loaded = settings::load(source)?;
    let settings = &loaded.settings;
    // Checked before anything is written: a backup that cannot be verified is not taken.
    let key_source: Box<dyn SymmetricKeySource> = match recovery {
        Some(file) => Box::new(OfflineRecoveryKey(super::recover::recovery_private_key(
            source,
            &file.pfx,
            file.password_file.as_deref(),
        )?)),
        None => Box::new(ConfiguredRsaKey::open(&settings.rsa_key).await?),
    };
    let key_source = key_source.as_ref();
    match command {
        BackupCommand::To { to, force } => {
            if to.to_string_lossy().ends_with(FAILED_SUFFIX) {
                return Err(CommandError::Refused(format!(
                    "backup --to {}: names ending in `{FAILED_SUFFIX}` are for backups that failed their check; choose another name",
                    to.display()
                )));
            }
            let request = BackupRequest {
                destination: to,
                replace: force,
                interactive: true,
            };
            let report = backup::backup_to(&settings.database, key_source, request).await?;
            Ok(BackupOutcome::Written(report))
        }
        BackupCommand::Verify { target } => {
            let copy = settings.database.same_provider_at(&target).map_err(|why| {
                CommandError::Refused(format!(
                    "backup --verify (KEY_CONNECTOR_BACKUP_VERIFY): {why}; give the copy as keyConnectorSettings__database__provider `{}` names it{}",
                    settings.database.provider_name(),
                    match settings.database.provider_name() {
                        "json" => " (the document's path)",
                        "sqlite" => " (a file path or `Data Source=...`)",
                        _ => " (a connection string like the setting's, naming the restored database)",
                    }
                ))
            })?;
            let report = backup::verify_copy(&copy, key_source, true).await?;
            Ok(BackupOutcome::Verified(report))
        }
    }
}
