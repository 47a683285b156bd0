//! `check-config`: everything the server would do before its first request, and a little
//! more, reported line by line without changing anything.
//!
//! Checks, in order: the settings; the store (opened, schema checked, keys counted); the RSA
//! key (loaded, health check); the symmetric key (unwrapped, never created); a sample of user
//! keys decrypted; how many keys are bound to their user, and whether the database refuses
//! unbound ones; the recovery key and its wraps, if one is configured; the identity
//! server's discovery document and keys; the transfer target if one is configured. The exit
//! status is non-zero when any check fails.

use std::fmt::Write as _;
use std::time::Duration;

use super::{DatabaseWithKeys, KeyDatabase, SymmetricKeyUse};
use crate::config::{ListenUrl, SettingsGroup};
use crate::keys::RsaKeyProvider;
use crate::settings::{LoadedSettings, Settings};
use crate::store::MissingDatabase;

/// User keys decrypted to prove the symmetric key fits the data.
const SAMPLE: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Warning,
    Failed,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub outcome: Outcome,
    pub subject: &'static str,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn push(&mut self, outcome: Outcome, subject: &'static str, detail: impl Into<String>) {
        self.checks.push(Check {
            outcome,
            subject,
            detail: detail.into(),
        });
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome != Outcome::Failed)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            let tag = match check.outcome {
                Outcome::Ok => "ok  ",
                Outcome::Warning => "warn",
                Outcome::Failed => "FAIL",
            };
            let _ = writeln!(out, "{tag}  {:<18} {}", check.subject, check.detail);
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.outcome == Outcome::Failed)
            .count();
        let _ = if failed == 0 {
            writeln!(out, "\nall checks passed")
        } else {
            writeln!(out, "\n{failed} check(s) failed")
        };
        out
    }
}

