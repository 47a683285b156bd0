//! `serve` (the default command): settings, listeners and metrics from the environment, then
//! the service until SIGTERM or SIGINT.

use std::future::Future;

use super::CommandError;
use crate::config::{self, ConfigSource};
use crate::settings;
use crate::startup::Application;

pub async fn serve(
    source: &ConfigSource,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CommandError> {
    let loaded = settings::load(source)?;
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let listen = source.listen_urls()?;
    // Opt-in Prometheus listener, in ASPNETCORE_URLS syntax (e.g. http://127.0.0.1:9464).
    let metrics_listen = source
        .metrics_urls()
        .map_err(|error| CommandError::Refused(format!("{}: {error}", config::METRICS_URLS_VAR)))?;
    // Installed before start-up so that start-up's own RSA key and store calls are counted.
    let metrics = match metrics_listen {
        Some(listen) => Some((
            listen,
            crate::metrics::install()
                .map_err(|error| CommandError::Refused(format!("cannot start metrics: {error}")))?,
        )),
        None => None,
    };
    let limits = config::connection_limits::load(source)?;
    let mut app = Application::build(&loaded.settings, &listen)
        .await?
        .with_connection_limits(limits);
    if let Some((listen, handle)) = metrics {
        app.serve_metrics(&listen, handle).await?;
    }
    app.run_until_stopped(shutdown).await;
    Ok(())
}
