#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! Graceful shutdown with open event streams, through real servers on loopback.
//!
//! `axum::serve(..).with_graceful_shutdown(..)` and hyper-util's `GracefulShutdown` wait for
//! every response to finish, and an event stream never does (axum#2673, hyper#2787). With an
//! [`SseShutdown`] on the layer, drained from the shutdown signal, 1,000 open streams end
//! cleanly, spread over the drain window, and the server stops within the window. The control
//! tests run the same servers without the handle and show the hang.
//!
//! The heavy tests open 1,000 streams each: over 1,000 HTTP/1.1 connections for axum (2,000 file
//! descriptors in this process), over 5 HTTP/2 connections of 200 streams (hyper's default
//! concurrency limit) for hyper-util. They take a lock so that they run one at a time and their
//! timings are not skewed by each other.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use support::sse_parser::parse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::ServiceBuilder;
use tower_sse::{CloseReason, SseLayer, SseMetrics, SseShutdown};

/// Open streams in each heavy test.
const STREAMS: usize = 1000;
/// The HTTP/2 tests: connections, and streams on each (hyper's default limit is 200).
const H2_CONNECTIONS: usize = 5;
const WINDOW: Duration = Duration::from_secs(1);
/// Slack on top of the drain window for a noisy machine.
const MARGIN: Duration = Duration::from_millis(1500);
/// How long the control tests give a graceful shutdown before calling it a hang.
const HANG: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(1000);
/// The one event each upstream sends before falling silent.
const HELLO: &[u8] = b"data: hello\n\n";
const REQUEST: &[u8] = b"GET /events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n";

/// The heavy tests run one at a time.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An upstream that sends [`HELLO`] and then nothing, forever; counts its drops.
struct HelloThenSilence {
    sent: bool,
    drops: Arc<AtomicUsize>,
}

impl Body for HelloThenSilence {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent {
            // Never woken: the stream stays open until someone else ends it.
            Poll::Pending
        } else {
            self.sent = true;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(HELLO)))))
        }
    }
}

impl Drop for HelloThenSilence {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn event_stream(drops: &Arc<AtomicUsize>) -> Response<HelloThenSilence> {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(HelloThenSilence {
            sent: false,
            drops: Arc::clone(drops),
        })
        .unwrap()
}

fn layer(shutdown: Option<&SseShutdown>) -> SseLayer {
    let layer = SseLayer::new()
        .retry(RETRY)
        .no_heartbeat()
        .drain_window(WINDOW);
    match shutdown {
        Some(shutdown) => layer.shutdown(shutdown.clone()),
        None => layer,
    }
}

/// How a client saw its stream end.
struct Ended {
    at: Instant,
    /// The body ended cleanly: chunked terminator (HTTP/1.1) or END_STREAM (HTTP/2).
    clean: bool,
    data: Vec<u8>,
}

/// Counts streams whose first event arrived.
#[derive(Clone, Default)]
struct Opened(Arc<AtomicUsize>);

impl Opened {
    fn one(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Waits until `n` streams are open (their first event read), for at most 10 s.
    async fn wait_for(&self, n: usize, metrics: &SseMetrics) -> Duration {
        let started = Instant::now();
        while self.0.load(Ordering::SeqCst) < n {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "only {} of {n} streams opened in 10 s; {:?}",
                self.0.load(Ordering::SeqCst),
                metrics.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(metrics.snapshot().open_streams, n as u64);
        started.elapsed()
    }
}

/// One HTTP/1.1 event stream on its own connection, read until its chunked end or EOF.
async fn http1_stream(addr: SocketAddr, gate: Arc<Semaphore>, opened: Opened) -> Ended {
    // Connections are opened at most 100 at a time, to stay within the listen backlog.
    let permit = gate.acquire_owned().await.unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(REQUEST).await.unwrap();
    let mut permit = Some(permit);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tcp.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            let data = body_of(&raw).0;
            return Ended {
                at: Instant::now(),
                clean: false,
                data,
            };
        }
        raw.extend_from_slice(&buf[..n]);
        let (data, complete) = body_of(&raw);
        if permit.is_some() && data.ends_with(HELLO) {
            permit = None;
            opened.one();
        }
        if complete {
            return Ended {
                at: Instant::now(),
                clean: true,
                data,
            };
        }
    }
}

/// The decoded body of a raw HTTP/1.1 response read so far, and whether it is complete.
fn body_of(raw: &[u8]) -> (Vec<u8>, bool) {
    match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            assert!(head.contains("content-type: text/event-stream"), "{head}");
            support::dechunk(&raw[end + 4..])
        }
        None => (Vec::new(), false),
    }
}

