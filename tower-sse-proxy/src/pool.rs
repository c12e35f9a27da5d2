//! HTTP/2 to upstreams (`--upstream-http2`): a small pool of connections per upstream that
//! opens another connection when every open one carries as many streams as it may.
//!
//! hyper-util's legacy client keeps one HTTP/2 connection per upstream, and a request past the
//! upstream's `SETTINGS_MAX_CONCURRENT_STREAMS` waits inside h2 for a stream to end. Event
//! streams do not end, so past that limit (hyper 200, Go 250, nginx 128 by default) every new
//! stream waited for the response-head timeout and got a 504. Here each connection counts the
//! proxy's own streams on it, and takes a new one only while it counts fewer than its limit:
//! the route's `upstream-h2-max-streams` (default [`DEFAULT_MAX_STREAMS`]), or the upstream's
//! `SETTINGS_MAX_CONCURRENT_STREAMS` once the connection has read it, whichever is lower. When
//! every open connection to the upstream is full, the request waits for a new connection (one
//! opened for up to that many waiting requests at a time). The connections are hyper's own
//! (`hyper::client::conn::http2`); `SendRequest` is cloned for each request.
//!
//! - A stream counts from the moment a connection is chosen for it until its response body
//!   ends or is dropped, or its request fails. The count rides in the response body: one
//!   `Arc` clone ([`StreamGuard`]), no allocation per stream.
//! - A closed connection (the upstream restarted, sent GOAWAY, or the connection failed) is
//!   dropped from the pool at the next request, and never chosen again. A request whose
//!   connection closed before it was sent goes to another connection; so does a `GET` or `HEAD`
//!   without a body that the upstream did not process (its GOAWAY came first, or it refused the
//!   stream), rebuilt from a copy of its head kept until the response head arrives. Never to the
//!   connection that failed it: a connection whose upstream sent GOAWAY takes no new stream (it
//!   drains), and one that refused a stream takes no more than it carried then.
//! - A connection that carried no stream for a whole [`IDLE_TIMEOUT`] is closed (after 90 to
//!   180 s idle, like hyper-util's pool).
//! - A new connection is handed to its requests once the upstream's `SETTINGS` have come (one
//!   round trip), so that its limit is known: their streams are counted on it before it joins
//!   the pool, so that no request arriving meanwhile takes them (up to its limit; the requests
//!   past it, if the limit came lower than expected, wait for another connection). The next
//!   connections to that upstream are opened for at most that many waiting requests each. No
//!   stream is ever counted past a connection's limit. An upstream whose `SETTINGS` do not
//!   name a limit (none of hyper, Go, nginx) gets the requests after [`SETTINGS_WAIT`], counted
//!   against `upstream-h2-max-streams` alone.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::oneshot;
use tower::Service as _;

use crate::admin::{OpenConnection, Stats};
use crate::upstream::UpBody;

/// The most streams the proxy opens on one HTTP/2 connection when the route does not say: below
/// the lowest common server default (nginx's `http2_max_concurrent_streams` is 128; hyper's 200,
/// Go's 250).
pub(crate) const DEFAULT_MAX_STREAMS: u32 = 100;
/// A connection that carried no stream for this long is closed (checked once per interval, so
/// after 90 to 180 s).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long opening a connection (TCP, TLS) may take before its requests get a 502.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a new connection waits for the upstream's `SETTINGS_MAX_CONCURRENT_STREAMS` before
/// its requests go out anyway (an upstream that does not name its limit has none).
pub(crate) const SETTINGS_WAIT: Duration = Duration::from_secs(1);
/// How often a new connection looks for the upstream's `SETTINGS` until they have come.
const SETTINGS_PROBE: Duration = Duration::from_millis(2);
/// The stream limit a connection reports until the upstream's `SETTINGS` name one.
const NOT_YET: usize = usize::MAX;
/// How many times one request is sent again, or waits again for a new connection, before it
/// fails.
const MAX_ROUNDS: u32 = 4;
/// A connection's count once it is retired: above any limit, so that no stream is counted on it
/// again.
const RETIRED: usize = usize::MAX;

/// How the pool reaches upstreams: plain TCP (h2c prior knowledge) or TLS with ALPN `h2`.
#[derive(Clone, Debug)]
pub(crate) enum Connector {
    Plain(HttpConnector),
    Tls(HttpsConnector<HttpConnector>),
}

