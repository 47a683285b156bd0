//! Listen addresses from `ASPNETCORE_URLS` (or `ASPNETCORE_HTTP_PORTS`), in every form
//! ASP.NET accepts, so the official container's environment works unchanged.

use std::net::IpAddr;

/// Which interface a listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenHost {
    /// `+`, `*`, or a host name: every interface, IPv6 and IPv4 (as Kestrel does).
    Any,
    /// `localhost`: 127.0.0.1 and ::1.
    Loopback,
    /// A literal address (`0.0.0.0`, `[::]`, `10.0.0.5`).
    Ip(IpAddr),
}

impl std::fmt::Display for ListenHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenHost::Any => f.write_str("*"),
            ListenHost::Loopback => f.write_str("localhost"),
            ListenHost::Ip(ip @ std::net::IpAddr::V6(_)) => write!(f, "[{ip}]"),
            ListenHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// One `http://host:port` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenUrl {
    pub host: ListenHost,
    pub port: u16,
    /// `https://`: served with the Kestrel default certificate (see the service's `tls` module).
    pub tls: bool,
}

/// Why the listen addresses could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ListenError {
    pub variable: &'static str,
    pub message: String,
}

/// The default when neither variable is set, as ASP.NET's.
pub const DEFAULT_URLS: &str = "http://localhost:5000";

/// Parses `ASPNETCORE_URLS` (entries separated by `;`), or else `ASPNETCORE_HTTP_PORTS`
/// (ports separated by `;`, all interfaces), or else [`DEFAULT_URLS`].
pub fn parse_listen_urls(
    urls: Option<&str>,
    http_ports: Option<&str>,
) -> Result<Vec<ListenUrl>, ListenError> {
    let mut out: Vec<ListenUrl> = Vec::new();
    let mut push = |url: ListenUrl| {
        if !out.contains(&url) {
            out.push(url);
        }
    };
    match (
        urls.filter(|u| !u.trim().is_empty()),
        http_ports.filter(|p| !p.trim().is_empty()),
    ) {
        (Some(urls), _) => {
            for entry in urls.split(';').map(str::trim).filter(|e| !e.is_empty()) {
                push(parse_url(entry)?);
            }
        }
        (None, Some(ports)) => {
            for entry in ports.split(';').map(str::trim).filter(|e| !e.is_empty()) {
                let port = entry.parse::<u16>().map_err(|_| ListenError {
                    variable: "ASPNETCORE_HTTP_PORTS",
                    message: format!("`{entry}` is not a port number"),
                })?;
                push(ListenUrl {
                    tls: false,
                    host: ListenHost::Any,
                    port,
                });
            }
        }
        (None, None) => push(parse_url(DEFAULT_URLS)?),
    }
    if out.is_empty() {
        return Err(ListenError {
            variable: "ASPNETCORE_URLS",
            message: "no address given".into(),
        });
    }
    Ok(out)
}