/// Runs every check. Nothing is written anywhere.
pub async fn run(loaded: &LoadedSettings, listen: Result<Vec<ListenUrl>, String>) -> Report {
    let mut report = Report::default();
    let settings = &loaded.settings;
    report.push(
        Outcome::Ok,
        "settings",
        match &loaded.config_file {
            Some(path) => format!("read from {} and the environment", path.display()),
            None => "read from the environment".to_owned(),
        },
    );
    for warning in &loaded.warnings {
        report.push(Outcome::Warning, "settings", warning.clone());
    }
    match listen {
        Ok(urls) => report.push(
            Outcome::Ok,
            "listen",
            urls.iter()
                .map(|u| format!("{}:{}", u.host, u.port))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Err(error) => report.push(Outcome::Failed, "listen", error),
    }

    let opening = DatabaseWithKeys::main(
        &settings.database,
        &settings.rsa_key,
        SymmetricKeyUse::Existing,
    );
    let checked = super::run(opening, async |source: &KeyDatabase| {
        check_database(&mut report, settings, source).await;
        Ok(())
    })
    .await;
    match checked {
        Ok(()) => {}
        Err(error) if error.is_missing_database() => {
            report.push(
                Outcome::Warning,
                "database",
                format!("{error}; the service creates it at its first start"),
            );
            check_rsa_key_alone(&mut report, settings).await;
        }
        Err(error) => report.push(Outcome::Failed, "database/RSA key", error.to_string()),
    }

    check_identity_server(&mut report, &settings.identity_server_uri).await;

    if let Some(target) = settings
        .transfer_to
        .as_ref()
        .and_then(|t| t.target.as_ref())
    {
        let opening = DatabaseWithKeys {
            missing: MissingDatabase::Refuse,
            ..DatabaseWithKeys::transfer_target(target, SymmetricKeyUse::Existing)
        };
        let described = super::run(opening, async |target: &KeyDatabase| {
            Ok(format!(
                "{} store and {} open; {}",
                target.store.kind(),
                target.rsa_key.describe(),
                if target.cipher.is_some() {
                    "its symmetric key unwraps"
                } else {
                    "no symmetric key yet (the transfer creates one)"
                }
            ))
        })
        .await;
        match described {
            Ok(described) => report.push(Outcome::Ok, "transfer target", described),
            Err(error) if error.is_missing_database() => report.push(
                Outcome::Ok,
                "transfer target",
                format!("{error}; the transfer creates it"),
            ),
            Err(error) => report.push(Outcome::Failed, "transfer target", error.to_string()),
        }
    }
    report
}

/// The service's own database, opened with its RSA key: the store, the RSA key's health,
/// the keys and the recovery wraps.
async fn check_database(report: &mut Report, settings: &Settings, source: &KeyDatabase) {
    report.push(
        Outcome::Ok,
        "database",
        format!("{} store opened, schema checked", source.store.kind()),
    );
    check_rsa_key(report, source.rsa_key.as_ref()).await;
    check_keys(report, settings, source).await;
    check_recovery_wrap(report, settings, source).await;
}

/// The RSA key of a database that does not exist yet, opened on its own.
async fn check_rsa_key_alone(report: &mut Report, settings: &Settings) {
    match super::open_rsa_key(&settings.rsa_key, SettingsGroup::Main).await {
        Ok(rsa_key) => check_rsa_key(report, rsa_key.as_ref()).await,
        Err(error) => report.push(Outcome::Failed, "RSA key", error.to_string()),
    }
}

/// What the RSA key is, and whether it answers.
async fn check_rsa_key(report: &mut Report, rsa_key: &dyn RsaKeyProvider) {
    report.push(Outcome::Ok, "RSA key", rsa_key.describe());
    match rsa_key.check_health().await {
        Ok(()) => report.push(Outcome::Ok, "RSA key health", "answers"),
        Err(error) => report.push(Outcome::Failed, "RSA key health", error.to_string()),
    }
}

/// The recovery key's setting and the state of the stored wraps, read-only: a missing wrap
/// is a warning (the service writes it at its next start), a wrap for another recovery key
/// too (kept until `replace-recovery-wrap`).
async fn check_recovery_wrap(report: &mut Report, settings: &Settings, source: &KeyDatabase) {
    let recovery = match super::recovery_wraps::configured_key(settings) {
        Ok(Some(recovery)) => recovery,
        Ok(None) => {
            let stored = source.store.read_recovery_wraps().await.map(|w| w.len());
            if let Ok(count @ 1..) = stored {
                report.push(
                    Outcome::Warning,
                    "recovery wrap",
                    format!(
                        "no recovery key configured, but the database holds {count} recovery wrap(s) made earlier"
                    ),
                );
            }
            return;
        }
        Err(error) => {
            report.push(Outcome::Failed, "recovery key", error.to_string());
            return;
        }
    };
    report.push(
        Outcome::Ok,
        "recovery key",
        format!(
            "RSA {}-bit, fingerprint {}",
            recovery.bits(),
            recovery.fingerprint()
        ),
    );
    if source.cipher.is_none() {
        report.push(
            Outcome::Ok,
            "recovery wrap",
            "none yet: written with the symmetric key at first start",
        );
        return;
    }
    match super::recovery_wraps::status(source.store.as_ref(), source.rsa_key.as_ref(), &recovery)
        .await
    {
        Ok(status) => {
            let outcome = if status.is_current() {
                Outcome::Ok
            } else {
                Outcome::Warning
            };
            report.push(
                outcome,
                "recovery wrap",
                format!("current key: {}", status.current),
            );
            if let Some(pending) = &status.pending {
                report.push(outcome, "recovery wrap", format!("pending key: {pending}"));
            }
        }
        Err(error) => report.push(Outcome::Failed, "recovery wrap", error.to_string()),
    }
}

async fn check_keys(report: &mut Report, settings: &Settings, source: &KeyDatabase) {
    let rows = match source.store.list_user_keys().await {
        Ok(rows) => rows,
        Err(error) => {
            report.push(Outcome::Failed, "user keys", error.to_string());
            return;
        }
    };
    check_binding(report, settings, source, &rows).await;
    let Some(cipher) = &source.cipher else {
        if rows.is_empty() {
            report.push(
                Outcome::Ok,
                "symmetric key",
                "none yet: a new database; the service creates it at first start",
            );
        } else {
            report.push(
                Outcome::Failed,
                "symmetric key",
                format!("missing, but the database holds {} user keys", rows.len()),
            );
        }
        return;
    };
    report.push(Outcome::Ok, "symmetric key", "unwrapped by the RSA key");
    report_duplicate_ids(report, &rows);
    let sample: Vec<_> = rows.iter().take(SAMPLE).collect();
    let unreadable: Vec<_> = sample
        .iter()
        .filter(|row| cipher.open_user_key(&row.sealed_key, row.id).is_err())
        .map(|row| row.id.to_string())
        .collect();
    if unreadable.is_empty() {
        report.push(
            Outcome::Ok,
            "user keys",
            format!(
                "{} stored; {} sampled, all decrypt",
                rows.len(),
                sample.len()
            ),
        );
    } else {
        report.push(
            Outcome::Failed,
            "user keys",
            format!(
                "{} of {} sampled do not decrypt: {}",
                unreadable.len(),
                sample.len(),
                unreadable.join(", ")
            ),
        );
    }
}

/// The binding setting against what the database holds: keys still unbound while binding
/// is on (run `bind-user-keys`), unbound keys in a database that refuses them (they are
/// refused), a database refusing unbound keys with the setting off (keys are sealed bound
/// anyway).
async fn check_binding(
    report: &mut Report,
    settings: &Settings,
    source: &KeyDatabase,
    rows: &[crate::store::StoredUserKey],
) {
    use crate::config::UserKeyBinding;
    let state = match super::binding::BindingState::read(source.store.as_ref(), rows).await {
        Ok(state) => state,
        Err(error) => {
            report.push(Outcome::Failed, "user key binding", error.to_string());
            return;
        }
    };
    let setting = match settings.user_key_binding {
        UserKeyBinding::On => "on",
        UserKeyBinding::Off => "off",
    };
    let (outcome, advice) = match (settings.user_key_binding, state.unbound_refused) {
        (_, true) if state.unbound > 0 => (
            Outcome::Failed,
            "; the unbound keys are refused: run bind-user-keys again",
        ),
        (UserKeyBinding::Off, true) => (
            Outcome::Warning,
            "; new keys are sealed bound anyway: run unbind-user-keys to go back to upstream's form",
        ),
        (UserKeyBinding::On, false) if state.unbound > 0 => (
            Outcome::Warning,
            "; unbound keys could be copied between users: run bind-user-keys",
        ),
        (UserKeyBinding::On, false) => (
            Outcome::Warning,
            "; run bind-user-keys to make the database refuse unbound keys",
        ),
        _ => (Outcome::Ok, ""),
    };
    report.push(
        outcome,
        "user key binding",
        format!("setting {setting}; {state}{advice}"),
    );
}

/// Ids that stand more than once (upstream's racy first POST writes such JSON files): the
/// service serves and updates the first entry of each, as upstream reads it.
fn report_duplicate_ids(report: &mut Report, rows: &[crate::store::StoredUserKey]) {
    let mut seen = std::collections::HashMap::new();
    for row in rows {
        *seen.entry(row.id).or_insert(0usize) += 1;
    }
    let mut duplicated: Vec<String> = seen
        .into_iter()
        .filter(|(_, count)| *count > 1)
        .map(|(id, count)| format!("{id} ({count} entries)"))
        .collect();
    if duplicated.is_empty() {
        return;
    }
    duplicated.sort();
    report.push(
        Outcome::Warning,
        "user keys",
        format!(
            "{} user id(s) stand more than once: {}; the first entry of each is served and \
             updated, as upstream reads it; the others are never read",
            duplicated.len(),
            duplicated.join(", ")
        ),
    );
}

async fn check_identity_server(report: &mut Report, identity_server_uri: &str) {
    let client = match crate::auth::jwks::identity_http_client(Duration::from_secs(10)) {
        Ok(client) => client,
        Err(error) => {
            report.push(Outcome::Failed, "identity server", error.to_string());
            return;
        }
    };
    let discovery = format!(
        "{}/.well-known/openid-configuration",
        identity_server_uri.trim_end_matches('/')
    );
    if let Some(warning) = crate::auth::jwks::plain_http_warning(identity_server_uri) {
        report.push(Outcome::Warning, "identity server", warning);
    }
    match crate::auth::jwks::fetch_identity_keys(&client, &discovery).await {
        Ok(published) => {
            if let Some(warning) =
                crate::auth::jwks::foreign_jwks_warning(&discovery, &published.jwks_uri)
            {
                report.push(Outcome::Warning, "identity server", warning);
            }
            let keys = published.keys;
            report.push(
                Outcome::Ok,
                "identity server",
                format!("issuer {}, {} signing key(s)", keys.issuer, keys.keys.len()),
            );
        }
        // The service starts without it (and answers 503 until it is reachable), so this is
        // a warning: the identity server may simply not be up yet.
        Err(error) => report.push(
            Outcome::Warning,
            "identity server",
            format!("{discovery}: {error}"),
        ),
    }
}
