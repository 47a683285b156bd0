//! Copying every user key into another database, re-sealed under that database's symmetric
//! key and RSA key: upstream's `transferTo`, and the `transfer` command.
//!
//! Like upstream: ids and dates are kept, a key that cannot be decrypted from the source is
//! logged and skipped, a key the target already has is never overwritten. Better than
//! upstream:
//! - every copied key is read back from the target and decrypted, and must equal the source;
//! - a key already in the target is counted as present when it holds the same key, and as a
//!   conflict (reported, left alone) when it does not, so a transfer can simply be run again
//!   after an interruption;
//! - the target failing (unreachable, full) stops the transfer with an error instead of
//!   skipping keys;
//! - the lock file says whether the copy finished: upstream writes it before copying, so an
//!   interrupted copy looked complete. Here it holds `in progress` until the copy is done and
//!   verified, and a start-up that finds `in progress` resumes the copy.

use std::io::Write;
use std::path::Path;

use uuid::Uuid;

use super::progress::Progress;
use super::{DatabaseWithKeys, KeyDatabase, OperationError, StepFailure, SymmetricKeyUse};
use crate::crypto::{SealedForm, UserKeyCipher};
use crate::private_file::owner_only;
use crate::settings::{Settings, TransferTarget, TransferToSettings};
use crate::store::{CreateOutcome, StoredUserKey};

/// What a transfer did (or, in a dry run, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TransferReport {
    /// User keys in the source.
    pub total: usize,
    /// Written to the target (dry run: would be written).
    pub copied: usize,
    /// Already in the target with the same key.
    pub already_present: usize,
    /// Read back from the target and equal to the source.
    pub verified: usize,
    /// Could not be decrypted from the source (upstream skips these too).
    pub skipped: Vec<(Uuid, String)>,
    /// In the target with a different key; left alone.
    pub conflicts: Vec<Uuid>,
}

impl TransferReport {
    /// Every source key is in the target with its value.
    pub fn is_complete(&self) -> bool {
        self.skipped.is_empty() && self.conflicts.is_empty()
    }

    pub fn summary(&self) -> String {
        self.summary_with("copied")
    }

    /// The summary with `verb` for what was (or would be) written: `copied`, `would copy`.
    pub fn summary_with(&self, verb: &str) -> String {
        format!(
            "{} user keys: {} {verb}, {} already present, {} verified, {} skipped, {} conflicting",
            self.total,
            self.copied,
            self.already_present,
            self.verified,
            self.skipped.len(),
            self.conflicts.len()
        )
    }
}

/// Copies every key of `source` into `target`. With `dry_run`, nothing is written: the
/// report says what would be copied.
pub async fn transfer(
    source: &KeyDatabase,
    target: &KeyDatabase,
    dry_run: bool,
    interactive: bool,
) -> Result<TransferReport, OperationError> {
    let source_cipher = source
        .cipher
        .as_ref()
        .ok_or(OperationError::NoSymmetricKey {
            database: "the source database",
            then: ", so it holds no readable user keys",
        })?;
    let failed = StepFailure("Nothing was lost; run the transfer again when it is fixed");
    let rows = source
        .store
        .list_user_keys()
        .await
        .map_err(failed.at("cannot list the source's user keys"))?;
    let mut report = TransferReport {
        total: rows.len(),
        ..TransferReport::default()
    };
    tracing::info!(keys = rows.len(), dry_run, "transferring user keys");
    let mut progress = Progress::new("transferring user keys", rows.len() as u64, interactive);
    let read_target = |id| target.store.read_user_key(id);
    for row in rows {
        progress.advance();
        let clear = match source_cipher.open_user_key(&row.sealed_key, row.id) {
            Ok(clear) => clear,
            Err(error) => {
                tracing::warn!(user = %row.id, %error, "cannot decrypt this user key from the source; skipped");
                report.skipped.push((row.id, error.to_string()));
                continue;
            }
        };
        let existing = read_target(row.id)
            .await
            .map_err(failed.at("cannot read from the target"))?;
        if let Some(existing) = existing {
            if holds(target.cipher.as_deref(), &existing, clear.as_bytes()) {
                report.already_present += 1;
            } else {
                tracing::warn!(user = %row.id, "the target holds a different key for this user; left alone");
                report.conflicts.push(row.id);
            }
            continue;
        }
        if dry_run {
            report.copied += 1;
            continue;
        }
        let target_cipher = target
            .cipher
            .as_deref()
            .ok_or(OperationError::NoSymmetricKey {
                database: "the target database",
                then: "",
            })?;
        // In the form it had: a bound key stays bound to its user.
        let sealed = target_cipher
            .seal_user_key(&clear, row.id, SealedForm::of(&row.sealed_key))
            .map_err(failed.at("cannot seal a user key for the target"))?;
        let copy = StoredUserKey {
            sealed_key: sealed,
            ..row.clone()
        };
        match target
            .store
            .create_user_key(&copy)
            .await
            .map_err(failed.at("cannot write to the target"))?
        {
            CreateOutcome::Created => report.copied += 1,
            // Written meanwhile by someone else (a client through a server on the target).
            CreateOutcome::AlreadyExists => {
                tracing::warn!(user = %row.id, "the user's key appeared in the target during the transfer; left alone");
                report.conflicts.push(row.id);
                continue;
            }
        }
        let written = read_target(row.id)
            .await
            .map_err(failed.at("cannot read back from the target"))?;
        match written {
            Some(written) if holds(Some(target_cipher), &written, clear.as_bytes()) => {
                report.verified += 1
            }
            _ => return Err(OperationError::TargetKeyDiffers { user: row.id }),
        }
    }
    progress.finish();
    Ok(report)
}