fn parse_url(entry: &str) -> Result<ListenUrl, ListenError> {
    let error = |message: String| ListenError {
        variable: "ASPNETCORE_URLS",
        message: format!("`{entry}`: {message}"),
    };
    let (scheme, rest) = entry
        .split_once("://")
        .ok_or_else(|| error("expected scheme://host:port, e.g. http://+:5000".into()))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        other => {
            return Err(error(format!(
                "scheme `{other}` is not supported; use http or https"
            )));
        }
    };
    let authority = match rest.find('/') {
        Some(slash) => {
            if rest[slash..] != *"/" {
                return Err(error(
                    "a path base is not supported; give scheme://host:port only".into(),
                ));
            }
            &rest[..slash]
        }
        None => rest,
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (address, after) = bracketed
            .split_once(']')
            .ok_or_else(|| error("unclosed `[` in an IPv6 address".into()))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| error("expected `:port` after `]`".into()))?,
            ),
        };
        let ip: IpAddr = address
            .parse()
            .map_err(|_| error(format!("`{address}` is not an IPv6 address")))?;
        (ListenHost::Ip(ip), port)
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let host = match host {
            "" => return Err(error("the host is missing".into())),
            "+" | "*" => ListenHost::Any,
            h if h.eq_ignore_ascii_case("localhost") => ListenHost::Loopback,
            h => match h.parse::<IpAddr>() {
                Ok(ip) => ListenHost::Ip(ip),
                // Kestrel binds every interface for a host name it cannot bind to directly.
                Err(_) => ListenHost::Any,
            },
        };
        (host, port)
    };
    let port = match port {
        None if tls => 443,
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| error(format!("`{p}` is not a port number")))?,
    };
    Ok(ListenUrl { tls, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn one(urls: &str) -> ListenUrl {
        let mut all = parse_listen_urls(Some(urls), None).unwrap();
        assert_eq!(all.len(), 1, "{urls}");
        all.remove(0)
    }

    #[test]
    fn every_aspnet_form_is_understood() {
        let any = |port| ListenUrl {
            tls: false,
            host: ListenHost::Any,
            port,
        };
        assert_eq!(one("http://+:5000"), any(5000));
        assert_eq!(one("http://*:5000"), any(5000));
        assert_eq!(one("HTTP://*:5000/"), any(5000));
        assert_eq!(one("http://key-connector:5000"), any(5000));
        assert_eq!(one("http://+"), any(80));
        assert_eq!(
            one("http://localhost:5000"),
            ListenUrl {
                tls: false,
                host: ListenHost::Loopback,
                port: 5000
            }
        );
        assert_eq!(
            one("http://LOCALHOST:5000"),
            ListenUrl {
                tls: false,
                host: ListenHost::Loopback,
                port: 5000
            }
        );
        assert_eq!(
            one("http://0.0.0.0:5000"),
            ListenUrl {
                tls: false,
                host: ListenHost::Ip(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
                port: 5000
            }
        );
        assert_eq!(
            one("http://[::]:5000"),
            ListenUrl {
                tls: false,
                host: ListenHost::Ip(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
                port: 5000
            }
        );
        assert_eq!(
            one("http://[::1]"),
            ListenUrl {
                tls: false,
                host: ListenHost::Ip(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                port: 80
            }
        );
        assert_eq!(
            one("http://10.1.2.3:8080"),
            ListenUrl {
                tls: false,
                host: ListenHost::Ip("10.1.2.3".parse().unwrap()),
                port: 8080
            }
        );
    }

    #[test]
    fn several_entries_and_duplicates() {
        let all = parse_listen_urls(
            Some(" http://+:5000 ; http://localhost:5001;;http://*:5000"),
            None,
        )
        .unwrap();
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn defaults_and_http_ports() {
        assert_eq!(
            parse_listen_urls(None, None).unwrap(),
            vec![ListenUrl {
                tls: false,
                host: ListenHost::Loopback,
                port: 5000
            }]
        );
        assert_eq!(
            parse_listen_urls(None, Some("8080;8081")).unwrap(),
            vec![
                ListenUrl {
                    tls: false,
                    host: ListenHost::Any,
                    port: 8080
                },
                ListenUrl {
                    tls: false,
                    host: ListenHost::Any,
                    port: 8081
                }
            ]
        );
        assert_eq!(
            parse_listen_urls(Some("http://+:1"), Some("8080"))
                .unwrap()
                .len(),
            1
        );
        assert!(parse_listen_urls(None, Some("eighty")).is_err());
    }

    #[test]
    fn https_entries_are_tls_listeners() {
        let url = one("https://+:5001");
        assert!(url.tls);
        assert_eq!((url.host, url.port), (ListenHost::Any, 5001));
        assert_eq!(one("https://localhost").port, 443);
        assert!(!one("http://localhost").tls);
    }

    #[test]
    fn unusable_entries_are_refused_with_the_reason() {
        for (urls, needle) in [
            ("ftp://+:21", "scheme"),
            ("+:5000", "scheme://"),
            ("http://+:port", "port"),
            ("http://+:70000", "port"),
            ("http://+:5000/kc", "path"),
            ("http://[::1:5000", "unclosed"),
            ("http://[zz]:5000", "IPv6"),
            ("http://:5000", "host"),
        ] {
            let error = parse_listen_urls(Some(urls), None).unwrap_err().to_string();
            assert!(error.contains(needle), "{urls}: {error}");
            assert!(error.starts_with("ASPNETCORE_URLS"), "{error}");
        }
    }
}
