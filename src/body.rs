//! [`SseBody`]: passthrough for every other response, the SSE state machine for event streams.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};

use crate::BoxError;
use crate::config::{self, Config, DRAIN_RETRY_JITTER, Settings};
use crate::metrics::{CloseReason, SseMetrics};
use crate::scanner::{LineEnd, Scanner, bom_prefix};

pin_project! {
    /// The response body of an [`SseService`](crate::SseService).
    ///
    /// For a response that is not an event stream it forwards every frame of the inner body,
    /// trailers included, with its `size_hint` and `is_end_stream`. For an event stream it
    /// forwards the inner body's frames in the same poll they arrive, and adds the layer's own
    /// lines (`retry:`, heartbeat comments) only where they cannot change what a client parses.
    ///
    /// Dropping it drops the inner body at once.
    pub struct SseBody<B> {
        #[pin]
        inner: Inner<B>,
    }
}

pin_project! {
    #[project = InnerProj]
    enum Inner<B> {
        Passthrough { #[pin] body: B },
        Sse {
            // `None` once the inner body ended, failed or was dropped by the layer: it is never
            // polled again (fused).
            #[pin]
            body: Option<B>,
            stream: Pin<Box<Stream>>,
        },
    }
}

impl<B> SseBody<B> {
    /// A body that forwards `body` untouched.
    pub(crate) const fn passthrough(body: B) -> Self {
        Self {
            inner: Inner::Passthrough { body },
        }
    }

    /// An event stream over `body` (`None`: a stream that ends at once, as during a drain).
    pub(crate) fn sse(body: Option<B>, config: Arc<Config>, settings: Settings) -> Self {
        Self {
            inner: Inner::Sse {
                body,
                stream: Box::pin(Stream::new(config, settings)),
            },
        }
    }
}

impl<B> fmt::Debug for SseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match &self.inner {
            Inner::Passthrough { .. } => "passthrough",
            Inner::Sse { .. } => "sse",
        };
        f.debug_struct("SseBody").field("mode", &mode).finish()
    }
}

impl<B> Body for SseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().inner.project() {
            InnerProj::Passthrough { body } => match ready!(body.poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(frame.map_data(into_bytes)))),
                Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
                None => Poll::Ready(None),
            },
            InnerProj::Sse { body, stream } => stream.as_mut().poll_frame(body, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Passthrough { body } => body.is_end_stream(),
            Inner::Sse { stream, .. } => stream.state.is_ended(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Passthrough { body } => body.size_hint(),
            // The layer may add bytes: no exact size is claimed.
            Inner::Sse { .. } => SizeHint::default(),
        }
    }
}

/// Converts a frame's data into [`Bytes`]; free when it already is `Bytes`.
fn into_bytes<D: Buf>(mut data: D) -> Bytes {
    data.copy_to_bytes(data.remaining())
}

pin_project! {
    /// Everything an event stream needs besides the inner body, boxed once per stream so that
    /// passthrough bodies stay small.
    struct Stream {
        // The stream's one timer, re-armed lazily: activity only updates `State`'s instants, and
        // the timer, when it fires early, is reset to what is left.
        #[pin]
        timer: Option<Sleep>,
        #[pin]
        drain: Option<OwnedNotified>,
        state: State,
    }
}

/// Where the stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not polled yet: the opening lines (initial comment, `retry:`) are still to be written.
    Opening,
    /// Forwarding the inner body.
    Open,
    /// The layer wants to end the stream: at the next event boundary, or at `deadline`.
    Closing {
        reason: CloseReason,
        deadline: Instant,
    },
    /// Done; once `pending` is written, the body ends.
    Ended,
}

struct State {
    config: Arc<Config>,
    settings: Settings,
    scanner: Scanner,
    phase: Phase,
    /// A frame to write before anything else (opening lines, a released BOM prefix, the final
    /// `retry:` hint).
    pending: Option<Bytes>,
    /// The last time bytes went to the client (heartbeats are due `heartbeat` after it), or a
    /// heartbeat was skipped.
    last_output: Instant,
    /// The last time the inner body produced bytes (for the idle timeout).
    last_upstream: Instant,
    /// When the stream reaches its (jittered) maximum lifetime.
    lifetime_at: Option<Instant>,
    /// When a drain wants this stream to end, and when the drain window closes.
    drain_at: Option<(Instant, Instant)>,
    tally: Tally,
}

impl Stream {
    fn new(config: Arc<Config>, settings: Settings) -> Self {
        let now = Instant::now();
        let drain = config.shutdown.as_ref().map(crate::SseShutdown::notified);
        let mut state = State {
            settings,
            scanner: Scanner::new(),
            phase: Phase::Opening,
            pending: None,
            last_output: now,
            last_upstream: now,
            lifetime_at: settings
                .max_lifetime
                .map(|lifetime| now + config::shortened(lifetime, settings.lifetime_jitter)),
            drain_at: None,
            tally: Tally::new(config.metrics.clone(), now),
            config,
        };
        // The waiter above was created first: a drain that starts now is not missed. A stream
        // opened during a drain ends at once.
        if state
            .config
            .shutdown
            .as_ref()
            .is_some_and(crate::SseShutdown::is_draining)
        {
            state.drain_at = Some((now, now));
        }
        Self {
            timer: None,
            drain: if state.drain_at.is_some() {
                None
            } else {
                drain
            },
            state,
        }
    }

