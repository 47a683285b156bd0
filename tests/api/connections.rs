//! Connection discipline: slow, idle, oversized and flooding clients are cut off without
//! holding the service, other clients or a shutdown. Raw TCP (and raw HTTP/2 frames) here,
//! because well-behaved HTTP clients cannot misbehave on purpose.

use std::sync::Arc;
use std::time::{Duration, Instant};

use key_connector::connections::ConnectionLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::support::app::{AppOptions, TestApp, spawn_app_with};
use crate::support::idp::TestIdp;

async fn app_with(limits: ConnectionLimits) -> TestApp {
    let idp = Arc::new(TestIdp::start().await);
    spawn_app_with(
        idp,
        AppOptions {
            limits: Some(limits),
            ..AppOptions::default()
        },
    )
    .await
}

fn short_timeouts() -> ConnectionLimits {
    ConnectionLimits {
        request_headers_timeout: Duration::from_secs(1),
        keep_alive_timeout: Duration::from_secs(2),
        ..ConnectionLimits::default()
    }
}

/// Reads until the server closes the connection (or resets it), returning what it sent;
/// `None` if it is still open after `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let mut buffer = [0u8; 4096];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(received),
            Ok(Ok(n)) => received.extend_from_slice(&buffer[..n]),
        }
    }
}

