//! Listen addresses from `ASPNETCORE_URLS`, in every form ASP.NET accepts.
//!
//! Placeholder: see the configuration work item.

use std::net::IpAddr;

/// Which interface a listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenHost {
    /// `+`, `*`, a host name, `[::]`: every interface, IPv6 and IPv4.
    Any,
    /// `localhost`: 127.0.0.1 and ::1.
    Loopback,
    /// A literal address.
    Ip(IpAddr),
}

/// One `scheme://host:port` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenUrl {
    pub host: ListenHost,
    pub port: u16,
}

/// Why `ASPNETCORE_URLS` could not be used.
#[derive(Debug, thiserror::Error)]
#[error("ASPNETCORE_URLS: {0}")]
pub struct ListenError(pub String);

/// Parses `ASPNETCORE_URLS` (entries separated by `;`); `None` means the default
/// `http://localhost:5000`.
pub fn parse_listen_urls(_value: Option<&str>) -> Result<Vec<ListenUrl>, ListenError> {
    Ok(vec![ListenUrl {
        host: ListenHost::Loopback,
        port: 5000,
    }])
}
