#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The layer ending streams itself, on the wire through a real hyper server: the idle timeout
//! (heartbeats do not count as activity), the maximum lifetime (at an event boundary), and a
//! client that goes away (the upstream is dropped at once, the stream counted as gone).

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use http_body_util::channel::{Channel, Sender};
use hyper::body::Incoming;
use support::sse_parser::parse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower::ServiceBuilder;
use tower_sse::{CloseReason, SseLayer, SseMetrics};

const RETRY: Duration = Duration::from_millis(1000);
const REQUEST: &[u8] =
    b"GET /events HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n";
/// The end of a chunked HTTP/1.1 body: the last data chunk's CRLF, then the zero-size chunk.
const CHUNKED_END: &[u8] = b"\r\n0\r\n\r\n";

/// The upstream body, which records that it was dropped.
struct Guarded<B> {
    inner: B,
    dropped: Arc<AtomicBool>,
}

impl<B: Body + Unpin> Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Guarded<B> {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// What the tests observe of the upstream side of one stream.
#[derive(Clone, Default)]
struct Upstream {
    /// The layer (or hyper) dropped the upstream body.
    dropped: Arc<AtomicBool>,
    /// The producer's `send` failed: it saw the stream gone.
    producer_saw_close: Arc<AtomicBool>,
    /// Whole events the producer sent.
    events_sent: Arc<AtomicUsize>,
}

/// Serves `layer` over a handler whose SSE body is fed by `produce` on its own task; the body is
/// guarded so the test sees when it is dropped.
async fn serve_with<F, Fut>(layer: SseLayer, upstream: &Upstream, produce: F) -> SocketAddr
where
    F: Fn(Sender<Bytes, Infallible>, Upstream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let upstream = upstream.clone();
    let service =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(move |_request: Request<Incoming>| {
                let produce = produce.clone();
                let upstream = upstream.clone();
                async move {
                    let (sender, response) = support::sse_channel();
                    let dropped = Arc::clone(&upstream.dropped);
                    tokio::spawn(produce(sender, upstream));
                    Ok::<_, Infallible>(
                        response
                            .map(|inner: Channel<Bytes, Infallible>| Guarded { inner, dropped }),
                    )
                }
            });
    support::serve(service).await
}

/// Sends the request on a raw HTTP/1.1 connection and reads until the chunked body's end (or
/// 3 s). Returns the head, the decoded body, whether the terminating chunk came, the raw body
/// and how long it took.
async fn raw_stream(addr: SocketAddr) -> (String, Vec<u8>, bool, Vec<u8>, Duration) {
    let started = Instant::now();
    let raw = support::raw_exchange(addr, REQUEST, Some(CHUNKED_END), Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    let (head, body) = support::split_head(&raw);
    let (data, complete) = support::dechunk(&body);
    (head, data, complete, body, elapsed)
}

/// Polls `done` every 10 ms for up to `limit`; returns how long it took, or `None`.
async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() <= limit {
        if done() {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
async fn a_silent_upstream_is_ended_cleanly_at_the_idle_timeout_and_heartbeats_do_not_keep_it_alive()
 {
    const IDLE: Duration = Duration::from_millis(200);
    let layer = SseLayer::new()
        .idle_timeout(IDLE)
        .heartbeat(Duration::from_millis(50))
        .retry(RETRY);
    let metrics = layer.metrics_handle();
    let upstream = Upstream::default();
    // The producer keeps the channel open and sends nothing.
    let addr = serve_with(layer, &upstream, |sender, _| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(sender);
    })
    .await;

    let (head, data, complete, raw_body, elapsed) = raw_stream(addr).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    assert!(
        complete && raw_body.ends_with(b"0\r\n\r\n"),
        "no clean chunked end after {elapsed:?}: {:?}",
        String::from_utf8_lossy(&raw_body)
    );
    // Retry hint, heartbeats, and a last retry hint: nothing else.
    let text = String::from_utf8(data).unwrap();
    let heartbeats = text
        .strip_prefix("retry: 1000\n")
        .and_then(|rest| rest.strip_suffix("retry: 1000\n"))
        .unwrap_or_else(|| panic!("not framed by retry hints: {text:?}"));
    assert!(
        heartbeats.len().is_multiple_of(2) && heartbeats.as_bytes().chunks(2).all(|l| l == b":\n"),
        "{text:?}"
    );
    let count = heartbeats.len() / 2;
    // Heartbeats at 50, 100, 150 ms (fewer on a slow machine) did not postpone the end.
    assert!((1..=4).contains(&count), "{count} heartbeats: {text:?}");
    assert!(
        elapsed >= IDLE - Duration::from_millis(10) && elapsed <= Duration::from_millis(1500),
        "ended after {elapsed:?}"
    );
    let parsed = parse(text.as_bytes());
    assert!(parsed.events.is_empty());
    assert_eq!(parsed.retries, [1000, 1000]);

    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.closed(CloseReason::IdleTimeout), 1);
    assert_eq!(snapshot.closed_total(), 1);
    assert_eq!(snapshot.open_streams, 0);
    assert_eq!(snapshot.heartbeats, count as u64);
    assert!(
        wait_for(Duration::from_secs(1), || upstream
            .dropped
            .load(Ordering::SeqCst))
        .await
        .is_some(),
        "the upstream body was not dropped"
    );
    eprintln!("idle timeout {IDLE:?}: ended after {elapsed:?} with {count} heartbeats (50 ms)");
}

#[tokio::test]
async fn max_lifetime_ends_a_busy_stream_at_an_event_boundary_with_a_retry_hint() {
    const LIFETIME: Duration = Duration::from_millis(300);
    let layer = SseLayer::new()
        .max_lifetime(LIFETIME)
        .lifetime_jitter(0.0)
        .no_heartbeat()
        .retry(RETRY);
    let metrics = layer.metrics_handle();
    let upstream = Upstream::default();
    // One event every 50 ms from 20 ms on, each split in two frames 35 ms apart: 70 % of the
    // time the stream is inside an event (at 300 ms too, in the event of 270..305 ms), and the
    // layer has to wait for its end.
    let addr = serve_with(layer, &upstream, |mut sender, upstream| async move {
        let start = Instant::now() + Duration::from_millis(20);
        let mut ticks = tokio::time::interval_at(start, Duration::from_millis(50));
        for n in 1.. {
            ticks.tick().await;
            let first = format!("id: {n}\ndata: first\n");
            if sender.send_data(Bytes::from(first)).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(35)).await;
            let second = Bytes::from_static(b"data: second\n\n");
            if sender.send_data(second).await.is_err() {
                break;
            }
            upstream.events_sent.store(n, Ordering::SeqCst);
        }
        upstream.producer_saw_close.store(true, Ordering::SeqCst);
    })
    .await;

    let (head, data, complete, raw_body, elapsed) = raw_stream(addr).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        complete && raw_body.ends_with(b"0\r\n\r\n"),
        "no clean chunked end after {elapsed:?}: {:?}",
        String::from_utf8_lossy(&raw_body)
    );
    let text = String::from_utf8(data).unwrap();
    // The upstream's bytes end with a blank line, then comes the layer's last hint.
    let events = text
        .strip_prefix("retry: 1000\n")
        .and_then(|rest| rest.strip_suffix("retry: 1000\n"))
        .unwrap_or_else(|| panic!("not framed by retry hints: {text:?}"));
    assert!(events.ends_with("\n\n"), "cut inside an event: {text:?}");
    // Exactly the upstream's whole events, unchanged, in order.
    let count = events.matches("\n\n").count();
    let expected: String = (1..=count)
        .map(|n| format!("id: {n}\ndata: first\ndata: second\n\n"))
        .collect();
    assert_eq!(events, expected);
    let parsed = parse(text.as_bytes());
    assert_eq!(parsed.events.len(), count);
    for (i, event) in parsed.events.iter().enumerate() {
        assert_eq!(event.data, "first\nsecond");
        assert_eq!(event.last_event_id, (i + 1).to_string());
    }
    assert_eq!(parsed.retries, [1000, 1000]);
    // 300 ms at one event per 50 ms: about 6 events; the end waits at most for one event's end.
    assert!((3..=8).contains(&count), "{count} events: {text:?}");
    assert!(
        elapsed >= LIFETIME - Duration::from_millis(10) && elapsed <= Duration::from_millis(1500),
        "ended after {elapsed:?}"
    );