async fn alive_over(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /alive HTTP/1.1\r\nHost: kc\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

async fn clients_that_never_finish_their_headers_are_cut_off_while_others_are_served() {
    let app = app_with(short_timeouts()).await;
    let mut slow = Vec::new();
    for i in 0..60 {
        let mut stream = TcpStream::connect(app.address()).await.unwrap();
        match i % 3 {
            // Nothing at all.
            0 => {}
            // A request line and some headers, never the blank line that ends them.
            1 => stream
                .write_all(b"GET /alive HTTP/1.1\r\nHost: kc\r\nX-Slow: 1\r\n")
                .await
                .unwrap(),
            // The first bytes of the HTTP/2 preface, then silence.
            _ => stream.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(),
        }
        slow.push(stream);
    }
    // Meanwhile an ordinary client is answered.
    let answer = app.client.get(app.url("/alive")).send().await.unwrap();
    assert_eq!(answer.status(), 200);

    for (i, stream) in slow.iter_mut().enumerate() {
        let closed = read_until_closed(stream, Duration::from_secs(6)).await;
        assert!(closed.is_some(), "slow connection {i} is still open");
    }
}

async fn a_kept_alive_connection_left_idle_is_closed() {
    let app = app_with(short_timeouts()).await;
    let mut stream = TcpStream::connect(app.address()).await.unwrap();
    let answer = alive_over(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        read_until_closed(&mut stream, Duration::from_secs(6))
            .await
            .is_some(),
        "an idle kept-alive connection stays open"
    );
}

async fn connections_over_the_cap_are_told_503_and_the_cap_frees_as_they_close() {
    let app = app_with(ConnectionLimits {
        max_connections: 4,
        ..ConnectionLimits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(app.address()).await.unwrap();
        let answer = alive_over(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(stream);
    }
    let mut over = TcpStream::connect(app.address()).await.unwrap();
    let refused = read_until_closed(&mut over, Duration::from_secs(5))
        .await
        .expect("the connection over the cap is closed at once");
    let refused = String::from_utf8_lossy(&refused);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("Retry-After: 1"), "{refused}");
    let body = refused.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(json["error"], "unavailable");

    // One closes; its place is free again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = TcpStream::connect(app.address()).await.unwrap();
        let answer = alive_over(&mut stream).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "the cap never freed: {answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_body_that_never_arrives_is_408_and_stores_nothing() {
    let app = app_with(short_timeouts()).await;
    let user = Uuid::new_v4();
    let token = app.idp.token_for(user);
    let mut stream = TcpStream::connect(app.address()).await.unwrap();
    let head = format!(
        "PUT /user-keys HTTP/1.1\r\nHost: kc\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"key\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(6))
        .await
        .expect("the server gives up on the body");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
    assert_eq!(app.get_key(&token).await.status(), 404);
}

async fn headers_beyond_the_size_or_count_limits_are_431() {
    let app = app_with(ConnectionLimits::default()).await;
    let large = format!(
        "GET /alive HTTP/1.1\r\nHost: kc\r\nX-Large: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    let many = format!(
        "GET /alive HTTP/1.1\r\nHost: kc\r\n{}\r\n",
        (0..150)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    for request in [large, many] {
        let mut stream = TcpStream::connect(app.address()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream, Duration::from_secs(5))
            .await
            .expect("the connection is closed");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    }
    // Within the limits, the same request is fine.
    let mut stream = TcpStream::connect(app.address()).await.unwrap();
    assert!(alive_over(&mut stream).await.starts_with("HTTP/1.1 200"));
}

async fn shutdown_with_hundreds_of_slow_clients_connected_takes_under_five_seconds() {
    let mut app = app_with(ConnectionLimits::default()).await;
    let mut slow = Vec::new();
    for i in 0..300 {
        let mut stream = TcpStream::connect(app.address()).await.unwrap();
        if i % 2 == 1 {
            stream
                .write_all(b"GET /alive HTTP/1.1\r\nHost: kc\r\n")
                .await
                .unwrap();
        }
        slow.push(stream);
    }
    // Every connection is accepted and being read before the stop.
    let answer = app.client.get(app.url("/alive")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let started = Instant::now();
    app.begin_shutdown();
    app.stopped().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "shutdown took {took:?} with slow clients connected"
    );
}

/// The client connection preface and an empty SETTINGS frame.
fn http2_preface() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&frame(0x4, 0, 0, &[]));
    bytes
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = payload.len() as u32;
    let mut bytes = length.to_be_bytes()[1..].to_vec();
    bytes.push(kind);
    bytes.push(flags);
    bytes.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// HPACK for `GET http:///` by static-table indexes: `:method GET`, `:scheme http`, `:path /`.
const GET_ROOT: [u8; 3] = [0x82, 0x86, 0x84];
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// Reads the server's frames until it closes; returns the GOAWAY error code if one came.
async fn goaway_code(stream: &mut TcpStream) -> Option<u32> {
    let received = read_until_closed(stream, Duration::from_secs(10))
        .await
        .expect("the server closes the connection");
    let mut at = 0;
    while at + 9 <= received.len() {
        let length = u32::from_be_bytes([0, received[at], received[at + 1], received[at + 2]]);
        let kind = received[at + 3];
        let payload = &received[at + 9..(at + 9 + length as usize).min(received.len())];
        if kind == 0x7 && payload.len() >= 8 {
            return Some(u32::from_be_bytes(payload[4..8].try_into().unwrap()));
        }
        at += 9 + length as usize;
    }
    None
}

const ENHANCE_YOUR_CALM: u32 = 0xb;

/// An HPACK string length: a 7-bit-prefix integer, no Huffman coding.
fn hpack_length(mut n: usize) -> Vec<u8> {
    if n < 127 {
        return vec![n as u8];
    }
    let mut bytes = vec![0x7f];
    n -= 127;
    while n >= 128 {
        bytes.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    bytes.push(n as u8);
    bytes
}

async fn an_http2_rapid_reset_flood_ends_the_connection_and_others_are_served() {
    let app = app_with(ConnectionLimits::default()).await;
    let mut stream = TcpStream::connect(app.address()).await.unwrap();
    let mut flood = http2_preface();
    for i in 0..500u32 {
        let id = 2 * i + 1;
        flood.extend_from_slice(&frame(0x1, END_STREAM | END_HEADERS, id, &GET_ROOT));
        // RST_STREAM, CANCEL.
        flood.extend_from_slice(&frame(0x3, 0, id, &8u32.to_be_bytes()));
    }
    // The server may close before it has read everything.
    let _ = stream.write_all(&flood).await;
    assert_eq!(goaway_code(&mut stream).await, Some(ENHANCE_YOUR_CALM));
    let answer = app.client.get(app.url("/alive")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

async fn an_http2_continuation_flood_is_cut_off_before_it_is_held() {
    let app = app_with(ConnectionLimits::default()).await;
    let mut stream = TcpStream::connect(app.address()).await.unwrap();
    stream.write_all(&http2_preface()).await.unwrap();
    stream
        .write_all(&frame(0x1, 0, 1, &GET_ROOT))
        .await
        .unwrap();
    // One literal header field a frame (without indexing, new name), 16 000 bytes of value.
    let mut field = vec![0x00, 0x03];
    field.extend_from_slice(b"x-a");
    field.extend_from_slice(&hpack_length(16_000));
    field.extend(std::iter::repeat_n(b'a', 16_000));
    let mut sent = 0usize;
    let mut cut_off = false;
    // Up to 4 MiB of one header block: far beyond any limit the server should keep.
    while sent < 4 * 1024 * 1024 {
        if stream.write_all(&frame(0x9, 0, 1, &field)).await.is_err() {
            cut_off = true;
            break;
        }
        sent += field.len();
    }
    if !cut_off {
        let code = goaway_code(&mut stream).await;
        assert!(code.is_some(), "the server ends the connection with GOAWAY");
    }
    let answer = app.client.get(app.url("/alive")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

async fn http2_concurrent_streams_are_bounded_by_the_setting() {
    let app = app_with(ConnectionLimits {
        http2_max_streams_per_connection: 7,
        ..ConnectionLimits::default()
    })
    .await;
    let mut stream = TcpStream::connect(app.address()).await.unwrap();
    stream.write_all(&http2_preface()).await.unwrap();
    let mut header = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut header))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(header[3], 0x4, "the server's first frame is SETTINGS");
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let mut payload = vec![0u8; length];
    stream.read_exact(&mut payload).await.unwrap();
    let settings: Vec<(u16, u32)> = payload
        .chunks_exact(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect();
    // SETTINGS_MAX_CONCURRENT_STREAMS = 0x3, SETTINGS_MAX_HEADER_LIST_SIZE = 0x6.
    assert!(settings.contains(&(0x3, 7)), "{settings:?}");
    assert!(settings.contains(&(0x6, 32 * 1024)), "{settings:?}");
}

/// A connection to `app` from the loopback address `from` (any of 127.0.0.0/8).
async fn connect_from(app: &TestApp, from: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    socket.connect(app.address()).await.unwrap()
}

async fn one_client_over_its_share_of_the_connections_is_told_503_while_others_are_served() {
    let app = app_with(ConnectionLimits {
        max_connections: 4,
        max_connections_per_peer: Some(2),
        ..ConnectionLimits::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from(&app, [127, 0, 0, 1]).await;
        let answer = alive_over(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(stream);
    }
    let mut over = connect_from(&app, [127, 0, 0, 1]).await;
    let refused = read_until_closed(&mut over, Duration::from_secs(5))
        .await
        .expect("the connection over the peer's share is closed at once");
    let refused = String::from_utf8_lossy(&refused);
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("from this address"), "{refused}");

    // Another client still gets in: the cap itself is not reached.
    let mut other = connect_from(&app, [127, 0, 0, 2]).await;
    let answer = alive_over(&mut other).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

crate::tests! {
    current_thread: [
        clients_that_never_finish_their_headers_are_cut_off_while_others_are_served,
        a_kept_alive_connection_left_idle_is_closed,
        connections_over_the_cap_are_told_503_and_the_cap_frees_as_they_close,
        a_body_that_never_arrives_is_408_and_stores_nothing,
        headers_beyond_the_size_or_count_limits_are_431,
        shutdown_with_hundreds_of_slow_clients_connected_takes_under_five_seconds,
        an_http2_rapid_reset_flood_ends_the_connection_and_others_are_served,
        an_http2_continuation_flood_is_cut_off_before_it_is_held,
        http2_concurrent_streams_are_bounded_by_the_setting,
        one_client_over_its_share_of_the_connections_is_told_503_while_others_are_served,
    ],
}