/// The HTTP/2 connections of one client, per upstream (scheme and authority). Cheap to clone:
/// the clones share the connections.
#[derive(Clone, Debug)]
pub(crate) struct H2Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    connector: Connector,
    builder: http2::Builder<TokioExecutor>,
    /// `upstream-h2-max-streams`.
    max_streams: usize,
    /// [`IDLE_TIMEOUT`] (shorter in tests).
    idle_timeout: Duration,
    /// Where connections are counted (`/metrics`).
    stats: Stats,
    hosts: Mutex<HashMap<Key, Host>>,
}

type Key = (Scheme, Authority);

/// One upstream's connections, and the connections being opened to it.
#[derive(Debug)]
struct Host {
    conns: Vec<Conn>,
    pending: Vec<Pending>,
    next_id: u64,
    /// The stream limit of the newest connection (`NOT_YET` before the first): how many waiting
    /// requests one new connection is opened for.
    limit: usize,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            conns: Vec::new(),
            pending: Vec::new(),
            next_id: 0,
            limit: NOT_YET,
        }
    }
}

#[derive(Debug)]
struct Conn {
    send: http2::SendRequest<UpBody>,
    slot: Arc<Slot>,
}

/// A connection being opened, and the requests that wait for it.
#[derive(Debug)]
struct Pending {
    id: u64,
    waiters: Vec<oneshot::Sender<Handed>>,
}

/// What a request waiting for a new connection gets when it opens.
#[derive(Debug)]
enum Handed {
    /// The connection, with the request's stream counted on it.
    Ready(http2::SendRequest<UpBody>, StreamGuard),
    /// The connection took fewer streams than were waiting for it: wait for another.
    Again,
    /// The connection could not be opened.
    Failed(ConnectError),
}

/// The counts of one connection.
#[derive(Debug)]
struct Slot {
    /// The proxy's streams on the connection ([`RETIRED`] once it is closed for idleness).
    streams: AtomicUsize,
    /// The upstream's `SETTINGS_MAX_CONCURRENT_STREAMS`, as the connection last read it (the
    /// cap until the upstream's `SETTINGS` arrive).
    peer_limit: AtomicUsize,
    /// Streams counted since the connection opened (to tell an idle connection).
    counted: AtomicU64,
    /// `upstream-h2-max-streams`.
    cap: usize,
    /// The streams the connection carried besides one the upstream refused (`REFUSED_STREAM`):
    /// it takes no more than that (`usize::MAX` until a refusal).
    refused_at: AtomicUsize,
    /// The upstream sent GOAWAY: the connection serves its open streams and takes no new one.
    draining: AtomicBool,
    /// hyper's dispatch task of the connection has ended (h2 may still serve its open streams).
    ended: AtomicBool,
    /// The connection's place in `tower_sse_proxy_upstream_h2_connections`: released once
    /// hyper's dispatch task has ended and the last stream counted on it ([`Slot::close`]).
    open: Mutex<Option<OpenConnection>>,
}

impl Slot {
    /// The most streams the connection takes now.
    fn limit(&self) -> usize {
        self.cap
            .min(self.peer_limit.load(Ordering::Relaxed).max(1))
            .min(self.refused_at.load(Ordering::Relaxed))
    }

    /// Notes that the upstream refused a stream counted here: the connection takes no more
    /// streams than the others it carries now.
    fn refused(&self) {
        let others = self.streams.load(Ordering::Relaxed).saturating_sub(1);
        self.refused_at.fetch_min(others, Ordering::Relaxed);
    }

    /// Counts a stream if the connection is below its limit.
    fn try_count(self: &Arc<Self>) -> Option<StreamGuard> {
        let limit = self.limit();
        let mut now = self.streams.load(Ordering::Relaxed);
        loop {
            if now >= limit {
                return None;
            }
            match self.streams.compare_exchange_weak(
                now,
                now + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.counted.fetch_add(1, Ordering::Relaxed);
                    return Some(StreamGuard(Arc::clone(self)));
                }
                Err(actual) => now = actual,
            }
        }
    }

    /// Retires the connection if it carries no stream: it is chosen no more.
    fn retire(&self) -> bool {
        self.streams
            .compare_exchange(0, RETIRED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    fn is_retired(&self) -> bool {
        self.streams.load(Ordering::Relaxed) == RETIRED
    }

    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Notes that hyper's dispatch task of the connection has ended: the connection counts as
    /// open (`/metrics`) until its last stream ends too.
    fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        let streams = self.streams.load(Ordering::SeqCst);
        if streams == 0 || streams == RETIRED {
            self.close();
        }
    }

    /// Counts the connection closed (`/metrics`), once.
    fn close(&self) {
        drop(
            self.open
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
    }
}

/// One stream counted on its connection, until dropped: held by the request while it is sent,
/// then by the response body ([`crate::upstream::UpstreamBody`]).
#[derive(Debug)]
pub(crate) struct StreamGuard(Arc<Slot>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // SeqCst here and in `Slot::end`: of the last stream's end and the dispatch task's,
        // whichever comes second sees the other.
        if self.0.streams.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.ended.load(Ordering::SeqCst)
        {
            self.0.close();
        }
    }
}

