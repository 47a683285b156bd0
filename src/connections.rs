//! Accepting connections and serving HTTP on them, under limits a hostile client cannot
//! stretch: every listener (HTTP, HTTPS, metrics) goes through [`serve`].
//!
//! What a client may hold, from [`ConnectionLimits`] (Kestrel's `Limits` settings):
//! - a cap on open connections, shared by the API listeners; a connection over it is told
//!   `503` (plain HTTP) or closed (TLS) at once, so the ones already open keep being served;
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

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
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

/// What a refused plain-HTTP connection is told before it is closed.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\n\
    Content-Type: application/json\r\nContent-Length: 80\r\nConnection: close\r\n\r\n\
    {\"error\":\"unavailable\",\"message\":\"too many open connections; retry in a second\"}";

/// The time a request's body may take to arrive, set on every request as an extension.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// The open-connection cap of a group of listeners, shared by them.
#[derive(Clone)]
pub struct ConnectionGate {
    permits: Arc<Semaphore>,
    capacity: usize,
    /// When the last "limit reached" warning was logged (ms since `epoch`): one a minute.
    last_warning: Arc<AtomicU64>,
    epoch: Instant,
}

impl ConnectionGate {
    pub fn new(capacity: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            last_warning: Arc::new(AtomicU64::new(u64::MAX)),
            epoch: Instant::now(),
        }
    }

    fn warn_limit_reached(&self) {
        crate::metrics::connection_refused();
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_warning.load(Ordering::Relaxed);
        if last == u64::MAX || now.saturating_sub(last) >= 60_000 {
            self.last_warning.store(now, Ordering::Relaxed);
            tracing::warn!(
                limit = self.capacity,
                "connection limit reached; refusing new connections until some close \
                 (Kestrel__Limits__MaxConcurrentConnections)"
            );
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
        let Ok(permit) = Arc::clone(&gate.permits).try_acquire_owned() else {
            gate.warn_limit_reached();
            if tls.is_none() {
                // Best effort and never waiting: the socket's send buffer is empty.
                let _ = tcp.try_write(OVER_CAPACITY);
            }
            continue;
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
            drop(permit);
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