/// Opens [`STREAMS`] HTTP/1.1 event streams, one connection each, and waits until all are open.
async fn open_http1_streams(addr: SocketAddr, metrics: &SseMetrics) -> Vec<JoinHandle<Ended>> {
    assert_fd_budget(2 * STREAMS + 200);
    let opened = Opened::default();
    let gate = Arc::new(Semaphore::new(100));
    let clients = (0..STREAMS)
        .map(|_| tokio::spawn(http1_stream(addr, Arc::clone(&gate), opened.clone())))
        .collect();
    let took = opened.wait_for(STREAMS, metrics).await;
    eprintln!("opened {STREAMS} HTTP/1.1 streams (one connection each) in {took:?}");
    clients
}

/// One HTTP/2 event stream, read until its end.
async fn http2_stream(
    mut sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    opened: Opened,
) -> Ended {
    let request = Request::get(format!("http://{addr}/events"))
        .header(header::ACCEPT, "text/event-stream")
        .body(Full::default())
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let mut data = Vec::new();
    let mut counted = false;
    loop {
        let clean = match body.frame().await {
            None => true,
            Some(Err(_)) => false,
            Some(Ok(frame)) => {
                if let Ok(bytes) = frame.into_data() {
                    data.extend_from_slice(&bytes);
                }
                if !counted && data.ends_with(HELLO) {
                    counted = true;
                    opened.one();
                }
                continue;
            }
        };
        return Ended {
            at: Instant::now(),
            clean,
            data,
        };
    }
}

/// Opens [`STREAMS`] HTTP/2 event streams over [`H2_CONNECTIONS`] connections, and waits until
/// all are open.
async fn open_http2_streams(addr: SocketAddr, metrics: &SseMetrics) -> Vec<JoinHandle<Ended>> {
    let opened = Opened::default();
    let mut clients = Vec::with_capacity(STREAMS);
    for _ in 0..H2_CONNECTIONS {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(connection);
        for _ in 0..STREAMS / H2_CONNECTIONS {
            clients.push(tokio::spawn(http2_stream(
                sender.clone(),
                addr,
                opened.clone(),
            )));
        }
    }
    let took = opened.wait_for(STREAMS, metrics).await;
    eprintln!("opened {STREAMS} HTTP/2 streams over {H2_CONNECTIONS} connections in {took:?}");
    clients
}

/// Fails early, with a clear message, when this process may not open enough sockets.
fn assert_fd_budget(needed: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|soft| soft.parse::<usize>().ok());
    if let Some(soft) = soft {
        assert!(
            soft >= needed,
            "this test needs {needed} file descriptors, `ulimit -n` is {soft}"
        );
    }
}

/// Collects every client's end, failing when one has not ended `limit` after `from`.
async fn ends(clients: Vec<JoinHandle<Ended>>, from: Instant, limit: Duration) -> Vec<Ended> {
    let mut out = Vec::with_capacity(clients.len());
    for client in clients {
        let ended = tokio::time::timeout_at(from + limit, client)
            .await
            .unwrap_or_else(|_| panic!("a stream was still open {limit:?} after the drain"))
            .unwrap();
        out.push(ended);
    }
    out
}

