//! `healthcheck`: the container's HEALTHCHECK. Asks the running service's `/health` on this
//! machine and exits 0 only on a 2xx answer; needs no curl.

use std::process::ExitCode;
use std::time::Duration;

use crate::config::{ConfigSource, ListenHost};

/// The `/health` URL of the first listener in ASPNETCORE_URLS, as reached from this machine.
fn local_health_url(source: &ConfigSource) -> Option<String> {
    let listen = source.listen_urls().ok()?;
    let first = listen.iter().find(|u| !u.tls).or(listen.first())?;
    let host = match &first.host {
        ListenHost::Ip(ip) if !ip.is_unspecified() => first.host.to_string(),
        _ => "localhost".to_owned(),
    };
    let scheme = if first.tls { "https" } else { "http" };
    Some(format!("{scheme}://{host}:{}/health", first.port))
}

pub async fn healthcheck(source: &ConfigSource, url: Option<String>) -> ExitCode {
    let Some(url) = url.or_else(|| local_health_url(source)) else {
        eprintln!("healthcheck: ASPNETCORE_URLS cannot be read; pass --url");
        return ExitCode::FAILURE;
    };
    // Local probe of our own listener: its certificate may be for the public name.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(4))
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
