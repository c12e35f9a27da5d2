//! The client side: listeners with a large backlog, TLS (rustls, ALPN h2 + http/1.1),
//! HTTP/1.1 and HTTP/2 (told apart by a peek at the first bytes, or by ALPN), upgrades, a
//! graceful shutdown, a bound on how long a connection may take to send its first request head
//! (`--header-timeout`), and one on how long it may stay idle between requests
//! (`--keepalive-timeout`).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::Sleep;
use tracing::Instrument as _;

use crate::activity::Activity;
use crate::routes::{self, Current};

/// Bytes after which the HTTP version is known (the HTTP/2 preface's length).
const DETECTION_BYTES: usize = 24;

/// Binds `addr` with `backlog` pending connections (mio's default is 128).
///
/// # Errors
///
/// The address cannot be bound.
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Tracks the connections for a graceful shutdown: hyper-util's `GracefulShutdown` watches only
/// its own connection types (sealed), not hyper's upgradeable HTTP/1 connection that the proxy
/// serves directly. Each connection holds a receiver of `signal`.
#[derive(Debug)]
pub(crate) struct Graceful {
    signal: tokio::sync::watch::Sender<bool>,
}

impl Graceful {
    pub(crate) fn new() -> Self {
        Self {
            signal: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Connections open now.
    pub(crate) fn count(&self) -> usize {
        self.signal.receiver_count()
    }

    /// Asks every connection to finish its requests and close, and waits until they have.
    pub(crate) async fn shutdown(self) {
        self.signal.send_replace(true);
        self.signal.closed().await;
    }

    fn watcher(&self) -> tokio::sync::watch::Receiver<bool> {
        self.signal.subscribe()
    }
}

/// Runs `conn` to its end; when the shutdown starts, or when no request has been in progress
/// for `keepalive`, asks it to close (after its requests).
async fn drive<C, E>(
    conn: C,
    mut signal: tokio::sync::watch::Receiver<bool>,
    activity: Arc<Activity>,
    keepalive: Option<Duration>,
    close: fn(Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut conn = std::pin::pin!(conn);
    let idle = async {
        match keepalive {
            Some(limit) => activity.idle_for(limit).await,
            None => std::future::pending().await,
        }
    };
    let ended = tokio::select! {
        result = conn.as_mut() => Some(result),
        _ = signal.wait_for(|&stop| stop) => None,
        () = idle => {
            tracing::debug!("keep-alive timeout: closing the idle connection");
            None
        }
    };
    let result = match ended {
        Some(result) => result,
        None => {
            close(conn.as_mut());
            conn.await
        }
    };
    // The receiver was held until the connection ended: the shutdown waits for all of them.
    drop(signal);
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// The HTTP version of a connection, known before hyper reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// The HTTP/2 connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8; DETECTION_BYTES] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Peeks at the first bytes of a plaintext connection: the HTTP/2 preface, or HTTP/1. Nothing
/// is consumed, so hyper then reads the whole first head in one go (hyper-util's `auto` builder
/// reads the first bytes itself and hands them back, which made hyper grow its read buffer to
/// 16 KiB per connection). A partial preface (a client trickling it) is peeked again 10 ms
/// later; the caller bounds the whole by the header timeout.
async fn sniff(stream: &tokio::net::TcpStream) -> io::Result<Protocol> {
    let mut buf = [0_u8; DETECTION_BYTES];
    loop {
        let n = stream.peek(&mut buf).await?;
        let seen = buf.get(..n).unwrap_or_default();
        if n == 0 || !PREFACE.starts_with(seen) {
            return Ok(Protocol::Http1);
        }
        if n == PREFACE.len() {
            return Ok(Protocol::Http2);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The HTTP/1.1 and HTTP/2 server settings, shared by every connection of a listener.
#[derive(Debug)]
struct Http {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<SpanExecutor>,
}

/// One listener's loop: accepts until `stop` fires, serving each connection under `graceful`.
pub(crate) struct Server {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) routes: Current,
    pub(crate) header_timeout: Duration,
    /// How long a connection may stay without a request in progress, `None`: no limit.
    pub(crate) keepalive: Option<Duration>,
}

impl Server {
    /// Accepts connections until `stop` resolves; the connections are watched by `graceful`.
    pub(crate) async fn run(
        self,
        graceful: Arc<Graceful>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        // hyper's header read timeout would also start whenever a connection goes idle, and
        // close idle keep-alive connections after the header timeout: `HeadDeadline` bounds the
        // first request head instead, and `drive` the idle time between requests.
        http1.timer(TokioTimer::new()).header_read_timeout(None);
        let mut http2 = hyper::server::conn::http2::Builder::new(SpanExecutor);
        http2.timer(TokioTimer::new());
        let http = Arc::new(Http { http1, http2 });
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, do not spin or exit.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            // Event streams send many small writes: do not let Nagle hold them back.
            let _ = stream.set_nodelay(true);
            let span = tracing::info_span!("conn", %peer);
            let accepted = Accepted {
                http: Arc::clone(&http),
                routes: Arc::clone(&self.routes),
                watcher: graceful.watcher(),
                header_timeout: self.header_timeout,
                keepalive: self.keepalive,
                peer,
            };
            // Two task types, so that a plaintext connection's task does not carry the room
            // of a TLS handshake.
            match &self.tls {
                None => tokio::spawn(accepted.plain(stream).instrument(span)),
                Some(acceptor) => {
                    tokio::spawn(accepted.tls(acceptor.clone(), stream).instrument(span))
                }
            };
        }
    }
}

/// An accepted connection, before its protocol is known.
struct Accepted {
    http: Arc<Http>,
    routes: Current,
    watcher: tokio::sync::watch::Receiver<bool>,
    header_timeout: Duration,
    keepalive: Option<Duration>,
    peer: SocketAddr,
}

impl Accepted {
    /// Serves a plaintext connection: HTTP/2 when it starts with the preface.
    async fn plain(self, stream: tokio::net::TcpStream) {
        let start = tokio::time::Instant::now();
        let protocol = match tokio::time::timeout(self.header_timeout, sniff(&stream)).await {
            Ok(Ok(protocol)) => protocol,
            Ok(Err(error)) => {
                tracing::debug!(%error, "connection failed before a request");
                return;
            }
            Err(_) => {
                tracing::debug!("no request head within the header timeout");
                return;
            }
        };
        self.serve(protocol, false, start, stream).await;
    }

    /// Serves a TLS connection: HTTP/2 when ALPN chose it (RFC 9113 section 3.2: h2 over TLS
    /// is negotiated).
    async fn tls(self, acceptor: tokio_rustls::TlsAcceptor, stream: tokio::net::TcpStream) {
        let start = tokio::time::Instant::now();
        let stream = match tokio::time::timeout(self.header_timeout, acceptor.accept(stream)).await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%error, "tls handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("tls handshake timed out");
                return;
            }
        };
        let protocol = if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            Protocol::Http2
        } else {
            Protocol::Http1
        };
        self.serve(protocol, true, start, stream).await;
    }

    /// Serves the connection with hyper's `protocol` connection, the rest of the header timeout
    /// counted from `start`.
    ///
    /// The connection future is boxed, at its own size: an `async fn` over both protocols would
    /// be as large as the larger, and a task's future is copied whole into its allocation, so
    /// every page of it is resident (an 8.9 KiB task per plaintext HTTP/1.1 connection before).
    fn serve<IO>(
        self,
        protocol: Protocol,
        tls: bool,
        start: tokio::time::Instant,
        io: IO,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let left = self.header_timeout.saturating_sub(start.elapsed());
        let activity = Arc::new(Activity::default());
        let service = routes::service(self.routes, self.peer, tls, Arc::clone(&activity));
        let io = TokioIo::new(HeadDeadline::new(io, left, Arc::clone(&activity)));
        let service = TowerToHyperService::new(service);
        let (watcher, keepalive) = (self.watcher, self.keepalive);
        match protocol {
            Protocol::Http1 => {
                let conn = self
                    .http
                    .http1
                    .serve_connection(io, service)
                    .with_upgrades();
                Box::pin(drive(conn, watcher, activity, keepalive, |conn| {
                    conn.graceful_shutdown();
                }))
            }
            Protocol::Http2 => {
                let conn = self.http.http2.serve_connection(io, service);
                Box::pin(drive(conn, watcher, activity, keepalive, |conn| {
                    conn.graceful_shutdown();
                }))
            }
        }
    }
}

/// An IO that fails reads with `TimedOut` when the connection's first request head (HTTP/1.1)
/// or first request (HTTP/2: preface, settings, headers) has not arrived within the limit: a
/// silent connection, or one trickling its first bytes or head, is closed at the limit. The
/// deadline ends once the first request has reached the service, or at end of input.
struct HeadDeadline<T> {
    inner: T,
    deadline: Option<Pin<Box<Sleep>>>,
    activity: Arc<Activity>,
}

impl<T> HeadDeadline<T> {
    fn new(inner: T, limit: Duration, activity: Arc<Activity>) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            activity,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeadDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.deadline.is_some() && this.activity.any_started() {
            this.deadline = None;
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() == before {
                    this.deadline = None;
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                if let Some(deadline) = &mut this.deadline
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    this.deadline = None;
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request head within the header timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeadDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Spawns hyper's tasks (HTTP/2 streams) inside the current span, so that their log lines carry
/// the connection's `peer`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SpanExecutor;

impl<F> hyper::rt::Executor<F> for SpanExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future.in_current_span());
    }
}
