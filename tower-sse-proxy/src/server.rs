//! The client side: listeners with a large backlog, TLS (rustls, ALPN h2 + http/1.1),
//! HTTP/1.1 and HTTP/2 with hyper-util's `auto` builder, upgrades, and a bound on how long a
//! connection may take to send its first request head.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::time::Sleep;
use tracing::Instrument as _;

use crate::routes::{self, Current};

/// Bytes after which the HTTP version is known (the HTTP/2 preface's length): from then on,
/// hyper's own header read timeout bounds the rest of an HTTP/1.1 head.
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

/// One listener's loop: accepts until `stop` fires, serving each connection under `graceful`.
pub(crate) struct Server {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) routes: Current,
    pub(crate) header_timeout: Duration,
}

impl Server {
    /// Accepts connections until `stop` resolves; the connections are watched by `graceful`.
    pub(crate) async fn run(
        self,
        graceful: Arc<GracefulShutdown>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut builder = auto::Builder::new(SpanExecutor);
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_timeout);
        builder.http2().timer(TokioTimer::new());
        let builder = Arc::new(builder);
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
            let builder = Arc::clone(&builder);
            let routes = Arc::clone(&self.routes);
            let tls = self.tls.clone();
            let watcher = graceful.watcher();
            let limit = self.header_timeout;
            tokio::spawn(
                async move {
                    match tls {
                        None => {
                            let service = routes::service(routes, peer, false);
                            serve(&builder, watcher, HeadDeadline::new(stream, limit), service)
                                .await;
                        }
                        Some(acceptor) => {
                            let stream =
                                match tokio::time::timeout(limit, acceptor.accept(stream)).await {
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
                            let service = routes::service(routes, peer, true);
                            serve(&builder, watcher, HeadDeadline::new(stream, limit), service)
                                .await;
                        }
                    }
                }
                .instrument(span),
            );
        }
    }
}

async fn serve<IO, S>(builder: &auto::Builder<SpanExecutor>, watcher: Watcher, io: IO, service: S)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<tower_sse::SseBody<crate::upstream::ProxyBody>>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
        .into_owned();
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// An IO that fails reads with `TimedOut` when its first [`DETECTION_BYTES`] bytes do not arrive
/// within the limit: hyper-util's HTTP/1-vs-HTTP/2 detection reads them without a timeout, and
/// hyper's header read timeout starts only after it. A silent connection, or one trickling the
/// first bytes, is closed at the limit.
struct HeadDeadline<T> {
    inner: T,
    deadline: Option<Pin<Box<Sleep>>>,
    read: usize,
}

impl<T> HeadDeadline<T> {
    fn new(inner: T, limit: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            read: 0,
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
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if this.deadline.is_some() {
                    this.read += buf.filled().len() - before;
                    if this.read >= DETECTION_BYTES || buf.filled().len() == before {
                        this.deadline = None;
                    }
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
