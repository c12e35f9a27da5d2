//! Slow-client backpressure: a byte-bounded buffer per stream, stall detection, and policies.
//!
//! When a client stops reading (a phone in a tunnel, a tab in the background, a saturated link),
//! hyper keeps its own write buffer full and stops polling the body. The producer behind it then
//! blocks, or, with a fan-out channel, lags everyone else, or grows an unbounded queue.
//!
//! With [`SseLayer::slow_client`](crate::SseLayer::slow_client), each event stream gets a task
//! that polls the inner body independently of the client and fills a queue bounded in bytes,
//! holding frames split at event boundaries (never copied). When the client accepts no bytes for
//! [`SlowClient::timeout`] while bytes are waiting (or a heartbeat is due), the stream is ended
//! with [`CloseReason::SlowClient`](crate::CloseReason::SlowClient): the inner body and the queue
//! are dropped at once, so the producer sees the client gone. What happens when the queue is full
//! depends on the [`SlowClientPolicy`].
//!
//! The task ends as soon as the response body is dropped; without `slow_client`, nothing is
//! spawned. Memory per stream is bounded by [`SlowClient::max_buffer`] plus one frame, whatever
//! the client's speed (hyper's own write buffer and the kernel's socket buffer come on top).
//!
//! # Choosing the timeout
//!
//! The layer sees a client's progress as hyper taking bytes from the body; the kernel's socket
//! send buffer sits in between. Linux grows that buffer up to `net.ipv4.tcp_wmem`'s maximum
//! (4 MiB by default) and reports the socket writable again only after about a third of it has
//! drained. A client that reads steadily but slowly can therefore look stalled: at 200 KB/s,
//! draining 1.3 MB takes about 7 s, longer than a 5 s timeout. Pick a timeout above
//! `send buffer / 3 / slowest read rate you accept`, or give the listening socket a fixed send
//! buffer (`tokio::net::TcpSocket::set_send_buffer_size`, which also keeps stale events out of the
//! kernel so that `DropOldest` and `LatestPerType` act on more of the backlog).
//!
//! A stalled connection cannot be closed from inside a response body: hyper does not poll a body
//! while its write buffer is full. The stream ends for the producer at once, and on the wire as
//! soon as the client reads again (it then gets what was already buffered, and the end), or when
//! the connection dies.
//!
//! ```
//! use std::{convert::Infallible, time::Duration};
//! use bytes::Bytes;
//! use http::{header, Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_sse::{SlowClient, SlowClientPolicy, SseLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let slow = SlowClient::new()
//!     .max_buffer(256 * 1024)
//!     .timeout(Duration::from_secs(5))
//!     .policy(SlowClientPolicy::Disconnect);
//! let service = ServiceBuilder::new()
//!     .layer(SseLayer::new().no_retry().slow_client(slow))
//!     .service_fn(|_: Request<Full<Bytes>>| async {
//!         let mut response = Response::new(Full::<Bytes>::from("data: 1\n\ndata: 2\n\n"));
//!         response.headers_mut().insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
//!         Ok::<_, Infallible>(response)
//!     });
//! let body = service.oneshot(Request::new(Full::default())).await.unwrap().into_body();
//! assert_eq!(body.collect().await.unwrap().to_bytes(), "data: 1\n\ndata: 2\n\n");
//! # }
//! ```

mod pump;
mod queue;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::time::Instant;

use crate::BoxError;
use crate::metrics::{CloseSlot, SseMetrics};
use queue::{Shared, Take};

/// Default byte limit of a stream's buffer.
const DEFAULT_MAX_BUFFER: usize = 1024 * 1024;
/// Default time a client may accept nothing while bytes wait.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do when a slow client's buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowClientPolicy {
    /// Stop pulling from the producer; when the client still accepts nothing after
    /// [`SlowClient::timeout`], end the stream and drop the inner body. The client reconnects
    /// with `Last-Event-ID` and the application replays what it missed.
    ///
    /// ```
    /// use tower_sse::{SlowClient, SlowClientPolicy};
    ///
    /// let slow = SlowClient::new().policy(SlowClientPolicy::Disconnect);
    /// # drop(slow);
    /// ```
    #[default]
    Disconnect,
    /// Discard whole events from the front of the buffer (never part of an event, never an event
    /// already partly sent, never the stream's first event, which may carry the BOM) to make room, and count them in
    /// [`MetricsSnapshot::events_dropped`](crate::MetricsSnapshot::events_dropped). For feeds
    /// where the newest events matter most.
    ///
    /// ```
    /// use tower_sse::{SlowClient, SlowClientPolicy};
    ///
    /// let slow = SlowClient::new().policy(SlowClientPolicy::DropOldest);
    /// # drop(slow);
    /// ```
    DropOldest,
    /// Keep only the newest queued event of each event type (the `event:` field, `message` by
    /// default), counting the others in
    /// [`MetricsSnapshot::events_coalesced`](crate::MetricsSnapshot::events_coalesced): a progress
    /// bar jumps from 40 % to 55 %. Events of types not repeated are kept.
    ///
    /// ```
    /// use tower_sse::{SlowClient, SlowClientPolicy};
    ///
    /// let slow = SlowClient::new().policy(SlowClientPolicy::LatestPerType);
    /// # drop(slow);
    /// ```
    LatestPerType,
}