/// Checks every stream ended cleanly with a jittered `retry:` line as its last bytes, spread
/// over the window; prints the figures.
fn check_drained(label: &str, ends: &[Ended], drained_at: Instant, server_done: Duration) {
    assert_eq!(ends.len(), STREAMS);
    let mut offsets = Vec::with_capacity(ends.len());
    for ended in ends {
        let text = String::from_utf8_lossy(&ended.data);
        assert!(ended.clean, "a stream did not end cleanly: {text:?}");
        let hint = text
            .strip_prefix("retry: 1000\ndata: hello\n\nretry: ")
            .and_then(|rest| rest.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("not hello then a last retry hint: {text:?}"));
        let millis: u64 = hint
            .parse()
            .unwrap_or_else(|_| panic!("retry value not digits: {text:?}"));
        // The drain's hint is jittered by 20 % at least.
        assert!((800..=1200).contains(&millis), "{text:?}");
        let parsed = parse(&ended.data);
        assert_eq!(parsed.triples(), [("message", "hello", "")]);
        assert_eq!(parsed.retries, [1000, millis]);
        assert!(ended.at >= drained_at, "a stream ended before the drain");
        offsets.push(ended.at - drained_at);
    }
    offsets.sort_unstable();
    let (first, last) = (offsets[0], offsets[offsets.len() - 1]);
    let spread = last - first;
    let first_half = offsets.iter().filter(|o| **o < WINDOW / 2).count();
    let distinct_hints = {
        let mut hints: Vec<&[u8]> = ends.iter().map(|e| e.data.as_slice()).collect();
        hints.sort_unstable();
        hints.dedup();
        hints.len()
    };
    eprintln!(
        "{label}: {} streams, drain window {WINDOW:?}: server done {server_done:?} after the \
         drain; stream ends from {first:?} to {last:?} after the drain (spread {spread:?}, median \
         {:?}, {first_half} in the first half of the window); {distinct_hints} distinct retry hints",
        ends.len(),
        offsets[offsets.len() / 2],
    );
    assert!(
        server_done <= WINDOW + MARGIN,
        "server took {server_done:?}"
    );
    assert!(last <= WINDOW + MARGIN, "last stream ended after {last:?}");
    assert!(
        spread >= WINDOW.mul_f64(0.4),
        "stream ends not spread over the window: {first:?}..{last:?}"
    );
    assert!(
        (STREAMS / 5..=STREAMS * 4 / 5).contains(&first_half),
        "{first_half} of {STREAMS} ended in the first half of the window"
    );
}

fn check_metrics_after_drain(metrics: &SseMetrics, drops: &AtomicUsize) {
    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.open_streams, 0, "{snapshot:?}");
    assert_eq!(snapshot.opened, STREAMS as u64);
    assert_eq!(snapshot.closed(CloseReason::Shutdown), STREAMS as u64);
    assert_eq!(snapshot.closed_total(), STREAMS as u64);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        STREAMS,
        "upstream bodies dropped"
    );
}

fn axum_router(layer: SseLayer, drops: &Arc<AtomicUsize>) -> Router {
    let drops = Arc::clone(drops);
    Router::new()
        .route(
            "/events",
            get(move || {
                let drops = Arc::clone(&drops);
                async move { event_stream(&drops).map(axum::body::Body::new) }
            }),
        )
        .layer(layer)
}

