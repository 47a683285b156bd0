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
}

#[tokio::main]
async fn main() -> ExitCode {
    let matches = Cli::command()
        .after_help(config::raw::settings_help())
        .get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    telemetry::init(cli.log_format);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
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
    let app = match Application::build(&loaded.settings, &listen).await {
        Ok(app) => app,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    app.run_until_stopped(shutdown_signal()).await;
    ExitCode::SUCCESS
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