/// Slow-client handling: the buffer's byte limit, the stall timeout and the policy.
///
/// Under every policy, a client that accepts nothing at all (no data, no heartbeat) for
/// [`timeout`](Self::timeout) while something waits for it is disconnected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SlowClient {
    pub(crate) max_buffer: usize,
    pub(crate) timeout: Duration,
    pub(crate) policy: SlowClientPolicy,
}

impl Default for SlowClient {
    fn default() -> Self {
        Self {
            max_buffer: DEFAULT_MAX_BUFFER,
            timeout: DEFAULT_TIMEOUT,
            policy: SlowClientPolicy::Disconnect,
        }
    }
}

impl SlowClient {
    /// Creates a new [`SlowClient`]: 1 MiB buffer, 10 s stall timeout, policy `Disconnect`.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most bytes a stream's buffer holds (one frame more at most). Default: 1 MiB. Zero
    /// holds one frame at a time.
    ///
    /// ```
    /// use tower_sse::SlowClient;
    ///
    /// let slow = SlowClient::new().max_buffer(64 * 1024);
    /// # drop(slow);
    /// ```
    #[must_use]
    pub const fn max_buffer(mut self, bytes: usize) -> Self {
        self.max_buffer = bytes;
        self
    }

    /// How long a client may accept nothing while bytes wait (or a heartbeat is due) before
    /// the stream is ended. Default: 10 s. Zero ends a stream as soon as the client lags.
    ///
    /// On a stream with heartbeats, the stall is found at most the
    /// [heartbeat slack](crate::SseLayer::heartbeat_slack) after the timeout (by default a tenth
    /// of the heartbeat interval, at most 1 s; never before the timeout): the stall timers wait
    /// on the grid the heartbeats use, so that the streams of a runtime whose timers fall due
    /// within one slack wake it once. The timeout bounds how long a stalled client holds its
    /// buffer, which stays bounded by [`max_buffer`](Self::max_buffer) meanwhile; with the
    /// defaults the stream ends 10 to 11 s after the client stopped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sse::SlowClient;
    ///
    /// let slow = SlowClient::new().timeout(Duration::from_secs(5));
    /// # drop(slow);
    /// ```
    #[must_use]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when the buffer is full. Default: [`SlowClientPolicy::Disconnect`].
    ///
    /// ```
    /// use tower_sse::{SlowClient, SlowClientPolicy};
    ///
    /// let slow = SlowClient::new().policy(SlowClientPolicy::LatestPerType);
    /// # drop(slow);
    /// ```
    #[must_use]
    pub const fn policy(mut self, policy: SlowClientPolicy) -> Self {
        self.policy = policy;
        self
    }
}

/// The [`SseLayer`](crate::SseLayer) mode that never buffers (the default): the body polls the
/// inner body directly and nothing is spawned; bodies need not be `Send`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unbuffered(());

/// The [`SseLayer`](crate::SseLayer) mode that may put a slow-client buffer in front of event
/// streams, chosen by [`SseLayer::slow_client`](crate::SseLayer::slow_client). Event-stream
/// bodies must be `Send + 'static`: a task polls them.
///
/// The mode says what a layer may do; whether it buffers is its configuration
/// ([`SseLayer::no_slow_client`](crate::SseLayer::no_slow_client) turns it off and keeps the
/// type), so routes with and without a buffer share one service type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Buffered(());

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Unbuffered {}
    impl Sealed for super::Buffered {}
}

/// How an event stream's inner body is polled: directly ([`Unbuffered`]) or by a pump task
/// through a bounded buffer ([`Buffered`]). Sealed.
pub trait Buffering<B>: sealed::Sealed {
    /// Starts the pump for `body`, or gives the body back to be polled directly. `heartbeat`:
    /// the stream's heartbeat interval and slack.
    #[doc(hidden)]
    fn start(
        body: B,
        slow: Option<SlowClient>,
        metrics: &SseMetrics,
        heartbeat: Option<(Duration, Duration)>,
    ) -> Result<Receiver, B>;
}

