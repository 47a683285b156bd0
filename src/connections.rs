//! Accepting connections and serving HTTP on them, under limits a hostile client cannot
//! stretch: every listener (HTTP, HTTPS, metrics) goes through [`serve`].
//!
//! What a client may hold, from [`ConnectionLimits`] (Kestrel's `Limits` settings):
//! - a cap on open connections, shared by the API listeners, and a share of it per peer (an
//!   IPv4 address, or an IPv6 /64: one host's addresses), so that one client cannot take
//!   them all; a connection over either is told `503` (plain HTTP) or closed (TLS) at once,
//!   so the ones already open keep being served. Behind a reverse proxy every client is the
//!   proxy's address: the default share (seven eighths of the cap) leaves it nearly all;
//! - the TLS handshake, then the first request's headers, within bounded times; on a kept-alive
//!   HTTP/1.1 connection the wait for the next request counts as waiting for its headers;
//! - headers bounded in bytes and count (`431` beyond), the body within its own time
//!   (`408`, read by the handlers through [`BodyReadTimeout`]);
//! - HTTP/2: bounded concurrent streams and header lists, and the `h2` crate's defences
//!   against rapid-reset and CONTINUATION floods, which end the connection;
//! - a connection silent for `KeepAliveTimeout` is closed.
//!
//! On shutdown every connection is asked to finish: idle and half-sent ones close at once,
//! those with a request in flight get [`SHUTDOWN_GRACE`].
//!
//! Written here rather than taken from a crate: axum's `serve` has no timeouts or caps, and
//! hyper's builders offer the parts (header timeout, sizes, HTTP/2 limits) but no accept loop,
//! connection cap or idle timeout; this module is that loop and the watch over each connection.
//!
//! Every timeout is measured on tokio's clock, the one hyper's timers use, so the watch and
//! hyper agree on a connection's age also on a test's paused clock.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

pub use crate::config::connection_limits::ConnectionLimits;

/// How long a connection with a request in flight may take to finish once shutdown began.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// How long a connection without a request in flight gets to close by itself at shutdown.
const IDLE_CLOSE_GRACE: Duration = Duration::from_millis(250);

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Open connections allowed on the metrics listeners, apart from the API's cap: a scraper
/// needs one or two.
pub const METRICS_CONNECTIONS: usize = 16;