/// Runs `axum::serve(..).with_graceful_shutdown(..)`; the signal is sent through the returned
/// sender, and calls `shutdown.drain()` (when given) before completing. The task returns when
/// the server completed.
async fn spawn_axum(
    router: Router,
    shutdown: Option<SseShutdown>,
) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<Instant>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (signal, signalled) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = signalled.await;
                if let Some(shutdown) = shutdown {
                    shutdown.drain();
                }
            })
            .await
            .unwrap();
        Instant::now()
    });
    (addr, signal, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_graceful_shutdown_with_1000_open_streams_completes_within_the_drain_window() {
    let _heavy = HEAVY.lock().await;
    let shutdown = SseShutdown::new();
    let layer = layer(Some(&shutdown));
    let metrics = layer.metrics_handle();
    let drops = Arc::new(AtomicUsize::new(0));
    let (addr, signal, server) = spawn_axum(axum_router(layer, &drops), Some(shutdown)).await;
    let clients = open_http1_streams(addr, &metrics).await;

    let drained_at = Instant::now();
    signal.send(()).unwrap();
    let done_at = tokio::time::timeout(WINDOW + MARGIN, server)
        .await
        .expect("axum's graceful shutdown did not complete within the window")
        .unwrap();
    let ends = ends(clients, drained_at, WINDOW + MARGIN).await;

    check_drained(
        "axum::serve, HTTP/1.1",
        &ends,
        drained_at,
        done_at - drained_at,
    );
    check_metrics_after_drain(&metrics, &drops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_graceful_shutdown_hangs_with_open_streams_when_the_layer_has_no_shutdown_handle() {
    let _heavy = HEAVY.lock().await;
    let layer = layer(None);
    let metrics = layer.metrics_handle();
    let drops = Arc::new(AtomicUsize::new(0));
    let (addr, signal, mut server) = spawn_axum(axum_router(layer, &drops), None).await;
    let clients = open_http1_streams(addr, &metrics).await;

    signal.send(()).unwrap();
    let outcome = tokio::time::timeout(HANG, &mut server).await;
    assert!(
        outcome.is_err(),
        "axum's graceful shutdown completed without the drain: the control proves nothing"
    );
    let snapshot = metrics.snapshot();
    let still_open = clients.iter().filter(|c| !c.is_finished()).count();
    eprintln!(
        "control, axum::serve, HTTP/1.1: graceful shutdown still waiting {HANG:?} after the \
         signal; {} streams open on the server, {still_open} clients still reading",
        snapshot.open_streams
    );
    assert_eq!(snapshot.open_streams, STREAMS as u64);
    assert_eq!(still_open, STREAMS);
    server.abort();
    for client in clients {
        client.abort();
    }
}

/// Serves with hyper-util's `auto::Builder`, every connection watched by a `GracefulShutdown`,
/// until `stop` fires; the task then returns the `GracefulShutdown`.
async fn spawn_hyper_util<S>(
    service: S,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<GracefulShutdown>,
)
where
    S: tower::Service<
            Request<Incoming>,
            Response = Response<tower_sse::SseBody<HelloThenSilence>>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        let mut stopped = pin!(stopped);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (tcp, _) = accepted.unwrap();
                    let connection = builder
                        .serve_connection_with_upgrades(
                            TokioIo::new(tcp),
                            TowerToHyperService::new(service.clone()),
                        )
                        .into_owned();
                    tokio::spawn(graceful.watch(connection));
                }
                _ = &mut stopped => break,
            }
        }
        drop(listener);
        graceful
    });
    (addr, stop, server)
}