/// The `transfer` command: copies every key of the service's database into the configured
/// `target`. With `dry_run`, nothing is written: a target without a symmetric key gets
/// none, and its recovery wrap is left as it is.
pub async fn transfer_to_target(
    settings: &Settings,
    target: &TransferTarget,
    dry_run: bool,
) -> Result<TransferReport, OperationError> {
    let source = DatabaseWithKeys {
        what: "source",
        ..DatabaseWithKeys::main(
            &settings.database,
            &settings.rsa_key,
            SymmetricKeyUse::Existing,
        )
    };
    let target_key = if dry_run {
        SymmetricKeyUse::Existing
    } else {
        SymmetricKeyUse::CreatedIfMissing
    };
    let target = DatabaseWithKeys::transfer_target(target, target_key);
    super::run(
        (source, target),
        async |(from, to): &(KeyDatabase, KeyDatabase)| {
            if !dry_run {
                super::recovery_wraps::keep_target_current(settings, to).await?;
            }
            transfer(from, to, dry_run, true).await
        },
    )
    .await
}

/// Whether `row` decrypts (with `cipher`) to `clear`.
fn holds(cipher: Option<&UserKeyCipher>, row: &StoredUserKey, clear: &[u8]) -> bool {
    cipher
        .and_then(|c| c.open_user_key(&row.sealed_key, row.id).ok())
        .is_some_and(|found| found.as_bytes() == clear)
}

/// What the lock file says about an earlier transfer.
#[derive(Debug, PartialEq, Eq)]
pub enum LockState {
    /// No lock file: the transfer runs.
    Absent,
    /// Our marker of a transfer that did not finish: it runs again (it resumes).
    Interrupted,
    /// Finished, or written by the official service (which writes it before copying and
    /// does not say more): the transfer does not run, as upstream.
    Done,
}

const IN_PROGRESS: &str = "key-connector transfer in progress";
const COMPLETED: &str = "key-connector transfer completed";

pub fn lock_state(path: &Path) -> std::io::Result<LockState> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.starts_with(IN_PROGRESS) => Ok(LockState::Interrupted),
        Ok(_) => Ok(LockState::Done),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockState::Absent),
        // Unreadable but present (binary content, permissions): it exists, as upstream checks.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Ok(LockState::Done),
        Err(e) => Err(e),
    }
}

/// Writes the lock file durably (temporary file, fsync, rename).
fn write_lock(path: &Path, text: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp-key-connector");
    {
        // Owner-only, like every file the service writes: nobody else has a use for it.
        let mut file = owner_only(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
        )
        .open(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Upstream's start-up `transferTo`: when a lock file path and a target are configured and
/// the lock file does not forbid it, copy every key from `source` into the target.
/// Returns `None` when no transfer was due.
pub async fn run_at_start_up(
    settings: &Settings,
    source: &KeyDatabase,
) -> Result<Option<TransferReport>, OperationError> {
    let Some(TransferToSettings {
        lockfile_path: Some(lockfile),
        target: Some(target),
    }) = &settings.transfer_to
    else {
        if let Some(TransferToSettings {
            lockfile_path: Some(_),
            target: None,
        }) = &settings.transfer_to
        {
            tracing::debug!("transferTo: no target database and RSA key configured; nothing to do");
        }
        return Ok(None);
    };
    let io_error = |source| OperationError::LockFile {
        path: lockfile.to_path_buf(),
        source,
    };
    match lock_state(lockfile).map_err(io_error)? {
        LockState::Done => {
            tracing::info!(lockfile = %lockfile.display(), "transferTo: not running, the lock file exists");
            return Ok(None);
        }
        LockState::Interrupted => tracing::warn!(
            lockfile = %lockfile.display(),
            "transferTo: an earlier transfer did not finish; running it again (keys already copied are kept)"
        ),
        LockState::Absent => {}
    }
    let started = crate::dotnet_time::format_iso_utc(crate::dotnet_time::now_utc());
    write_lock(lockfile, &format!("{IN_PROGRESS} since {started}\n")).map_err(io_error)?;
    tracing::info!("transferTo: starting the transfer to the new database");
    let opening = DatabaseWithKeys::transfer_target(target, SymmetricKeyUse::CreatedIfMissing);
    let report = super::run(opening, async |target: &KeyDatabase| {
        super::recovery_wraps::keep_target_current(settings, target).await?;
        transfer(source, target, false, false).await
    })
    .await?;
    let finished = crate::dotnet_time::format_iso_utc(crate::dotnet_time::now_utc());
    let mut text = format!("{COMPLETED} at {finished}: {}\n", report.summary());
    for (id, reason) in &report.skipped {
        text.push_str(&format!("skipped {id}: {reason}\n"));
    }
    for id in &report.conflicts {
        text.push_str(&format!(
            "conflict {id}: the target holds a different key\n"
        ));
    }
    write_lock(lockfile, &text).map_err(io_error)?;
    tracing::info!(
        total = report.total,
        copied = report.copied,
        already_present = report.already_present,
        verified = report.verified,
        skipped = report.skipped.len(),
        conflicts = report.conflicts.len(),
        "transferTo: finished"
    );
    Ok(Some(report))
}