/// What a plain-HTTP connection over the cap is told before it is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
    Content-Type: application/json\r\nContent-Length: 80\r\nConnection: close\r\n\r\n\
    {\"error\":\"unavailable\",\"message\":\"too many open connections; retry in a second\"}";

/// What a plain-HTTP connection over its peer's share is told before it is closed.
const OVER_PEER_SHARE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
    Content-Type: application/json\r\nContent-Length: 92\r\nConnection: close\r\n\r\n\
    {\"error\":\"unavailable\",\"message\":\"too many open connections from this address; retry later\"}";

/// The time a request's body may take to arrive, set on every request as an extension.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// The open-connection cap of a group of listeners, shared by them, and each peer's share.
#[derive(Clone)]
pub struct ConnectionGate {
    permits: Arc<Semaphore>,
    capacity: usize,
    per_peer: usize,
    /// Open connections by peer (see [`peer_of`]); a peer without any has no entry.
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// When the last "limit reached" warning was logged (ms since `epoch`): one a minute.
    last_warning: Arc<AtomicU64>,
    /// The same for "a peer reached its share".
    last_peer_warning: Arc<AtomicU64>,
    epoch: Instant,
}

/// Why a connection was not let in.
enum Refused {
    OverCapacity,
    OverPeerShare,
}

/// A connection's place under the cap and in its peer's share, given back when dropped.
struct Admission {
    _permit: OwnedSemaphorePermit,
    peers: Arc<Mutex<HashMap<IpAddr, usize>>>,
    peer: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = peers.get_mut(&self.peer) {
            *open -= 1;
            if *open == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// Who a connection counts against: its IPv4 address (an IPv4-mapped IPv6 address is one),
/// or the /64 of its IPv6 address, since one host commonly holds a whole /64.
fn peer_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

impl ConnectionGate {
    /// At most `capacity` open connections, at most `per_peer` of them from one peer.
    pub fn new(capacity: usize, per_peer: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            per_peer: per_peer.clamp(1, capacity.max(1)),
            peers: Arc::default(),
            last_warning: Arc::new(AtomicU64::new(u64::MAX)),
            last_peer_warning: Arc::new(AtomicU64::new(u64::MAX)),
            epoch: Instant::now(),
        }
    }

    /// A place for a connection from `address`, or why there is none.
    fn admit(&self, address: IpAddr) -> Result<Admission, Refused> {
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| Refused::OverCapacity)?;
        let peer = peer_of(address);
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let open = peers.entry(peer).or_insert(0);
        if *open >= self.per_peer {
            return Err(Refused::OverPeerShare);
        }
        *open += 1;
        drop(peers);
        Ok(Admission {
            _permit: permit,
            peers: Arc::clone(&self.peers),
            peer,
        })
    }

    fn warn_refused(&self, refused: &Refused, peer: std::net::SocketAddr) {
        crate::metrics::connection_refused();
        let now = self.epoch.elapsed().as_millis() as u64;
        let (last, limit) = match refused {
            Refused::OverCapacity => (&self.last_warning, self.capacity),
            Refused::OverPeerShare => (&self.last_peer_warning, self.per_peer),
        };
        let previous = last.load(Ordering::Relaxed);
        if previous != u64::MAX && now.saturating_sub(previous) < 60_000 {
            return;
        }
        last.store(now, Ordering::Relaxed);
        match refused {
            Refused::OverCapacity => tracing::warn!(
                limit,
                "connection limit reached; refusing new connections until some close \
                 (Kestrel__Limits__MaxConcurrentConnections)"
            ),
            Refused::OverPeerShare => tracing::warn!(
                limit,
                peer = %peer.ip(),
                "one peer holds its whole share of the connections; refusing more from it \
                 until some close (Kestrel__Limits__MaxConcurrentConnectionsPerPeer)"
            ),
        }
    }
}

/// Serves `app` on `listener` (over TLS with `tls`) until `stop`, then lets each connection
/// finish as the module documentation says. Returns when every connection is closed.
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: S,
    limits: Arc<ConnectionLimits>,
    gate: ConnectionGate,
    stop: CancellationToken,
) where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = Arc::new(http_builder(&limits));
    // Dropping the set (when this task is aborted) aborts every connection with it.
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tracing::debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admission = match gate.admit(peer.ip()) {
            Ok(admission) => admission,
            Err(refused) => {
                gate.warn_refused(&refused, peer);
                if tls.is_none() {
                    // Best effort and never waiting: the socket's send buffer is empty.
                    let _ = tcp.try_write(match refused {
                        Refused::OverCapacity => OVER_CAPACITY,
                        Refused::OverPeerShare => OVER_PEER_SHARE,
                    });
                }
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            tls: tls.clone(),
            app: app.clone(),
            limits: Arc::clone(&limits),
            builder: Arc::clone(&builder),
            stop: stop.clone(),
        };
        connections.spawn(async move {
            connection.run(tcp, peer).await;
            drop(admission);
        });
    }
    while connections.join_next().await.is_some() {}
}

/// hyper's HTTP/1.1 and HTTP/2 settings for the limits.
fn http_builder(limits: &ConnectionLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_headers_timeout)
        .max_headers(limits.max_request_header_count)
        // The read buffer holds a request's start line and headers whole: its size is the
        // bound on them (beyond it, 431), and on what one connection makes the service hold.
        .max_buf_size(limits.max_request_headers_total_size.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams_per_connection)
        .max_header_list_size(limits.max_request_headers_total_size as u32)
        // Streams a client opens and resets before they are served (the rapid-reset attack)
        // and streams the service had to reset for a client's errors: beyond these the
        // connection ends with GOAWAY.
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(100)
        .max_send_buf_size(64 * 1024);
    builder
}

struct Connection<S> {
    tls: Option<TlsAcceptor>,
    app: S,
    limits: Arc<ConnectionLimits>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stop: CancellationToken,
}

/// What the watch over a connection knows of it.
#[derive(Default)]
struct Activity {
    /// Milliseconds from the connection's start to its last byte read or written.
    last_io_ms: AtomicU64,
    /// A request has reached the application.
    requested: AtomicBool,
    /// Requests being answered now.
    in_flight: AtomicUsize,
}

