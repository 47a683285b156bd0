//! The admin commands: `check-config`, `transfer`, `rotate-rsa-key`, `rotate-symmetric-key`,
//! `bind-user-keys`, `unbind-user-keys` and `stats`. Each loads the service's settings, runs its task from
//! [`crate::operations`] and returns what to print.

use std::fmt;
use std::process::ExitCode;

use super::{CommandError, Outcome};
use crate::config::{ConfigSource, UserKeyBinding};
use crate::operations::binding::{BindingReport, BindingState};
use crate::operations::check;
use crate::operations::rotate::{RotationReport, SymmetricRotationReport};
use crate::operations::stats::{self, KeyStats};
use crate::operations::transfer::TransferReport;
use crate::settings;

/// `check-config`. Its report is printed whatever happened, a settings error included.
pub async fn check_config(source: &ConfigSource) -> ExitCode {
    let loaded = match settings::load(source) {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::error!("{error}");
            println!("FAIL  settings           see the error above");
            return ExitCode::FAILURE;
        }
    };
    let listen = source.listen_urls().map_err(|e| e.to_string());
    let report = check::run(&loaded, listen).await;
    print!("{}", report.render());
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What `transfer` did, or in a dry run would do.
pub struct TransferOutcome {
    report: TransferReport,
    dry_run: bool,
}

impl fmt::Display for TransferOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run { "would copy" } else { "copied" };
        writeln!(f, "{}", self.report.summary_with(verb))?;
        for (id, reason) in &self.report.skipped {
            writeln!(f, "skipped  {id}: {reason}")?;
        }
        for id in &self.report.conflicts {
            writeln!(
                f,
                "conflict {id}: the target holds a different key (left alone)"
            )?;
        }
        Ok(())
    }
}

impl Outcome for TransferOutcome {
    fn succeeded(&self) -> bool {
        self.report.is_complete()
    }
}

pub async fn transfer(
    source: &ConfigSource,
    dry_run: bool,
) -> Result<TransferOutcome, CommandError> {
    let loaded = settings::load(source)?;
    let settings = &loaded.settings;
    let Some(target) = settings
        .transfer_to
        .as_ref()
        .and_then(|t| t.target.as_ref())
    else {
        return Err(CommandError::Refused(
            "no transfer target: set keyConnectorSettings__transferTo__database__provider (and its connection setting) \
             and keyConnectorSettings__transferTo__rsaKey__provider (and its certificate settings)"
                .into(),
        ));
    };
    let report = crate::operations::transfer::transfer_to_target(settings, target, dry_run).await?;
    Ok(TransferOutcome { report, dry_run })
}

/// What `rotate-rsa-key` did.
pub struct RsaRotationOutcome(RotationReport);

impl fmt::Display for RsaRotationOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "the symmetric key is now wrapped by {} (was {}); user keys unchanged.\n\
             Next: set keyConnectorSettings__rsaKey__* / __certificate__* to the values of __rotateTo__* and restart every instance.",
            self.0.new_provider, self.0.old_provider
        )
    }
}

impl Outcome for RsaRotationOutcome {}

pub async fn rotate_rsa_key(source: &ConfigSource) -> Result<RsaRotationOutcome, CommandError> {
    let loaded = settings::load(source)?;
    let settings = &loaded.settings;
    let Some(new) = &settings.rotate_to else {
        return Err(CommandError::Refused(
            "no new RSA key: set keyConnectorSettings__rotateTo__rsaKey__provider and its settings \
             (e.g. keyConnectorSettings__rotateTo__certificate__filesystemPath), as for rsaKey/certificate"
                .into(),
        ));
    };
    let recovery = crate::operations::recovery_wraps::configured_key(settings)?;
    let report = crate::operations::rotate::rotate_rsa_key(
        &settings.database,
        &settings.rsa_key,
        new,
        recovery.as_ref(),
    )
    .await?;
    Ok(RsaRotationOutcome(report))
}

/// What one run of `rotate-symmetric-key` did.
pub struct SymmetricRotationOutcome(SymmetricRotationReport);

impl fmt::Display for SymmetricRotationOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let report = &self.0;
        writeln!(
            f,
            "{} user keys: {} re-sealed now, {} already re-sealed, {} unreadable",
            report.total,
            report.resealed,
            report.already_resealed,
            report.unreadable.len()
        )?;
        if report.completed {
            writeln!(
                f,
                "rotation completed: the new symmetric key is current; start the service"
            )
        } else {
            writeln!(
                f,
                "rotation not finished: run the command again to continue (every key stays readable meanwhile)"
            )
        }
    }
}

impl Outcome for SymmetricRotationOutcome {}

