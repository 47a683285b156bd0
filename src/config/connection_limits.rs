//! How much a client may hold of the service: Kestrel's `Limits`, under their Kestrel names.
//!
//! Operators of the official service tune its web server with the `Kestrel` section
//! (`Kestrel__Limits__MaxConcurrentConnections` and friends, from `appsettings.json` or the
//! environment). The same names bound the listeners here, with tighter defaults than
//! Kestrel's, because every connection of this service is a short key request: a client that
//! is slow to send its request is either broken or an attack.
//!
//! This module only reads and checks the values; the service's `connections` module enforces them.

use std::time::Duration;

use super::ConfigError;
use super::ConfigSource;
use super::layers::{Values, read_section};

const SECTION: &str = "Kestrel";

/// The limits every API listener (HTTP and HTTPS) enforces; the metrics listener uses the
/// same timeouts with a small connection cap of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Open connections across all API listeners; more are refused at once.
    pub max_connections: usize,
    /// Open connections from one peer (an IPv4 address, or an IPv6 /64): more from it are
    /// refused at once, so that no one client takes every connection. `None`: seven eighths
    /// of `max_connections` (see [`ConnectionLimits::connections_per_peer`]).
    pub max_connections_per_peer: Option<usize>,
    /// Time for a request's headers to arrive, counted from the first wait for them (on a
    /// kept-alive HTTP/1.1 connection: from the end of the previous response). The body, if
    /// any, then has the same time again.
    pub request_headers_timeout: Duration,
    /// A connection that sends and receives nothing for this long is closed (HTTP/2, and
    /// HTTP/1.1 in the middle of a request).
    pub keep_alive_timeout: Duration,
    /// Bytes of one request's start line and headers together.
    pub max_request_headers_total_size: usize,
    /// Headers in one request.
    pub max_request_header_count: usize,
    /// Concurrent HTTP/2 streams on one connection.
    pub http2_max_streams_per_connection: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_peer: None,
            request_headers_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            max_request_headers_total_size: 32 * 1024,
            max_request_header_count: 100,
            http2_max_streams_per_connection: 100,
        }
    }
}

impl ConnectionLimits {
    /// The open connections one peer may hold: the setting, or else seven eighths of
    /// `max_connections`. A reverse proxy in front is one peer holding every client's
    /// connection, so the default leaves it nearly the whole cap, while a single client
    /// facing the service directly cannot take the last eighth from everyone else.
    pub fn connections_per_peer(&self) -> usize {
        self.max_connections_per_peer
            .unwrap_or(default_connections_per_peer(self.max_connections))
            .clamp(1, self.max_connections)
    }
}

/// Seven eighths of `max_connections` (at least one).
pub fn default_connections_per_peer(max_connections: usize) -> usize {
    (max_connections - max_connections / 8).max(1)
}

/// The settings, their meaning for `--help` and the README, in one place.
pub const SETTINGS: [(&str, &str); 7] = [
    (
        "Limits:MaxConcurrentConnections",
        "open connections across the API listeners (default 1024)",
    ),
    (
        "Limits:RequestHeadersTimeout",
        "a TimeSpan: time for a request's headers, then again for its body (default 00:00:10)",
    ),
    (
        "Limits:KeepAliveTimeout",
        "a TimeSpan: a connection silent this long is closed (default 00:01:00)",
    ),
    (
        "Limits:MaxRequestHeadersTotalSize",
        "bytes of a request's start line and headers (default 32768)",
    ),
    (
        "Limits:MaxRequestHeaderCount",
        "headers in one request (default 100)",
    ),
    (
        "Limits:Http2:MaxStreamsPerConnection",
        "concurrent HTTP/2 streams per connection (default 100)",
    ),
    (
        "Limits:MaxConcurrentConnectionsPerPeer",
        "open connections from one IPv4 address or IPv6 /64 (default 7/8 of \
         MaxConcurrentConnections; not Kestrel's, which ignores it)",
    ),
];