impl<B> Buffering<B> for Unbuffered {
    fn start(
        body: B,
        _: Option<SlowClient>,
        _: &SseMetrics,
        _: Option<(Duration, Duration)>,
    ) -> Result<Receiver, B> {
        Err(body)
    }
}

impl<B> Buffering<B> for Buffered
where
    B: Body + Send + 'static,
    B::Data: Send + 'static,
    B::Error: Into<BoxError>,
{
    fn start(
        body: B,
        slow: Option<SlowClient>,
        metrics: &SseMetrics,
        heartbeat: Option<(Duration, Duration)>,
    ) -> Result<Receiver, B> {
        let Some(slow) = slow else {
            return Err(body);
        };
        let shared = Shared::new(slow, metrics.clone());
        // The pump logs in the request's span (peer, path) like the body does.
        let pump = pump::pump(body, Arc::clone(&shared), heartbeat);
        tokio::spawn(tracing::Instrument::instrument(
            pump,
            tracing::Span::current(),
        ));
        Ok(Receiver { shared })
    }
}

/// The receiving end of a slow-client buffer, polled by [`SseBody`](crate::SseBody). Dropping it
/// ends the pump task and drops the inner body.
#[doc(hidden)]
pub struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    pub(crate) fn poll_frame(
        &self,
        cx: &Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut state = self.shared.lock();
        match state.poll_take(cx, &self.shared, Instant::now()) {
            Poll::Ready(Some(Ok(Take::Data(bytes)))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Ok(Take::Trailers(trailers)))) => {
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The client accepted bytes the layer wrote itself (a heartbeat, a hint).
    pub(crate) fn touch(&self) {
        self.shared.lock().last_progress = Instant::now();
    }

    /// Where the stream's close is counted: the pump reports a stalled client there.
    pub(crate) fn close_slot(&self) -> Arc<CloseSlot> {
        Arc::clone(&self.shared.closed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiver_gone = true;
        state.clear(&self.shared);
        state.wake_producer();
    }
}

impl fmt::Debug for Receiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CloseReason;
    use crate::body::SseBody;
    use crate::test_helpers::sse_parser::parse;
    use crate::{SseLayer, SseMetrics};
    use http::{Request, Response, header};
    use http_body_util::BodyExt;
    use tower::{Service, ServiceExt};

    type Sender = http_body_util::channel::Sender<Bytes, std::convert::Infallible>;

    /// A service whose one SSE response is fed by the returned sender.
    async fn stream(
        layer: SseLayer<Buffered>,
    ) -> (
        Sender,
        SseBody<http_body_util::channel::Channel<Bytes, std::convert::Infallible>>,
    ) {
        let (tx, body) = http_body_util::channel::Channel::new(4);
        let body = std::sync::Mutex::new(Some(body));
        let mut service =
            tower::ServiceBuilder::new()
                .layer(layer)
                .service_fn(move |_: Request<()>| {
                    let body = body.lock().unwrap().take().unwrap();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header(header::CONTENT_TYPE, "text/event-stream")
                                .body(body)
                                .unwrap(),
                        )
                    }
                });
        let response = service
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap();
        (tx, response.into_body())
    }

    fn layer(slow: SlowClient, metrics: &SseMetrics) -> SseLayer<Buffered> {
        SseLayer::new()
            .no_retry()
            .no_heartbeat()
            .metrics(metrics.clone())
            .slow_client(slow)
    }

    #[tokio::test(start_paused = true)]
    async fn a_buffered_layer_without_a_slow_client_polls_the_body_directly() {
        let metrics = SseMetrics::new();
        let slow = SlowClient::new().timeout(Duration::from_secs(1));
        let (mut tx, body) = stream(layer(slow, &metrics).no_slow_client()).await;
        // Nothing reads ahead: with a pump, these would be queued (and the stall clock run).
        for _ in 0..4 {
            tx.send_data(Bytes::from_static(b"data: x\n\n"))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.queued_bytes, 0);
        assert_eq!(snapshot.closed(CloseReason::SlowClient), 0);
        assert_eq!(snapshot.open_streams, 1);
        // The channel is full: the body itself is the reader.
        assert!(
            tokio::time::timeout(Duration::from_millis(1), tx.send_data(Bytes::new()))
                .await
                .is_err()
        );
        drop(body);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_nothing_is_disconnected_after_the_timeout() {
        let metrics = SseMetrics::new();
        let slow = SlowClient::new()
            .max_buffer(1000)
            .timeout(Duration::from_secs(5));
        let (mut tx, body) = stream(layer(slow, &metrics)).await;
        let start = Instant::now();
        let frame = Bytes::from(format!("data: {}\n\n", "x".repeat(90)));
        let mut peak = 0;
        // The producer sends as fast as it may; the body is never polled.
        while tx.send_data(frame.clone()).await.is_ok() {
            peak = peak.max(metrics.snapshot().queued_bytes);
            assert!(
                start.elapsed() <= Duration::from_secs(6),
                "never disconnected"
            );
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_secs(5) && elapsed < Duration::from_secs(6),
            "{elapsed:?}"
        );
        assert!(peak <= 1000 + frame.len() as u64, "peak {peak}");
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.closed(CloseReason::SlowClient), 1);
        assert_eq!(snapshot.queued_bytes, 0);
        assert_eq!(snapshot.open_streams, 0);
        // When the client reads again, the stream ends cleanly.
        assert!(body.collect().await.is_ok());
        assert_eq!(metrics.snapshot().closed_total(), 1);
    }

    /// The stall timers of streams with heartbeats wait on the heartbeat slack's grid, like the
    /// heartbeats: two stalls due 30 ms apart within one slack are found at the same grid
    /// instant (one wake-up of the runtime), never before they are due, at most one slack after.
    #[tokio::test(start_paused = true)]
    async fn stalls_are_found_on_the_heartbeat_grid_never_early_at_most_one_slack_late() {
        let metrics = SseMetrics::new();
        let timeout = Duration::from_secs(1);
        let slack = Duration::from_millis(200);
        let layer = SseLayer::new()
            .no_retry()
            .heartbeat(Duration::from_secs(2))
            .heartbeat_slack(slack)
            .metrics(metrics.clone())
            .slow_client(SlowClient::new().timeout(timeout));
        let start = Instant::now();
        let (mut first, first_body) = stream(layer.clone()).await;
        let (mut second, second_body) = stream(layer).await;
        // The bodies are never polled (no heartbeat goes out): each stall is due a timeout after
        // its stream's first bytes were queued.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let event = Bytes::from_static(b"data: x\n\n");
        first.send_data(event.clone()).await.unwrap();
        let first_due = Instant::now() + timeout;
        tokio::time::sleep(Duration::from_millis(30)).await;
        second.send_data(event).await.unwrap();
        let second_due = Instant::now() + timeout;
        let mut found = Vec::new();
        while found.len() < 2 {
            let closed = metrics.snapshot().closed(CloseReason::SlowClient) as usize;
            found.resize(closed, Instant::now());
            assert!(start.elapsed() < Duration::from_secs(3), "never found");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(
            found[0],
            found[1],
            "found together: {:?}",
            found[1] - found[0]
        );
        assert!(found[0] >= second_due, "early: {:?}", second_due - found[0]);
        assert!(
            found[0] <= first_due + slack,
            "late: {:?}",
            found[0] - first_due
        );
        drop((first_body, second_body));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_keeps_reading_is_never_disconnected() {
        let metrics = SseMetrics::new();
        let slow = SlowClient::new()
            .max_buffer(100)
            .timeout(Duration::from_secs(1));
        let (mut tx, mut body) = stream(layer(slow, &metrics)).await;
        let producer = tokio::spawn(async move {
            for i in 0..200 {
                tx.send_data(Bytes::from(format!("data: {i}\n\n")))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.extend_from_slice(&frame.unwrap().into_data().unwrap());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        producer.await.unwrap();
        assert_eq!(parse(&out).events.len(), 200);
        assert_eq!(metrics.snapshot().closed(CloseReason::UpstreamEnded), 1);
    }

    async fn slow_reader(
        policy: SlowClientPolicy,
        events: &[(&str, usize)],
    ) -> (Vec<u8>, SseMetrics) {
        let metrics = SseMetrics::new();
        let slow = SlowClient::new()
            .max_buffer(200)
            .timeout(Duration::from_secs(30))
            .policy(policy);
        let (mut tx, mut body) = stream(layer(slow, &metrics)).await;
        let script: Vec<String> = events
            .iter()
            .map(|(kind, n)| {
                format!(
                    "event: {kind}\nid: {n}\ndata: {kind} {n} {}\n\n",
                    "p".repeat(20)
                )
            })
            .collect();
        let producer = tokio::spawn(async move {
            for event in script {
                // Split each event over two frames.
                let (a, b) = event.split_at(event.len() / 2);
                tx.send_data(Bytes::from(a.to_owned())).await.unwrap();
                tx.send_data(Bytes::from(b.to_owned())).await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            out.extend_from_slice(&frame.unwrap().into_data().unwrap());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        producer.await.unwrap();
        (out, metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn drop_oldest_delivers_only_whole_events_and_the_newest() {
        let events: Vec<(&str, usize)> = (0..100).map(|n| ("tick", n)).collect();
        let (out, metrics) = slow_reader(SlowClientPolicy::DropOldest, &events).await;
        let parsed = parse(&out);
        let snapshot = metrics.snapshot();
        assert!(snapshot.events_dropped > 0);
        assert_eq!(parsed.events.len() as u64 + snapshot.events_dropped, 100);
        let mut last = None;
        for event in &parsed.events {
            let n: usize = event.last_event_id.parse().unwrap();
            assert_eq!(event.data, format!("tick {n} {}", "p".repeat(20)));
            assert!(last < Some(n));
            last = Some(n);
        }
        assert_eq!(last, Some(99));
        assert_eq!(snapshot.queued_bytes, 0);
    }

    /// A queue filled to exactly its limit must still take the producer's next frame under the
    /// drop policies: the policy makes room after it. (It used to pause the producer there, as
    /// `Disconnect` does, until the stall timeout closed the stream.)
    #[tokio::test(start_paused = true)]
    async fn drop_policies_never_pause_the_producer_at_exactly_the_limit() {
        for policy in [
            SlowClientPolicy::DropOldest,
            SlowClientPolicy::LatestPerType,
        ] {
            let metrics = SseMetrics::new();
            // Ten-byte events, a 100-byte buffer: the queue hits its limit exactly.
            let slow = SlowClient::new()
                .max_buffer(100)
                .timeout(Duration::from_secs(30))
                .policy(policy);
            let (mut tx, body) = stream(layer(slow, &metrics)).await;
            let producer = tokio::spawn(async move {
                for n in 0..100_u32 {
                    tx.send_data(Bytes::from(format!("data: {n:02}\n\n")))
                        .await
                        .unwrap();
                }
            });
            // The client reads nothing; the producer must finish long before the stall timeout.
            tokio::time::timeout(Duration::from_secs(5), producer)
                .await
                .unwrap_or_else(|_| panic!("{policy:?}: the producer was paused"))
                .unwrap();
            let snapshot = metrics.snapshot();
            assert!(snapshot.queued_bytes <= 100, "{policy:?}: {snapshot:?}");
            assert!(
                snapshot.events_dropped + snapshot.events_coalesced >= 89,
                "{policy:?}: {snapshot:?}"
            );
            drop(body);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn latest_per_type_keeps_the_newest_event_of_each_type() {
        let mut events = Vec::new();
        for n in 0..60 {
            events.push(("progress", n));
            if n % 20 == 0 {
                events.push(("failure", n));
            }
        }
        let (out, metrics) = slow_reader(SlowClientPolicy::LatestPerType, &events).await;
        let parsed = parse(&out);
        let snapshot = metrics.snapshot();
        assert!(snapshot.events_coalesced > 0);
        assert_eq!(
            parsed.events.len() as u64 + snapshot.events_coalesced,
            events.len() as u64
        );
        // Every failure arrives (never repeated often enough to coalesce), the last progress too.
        let failures: Vec<&str> = parsed
            .events
            .iter()
            .filter(|e| e.event_type == "failure")
            .map(|e| e.last_event_id.as_str())
            .collect();
        assert_eq!(failures, ["0", "20", "40"]);
        let last_progress = parsed
            .events
            .iter()
            .rev()
            .find(|e| e.event_type == "progress")
            .unwrap();
        assert_eq!(last_progress.last_event_id, "59");
        for event in &parsed.events {
            assert!(event.data.ends_with(&"p".repeat(20)), "{event:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_body_ends_the_pump_and_drops_the_inner_body() {
        let metrics = SseMetrics::new();
        let (mut tx, body) = stream(layer(SlowClient::new(), &metrics)).await;
        tx.send_data(Bytes::from_static(b"data: 1\n\n"))
            .await
            .unwrap();
        drop(body);
        // The pump drops the inner body: the sender sees the receiver gone.
        let mut closed = false;
        for _ in 0..100 {
            if tx
                .send_data(Bytes::from_static(b"data: 2\n\n"))
                .await
                .is_err()
            {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(closed);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.closed(CloseReason::ClientGone), 1);
        assert_eq!(snapshot.queued_bytes, 0);
    }
}