/// No HTTP/2 connection to the upstream could be opened (TCP, TLS or the handshake failed, or
/// took longer than 5 s): the upstream saw nothing of the request. Shared by the requests that
/// waited for the same connection.
#[derive(Clone, Debug)]
pub(crate) struct ConnectError(Arc<dyn std::error::Error + Send + Sync>);

impl ConnectError {
    fn new(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self(Arc::from(error.into()))
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot open an HTTP/2 connection to the upstream")
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Why an HTTP/2 request failed.
#[derive(Debug)]
pub(crate) enum H2Error {
    /// No connection: nothing was sent.
    Connect(ConnectError),
    /// The request was sent on a connection and failed there.
    Request(hyper::Error),
}

/// What a request gets from the pool: a connection and its count, or a connection to wait for.
enum Checkout {
    Ready(http2::SendRequest<UpBody>, StreamGuard),
    Wait(oneshot::Receiver<Handed>),
}

/// The future of [`H2Pool::send`]: boxed, since hyper's `send_request` returns a future that
/// cannot be named (hyper-util's client boxes its future too). It lives until the response head
/// arrives, not for the stream.
pub(crate) type H2Future = std::pin::Pin<
    Box<dyn Future<Output = Result<(Response<Incoming>, StreamGuard), H2Error>> + Send>,
>;

impl H2Pool {
    /// Creates a new pool that reaches upstreams through `connector`, counts at most
    /// `max_streams` streams per connection, and its connections in `stats`.
    pub(crate) fn new(connector: Connector, max_streams: u32, stats: Stats) -> Self {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        let max_streams = usize::try_from(max_streams).unwrap_or(usize::MAX).max(1);
        // No limit of h2's own before the upstream's SETTINGS (hyper's default is 100): the
        // pool counts, and it waits for those SETTINGS.
        builder
            .timer(TokioTimer::new())
            .initial_max_send_streams(NOT_YET);
        Self {
            shared: Arc::new(Shared {
                connector,
                builder,
                max_streams,
                idle_timeout: IDLE_TIMEOUT,
                stats,
                hosts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Sends `request` (an absolute URI) on a connection to its upstream with a free stream,
    /// opening one if none has. The response comes with the stream's count, or the error
    /// (with the count, when the request was sent: it is released with the error).
    pub(crate) fn send(&self, mut request: Request<UpBody>) -> H2Future {
        let pool = self.clone();
        Box::pin(async move {
            let key = match (request.uri().scheme(), request.uri().authority()) {
                (Some(scheme), Some(authority)) => (scheme.clone(), authority.clone()),
                _ => {
                    return Err(H2Error::Connect(ConnectError::new(
                        "the upstream URI has no scheme or authority",
                    )));
                }
            };
            // A GET or HEAD without a body can be sent again if the upstream did not process it.
            let replay = (matches!(*request.method(), http::Method::GET | http::Method::HEAD)
                && http_body::Body::is_end_stream(request.body()))
            .then(|| {
                (
                    request.method().clone(),
                    request.uri().clone(),
                    request.version(),
                    request.headers().clone(),
                )
            });
            let mut rounds = 0;
            // The connections that failed this request: it is not sent on them again.
            let mut failed: Vec<Arc<Slot>> = Vec::new();
            loop {
                if rounds > 2 * MAX_ROUNDS {
                    return Err(H2Error::Connect(ConnectError::new(
                        "the upstream closed every HTTP/2 connection as it opened",
                    )));
                }
                let (mut send, guard) = match pool.checkout(&key, request.uri(), &failed) {
                    Checkout::Ready(send, guard) => (send, guard),
                    Checkout::Wait(handed) => match handed.await {
                        Ok(Handed::Ready(send, guard)) => (send, guard),
                        Ok(Handed::Again) => {
                            rounds += 1;
                            continue;
                        }
                        Ok(Handed::Failed(error)) => return Err(H2Error::Connect(error)),
                        Err(_) => {
                            return Err(H2Error::Connect(ConnectError::new(
                                "the connection attempt was abandoned",
                            )));
                        }
                    },
                };
                match send.try_send_request(request).await {
                    Ok(response) => return Ok((response, guard)),
                    Err(mut error) => {
                        // Marks the connection (draining, or refusing) whatever is done next.
                        let unprocessed = unprocessed(error.error(), &guard.0);
                        failed.push(Arc::clone(&guard.0));
                        match (error.take_message(), &replay) {
                            // Not sent: the connection closed meanwhile; another one takes it.
                            (Some(back), _) if rounds < MAX_ROUNDS => {
                                rounds += 1;
                                request = back;
                            }
                            (_, Some((method, uri, version, headers)))
                                if rounds < MAX_ROUNDS && unprocessed =>
                            {
                                rounds += 1;
                                let mut again = Request::new(UpBody::default());
                                *again.method_mut() = method.clone();
                                *again.uri_mut() = uri.clone();
                                *again.version_mut() = *version;
                                *again.headers_mut() = headers.clone();
                                request = again;
                            }
                            _ => return Err(H2Error::Request(error.into_error())),
                        }
                    }
                }
            }
        })
    }

    /// A connection with a free stream, or one to wait for (its stream is counted on it before
    /// it joins the pool: see [`Self::open`]).
    /// The connections in `failed` are skipped.
    fn checkout(&self, key: &Key, uri: &Uri, failed: &[Arc<Slot>]) -> Checkout {
        let mut hosts = self
            .shared
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let host = hosts.entry(key.clone()).or_default();
        host.conns.retain(|conn| {
            !conn.send.is_closed() && !conn.slot.is_retired() && !conn.slot.is_draining()
        });
        // The oldest connections first: the newest ones empty out and close when idle.
        for conn in &host.conns {
            if failed.iter().any(|slot| Arc::ptr_eq(slot, &conn.slot)) {
                continue;
            }
            if let Some(guard) = conn.slot.try_count() {
                return Checkout::Ready(conn.send.clone(), guard);
            }
        }
        let (tx, handed) = oneshot::channel();
        let max_streams = self.shared.max_streams.min(host.limit);
        if let Some(pending) = host
            .pending
            .iter_mut()
            .find(|pending| pending.waiters.len() < max_streams)
        {
            pending.waiters.push(tx);
            return Checkout::Wait(handed);
        }
        let id = host.next_id;
        host.next_id += 1;
        host.pending.push(Pending {
            id,
            waiters: vec![tx],
        });
        drop(hosts);
        tokio::spawn(self.clone().open(key.clone(), uri.clone(), id));
        Checkout::Wait(handed)
    }

    /// Opens a connection for the requests waiting on pending connection `id`, counts their
    /// streams on it (up to its limit) and hands it to them, then adds it to the pool: all under
    /// the pool's lock, so that no other request takes the streams they waited for.
    async fn open(self, key: Key, uri: Uri, id: u64) {
        let opened = self.connect(uri, key.1.as_str()).await;
        if let Err(error) = &opened {
            tracing::debug!(
                upstream = %key.1,
                error = %crate::upstream::DisplayChain(error),
                "cannot open an HTTP/2 connection"
            );
        }
        let mut hosts = self
            .shared
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let host = hosts.entry(key).or_default();
        let Some(at) = host.pending.iter().position(|pending| pending.id == id) else {
            return;
        };
        let waiters = host.pending.swap_remove(at).waiters;
        match opened {
            Ok(conn) => {
                for waiter in waiters {
                    // A request that went away takes no stream.
                    if waiter.is_closed() {
                        continue;
                    }
                    let handed = match conn.slot.try_count() {
                        Some(guard) => Handed::Ready(conn.send.clone(), guard),
                        None => Handed::Again,
                    };
                    // Gone meanwhile: its stream is released with the message.
                    let _ = waiter.send(handed);
                }
                host.limit = conn.slot.limit();
                host.conns.push(conn);
            }
            Err(error) => {
                for waiter in waiters {
                    let _ = waiter.send(Handed::Failed(error.clone()));
                }
            }
        }
    }

    /// Connects (TCP, TLS), hands the connection to hyper and spawns its task.
    async fn connect(&self, uri: Uri, upstream: &str) -> Result<Conn, ConnectError> {
        match &self.shared.connector {
            Connector::Plain(http) => {
                let io = connect_within(http.clone().call(uri)).await?;
                self.handshake(io, upstream).await
            }
            Connector::Tls(https) => {
                let io = connect_within(https.clone().call(uri)).await?;
                self.handshake(io, upstream).await
            }
        }
    }

    async fn handshake<T>(&self, io: T, upstream: &str) -> Result<Conn, ConnectError>
    where
        T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (send, connection) = self
            .shared
            .builder
            .handshake::<T, UpBody>(io)
            .await
            .map_err(ConnectError::new)?;
        let slot = Arc::new(Slot {
            streams: AtomicUsize::new(0),
            peer_limit: AtomicUsize::new(NOT_YET),
            counted: AtomicU64::new(0),
            cap: self.shared.max_streams,
            refused_at: AtomicUsize::new(usize::MAX),
            draining: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            open: Mutex::new(Some(self.shared.stats.h2_connection_opened(upstream))),
        });
        let (settings, known) = oneshot::channel();
        tokio::spawn(drive(
            connection,
            Arc::clone(&slot),
            settings,
            self.shared.idle_timeout,
        ));
        // Settings known, or not named in time (or the runtime is ending): go on.
        if let Ok(Ok(Err(error))) = tokio::time::timeout(SETTINGS_WAIT, known).await {
            return Err(error);
        }
        Ok(Conn { send, slot })
    }
}

/// Whether the upstream did not process the request that failed with `error` on the connection
/// of `slot`: its GOAWAY came before the stream (h2 did not send it, or the stream was past the
/// GOAWAY's last stream; the connection drains), or it refused the stream (RFC 9113, section
/// 8.7; the connection takes no more streams than it carries).
fn unprocessed(error: &hyper::Error, slot: &Slot) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            if h2.is_go_away() && h2.is_remote() {
                slot.draining.store(true, Ordering::Relaxed);
                return true;
            }
            if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                slot.refused();
                return true;
            }
            return false;
        }
        source = error.source();
    }
    false
}

/// A connector's call, bounded by [`CONNECT_TIMEOUT`].
async fn connect_within<T, E>(call: impl Future<Output = Result<T, E>>) -> Result<T, ConnectError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match tokio::time::timeout(CONNECT_TIMEOUT, call).await {
        Ok(result) => result.map_err(ConnectError::new),
        Err(_) => Err(ConnectError::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connecting took longer than 5s",
        ))),
    }
}