/// Reads the `Kestrel:Limits` settings from the same files and environment as the service's
/// settings. An absent or empty value keeps the default.
pub fn load(source: &ConfigSource) -> Result<ConnectionLimits, ConfigError> {
    let section = read_section(source, SECTION)?;
    let values = &section.values;
    let defaults = ConnectionLimits::default();
    Ok(ConnectionLimits {
        max_connections: integer(values, SETTINGS[0].0, 1, 1_000_000)?
            .unwrap_or(defaults.max_connections),
        request_headers_timeout: time_span(values, SETTINGS[1].0)?
            .unwrap_or(defaults.request_headers_timeout),
        keep_alive_timeout: time_span(values, SETTINGS[2].0)?
            .unwrap_or(defaults.keep_alive_timeout),
        max_request_headers_total_size: integer(values, SETTINGS[3].0, 1024, 1024 * 1024)?
            .unwrap_or(defaults.max_request_headers_total_size),
        max_request_header_count: integer(values, SETTINGS[4].0, 1, 10_000)?
            .unwrap_or(defaults.max_request_header_count),
        http2_max_streams_per_connection: integer(values, SETTINGS[5].0, 1, 10_000)?
            .map(|n| n as u32)
            .unwrap_or(defaults.http2_max_streams_per_connection),
        max_connections_per_peer: integer(values, SETTINGS[6].0, 1, 1_000_000)?,
    })
}

fn error(path: &str, message: String) -> ConfigError {
    ConfigError {
        setting: format!("{SECTION}:{path}"),
        env_var: format!("{SECTION}__{}", path.replace(':', "__")),
        message,
        source: None,
    }
}

/// A whole number in `min..=max`. The value is not repeated in the message: settings may
/// be pasted in the wrong place, and a message must never carry a secret along.
fn integer(
    values: &Values,
    path: &str,
    min: usize,
    max: usize,
) -> Result<Option<usize>, ConfigError> {
    let Some(text) = values.get(path) else {
        return Ok(None);
    };
    match text.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(error(
            path,
            format!("must be a whole number from {min} to {max}"),
        )),
    }
}

/// The longest timeout accepted: a day is already far beyond any sensible request.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

fn time_span(values: &Values, path: &str) -> Result<Option<Duration>, ConfigError> {
    let Some(text) = values.get(path) else {
        return Ok(None);
    };
    match parse_time_span(text.trim()) {
        Some(span) if !span.is_zero() && span <= LONGEST_TIMEOUT => Ok(Some(span)),
        _ => Err(error(
            path,
            "must be a .NET TimeSpan above zero and at most a day, such as 00:00:30 \
             (hh:mm:ss, optionally d.hh:mm:ss or with a fraction of a second)"
                .into(),
        )),
    }
}

