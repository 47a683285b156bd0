//! The `key-connector` binary: parses the command line and hands over to the library.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use key_connector::config::{self, ConfigSource};
use key_connector::startup::Application;
use key_connector::telemetry::{self, LogFormat};

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
    /// How many users have a key, and when keys were created and last read.
    Stats,
    /// Exit 0 if the running service answers `/health` with 200 (the container's HEALTHCHECK).
    Healthcheck {
        /// Default: the first address of ASPNETCORE_URLS on this machine.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command()
        .after_help(config::raw::settings_help())
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let command = cli.command.unwrap_or(Command::Serve);
    // The official image's `Serilog` section: levels for every command, the log file for the
    // service only. A section that cannot be read leaves the defaults; the settings' own
    // loading reports an unreadable file.
    let (log_settings, log_warnings) =
        config::logging::load(&ConfigSource::from_process(cli.config.clone())).unwrap_or_default();
    let _log_guard = telemetry::init(
        cli.log_format,
        &log_settings,
        matches!(command, Command::Serve),
    );
    for warning in &log_warnings {
        tracing::warn!("{warning}");
    }
    match command {
        Command::Serve => serve(cli.config).await,
        Command::CheckConfig => admin::check_config(cli.config).await,
        Command::Transfer { dry_run } => admin::transfer(cli.config, dry_run).await,
        Command::Stats => admin::stats(cli.config).await,
        Command::RotateRsaKey => admin::rotate_rsa_key(cli.config).await,
        Command::RotateSymmetricKey {
            service_stopped,
            batch,
        } => admin::rotate_symmetric_key(cli.config, service_stopped, batch).await,
        Command::Healthcheck { url } => admin::healthcheck(url).await,
        Command::Dev {
            data_dir,
            port,
            web_vault_uri,
        } => {
            let options = key_connector::dev::DevOptions {
                data_dir,
                port,
                web_vault_origin: web_vault_uri,
            };
            match key_connector::dev::run(options, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(config_file: Option<PathBuf>) -> ExitCode {
    let loaded = match config::load(&ConfigSource::from_process(config_file)) {
        Ok(loaded) => loaded,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let listen = match config::listen::parse_listen_urls(
        std::env::var("ASPNETCORE_URLS").ok().as_deref(),
        std::env::var("ASPNETCORE_HTTP_PORTS").ok().as_deref(),
    ) {
        Ok(listen) => listen,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    // Opt-in Prometheus listener, in ASPNETCORE_URLS syntax (e.g. http://127.0.0.1:9464).
    let metrics_listen = match std::env::var("KEY_CONNECTOR_METRICS_URLS") {
        Ok(urls) if !urls.trim().is_empty() => {
            match config::listen::parse_listen_urls(Some(&urls), None) {
                Ok(listen) => Some(listen),
                Err(error) => {
                    tracing::error!("KEY_CONNECTOR_METRICS_URLS: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => None,
    };
    // Installed before start-up so that start-up's own RSA key and store calls are counted.
    if metrics_listen.is_some()
        && let Err(error) = key_connector::metrics::install()
    {
        tracing::error!("cannot start metrics: {error}");
        return ExitCode::FAILURE;
    }
    let mut app = match Application::build(&loaded.settings, &listen).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(metrics_listen) = metrics_listen
        && let Err(error) = app.enable_metrics(&metrics_listen).await
    {
        tracing::error!("{error}");
        return ExitCode::FAILURE;
    }
    app.run_until_stopped(shutdown_signal()).await;
    ExitCode::SUCCESS
}

/// The admin subcommands: same settings as `serve`, results on stdout, logs on stderr.
mod admin {
    use std::path::PathBuf;
    use std::process::ExitCode;

    use key_connector::config::{self, ConfigSource, LoadedSettings, SettingsGroup};
    use key_connector::operations::{KeyDatabase, check, stats, transfer};

    fn load(config_file: Option<PathBuf>) -> Result<LoadedSettings, ExitCode> {
        config::load(&ConfigSource::from_process(config_file)).map_err(|error| {
            tracing::error!("{error}");
            ExitCode::FAILURE
        })
    }

    pub async fn check_config(config_file: Option<PathBuf>) -> ExitCode {
        let loaded = match load(config_file) {
            Ok(loaded) => loaded,
            Err(code) => {
                println!("FAIL  settings           see the error above");
                return code;
            }
        };
        let listen = config::listen::parse_listen_urls(
            std::env::var("ASPNETCORE_URLS").ok().as_deref(),
            std::env::var("ASPNETCORE_HTTP_PORTS").ok().as_deref(),
        )
        .map_err(|e| e.to_string());
        let report = check::run(&loaded, listen).await;
        print!("{}", report.render());
        if report.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }

    pub async fn transfer(config_file: Option<PathBuf>, dry_run: bool) -> ExitCode {
        let loaded = match load(config_file) {
            Ok(loaded) => loaded,
            Err(code) => return code,
        };
        let settings = &loaded.settings;
        let Some(target) = settings
            .transfer_to
            .as_ref()
            .and_then(|t| t.target.as_ref())
        else {
            tracing::error!(
                "no transfer target: set keyConnectorSettings__transferTo__database__provider (and its connection setting) \
                 and keyConnectorSettings__transferTo__rsaKey__provider (and its certificate settings)"
            );
            return ExitCode::FAILURE;
        };
        let result = async {
            let source = KeyDatabase::open(
                "source",
                &settings.database,
                &settings.rsa_key,
                SettingsGroup::Main,
                false,
            )
            .await?;
            let target = KeyDatabase::open(
                "transfer target",
                &target.database,
                &target.rsa_key,
                SettingsGroup::TransferTo,
                !dry_run,
            )
            .await?;
            let report = transfer::transfer(&source, &target, dry_run, true).await;
            source.store.close().await;
            target.store.close().await;
            report
        }
        .await;
        match result {
            Ok(report) => {
                let verb = if dry_run { "would copy" } else { "copied" };
                println!("{}", report.summary().replace("copied", verb));
                for (id, reason) in &report.skipped {
                    println!("skipped  {id}: {reason}");
                }
                for id in &report.conflicts {
                    println!("conflict {id}: the target holds a different key (left alone)");
                }
                if report.is_complete() {
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

    pub async fn rotate_rsa_key(config_file: Option<PathBuf>) -> ExitCode {
        let loaded = match load(config_file) {
            Ok(loaded) => loaded,
            Err(code) => return code,
        };
        let settings = &loaded.settings;
        let Some(new) = &settings.rotate_to else {
            tracing::error!(
                "no new RSA key: set keyConnectorSettings__rotateTo__rsaKey__provider and its settings \
                 (e.g. keyConnectorSettings__rotateTo__certificate__filesystemPath), as for rsaKey/certificate"
            );
            return ExitCode::FAILURE;
        };
        match key_connector::operations::rotate::rotate_rsa_key(
            &settings.database,
            &settings.rsa_key,
            new,
        )
        .await
        {
            Ok(report) => {
                println!(
                    "the symmetric key is now wrapped by {} (was {}); user keys unchanged.\n\
                     Next: set keyConnectorSettings__rsaKey__* / __certificate__* to the values of __rotateTo__* and restart every instance.",
                    report.new_provider, report.old_provider
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!("{error}");
                ExitCode::FAILURE
            }
        }
    }

    pub async fn rotate_symmetric_key(
        config_file: Option<PathBuf>,
        service_stopped: bool,
        batch: Option<usize>,
    ) -> ExitCode {
        if !service_stopped {
            eprintln!(
                "rotate-symmetric-key: stop every instance of the service first (a running instance keeps the old key \
                 in memory and would seal new keys with it), then run again with --service-stopped"
            );
            return ExitCode::FAILURE;
        }
        let loaded = match load(config_file) {
            Ok(loaded) => loaded,
            Err(code) => return code,
        };
        let settings = &loaded.settings;
        match key_connector::operations::rotate::rotate_symmetric_key(
            &settings.database,
            &settings.rsa_key,
            batch,
            true,
        )
        .await
        {
            Ok(report) => {
                println!(
                    "{} user keys: {} re-sealed now, {} already re-sealed, {} unreadable",
                    report.total,
                    report.resealed,
                    report.already_resealed,
                    report.unreadable.len()
                );
                if report.completed {
                    println!(
                        "rotation completed: the new symmetric key is current; start the service"
                    );
                } else {
                    println!(
                        "rotation not finished: run the command again to continue (every key stays readable meanwhile)"
                    );
                }
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!("{error}");
                ExitCode::FAILURE
            }
        }
    }

    pub async fn healthcheck(url: Option<String>) -> ExitCode {
        use key_connector::config::ListenHost;
        let url = url.or_else(|| {
            let listen = config::listen::parse_listen_urls(
                std::env::var("ASPNETCORE_URLS").ok().as_deref(),
                std::env::var("ASPNETCORE_HTTP_PORTS").ok().as_deref(),
            )
            .ok()?;
            let first = listen.iter().find(|u| !u.tls).or(listen.first())?;
            let host = match &first.host {
                ListenHost::Ip(ip) if !ip.is_unspecified() => first.host.to_string(),
                _ => "localhost".to_owned(),
            };
            let scheme = if first.tls { "https" } else { "http" };
            Some(format!("{scheme}://{host}:{}/health", first.port))
        });
        let Some(url) = url else {
            eprintln!("healthcheck: ASPNETCORE_URLS cannot be read; pass --url");
            return ExitCode::FAILURE;
        };
        // Local probe of our own listener: its certificate may be for the public name.
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(4))
            .tls_danger_accept_invalid_certs(true)
            .build();
        let answer = match client {
            Ok(client) => client.get(&url).send().await,
            Err(error) => Err(error),
        };
        match answer {
            Ok(response) if response.status().is_success() => ExitCode::SUCCESS,
            Ok(response) => {
                eprintln!("healthcheck: {url} answered {}", response.status());
                ExitCode::FAILURE
            }
            Err(error) => {
                eprintln!("healthcheck: {url}: {error}");
                ExitCode::FAILURE
            }
        }
    }

    pub async fn stats(config_file: Option<PathBuf>) -> ExitCode {
        let loaded = match load(config_file) {
            Ok(loaded) => loaded,
            Err(code) => return code,
        };
        let store = match key_connector::store::open_store(&loaded.settings.database).await {
            Ok(store) => store,
            Err(error) => {
                tracing::error!("cannot open the key store: {error}");
                return ExitCode::FAILURE;
            }
        };
        let rows = store.list_user_keys().await;
        store.close().await;
        match rows {
            Ok(rows) => {
                println!("{}", stats::compute(&rows));
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!("cannot list user keys: {error}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
