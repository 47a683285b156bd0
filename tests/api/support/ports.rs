//! Port numbers for servers a test starts later: a child service, a container, a stand-in.
//!
//! Binding port 0, reading the number and closing the socket races with everything else on the
//! machine: until the server binds it, the kernel may hand the same number to any outgoing
//! connection, since port 0 is taken from the ephemeral range that outgoing connections use too.
//! A container once found its port taken that way. So the ports here come from below the
//! kernel's ephemeral range, which the kernel never hands out by itself; each is handed out once
//! per test process, starting at an offset of the process id so that two runs side by side
//! rarely meet, and a port something already listens on is passed over.
//!
//! The SDK tests, a crate of their own, include this file by path: it uses only `std`.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// The lowest port handed out: above the well-known and most registered servers' ports.
const LOWEST: u16 = 10_000;
/// Where the kernel's ephemeral range starts when `/proc` does not say (Linux's default).
const DEFAULT_EPHEMERAL_START: u16 = 32_768;

/// A port no other caller in this process was given and nothing listens on, on 127.0.0.1 or on
/// every address, when asked.
pub fn free_port() -> u16 {
    static HANDED_OUT: AtomicU32 = AtomicU32::new(0);
    let end = ephemeral_range_start();
    let span = u32::from(end - LOWEST);
    let offset = std::process::id() % span;
    for _ in 0..span {
        let nth = HANDED_OUT.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + u16::try_from((offset + nth) % span).expect("below the span");
        if nothing_listens_on(port) {
            return port;
        }
    }
    panic!("every port from {LOWEST} to {end} is in use or was handed out in this test run");
}

/// The first port of the kernel's ephemeral range (`net.ipv4.ip_local_port_range`).
fn ephemeral_range_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .filter(|start| *start > LOWEST + 1_000)
        .unwrap_or(DEFAULT_EPHEMERAL_START)
}

fn nothing_listens_on(port: u16) -> bool {
    [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED]
        .into_iter()
        .all(|address| TcpListener::bind((address, port)).is_ok())
}