/// Runs one connection: reads the upstream's stream limit into its slot after every poll (and
/// tells `settings` once it is known, or the connection's end if that comes first), and closes
/// it once it carried no stream for a whole `idle_timeout` ([`IDLE_TIMEOUT`]). When it ends,
/// the connection counts as open (`/metrics`) until its last stream ends.
///
/// hyper reads the connection in a task of its own; what this polls is its dispatch task, which
/// nothing wakes when the upstream's `SETTINGS` arrive. So until they have, it is polled every
/// [`SETTINGS_PROBE`] as well (for at most [`SETTINGS_WAIT`]).
async fn drive<T>(
    connection: http2::Connection<T, UpBody, TokioExecutor>,
    slot: Arc<Slot>,
    settings: oneshot::Sender<Result<(), ConnectError>>,
    idle_timeout: Duration,
) where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut connection = std::pin::pin!(connection);
    let start = tokio::time::Instant::now();
    let mut idle = tokio::time::interval_at(start + idle_timeout, idle_timeout);
    idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut probe = tokio::time::interval_at(start + SETTINGS_PROBE, SETTINGS_PROBE);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let probe_until = start + SETTINGS_WAIT;
    let mut settings = Some(settings);
    let mut counted = slot.counted.load(Ordering::Relaxed);
    let mut was_idle = false;
    std::future::poll_fn(|cx: &mut Context<'_>| {
        loop {
            let poll = connection.as_mut().poll(cx);
            let limit = connection.as_ref().get_ref().current_max_send_streams();
            slot.peer_limit.store(limit, Ordering::Relaxed);
            if let Some(settings) = settings.take_if(|_| limit != NOT_YET || poll.is_ready()) {
                let _ = settings.send(match &poll {
                    Poll::Pending => Ok(()),
                    Poll::Ready(Ok(())) => Err(ConnectError::new(
                        "the upstream closed the connection before its HTTP/2 SETTINGS",
                    )),
                    Poll::Ready(Err(error)) => Err(ConnectError::new(
                        crate::upstream::DisplayChain(error).to_string(),
                    )),
                });
            }
            if let Poll::Ready(result) = poll {
                if let Err(error) = result {
                    tracing::debug!(%error, "upstream HTTP/2 connection failed");
                }
                return Poll::Ready(());
            }
            if idle.poll_tick(cx).is_ready() {
                let now = slot.counted.load(Ordering::Relaxed);
                // Idle at the last tick and no stream since: idle for a whole interval.
                if was_idle && now == counted && slot.retire() {
                    tracing::debug!("idle upstream HTTP/2 connection closed");
                    return Poll::Ready(());
                }
                was_idle = slot.streams.load(Ordering::Relaxed) == 0;
                counted = now;
                continue;
            }
            if settings.is_some()
                && tokio::time::Instant::now() < probe_until
                && probe.poll_tick(cx).is_ready()
            {
                continue;
            }
            return Poll::Pending;
        }
    })
    .await;
    slot.end();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    /// An h2c server on loopback answering `hi` to every request; counts its open connections.
    async fn h2c_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&open);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_: Request<Incoming>| async {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"hi"),
                        )))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                    count.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (addr, open)
    }

    async fn get(pool: &H2Pool, addr: std::net::SocketAddr) {
        let request = Request::get(format!("http://{addr}/"))
            .version(http::Version::HTTP_2)
            .body(UpBody::default())
            .unwrap();
        let (response, guard) = tokio::time::timeout(Duration::from_secs(5), pool.send(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        drop((response, guard));
    }

    #[tokio::test]
    async fn a_connection_without_streams_for_a_whole_idle_timeout_is_closed() {
        let (addr, open) = h2c_server().await;
        let stats = Stats::new();
        let mut pool = H2Pool::new(Connector::Plain(HttpConnector::new()), 100, stats.clone());
        Arc::get_mut(&mut pool.shared).unwrap().idle_timeout = Duration::from_millis(500);
        get(&pool, addr).await;
        get(&pool, addr).await;
        assert_eq!(open.load(Ordering::SeqCst), 1);
        let closed = tower_sse_test_support::eventually(Duration::from_secs(5), || {
            open.load(Ordering::SeqCst) == 0
        });
        assert!(closed.await, "the idle connection stayed open");
        let metrics = stats.encode();
        let gauge = format!("tower_sse_proxy_upstream_h2_connections{{upstream=\"{addr}\"}} 0");
        assert!(metrics.contains(&gauge), "{metrics}");
        // The next request opens a new one.
        get(&pool, addr).await;
        assert_eq!(open.load(Ordering::SeqCst), 1);
        let metrics = stats.encode();
        let opened = format!(
            "tower_sse_proxy_upstream_h2_connections_opened_total{{upstream=\"{addr}\"}} 2"
        );
        assert!(metrics.contains(&opened), "{metrics}");
    }

    /// An h2c server on loopback that allows `limit` concurrent streams per connection and
    /// holds every response body open; records the most streams any connection carried at once.
    async fn holding_server(limit: u32) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let most = Arc::new(AtomicUsize::new(0));
        let record = Arc::clone(&most);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let most = Arc::clone(&record);
                let now = Arc::new(AtomicUsize::new(0));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_: Request<Incoming>| {
                        let on = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(on, Ordering::SeqCst);
                        // Never ends: an event stream.
                        let body =
                            http_body_util::StreamBody::new(futures_util::stream::pending::<
                                Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>,
                            >());
                        async move { Ok::<_, std::convert::Infallible>(Response::new(body)) }
                    });
                    let mut builder =
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    builder.max_concurrent_streams(limit);
                    let _ = builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, most)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_past_the_limit_while_connections_open_never_goes_over_it() {
        // The cap (100) is far above the upstream's 3: the first connection is opened for up to
        // 100 waiting requests and takes 3 of them; requests keep arriving while connections
        // open, and each gets a stream within the limit, none waits inside h2.
        let (addr, most) = holding_server(3).await;
        let pool = H2Pool::new(Connector::Plain(HttpConnector::new()), 100, Stats::new());
        let mut sent = Vec::new();
        for i in 0..120 {
            let pool = pool.clone();
            sent.push(tokio::spawn(async move {
                let request = Request::get(format!("http://{addr}/{i}"))
                    .version(http::Version::HTTP_2)
                    .body(UpBody::default())
                    .unwrap();
                tokio::time::timeout(Duration::from_secs(15), pool.send(request)).await
            }));
            if i % 8 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let mut held = Vec::new();
        for (i, sent) in sent.into_iter().enumerate() {
            let Ok(Ok((response, guard))) = sent.await.unwrap() else {
                panic!("request {i}: no response head");
            };
            assert_eq!(response.status(), http::StatusCode::OK);
            held.push((response, guard));
        }
        assert!(most.load(Ordering::SeqCst) <= 3, "{most:?}");
        let hosts = pool.shared.hosts.lock().unwrap();
        for host in hosts.values() {
            assert!(host.conns.len() >= 40, "{}", host.conns.len());
            for conn in &host.conns {
                assert!(conn.slot.streams.load(Ordering::SeqCst) <= 3);
            }
        }
    }

    #[tokio::test]
    async fn a_new_connection_joins_the_pool_with_its_waiters_streams_already_counted() {
        let (addr, _) = holding_server(2).await;
        let pool = H2Pool::new(Connector::Plain(HttpConnector::new()), 100, Stats::new());
        let key: Key = (Scheme::HTTP, addr.to_string().parse().unwrap());
        let uri: Uri = format!("http://{addr}/").parse().unwrap();
        let Checkout::Wait(first) = pool.checkout(&key, &uri, &[]) else {
            panic!("a connection before any was opened");
        };
        let Checkout::Wait(second) = pool.checkout(&key, &uri, &[]) else {
            panic!("a connection before any was opened");
        };
        let joined = tower_sse_test_support::eventually(Duration::from_secs(5), || {
            let hosts = pool.shared.hosts.lock().unwrap();
            hosts.get(&key).is_some_and(|host| !host.conns.is_empty())
        });
        assert!(joined.await, "no connection opened");
        // From the moment it joins, its two streams are the waiters': a request arriving then
        // waits for another connection.
        let streams = {
            let hosts = pool.shared.hosts.lock().unwrap();
            let conns = &hosts.get(&key).unwrap().conns;
            assert_eq!(conns.len(), 1);
            conns.first().unwrap().slot.streams.load(Ordering::SeqCst)
        };
        assert_eq!(streams, 2);
        assert!(matches!(pool.checkout(&key, &uri, &[]), Checkout::Wait(_)));
        for handed in [first, second] {
            assert!(matches!(handed.await.unwrap(), Handed::Ready(..)));
        }
    }

    /// One connection of h2's own server (it names its stream limit: the pool does not wait
    /// for it), answering 200 to each request and counting them in `count`; with
    /// `refuse_first`, the request that finds `count` at 0 is refused (`REFUSED_STREAM`).
    async fn serve_h2(stream: tokio::net::TcpStream, count: Arc<AtomicUsize>, refuse_first: bool) {
        let handshake = h2::server::Builder::new()
            .max_concurrent_streams(100)
            .handshake::<_, bytes::Bytes>(stream);
        let Ok(mut connection) = handshake.await else {
            return;
        };
        while let Some(Ok((_request, mut respond))) = connection.accept().await {
            if count.fetch_add(1, Ordering::SeqCst) == 0 && refuse_first {
                respond.send_reset(h2::Reason::REFUSED_STREAM);
            } else {
                let _ = respond.send_response(Response::new(()), true);
            }
        }
    }

    /// A raw h2c server on loopback (h2's own, to send what hyper's server does not) that
    /// refuses the first request it receives (`REFUSED_STREAM`) and answers the others 200;
    /// counts the requests it received, and its connections.
    async fn refusing_server() -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&received);
        let accepted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_h2(stream, Arc::clone(&count), true));
            }
        });
        (addr, received, connections)
    }

    #[tokio::test]
    async fn a_refused_get_is_sent_again_on_another_connection_and_a_post_is_not() {
        let (addr, received, connections) = refusing_server().await;
        let pool = H2Pool::new(Connector::Plain(HttpConnector::new()), 100, Stats::new());
        get(&pool, addr).await;
        assert_eq!(received.load(Ordering::SeqCst), 2);
        // The connection that refused it carried no other stream: it takes none any more.
        assert_eq!(connections.load(Ordering::SeqCst), 2);

        let (addr, received, _) = refusing_server().await;
        let request = Request::post(format!("http://{addr}/"))
            .version(http::Version::HTTP_2)
            .body(UpBody::default())
            .unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(5), pool.send(request)).await;
        assert!(matches!(sent, Ok(Err(H2Error::Request(_)))), "{sent:?}");
        assert_eq!(received.load(Ordering::SeqCst), 1);
    }

    /// A server on loopback whose first connection answers the first request it receives with
    /// `GOAWAY(last_stream_id = 0)` (written by hand: h2's server names the last stream it
    /// accepted); later connections are h2's, answering 200. Counts the requests received.
    async fn going_away_server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&received);
        tokio::spawn(async move {
            let Ok((mut first, _)) = listener.accept().await else {
                return;
            };
            let raw = Arc::clone(&count);
            tokio::spawn(async move {
                // SETTINGS: MAX_CONCURRENT_STREAMS 100 (the pool does not wait for it).
                let settings = [0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100];
                first.write_all(&settings).await.unwrap();
                let mut preface = [0; 24];
                first.read_exact(&mut preface).await.unwrap();
                let mut head = [0; 9];
                while first.read_exact(&mut head).await.is_ok() {
                    let length = (usize::from(head[0]) << 16)
                        | (usize::from(head[1]) << 8)
                        | usize::from(head[2]);
                    let mut payload = vec![0; length];
                    first.read_exact(&mut payload).await.unwrap();
                    match (head[3], head[4] & 1) {
                        // SETTINGS, not an ACK: ACK.
                        (4, 0) => first.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await.unwrap(),
                        // HEADERS: GOAWAY, last stream 0, NO_ERROR.
                        (1, _) => {
                            raw.fetch_add(1, Ordering::SeqCst);
                            let goaway = [0, 0, 8, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                            first.write_all(&goaway).await.unwrap();
                        }
                        _ => {}
                    }
                }
            });
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_h2(stream, Arc::clone(&count), false));
            }
        });
        (addr, received)
    }

    #[tokio::test]
    async fn a_get_past_the_upstreams_goaway_is_sent_again_and_a_post_is_not() {
        let (addr, received) = going_away_server().await;
        let pool = H2Pool::new(Connector::Plain(HttpConnector::new()), 100, Stats::new());
        get(&pool, addr).await;
        assert_eq!(received.load(Ordering::SeqCst), 2);

        let (addr, received) = going_away_server().await;
        let request = Request::post(format!("http://{addr}/"))
            .version(http::Version::HTTP_2)
            .body(UpBody::default())
            .unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(5), pool.send(request)).await;
        assert!(matches!(sent, Ok(Err(H2Error::Request(_)))), "{sent:?}");
        assert_eq!(received.load(Ordering::SeqCst), 1);
    }

    fn slot(cap: usize) -> Arc<Slot> {
        Arc::new(Slot {
            streams: AtomicUsize::new(0),
            peer_limit: AtomicUsize::new(NOT_YET),
            counted: AtomicU64::new(0),
            cap,
            refused_at: AtomicUsize::new(usize::MAX),
            draining: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            open: Mutex::new(None),
        })
    }

    #[test]
    fn a_connection_counts_streams_up_to_the_lower_of_its_cap_and_the_upstreams_limit() {
        let slot = slot(3);
        let guards: Vec<_> = (0..3).map(|_| slot.try_count().unwrap()).collect();
        assert!(slot.try_count().is_none());
        drop(guards);
        assert_eq!(slot.streams.load(Ordering::Relaxed), 0);
        slot.peer_limit.store(2, Ordering::Relaxed);
        let _a = slot.try_count().unwrap();
        let _b = slot.try_count().unwrap();
        assert!(slot.try_count().is_none());
        assert_eq!(slot.counted.load(Ordering::Relaxed), 5);
        // An upstream that allows no stream still gets one per connection.
        slot.peer_limit.store(0, Ordering::Relaxed);
        assert_eq!(slot.limit(), 1);
    }

    #[test]
    fn a_connection_that_refused_a_stream_takes_no_more_than_the_others_it_carried() {
        let slot = slot(10);
        let others: Vec<_> = (0..3).map(|_| slot.try_count().unwrap()).collect();
        let refused = slot.try_count().unwrap();
        slot.refused();
        drop(refused);
        assert_eq!(slot.limit(), 3);
        assert!(slot.try_count().is_none());
        drop(others);
        assert_eq!(slot.try_count().map(|_| ()), Some(()));
        // Alone and refused: no stream any more.
        let alone = self::slot(10);
        let refused = alone.try_count().unwrap();
        alone.refused();
        drop(refused);
        assert!(alone.try_count().is_none());
    }

    #[test]
    fn a_connection_counts_as_open_until_its_task_and_its_last_stream_have_ended() {
        let stats = Stats::new();
        let gauge =
            |n: u32| format!("tower_sse_proxy_upstream_h2_connections{{upstream=\"up\"}} {n}\n");
        let slot = slot(3);
        *slot.open.lock().unwrap() = Some(stats.h2_connection_opened("up"));
        let a = slot.try_count().unwrap();
        let b = slot.try_count().unwrap();
        drop(a);
        // hyper's dispatch task ends (a GOAWAY): h2 still serves the open stream.
        slot.end();
        assert!(stats.encode().contains(&gauge(1)), "{}", stats.encode());
        drop(b);
        assert!(stats.encode().contains(&gauge(0)), "{}", stats.encode());
        // Without streams, it closes with its task.
        let idle = self::slot(3);
        *idle.open.lock().unwrap() = Some(stats.h2_connection_opened("up"));
        assert!(stats.encode().contains(&gauge(1)), "{}", stats.encode());
        idle.end();
        assert!(stats.encode().contains(&gauge(0)), "{}", stats.encode());
    }

    #[test]
    fn only_a_connection_without_streams_retires_and_then_counts_none() {
        let slot = slot(3);
        let guard = slot.try_count().unwrap();
        assert!(!slot.retire());
        drop(guard);
        assert!(slot.retire());
        assert!(slot.is_retired());
        assert!(slot.try_count().is_none());
    }
}
