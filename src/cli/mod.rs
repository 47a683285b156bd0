//! The command line: the service (`serve`, the default), the development quickstart (`dev`)
//! and the admin commands, all reading the same settings as the service.
//!
//! This is one of the two edges where errors become text (the HTTP layer is the other):
//! each command returns a value that prints itself, or an error that is logged; the exit
//! status follows from which. Results go to standard output, logs to standard error.

mod admin;
mod backup;
mod healthcheck;
mod recover;
mod serve;

use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{self, ConfigSource};
use crate::settings;
use crate::telemetry::{self, LogFormat};

#[derive(Parser)]
#[command(
    name = "key-connector",
    version,
    about = "A drop-in, self-hosted Bitwarden Key Connector"
)]
struct Cli {
    /// appsettings.json to read (default: ./appsettings.json when present).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Log line format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "KEY_CONNECTOR_LOG_FORMAT"
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Key Connector API (the default).
    Serve,
    /// Development quickstart on localhost: SQLite, generated certificate, built-in token
    /// issuer, ready-to-paste curl commands. NOT FOR PRODUCTION.
    Dev {
        /// Directory for the database, certificate and issuer key (kept between runs).
        #[arg(long, default_value = ".kc-dev", value_name = "DIR")]
        data_dir: PathBuf,
        /// Port on 127.0.0.1 (0 picks a free port).
        #[arg(long, default_value_t = 5000)]
        port: u16,
        /// Web vault origin allowed by CORS.
        #[arg(long, default_value = "http://localhost:8080", value_name = "URL")]
        web_vault_uri: String,
    },
    /// Check the settings, the database, the RSA key, the symmetric key, a sample of user
    /// keys and the identity server, without changing anything. Exit status 1 on any failure.
    CheckConfig,
    /// Copy every user key into the `transferTo` database and RSA key (upstream's transfer,
    /// on demand, whatever the lock file says), verifying each copy.
    Transfer {
        /// Report what would be copied; write no key (an absent target store is created
        /// empty, as the service would).
        #[arg(long)]
        dry_run: bool,
    },
    /// Wrap the symmetric key under the RSA key in `keyConnectorSettings:rotateTo` (rsaKey
    /// and certificate settings), leaving every user key as it is. Then switch the service's
    /// rsaKey/certificate settings to the new key.
    RotateRsaKey,
    /// Re-seal every user key under a new symmetric key. Resumable and safe to interrupt.
    /// Stop every instance of the service first (they would keep sealing with the old key).
    RotateSymmetricKey {
        /// Confirms that no instance of the service is running against this database.
        #[arg(long)]
        service_stopped: bool,
        /// Re-seal at most this many keys in this run (continue with later runs).
        #[arg(long, value_name = "N")]
        batch: Option<usize>,
    },
    /// Re-seal every user key bound to its user (needs keyConnectorSettings__userKeyBinding=on,
    /// on every instance too), then record in the database that unbound keys are refused.
    /// Resumable and safe to interrupt; the service may keep running.
    BindUserKeys {
        /// Re-seal at most this many keys in this run (continue with later runs).
        #[arg(long, value_name = "N")]
        batch: Option<usize>,
    },
    /// Undo bind-user-keys before switching back to the official service: clear the record
    /// that unbound keys are refused, then re-seal every key in upstream's form. Needs
    /// keyConnectorSettings__userKeyBinding=off. Stop every instance of the service first.
    UnbindUserKeys {
        /// Confirms that no instance of the service is running against this database.
        #[arg(long)]
        service_stopped: bool,
        /// Re-seal at most this many keys in this run (continue with later runs).
        #[arg(long, value_name = "N")]
        batch: Option<usize>,
    },
    /// How many users have a key, when keys were created and last read, and how many are
    /// bound to their user.
    Stats,
    /// Back up the database while the service runs (sqlite, json) and prove the copy
    /// restores: every user key in it must decrypt under the configured RSA key. Or check a
    /// copy restored from a dump (--verify). Exit status 1 when the check fails.
    #[command(group(clap::ArgGroup::new("action").required(true).args(["to", "verify"])))]
    Backup {
        /// Write the copy here (owner-only, atomically). A copy that fails its check is
        /// kept as FILE.failed instead.
        #[arg(long, value_name = "FILE")]
        to: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long, requires = "to")]
        force: bool,
        /// Check a copy without changing it: a file for sqlite and json, a connection string
        /// of the configured database provider for the SQL servers (the environment
        /// variable keeps its password off the command line).
        #[arg(
            long,
            value_name = "FILE|CONNECTION",
            env = "KEY_CONNECTOR_BACKUP_VERIFY",
            hide_env_values = true
        )]
        verify: Option<String>,
        /// Check with the offline recovery key (a PKCS#12 file) instead of the configured RSA
        /// key: proves the copy restores even if the RSA key is lost. Its password comes
        /// from KEY_CONNECTOR_RECOVERY_KEY_PASSWORD or --recovery-key-password-file.
        #[arg(long, value_name = "FILE.pfx")]
        recovery_key: Option<PathBuf>,
        /// A file holding the recovery PFX's password.
        #[arg(long, value_name = "FILE", requires = "recovery_key")]
        recovery_key_password_file: Option<PathBuf>,
    },
    /// Break glass: unwrap the symmetric key with the offline recovery key and wrap it under
    /// a new RSA key, after verifying every user key. The PFX password comes from
    /// KEY_CONNECTOR_RECOVERY_KEY_PASSWORD or --recovery-key-password-file.
    Recover {
        /// The recovery private key: a PKCS#12 (.pfx) file.
        #[arg(long, value_name = "FILE.pfx")]
        recovery_key: PathBuf,
        /// A file holding the PFX's password (instead of KEY_CONNECTOR_RECOVERY_KEY_PASSWORD).
        #[arg(long, value_name = "FILE")]
        recovery_key_password_file: Option<PathBuf>,
        /// The settings naming the new RSA key: `rotate-to` (keyConnectorSettings:rotateTo:...)
        /// or `rsa-key` (the service's own rsaKey/certificate settings).
        #[arg(long, value_enum, value_name = "SETTINGS")]
        to_rsa_key: recover::RecoveryTarget,
    },
    /// Wrap the symmetric key under the configured recovery key, replacing a wrap made for
    /// another recovery key (start-up only warns about one).
    ReplaceRecoveryWrap,
    /// Exit 0 if the running service answers `/health` with 200 (the container's HEALTHCHECK).
    Healthcheck {
        /// Default: the first address of ASPNETCORE_URLS on this machine.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

/// What a command produced: printed on standard output, and whether it succeeded.
pub trait Outcome: fmt::Display {
    fn succeeded(&self) -> bool {
        true
    }
}

/// Why a command could not produce its outcome; logged as an error.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Settings(#[from] config::ConfigError),
    #[error(transparent)]
    Listen(#[from] config::listen::ListenError),
    #[error(transparent)]
    Operation(#[from] crate::operations::OperationError),
    #[error(transparent)]
    Startup(#[from] crate::startup::StartupError),
    /// A command refused to run as asked, or something it needs is missing; the text says
    /// what to do.
    #[error("{0}")]
    Refused(String),
}

/// Prints a command's outcome and turns it into the exit status.
fn finish(result: Result<impl Outcome, CommandError>) -> ExitCode {
    match result {
        Ok(outcome) => {
            print!("{outcome}");
            if outcome.succeeded() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line, sets up logging and runs the command.
pub async fn run() -> ExitCode {
    let matches = Cli::command().after_help(settings::help()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let command = cli.command.unwrap_or(Command::Serve);
    let source = ConfigSource::from_process(cli.config);
    // The official image's `Serilog` section: levels for every command, the log file for the
    // service only. A section that cannot be read leaves the defaults; the settings' own
    // loading reports an unreadable file.
    let (log_settings, log_warnings) = config::logging::load(&source).unwrap_or_else(|_| {
        (
            config::logging::LogSettings::without_section(&source),
            Vec::new(),
        )
    });
    let _log_guard = telemetry::init(
        cli.log_format,
        &log_settings,
        matches!(command, Command::Serve),
    );
    for warning in &log_warnings {
        tracing::warn!("{warning}");
    }
    match command {
        Command::Serve => match serve::serve(&source, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                tracing::error!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::CheckConfig => admin::check_config(&source).await,
        Command::Transfer { dry_run } => finish(admin::transfer(&source, dry_run).await),
        Command::Stats => finish(admin::stats(&source).await),
        Command::Backup {
            to,
            force,
            verify,
            recovery_key,
            recovery_key_password_file,
        } => {
            let command = match (to, verify) {
                (Some(to), _) => Ok(backup::BackupCommand::To { to, force }),
                (None, Some(target)) => Ok(backup::BackupCommand::Verify { target }),
                (None, None) => Err(CommandError::Refused(
                    "backup: give --to FILE, or --verify FILE|CONNECTION".into(),
                )),
            };
            let recovery = recovery_key.map(|pfx| backup::RecoveryKeyFile {
                pfx,
                password_file: recovery_key_password_file,
            });
            finish(match command {
                Ok(command) => backup::backup(&source, command, recovery).await,
                Err(error) => Err(error),
            })
        }
        Command::Recover {
            recovery_key,
            recovery_key_password_file,
            to_rsa_key,
        } => finish(
            recover::recover(
                &source,
                recovery_key,
                recovery_key_password_file,
                to_rsa_key,
            )
            .await,
        ),
        Command::ReplaceRecoveryWrap => finish(recover::replace_recovery_wrap(&source).await),
        Command::RotateRsaKey => finish(admin::rotate_rsa_key(&source).await),
        Command::RotateSymmetricKey {
            service_stopped,
            batch,
        } => finish(admin::rotate_symmetric_key(&source, service_stopped, batch).await),
        Command::BindUserKeys { batch } => finish(admin::bind_user_keys(&source, batch).await),
        Command::UnbindUserKeys {
            service_stopped,
            batch,
        } => finish(admin::unbind_user_keys(&source, service_stopped, batch).await),
        Command::Healthcheck { url } => healthcheck::healthcheck(&source, url).await,
        Command::Dev {
            data_dir,
            port,
            web_vault_uri,
        } => {
            let options = crate::dev::DevOptions {
                data_dir,
                port,
                web_vault_origin: web_vault_uri,
            };
            match crate::dev::run(options, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