impl<S> Connection<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    async fn run(self, tcp: TcpStream, peer: std::net::SocketAddr) {
        let io = match &self.tls {
            None => Either::Left(tcp),
            Some(acceptor) => {
                let handshake = acceptor.accept(tcp);
                tokio::select! {
                    done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake) => match done {
                        Ok(Ok(tls)) => Either::Right(tls),
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    },
                    () = self.stop.cancelled() => return,
                }
            }
        };
        let started = Instant::now();
        let activity = Arc::new(Activity::default());
        let io = Watched {
            inner: io,
            started,
            activity: Arc::clone(&activity),
        };
        let body_timeout = BodyReadTimeout(self.limits.request_headers_timeout);
        let service = {
            let activity = Arc::clone(&activity);
            let app = self.app.clone();
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let mut app = app.clone();
                let in_flight = InFlight::enter(&activity);
                let mut request = request.map(Body::new);
                request.extensions_mut().insert(body_timeout);
                async move {
                    let response = tower::Service::call(&mut app, request).await;
                    drop(in_flight);
                    response
                }
            })
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);

        let limits = &self.limits;
        let tick = (limits.request_headers_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut closing_since: Option<(Instant, Duration)> = None;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                    return;
                }
                () = self.stop.cancelled(), if closing_since.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    closing_since = Some((Instant::now(), activity.closing_grace()));
                }
                () = tokio::time::sleep(tick) => {
                    if let Some((since, grace)) = closing_since {
                        if since.elapsed() >= grace {
                            tracing::debug!(%peer, "connection did not close in time; dropped");
                            return;
                        }
                        continue;
                    }
                    let age = started.elapsed();
                    if !activity.requested.load(Ordering::Acquire)
                        && age >= limits.request_headers_timeout
                    {
                        // Nothing to finish: no request ever arrived.
                        tracing::debug!(%peer, "no request within the headers timeout; closed");
                        return;
                    }
                    let silent = age.saturating_sub(Duration::from_millis(
                        activity.last_io_ms.load(Ordering::Relaxed),
                    ));
                    if silent >= limits.keep_alive_timeout {
                        tracing::debug!(%peer, "connection idle too long; closing");
                        connection.as_mut().graceful_shutdown();
                        closing_since = Some((Instant::now(), activity.closing_grace()));
                    }
                }
            }
        }
    }
}

impl Activity {
    /// How long a connection asked to close may take: a request in flight gets to finish.
    fn closing_grace(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            IDLE_CLOSE_GRACE
        } else {
            SHUTDOWN_GRACE
        }
    }
}

/// Counts a request as in flight until dropped (its response is ready, or it was cancelled).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.requested.store(true, Ordering::Release);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection's byte stream, noting the time of each read or write that moved bytes.
struct Watched<T> {
    inner: T,
    started: Instant,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.activity.last_io_ms.store(now, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusals_state_their_own_length() {
        for answer in [OVER_CAPACITY, OVER_PEER_SHARE] {
            let text = std::str::from_utf8(answer).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains(&format!("Content-Length: {}", body.len())),
                "{text}"
            );
            let _: serde_json::Value = serde_json::from_str(body).unwrap();
        }
    }

    #[test]
    fn one_peer_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(peer_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(peer_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(peer_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            peer_of(ip("2001:db8:1:2:ffff::9")),
            peer_of(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            peer_of(ip("2001:db8:1:3::1")),
            peer_of(ip("2001:db8:1:2::1"))
        );
    }

    #[test]
    fn a_peer_over_its_share_is_refused_while_others_are_let_in() {
        let gate = ConnectionGate::new(4, 2);
        let (a, b) = (IpAddr::from([192, 0, 2, 1]), IpAddr::from([192, 0, 2, 2]));
        let first = gate.admit(a).ok().unwrap();
        let _second = gate.admit(a).ok().unwrap();
        assert!(matches!(gate.admit(a), Err(Refused::OverPeerShare)));
        let _other = gate.admit(b).ok().unwrap();
        // A place given back is the peer's again, and nothing is left over.
        drop(first);
        let _third = gate.admit(a).ok().unwrap();
        let _fourth = gate.admit(b).ok().unwrap();
        assert!(matches!(gate.admit(b), Err(Refused::OverCapacity)));
        drop(gate.admit(IpAddr::from([192, 0, 2, 3])));
        assert_eq!(gate.peers.lock().unwrap().len(), 2);
    }
}