/// .NET's invariant `TimeSpan` text: `d`, `[d.]hh:mm`, `[d.]hh:mm:ss` or
/// `[d.]hh:mm:ss.fffffff` (no sign: a negative timeout means nothing here).
fn parse_time_span(text: &str) -> Option<Duration> {
    let number = |s: &str, max: u64| -> Option<u64> {
        if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok().filter(|n| *n <= max)
    };
    const DAY: u64 = 24 * 3600;
    if !text.contains(':') {
        return Some(Duration::from_secs(number(text, 10_000)? * DAY));
    }
    let (days, clock) = match text.split_once('.') {
        Some((days, rest)) if rest.contains(':') && !days.contains(':') => {
            (number(days, 10_000)?, rest)
        }
        _ => (0, text),
    };
    let (clock, fraction) = match clock.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (clock, None),
    };
    let mut parts = clock.split(':');
    let hours = number(parts.next()?, 23)?;
    let minutes = number(parts.next()?, 59)?;
    let seconds = match parts.next() {
        Some(s) => number(s, 59)?,
        None if fraction.is_none() => 0,
        None => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    let nanos = match fraction {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 7 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{f:0<9}");
            padded.parse::<u32>().ok()?
        }
        Some(_) => return None,
    };
    let whole = days * DAY + hours * 3600 + minutes * 60 + seconds;
    Some(Duration::new(whole, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(pairs: &[(&str, &str)]) -> ConfigSource {
        ConfigSource {
            file: None,
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn time_spans_read_as_dotnet_writes_them() {
        let cases = [
            ("00:00:30", Some(Duration::from_secs(30))),
            ("00:02:10", Some(Duration::from_secs(130))),
            ("01:00", Some(Duration::from_secs(3600))),
            ("1.00:00:00", Some(Duration::from_secs(86_400))),
            ("1", Some(Duration::from_secs(86_400))),
            ("00:00:00.5", Some(Duration::from_millis(500))),
            ("00:00:01.2500000", Some(Duration::from_millis(1250))),
            ("00:00:60", None),
            ("24:00:00", None),
            ("-00:00:01", None),
            ("00:00:01.", None),
            ("00:00:01.12345678", None),
            ("1:2:3:4", None),
            ("abc", None),
            ("", None),
            ("00:01.5", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_time_span(text), expected, "{text}");
        }
    }

    #[test]
    fn absent_settings_keep_the_defaults() {
        assert_eq!(load(&source(&[])).unwrap(), ConnectionLimits::default());
    }

    #[test]
    fn kestrel_names_set_the_limits_case_insensitively() {
        let limits = load(&source(&[
            ("Kestrel__Limits__MaxConcurrentConnections", "7"),
            ("KESTREL__LIMITS__REQUESTHEADERSTIMEOUT", "00:00:02"),
            ("Kestrel__Limits__KeepAliveTimeout", "00:00:05"),
            ("Kestrel__Limits__MaxRequestHeadersTotalSize", "4096"),
            ("Kestrel__Limits__MaxRequestHeaderCount", "20"),
            ("Kestrel__Limits__Http2__MaxStreamsPerConnection", "8"),
            ("Kestrel__Limits__MaxConcurrentConnectionsPerPeer", "3"),
        ]))
        .unwrap();
        assert_eq!(
            limits,
            ConnectionLimits {
                max_connections: 7,
                max_connections_per_peer: Some(3),
                request_headers_timeout: Duration::from_secs(2),
                keep_alive_timeout: Duration::from_secs(5),
                max_request_headers_total_size: 4096,
                max_request_header_count: 20,
                http2_max_streams_per_connection: 8,
            }
        );
    }

    #[test]
    fn one_peer_may_hold_seven_eighths_of_the_cap_unless_set() {
        let limits = |max_connections, max_connections_per_peer| ConnectionLimits {
            max_connections,
            max_connections_per_peer,
            ..ConnectionLimits::default()
        };
        assert_eq!(ConnectionLimits::default().connections_per_peer(), 896);
        assert_eq!(limits(16, None).connections_per_peer(), 14);
        assert_eq!(limits(1, None).connections_per_peer(), 1);
        assert_eq!(limits(100, Some(10)).connections_per_peer(), 10);
        assert_eq!(limits(100, Some(500)).connections_per_peer(), 100);
    }

    #[test]
    fn a_bad_limit_names_the_setting_and_variable_but_not_the_value() {
        for (name, value) in [
            ("Kestrel__Limits__MaxConcurrentConnections", "0"),
            ("Kestrel__Limits__MaxConcurrentConnections", "lots-s3cret"),
            ("Kestrel__Limits__RequestHeadersTimeout", "30s-s3cret"),
            ("Kestrel__Limits__KeepAliveTimeout", "00:00:00"),
            ("Kestrel__Limits__MaxRequestHeadersTotalSize", "10"),
        ] {
            let message = load(&source(&[(name, value)])).unwrap_err().to_string();
            assert!(message.contains(name), "{message}");
            assert!(message.contains(&name.replace("__", ":")), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
        }
    }
}