    fn poll_frame<B>(
        self: Pin<&mut Self>,
        mut body: Pin<&mut Option<B>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut this = self.project();
        let state = this.state;
        loop {
            if state.phase == Phase::Ended {
                // Release the inner body, the timer and the drain waiter at once (I8).
                if body.is_some() {
                    body.set(None);
                }
                if this.timer.is_some() {
                    this.timer.set(None);
                }
                if this.drain.is_some() {
                    this.drain.set(None);
                }
            }
            if let Some(bytes) = state.pending.take() {
                state.tally.sent(bytes.len());
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
            match state.phase {
                Phase::Ended => return Poll::Ready(None),
                Phase::Opening => {
                    state.open();
                    continue;
                }
                Phase::Closing { reason, .. } if state.scanner.at_event_boundary() => {
                    state.end(reason);
                    continue;
                }
                Phase::Open | Phase::Closing { .. } => {}
            }

            if let Some(inner) = body.as_mut().as_pin_mut() {
                match inner.poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => match state.upstream_data(into_bytes(data)) {
                            Some(bytes) => {
                                state.tally.sent(bytes.len());
                                return Poll::Ready(Some(Ok(Frame::data(bytes))));
                            }
                            None => continue,
                        },
                        Err(frame) => return Poll::Ready(Some(Ok(frame.map_data(into_bytes)))),
                    },
                    Poll::Ready(Some(Err(error))) => {
                        state.tally.reason = Some(CloseReason::UpstreamError);
                        state.phase = Phase::Ended;
                        body.set(None);
                        return Poll::Ready(Some(Err(error.into())));
                    }
                    Poll::Ready(None) => {
                        body.set(None);
                        state.upstream_ended();
                        continue;
                    }
                    Poll::Pending => {}
                }
            }

            if let Some(drain) = this.drain.as_mut().as_pin_mut() {
                if drain.poll(cx).is_ready() {
                    this.drain.set(None);
                    let now = Instant::now();
                    let started = state.config.shutdown.as_ref().and_then(|s| s.started());
                    state.on_drain(started.unwrap_or(now), now);
                    continue;
                }
            }

            let Some(deadline) = state.next_deadline() else {
                return Poll::Pending;
            };
            match this.timer.as_mut().as_pin_mut() {
                Some(timer) if timer.deadline() <= deadline => {}
                Some(timer) => timer.reset(deadline),
                None => this.timer.set(Some(tokio::time::sleep_until(deadline))),
            }
            if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                if timer.poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            // The timer fired: act on what is due, then re-arm it for what is left.
            let now = Instant::now();
            state.on_timer(now);
            if let (Some(timer), Some(next)) =
                (this.timer.as_mut().as_pin_mut(), state.next_deadline())
            {
                timer.reset(next);
            }
        }
    }
}