    let snapshot = metrics.snapshot();
    assert_eq!(snapshot.closed(CloseReason::Lifetime), 1);
    assert_eq!(snapshot.closed_total(), 1);
    assert_eq!(snapshot.open_streams, 0);
    let gone = wait_for(Duration::from_secs(1), || {
        upstream.dropped.load(Ordering::SeqCst)
            && upstream.producer_saw_close.load(Ordering::SeqCst)
    })
    .await;
    assert!(gone.is_some(), "the producer did not see the stream end");
    eprintln!(
        "max lifetime {LIFETIME:?} (jitter 0): ended after {elapsed:?}, {count} whole events, \
         producer had completed {}",
        upstream.events_sent.load(Ordering::SeqCst)
    );
}

/// A producer sending one event every 50 ms until the stream is gone.
async fn ticking(mut sender: Sender<Bytes, Infallible>, upstream: Upstream) {
    for n in 1.. {
        let event = format!("id: {n}\ndata: tick\n\n");
        if sender.send_data(Bytes::from(event)).await.is_err() {
            break;
        }
        upstream.events_sent.store(n, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    upstream.producer_saw_close.store(true, Ordering::SeqCst);
}

/// After the client left: the upstream body dropped, the producer told, the gauge back to 0.
async fn assert_the_upstream_is_released(upstream: &Upstream, metrics: &SseMetrics, how: &str) {
    let released = wait_for(Duration::from_secs(1), || {
        upstream.dropped.load(Ordering::SeqCst)
            && upstream.producer_saw_close.load(Ordering::SeqCst)
            && metrics.snapshot().open_streams == 0
    })
    .await;
    let snapshot = metrics.snapshot();
    assert!(
        released.is_some(),
        "{how}: 1 s after the client left: upstream dropped {}, producer saw close {}, {snapshot:?}",
        upstream.dropped.load(Ordering::SeqCst),
        upstream.producer_saw_close.load(Ordering::SeqCst),
    );
    assert_eq!(snapshot.opened, 1);
    assert_eq!(snapshot.closed(CloseReason::ClientGone), 1);
    assert_eq!(snapshot.closed_total(), 1);
    eprintln!(
        "{how}: upstream released {:?} after the client left ({} events sent)",
        released.unwrap(),
        upstream.events_sent.load(Ordering::SeqCst)
    );
}

#[tokio::test]
async fn an_http1_client_that_disconnects_mid_stream_gets_the_upstream_dropped_and_counted_as_gone()
{
    let layer = SseLayer::new().retry(RETRY);
    let metrics = layer.metrics_handle();
    let upstream = Upstream::default();
    let addr = serve_with(layer, &upstream, ticking).await;

    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(REQUEST).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    while !raw.windows(10).any(|w| w == b"data: tick") {
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
            .await
            .expect("no event")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buf[..n]);
    }
    assert_eq!(metrics.snapshot().open_streams, 1);
    drop(tcp);

    assert_the_upstream_is_released(&upstream, &metrics, "HTTP/1.1 close").await;
}

#[tokio::test]
async fn an_http2_client_that_resets_the_stream_gets_the_upstream_dropped_and_counted_as_gone() {
    let layer = SseLayer::new().retry(RETRY);
    let metrics = layer.metrics_handle();
    let upstream = Upstream::default();
    let addr = serve_with(layer, &upstream, ticking).await;

    let client = support::client(true);
    let request = Request::get(format!("http://{addr}/events"))
        .header(header::ACCEPT, "text/event-stream")
        .body(Full::default())
        .unwrap();
    let response: Response<Incoming> = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    let mut body = response.into_body();
    let mut seen = Vec::new();
    while !seen.windows(10).any(|w| w == b"data: tick") {
        let data = support::next_data(&mut body, Duration::from_secs(2))
            .await
            .expect("ended early");
        seen.extend_from_slice(&data);
    }
    assert_eq!(metrics.snapshot().open_streams, 1);
    // Dropping the body resets the stream; the connection (and the client) stay up.
    drop(body);

    assert_the_upstream_is_released(&upstream, &metrics, "HTTP/2 reset").await;
    drop(client);
}