fn hyper_service(
    layer: SseLayer,
    drops: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<Incoming>,
    Response = Response<tower_sse::SseBody<HelloThenSilence>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(layer)
        .service_fn(move |_request: Request<Incoming>| {
            let drops = Arc::clone(&drops);
            async move { Ok::<_, Infallible>(event_stream(&drops)) }
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_util_graceful_shutdown_with_1000_open_http2_streams_completes_within_the_drain_window()
 {
    let _heavy = HEAVY.lock().await;
    let shutdown = SseShutdown::new();
    let layer = layer(Some(&shutdown));
    let metrics = layer.metrics_handle();
    let drops = Arc::new(AtomicUsize::new(0));
    let (addr, stop, server) = spawn_hyper_util(hyper_service(layer, Arc::clone(&drops))).await;
    let clients = open_http2_streams(addr, &metrics).await;

    stop.send(()).unwrap();
    let graceful = server.await.unwrap();
    assert_eq!(graceful.count(), H2_CONNECTIONS);
    let drained_at = Instant::now();
    shutdown.drain();
    tokio::time::timeout(WINDOW + MARGIN, graceful.shutdown())
        .await
        .expect("hyper-util's graceful shutdown did not complete within the window");
    let server_done = drained_at.elapsed();
    let ends = ends(clients, drained_at, WINDOW + MARGIN).await;

    check_drained(
        "hyper-util GracefulShutdown, HTTP/2",
        &ends,
        drained_at,
        server_done,
    );
    check_metrics_after_drain(&metrics, &drops);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_util_graceful_shutdown_hangs_with_open_streams_when_the_layer_has_no_shutdown_handle()
 {
    let _heavy = HEAVY.lock().await;
    let layer = layer(None);
    let metrics = layer.metrics_handle();
    let drops = Arc::new(AtomicUsize::new(0));
    let (addr, stop, server) = spawn_hyper_util(hyper_service(layer, Arc::clone(&drops))).await;
    let clients = open_http2_streams(addr, &metrics).await;

    stop.send(()).unwrap();
    let graceful = server.await.unwrap();
    let outcome = tokio::time::timeout(HANG, graceful.shutdown()).await;
    assert!(
        outcome.is_err(),
        "hyper-util's graceful shutdown completed without the drain: the control proves nothing"
    );
    let snapshot = metrics.snapshot();
    let still_open = clients.iter().filter(|c| !c.is_finished()).count();
    eprintln!(
        "control, hyper-util GracefulShutdown, HTTP/2: still waiting {HANG:?} after shutdown(); \
         {} streams open on the server, {still_open} clients still reading",
        snapshot.open_streams
    );
    assert_eq!(snapshot.open_streams, STREAMS as u64);
    assert_eq!(still_open, STREAMS);
    for client in clients {
        client.abort();
    }
}

#[tokio::test]
async fn a_request_for_an_event_stream_after_the_drain_started_gets_200_a_retry_hint_and_an_immediate_end()
 {
    let shutdown = SseShutdown::new();
    // A long window: an immediate end is not the window closing.
    let layer = layer(Some(&shutdown)).drain_window(Duration::from_secs(3));
    let metrics = layer.metrics_handle();
    let drops = Arc::new(AtomicUsize::new(0));
    let addr = support::serve(hyper_service(layer, Arc::clone(&drops))).await;
    shutdown.drain();

    // HTTP/1.1, on the wire.
    let started = Instant::now();
    let raw = support::raw_exchange(
        addr,
        b"GET /events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n",
        Some(b"\r\n0\r\n\r\n"),
        Duration::from_secs(3),
    )
    .await;
    let http1_took = started.elapsed();
    let (head, body) = support::split_head(&raw);
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let (data, complete) = support::dechunk(&body);
    assert!(complete, "{:?}", String::from_utf8_lossy(&body));
    assert_only_a_drain_hint(&data);
    assert!(http1_took < Duration::from_secs(1), "took {http1_took:?}");

    // HTTP/2.
    let started = Instant::now();
    let client = support::client(true);
    let request = Request::get(format!("http://{addr}/events"))
        .header(header::ACCEPT, "text/event-stream")
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let data = tokio::time::timeout(Duration::from_secs(3), response.into_body().collect())
        .await
        .expect("the HTTP/2 stream did not end")
        .unwrap()
        .to_bytes();
    let http2_took = started.elapsed();
    assert_only_a_drain_hint(&data);
    assert!(http2_took < Duration::from_secs(1), "took {http2_took:?}");

    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.open_streams, 0);
    assert_eq!(snapshot.closed(CloseReason::Shutdown), 2);
    eprintln!(
        "after the drain: HTTP/1.1 answered and ended in {http1_took:?}, HTTP/2 in {http2_took:?} \
         (window 3 s); upstream bodies made (and dropped): {}",
        drops.load(Ordering::SeqCst)
    );
}

/// The body is one `retry:` line with a drain-jittered value, and nothing else.
fn assert_only_a_drain_hint(data: &[u8]) {
    let text = std::str::from_utf8(data).unwrap();
    let millis: u64 = text
        .strip_prefix("retry: ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("not only a retry line: {text:?}"));
    assert!((800..=1200).contains(&millis), "{text:?}");
    let parsed = parse(data);
    assert!(parsed.events.is_empty());
    assert_eq!(parsed.retries, [millis]);
}