impl State {
    const fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended) && self.pending.is_none()
    }

    /// First poll: the opening lines, unless a drain already wants the stream gone.
    fn open(&mut self) {
        self.phase = Phase::Open;
        if let Some((at, _)) = self.drain_at {
            if at <= Instant::now() {
                // Opened during a drain: a jittered `retry:` and a clean end, nothing else.
                self.end(CloseReason::Shutdown);
                return;
            }
        }
        let retry = self
            .settings
            .retry
            .map(|retry| config::retry_line(retry, self.settings.retry_jitter, LineEnd::Lf));
        let opening = match (self.config.initial_comment.clone(), retry) {
            (None, None) => return,
            (Some(line), None) | (None, Some(line)) => line,
            (Some(comment), Some(retry)) => {
                let mut both = BytesMut::with_capacity(comment.len() + retry.len());
                both.put(comment);
                both.put(retry);
                both.freeze()
            }
        };
        self.scanner.injected();
        self.pending = Some(opening);
    }

    /// A data frame from the inner body: scanned, and handed on (minus a removed BOM).
    fn upstream_data(&mut self, mut data: Bytes) -> Option<Bytes> {
        if data.is_empty() {
            return None;
        }
        let now = Instant::now();
        self.last_upstream = now;
        let feed = self.scanner.feed(&data);
        self.tally.events(feed.events);
        if feed.release > 0 {
            // Rare: held bytes of what looked like a leading BOM turned out to be text.
            let held = bom_prefix(feed.release);
            let mut joined = BytesMut::with_capacity(held.len() + data.len());
            joined.put_slice(held);
            joined.put(data);
            data = joined.freeze();
        } else if feed.skip > 0 {
            data.advance(feed.skip.min(data.len()));
        }
        if data.is_empty() {
            return None;
        }
        self.last_output = now;
        Some(data)
    }

    fn upstream_ended(&mut self) {
        let held = self.scanner.finish();
        if held > 0 {
            self.pending = Some(Bytes::from_static(bom_prefix(held)));
        }
        self.tally.reason = Some(CloseReason::UpstreamEnded);
        self.phase = Phase::Ended;
    }

    /// The layer ends the stream: a final `retry:` hint where a line may go, then the end.
    fn end(&mut self, reason: CloseReason) {
        if let (Some(retry), Some(line_end)) = (self.settings.retry, self.scanner.injection()) {
            let jitter = if reason == CloseReason::Shutdown {
                self.settings.retry_jitter.max(DRAIN_RETRY_JITTER)
            } else {
                self.settings.retry_jitter
            };
            self.pending = Some(config::retry_line(retry, jitter, line_end));
        }
        self.tally.reason = Some(reason);
        self.phase = Phase::Ended;
    }

    /// A drain started at `started`: this stream picks its moment in the window.
    fn on_drain(&mut self, started: Instant, now: Instant) {
        let window = self.settings.drain_window;
        let window_end = (started + window).max(now);
        let at = (started + window.mul_f64(config::random_unit())).max(now);
        self.drain_at = Some((at.min(window_end), window_end));
    }

    fn close(&mut self, reason: CloseReason, deadline: Instant) {
        match self.phase {
            Phase::Open => self.phase = Phase::Closing { reason, deadline },
            Phase::Closing {
                deadline: current, ..
            } if deadline < current => self.phase = Phase::Closing { reason, deadline },
            _ => {}
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let s = &self.settings;
        let candidates = [
            s.heartbeat.map(|interval| self.last_output + interval),
            s.idle_timeout.map(|limit| self.last_upstream + limit),
            self.lifetime_at,
            self.drain_at.map(|(at, _)| at),
            match self.phase {
                Phase::Closing { deadline, .. } => Some(deadline),
                _ => None,
            },
        ];
        candidates.into_iter().flatten().min()
    }

    fn on_timer(&mut self, now: Instant) {
        if self.phase == Phase::Ended {
            return;
        }
        if let Some(limit) = self.settings.idle_timeout {
            if now >= self.last_upstream + limit {
                // The upstream is silent: waiting for a boundary is pointless.
                self.end(CloseReason::IdleTimeout);
                return;
            }
        }
        if let Phase::Closing { reason, deadline } = self.phase {
            if now >= deadline {
                // No event boundary within the grace: cut (the client drops the partial event).
                self.end(reason);
                return;
            }
        }
        if let Some(at) = self.lifetime_at {
            if now >= at {
                self.lifetime_at = None;
                self.close(CloseReason::Lifetime, now + self.settings.close_grace);
            }
        }
        if let Some((at, window_end)) = self.drain_at {
            if now >= at {
                self.drain_at = None;
                self.close(CloseReason::Shutdown, window_end.max(now));
            }
        }
        if let Some(interval) = self.settings.heartbeat {
            if now >= self.last_output + interval {
                self.last_output = now;
                match self.scanner.injection() {
                    Some(line_end) => {
                        self.scanner.injected();
                        self.tally.heartbeat();
                        self.pending = Some(self.config.heartbeat_line(line_end));
                    }
                    None => self.tally.heartbeat_skipped(),
                }
            }
        }
    }
}

/// Per-stream counts, reported to the metrics as they happen and in a `tracing` event when the
/// stream ends (which is when this is dropped).
struct Tally {
    metrics: SseMetrics,
    opened: Instant,
    bytes: u64,
    events: u64,
    heartbeats: u64,
    reason: Option<CloseReason>,
}

impl Tally {
    fn new(metrics: SseMetrics, now: Instant) -> Self {
        metrics.opened();
        tracing::debug!(target: "tower_sse", "sse stream opened");
        Self {
            metrics,
            opened: now,
            bytes: 0,
            events: 0,
            heartbeats: 0,
            reason: None,
        }
    }

    fn sent(&mut self, len: usize) {
        let len = len as u64;
        self.bytes += len;
        SseMetrics::add(&self.metrics.counters.bytes, len);
    }

    fn events(&mut self, n: u32) {
        if n > 0 {
            self.events += u64::from(n);
            SseMetrics::add(&self.metrics.counters.events, u64::from(n));
        }
    }

    fn heartbeat(&mut self) {
        self.heartbeats += 1;
        SseMetrics::add(&self.metrics.counters.heartbeats, 1);
    }

    fn heartbeat_skipped(&self) {
        SseMetrics::add(&self.metrics.counters.heartbeats_skipped, 1);
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        let reason = self.reason.unwrap_or(CloseReason::ClientGone);
        self.metrics.closed(reason);
        let duration: Duration = self.opened.elapsed();
        tracing::debug!(
            target: "tower_sse",
            reason = reason.as_str(),
            duration_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            bytes = self.bytes,
            events = self.events,
            heartbeats = self.heartbeats,
            "sse stream closed"
        );
    }
}