pub async fn rotate_symmetric_key(
    source: &ConfigSource,
    service_stopped: bool,
    batch: Option<usize>,
) -> Result<SymmetricRotationOutcome, CommandError> {
    if !service_stopped {
        return Err(CommandError::Refused(
            "rotate-symmetric-key: stop every instance of the service first (a running instance keeps the old key \
             in memory and would seal new keys with it), then run again with --service-stopped"
                .into(),
        ));
    }
    let loaded = settings::load(source)?;
    let settings = &loaded.settings;
    let recovery = crate::operations::recovery_wraps::configured_key(settings)?;
    let report = crate::operations::rotate::rotate_symmetric_key(
        &settings.database,
        &settings.rsa_key,
        batch,
        true,
        recovery.as_ref(),
    )
    .await?;
    Ok(SymmetricRotationOutcome(report))
}

/// What one run of `bind-user-keys` or `unbind-user-keys` did.
pub struct BindingOutcome {
    report: BindingReport,
    bind: bool,
}

impl fmt::Display for BindingOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let report = &self.report;
        let (form, command) = if self.bind {
            ("bound", "bind-user-keys")
        } else {
            ("unbound", "unbind-user-keys")
        };
        writeln!(
            f,
            "{} user keys: {} {form} now, {} already {form}, {} changed meanwhile, {} unreadable",
            report.total,
            report.resealed,
            report.already,
            report.changed_meanwhile,
            report.unreadable.len()
        )?;
        for id in &report.unreadable {
            writeln!(
                f,
                "unreadable {id}: does not open for this user (altered, or copied from another user's row); left as it is"
            )?;
        }
        match (report.completed, self.bind) {
            (true, true) => writeln!(
                f,
                "every key is bound: the database now refuses unbound keys (undo with unbind-user-keys)"
            ),
            (true, false) => writeln!(
                f,
                "every key is in upstream's form: the official service can read this database"
            ),
            (false, _) if !report.unreadable.is_empty() => writeln!(
                f,
                "not finished: investigate the unreadable keys, then run {command} again"
            ),
            (false, _) => writeln!(
                f,
                "not finished: run {command} again to continue (every key stays readable meanwhile)"
            ),
        }
    }
}

impl Outcome for BindingOutcome {
    fn succeeded(&self) -> bool {
        self.report.unreadable.is_empty()
    }
}

pub async fn bind_user_keys(
    source: &ConfigSource,
    batch: Option<usize>,
) -> Result<BindingOutcome, CommandError> {
    let loaded = settings::load(source)?;
    let settings = &loaded.settings;
    if settings.user_key_binding != UserKeyBinding::On {
        return Err(CommandError::Refused(
            "bind-user-keys: set keyConnectorSettings__userKeyBinding=on here and on every instance of the service first (an instance with it off keeps writing unbound keys, which are refused once every key is bound)"
                .into(),
        ));
    }
    let report = crate::operations::binding::bind_user_keys(
        &settings.database,
        &settings.rsa_key,
        batch,
        true,
    )
    .await?;
    Ok(BindingOutcome { report, bind: true })
}

pub async fn unbind_user_keys(
    source: &ConfigSource,
    service_stopped: bool,
    batch: Option<usize>,
) -> Result<BindingOutcome, CommandError> {
    if !service_stopped {
        return Err(CommandError::Refused(
            "unbind-user-keys: stop every instance of the service first (a running instance that saw every key bound refuses unbound keys until it restarts), then run again with --service-stopped"
                .into(),
        ));
    }
    let loaded = settings::load(source)?;
    let settings = &loaded.settings;
    if settings.user_key_binding != UserKeyBinding::Off {
        return Err(CommandError::Refused(
            "unbind-user-keys: set keyConnectorSettings__userKeyBinding=off first (here and wherever the service will run): with it on, new keys would be sealed bound again"
                .into(),
        ));
    }
    let report = crate::operations::binding::unbind_user_keys(
        &settings.database,
        &settings.rsa_key,
        batch,
        true,
    )
    .await?;
    Ok(BindingOutcome {
        report,
        bind: false,
    })
}

/// What `stats` found.
pub struct StatsOutcome(KeyStats, BindingState);

impl fmt::Display for StatsOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.0)?;
        writeln!(f, "user key binding:     {}", self.1)
    }
}

impl Outcome for StatsOutcome {}

pub async fn stats(source: &ConfigSource) -> Result<StatsOutcome, CommandError> {
    let loaded = settings::load(source)?;
    let (stats, binding) = stats::read(&loaded.settings.database).await?;
    Ok(StatsOutcome(stats, binding))
}
