//! [`SseBody`]: passthrough for every other response, the SSE state machine for event streams.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::futures::OwnedNotified;
use tokio::time::{Instant, Sleep};

use crate::BoxError;

/// `State::activity`: the inner body produced bytes.
const UPSTREAM_ACTIVE: u8 = 1;
/// `State::activity`: bytes of the inner body went to the client.
const OUTPUT_ACTIVE: u8 = 2;

/// How many bytes a stream sends between updates of the shared byte counter, at most.
const FLUSH_BYTES: u64 = 64 * 1024;
use crate::backpressure::Receiver;
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
            body: Option<Upstream<B>>,
            stream: Pin<Box<Stream>>,
        },
    }
}

pin_project! {
    /// Where an event stream's bytes come from: the inner body itself, or the slow-client
    /// buffer a pump task fills from it.
    #[project = UpstreamProj]
    pub(crate) enum Upstream<B> {
        Direct { #[pin] body: B },
        Queued { receiver: Receiver },
    }
}

impl<B> Upstream<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            UpstreamProj::Direct { body } => match ready!(body.poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(frame.map_data(into_bytes)))),
                Some(Err(error)) => Poll::Ready(Some(Err(error.into()))),
                None => Poll::Ready(None),
            },
            UpstreamProj::Queued { receiver } => receiver.poll_frame(cx),
        }
    }
}

impl<B> Upstream<B> {
    fn end_reason(&self) -> CloseReason {
        match self {
            Self::Direct { .. } => CloseReason::UpstreamEnded,
            Self::Queued { receiver } => receiver.end_reason(),
        }
    }

    fn touch(&self) {
        if let Self::Queued { receiver } = self {
            receiver.touch();
        }
    }

    fn closed_elsewhere(&self) -> Option<Arc<AtomicBool>> {
        match self {
            Self::Direct { .. } => None,
            Self::Queued { receiver } => Some(receiver.closed_flag()),
        }
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
    pub(crate) fn sse(body: Option<Upstream<B>>, config: Arc<Config>, settings: Settings) -> Self {
        let closed_elsewhere = body.as_ref().and_then(Upstream::closed_elsewhere);
        Self {
            inner: Inner::Sse {
                body,
                stream: Box::pin(Stream::new(config, settings, closed_elsewhere)),
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
        // Boxed: most streams have no shutdown handle, and the waiter is large.
        drain: Option<Pin<Box<OwnedNotified>>>,
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
    /// The settings of this stream when an `SseOverride` changed the layer's (boxed: rare).
    overridden: Option<Box<Settings>>,
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
    /// Traffic not yet dated into `last_output` / `last_upstream` (`UPSTREAM_ACTIVE`,
    /// `OUTPUT_ACTIVE`).
    activity: u8,
    /// When the stream reaches its (jittered) maximum lifetime.
    lifetime_at: Option<Instant>,
    /// When a drain wants this stream to end, and when the drain window closes.
    drain_at: Option<(Instant, Instant)>,
    tally: Tally,
}

impl Stream {
    fn new(
        config: Arc<Config>,
        settings: Settings,
        closed_elsewhere: Option<Arc<AtomicBool>>,
    ) -> Self {
        let now = Instant::now();
        let drain = config
            .shutdown
            .as_ref()
            .map(|shutdown| Box::pin(shutdown.notified()));
        let mut state = State {
            overridden: (settings != config.settings).then(|| Box::new(settings)),
            scanner: Scanner::new(),
            phase: Phase::Opening,
            pending: None,
            last_output: now,
            last_upstream: now,
            activity: 0,
            lifetime_at: settings
                .max_lifetime
                .map(|lifetime| now + config::shortened(lifetime, settings.lifetime_jitter)),
            drain_at: None,
            tally: Tally::new(config.metrics.clone(), now, closed_elsewhere),
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
        mut body: Pin<&mut Option<Upstream<B>>>,
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
                *this.drain = None;
            }
            if let Some(bytes) = state.pending.take() {
                state.tally.sent(bytes.len());
                if let Some(upstream) = body.as_ref().get_ref() {
                    upstream.touch();
                }
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
                        Ok(data) => match state.upstream_data(data) {
                            Some(bytes) => {
                                state.tally.sent(bytes.len());
                                return Poll::Ready(Some(Ok(Frame::data(bytes))));
                            }
                            None => continue,
                        },
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    },
                    Poll::Ready(Some(Err(error))) => {
                        state.tally.finish(CloseReason::UpstreamError);
                        state.phase = Phase::Ended;
                        body.set(None);
                        return Poll::Ready(Some(Err(error)));
                    }
                    Poll::Ready(None) => {
                        let reason = body
                            .as_ref()
                            .get_ref()
                            .as_ref()
                            .map_or(CloseReason::UpstreamEnded, Upstream::end_reason);
                        body.set(None);
                        state.upstream_ended(reason);
                        continue;
                    }
                    Poll::Pending => {}
                }
            }

            if let Some(drain) = this.drain.as_mut()
                && drain.as_mut().poll(cx).is_ready()
            {
                *this.drain = None;
                let now = Instant::now();
                let started = state.config.shutdown.as_ref().and_then(|s| s.started());
                state.on_drain(started.unwrap_or(now), now);
                continue;
            }

            state.tally.flush();
            if state.activity != 0 {
                state.date_activity(Instant::now());
            }
            let Some(deadline) = state.next_deadline() else {
                return Poll::Pending;
            };
            match this.timer.as_mut().as_pin_mut() {
                Some(timer) if timer.deadline() <= deadline => {}
                Some(timer) => timer.reset(deadline),
                None => this.timer.set(Some(tokio::time::sleep_until(deadline))),
            }
            if let Some(timer) = this.timer.as_mut().as_pin_mut()
                && timer.poll(cx).is_pending()
            {
                return Poll::Pending;
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
    fn settings(&self) -> &Settings {
        self.overridden.as_deref().unwrap_or(&self.config.settings)
    }

    const fn is_ended(&self) -> bool {
        matches!(self.phase, Phase::Ended) && self.pending.is_none()
    }

    /// First poll: the opening lines, unless a drain already wants the stream gone.
    fn open(&mut self) {
        self.phase = Phase::Open;
        // The stream starts for the client now: heartbeats are due an interval after this, not
        // after the response was made (the first poll may come later).
        let now = Instant::now();
        self.last_output = now;
        if let Some((at, _)) = self.drain_at
            && at <= now
        {
            // Opened during a drain: a jittered `retry:` and a clean end, nothing else.
            self.end(CloseReason::Shutdown);
            return;
        }
        let retry = self
            .settings()
            .retry
            .map(|retry| config::retry_line(retry, self.settings().retry_jitter, LineEnd::Lf));
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
        self.activity |= UPSTREAM_ACTIVE;
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
        self.activity |= OUTPUT_ACTIVE;
        Some(data)
    }

    /// Dates the activity seen since the last time the stream waited. Frames are only flagged
    /// as they pass (a clock read per frame would cost more than the rest of the frame's
    /// handling); the flags are turned into instants when the stream next waits or its timer
    /// fires. A stream that is polled dates its traffic to within one poll; one that is not
    /// polled (the client's buffers are full) can send no heartbeat anyway.
    fn date_activity(&mut self, now: Instant) {
        if self.activity & UPSTREAM_ACTIVE != 0 {
            self.last_upstream = now;
        }
        if self.activity & OUTPUT_ACTIVE != 0 {
            self.last_output = now;
        }
        self.activity = 0;
    }

    fn upstream_ended(&mut self, reason: CloseReason) {
        let held = self.scanner.finish();
        if held > 0 && reason == CloseReason::UpstreamEnded {
            self.pending = Some(Bytes::from_static(bom_prefix(held)));
        }
        self.tally.finish(reason);
        self.phase = Phase::Ended;
    }

    /// The layer ends the stream: a final `retry:` hint where a line may go, then the end.
    fn end(&mut self, reason: CloseReason) {
        if let (Some(retry), Some(line_end)) = (self.settings().retry, self.scanner.injection()) {
            let jitter = if reason == CloseReason::Shutdown {
                self.settings().retry_jitter.max(DRAIN_RETRY_JITTER)
            } else {
                self.settings().retry_jitter
            };
            self.pending = Some(config::retry_line(retry, jitter, line_end));
        }
        self.tally.finish(reason);
        self.phase = Phase::Ended;
    }

    /// A drain started at `started`: this stream picks its moment in the window.
    fn on_drain(&mut self, started: Instant, now: Instant) {
        let window = self.settings().drain_window;
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
        let s = self.settings();
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
        self.date_activity(now);
        if let Some(limit) = self.settings().idle_timeout
            && now >= self.last_upstream + limit
        {
            // The upstream is silent: waiting for a boundary is pointless.
            self.end(CloseReason::IdleTimeout);
            return;
        }
        if let Phase::Closing { reason, deadline } = self.phase
            && now >= deadline
        {
            // No event boundary within the grace: cut (the client drops the partial event).
            self.end(reason);
            return;
        }
        if let Some(at) = self.lifetime_at
            && now >= at
        {
            self.lifetime_at = None;
            self.close(CloseReason::Lifetime, now + self.settings().close_grace);
        }
        if let Some((at, window_end)) = self.drain_at
            && now >= at
        {
            self.drain_at = None;
            self.close(CloseReason::Shutdown, window_end.max(now));
        }
        if let Some(interval) = self.settings().heartbeat
            && now >= self.last_output + interval
        {
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

/// Per-stream counts, reported to the metrics as they happen and in a `tracing` event when the
/// stream ends (which is when this is dropped).
struct Tally {
    metrics: SseMetrics,
    opened: Instant,
    bytes: u64,
    events: u64,
    /// What the shared counters already have of `bytes` and `events`.
    flushed_bytes: u64,
    flushed_events: u64,
    heartbeats: u64,
    reason: Option<CloseReason>,
    /// Set when the slow-client pump already counted this stream's close.
    closed_elsewhere: Option<Arc<AtomicBool>>,
    /// The span the stream opened in (the request's): the close is logged in it too.
    span: tracing::Span,
}

impl Tally {
    fn new(metrics: SseMetrics, now: Instant, closed_elsewhere: Option<Arc<AtomicBool>>) -> Self {
        metrics.opened();
        tracing::debug!(target: "tower_sse", "sse stream opened");
        Self {
            metrics,
            opened: now,
            bytes: 0,
            events: 0,
            flushed_bytes: 0,
            flushed_events: 0,
            heartbeats: 0,
            reason: None,
            closed_elsewhere,
            span: tracing::Span::current(),
        }
    }

    fn sent(&mut self, len: usize) {
        self.bytes += len as u64;
        if self.bytes - self.flushed_bytes >= FLUSH_BYTES {
            self.flush();
        }
    }

    fn events(&mut self, n: u32) {
        self.events += u64::from(n);
    }

    /// Publishes the byte and event counts to the shared counters. Done when the stream waits,
    /// every `FLUSH_BYTES`, and at the end, rather than per frame: the shared counters sit on
    /// one cache line that every stream on every core would otherwise write.
    fn flush(&mut self) {
        if self.bytes != self.flushed_bytes {
            SseMetrics::add(
                &self.metrics.counters.bytes,
                self.bytes - self.flushed_bytes,
            );
            self.flushed_bytes = self.bytes;
        }
        if self.events != self.flushed_events {
            SseMetrics::add(
                &self.metrics.counters.events,
                self.events - self.flushed_events,
            );
            self.flushed_events = self.events;
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
        self.finish(CloseReason::ClientGone);
    }
}

impl Tally {
    /// Counts the stream as closed for `reason`, once: the first reason wins.
    fn finish(&mut self, reason: CloseReason) {
        self.flush();
        if self.reason.is_some() {
            return;
        }
        if self
            .closed_elsewhere
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Acquire))
        {
            self.reason = Some(CloseReason::SlowClient);
            return;
        }
        self.reason = Some(reason);
        self.metrics.closed(reason);
        let duration: Duration = self.opened.elapsed();
        let _span = self.span.enter();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SseShutdown;
    use crate::config::Config;
    use crate::test_helpers::sse_parser::parse;
    use crate::test_helpers::{ScriptBody, Step};
    use http_body_util::BodyExt;

    const S: Duration = Duration::from_secs(1);

    fn config(f: impl FnOnce(&mut Config)) -> Arc<Config> {
        let mut config = Config::default();
        config.settings.retry = None;
        config.settings.heartbeat = None;
        f(&mut config);
        Arc::new(config)
    }

    fn sse(
        steps: Vec<Step>,
        config: &Arc<Config>,
    ) -> (SseBody<ScriptBody>, Arc<std::sync::atomic::AtomicBool>) {
        let body = ScriptBody::new(steps);
        let dropped = Arc::clone(&body.dropped);
        (
            SseBody::sse(
                Some(Upstream::Direct { body }),
                Arc::clone(config),
                config.settings,
            ),
            dropped,
        )
    }

    /// Collects the body's data frames with the (paused) time each arrived, since the start.
    async fn frames<B>(mut body: B) -> Vec<(Duration, Bytes)>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: fmt::Debug,
    {
        let start = Instant::now();
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                out.push((start.elapsed(), data));
            }
        }
        out
    }

    fn joined(frames: &[(Duration, Bytes)]) -> Vec<u8> {
        frames.iter().flat_map(|(_, b)| b.to_vec()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn passthrough_forwards_frames_trailers_and_hints() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let inner = ScriptBody::new([
            Step::Data(b"a"),
            Step::Data(b"bc"),
            Step::Trailers(trailers.clone()),
        ]);
        let mut body = SseBody::passthrough(inner);
        assert!(!body.is_end_stream());
        let mut seen = Vec::new();
        while let Some(frame) = body.frame().await {
            seen.push(frame.unwrap());
        }
        assert_eq!(seen.len(), 3);
        assert_eq!(seen[0].data_ref().unwrap(), "a");
        assert_eq!(seen[1].data_ref().unwrap(), "bc");
        assert_eq!(seen[2].trailers_ref().unwrap(), &trailers);

        let full = SseBody::passthrough(http_body_util::Full::new(Bytes::from_static(b"12345")));
        assert_eq!(full.size_hint().exact(), Some(5));
        let empty = SseBody::passthrough(http_body_util::Empty::<Bytes>::new());
        assert!(empty.is_end_stream());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_hint_comes_first_and_frames_pass_unchanged() {
        let config = config(|c| c.settings.retry = Some(Duration::from_millis(2500)));
        let (body, _) = sse(
            vec![Step::Data(b"data: a\n\n"), Step::Data(b"data: b\n\n")],
            &config,
        );
        assert_eq!(body.size_hint().exact(), None);
        let frames = frames(body).await;
        let bytes: Vec<&[u8]> = frames.iter().map(|(_, b)| b.as_ref()).collect();
        assert_eq!(
            bytes,
            [&b"retry: 2500\n"[..], b"data: a\n\n", b"data: b\n\n"]
        );
        assert_eq!(config.metrics.snapshot().events, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_fill_silence_and_traffic_postpones_them() {
        let config = config(|c| c.settings.heartbeat = Some(10 * S));
        let (body, _) = sse(
            vec![
                Step::Wait(25 * S),
                Step::Data(b"data: a\n\n"),
                Step::Wait(9 * S),
                Step::Data(b"data: b\n\n"),
                Step::Wait(9 * S),
                Step::Data(b"data: c\n\n"),
                Step::Wait(15 * S),
            ],
            &config,
        );
        let frames = frames(body).await;
        let timeline: Vec<(u64, &[u8])> = frames
            .iter()
            .map(|(t, b)| (t.as_secs(), b.as_ref()))
            .collect();
        assert_eq!(
            timeline,
            [
                (10, &b":\n"[..]),
                (20, b":\n"),
                (25, b"data: a\n\n"),
                (34, b"data: b\n\n"),
                (43, b"data: c\n\n"),
                (53, b":\n"),
            ]
        );
        let snapshot = config.metrics.snapshot();
        assert_eq!(snapshot.heartbeats, 3);
        assert_eq!(snapshot.closed(CloseReason::UpstreamEnded), 1);
        assert_eq!(snapshot.open_streams, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_upstream_gets_no_heartbeat() {
        let config = config(|c| c.settings.heartbeat = Some(10 * S));
        let mut steps = Vec::new();
        for _ in 0..20 {
            steps.push(Step::Data(b"data: tick\n\n"));
            steps.push(Step::Wait(9 * S));
        }
        let (body, _) = sse(steps, &config);
        let frames = frames(body).await;
        assert_eq!(frames.len(), 20);
        assert_eq!(config.metrics.snapshot().heartbeats, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_is_skipped_mid_line_and_counted() {
        let config = config(|c| c.settings.heartbeat = Some(10 * S));
        let (body, _) = sse(
            vec![
                Step::Data(b"data: hal"),
                Step::Wait(25 * S),
                Step::Data(b"f\n\n"),
            ],
            &config,
        );
        let frames = frames(body).await;
        assert_eq!(joined(&frames), b"data: half\n\n");
        assert_eq!(config.metrics.snapshot().heartbeats_skipped, 2);
        assert_eq!(config.metrics.snapshot().heartbeats, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_inside_an_open_event_is_one_comment_line() {
        let config = config(|c| c.settings.heartbeat = Some(10 * S));
        let (body, _) = sse(
            vec![
                Step::Data(b"event: x\ndata: a\n"),
                Step::Wait(15 * S),
                Step::Data(b"data: b\n\n"),
            ],
            &config,
        );
        let out = joined(&frames(body).await);
        assert_eq!(out, b"event: x\ndata: a\n:\ndata: b\n\n");
        let parsed = parse(&out);
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(parsed.events[0].event_type, "x");
        assert_eq!(parsed.events[0].data, "a\nb");
    }

    #[tokio::test(start_paused = true)]
    async fn no_heartbeat_between_a_cr_and_its_lf() {
        // I2: `data: a\r` | `\ndata: b\r\n\r\n` with a heartbeat due between the two frames:
        // skipped (and counted), so that the upstream's CRLF stays whole.
        let config = config(|c| {
            c.settings.heartbeat = Some(10 * S);
            c.settings.retry = None;
        });
        let (body, _) = sse(
            vec![
                Step::Data(b"data: a\r"),
                Step::Wait(15 * S),
                Step::Data(b"\ndata: b\r\n\r\n"),
            ],
            &config,
        );
        let out = joined(&frames(body).await);
        assert_eq!(out, b"data: a\r\ndata: b\r\n\r\n");
        let parsed = parse(&out);
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(parsed.events[0].data, "a\nb");
        assert_eq!(config.metrics.snapshot().heartbeats_skipped, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_after_a_cr_ends_with_cr_once_the_stream_used_a_lone_cr() {
        let config = config(|c| {
            c.settings.heartbeat = Some(10 * S);
            c.settings.retry = None;
        });
        let (body, _) = sse(
            vec![
                Step::Data(b"data: a\rdata: b\r"),
                Step::Wait(15 * S),
                Step::Data(b"\r"),
            ],
            &config,
        );
        let out = joined(&frames(body).await);
        assert_eq!(out, b"data: a\rdata: b\r:\r\r");
        let parsed = parse(&out);
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(parsed.events[0].data, "a\nb");
    }

    #[tokio::test(start_paused = true)]
    async fn a_leading_bom_is_removed_after_the_retry_hint() {
        let config = config(|c| c.settings.retry = Some(S));
        let (body, _) = sse(
            vec![
                Step::Data(b"\xEF"),
                Step::Data(b"\xBB"),
                Step::Data(b"\xBFdata: a\n\n"),
            ],
            &config,
        );
        assert_eq!(joined(&frames(body).await), b"retry: 1000\ndata: a\n\n");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_ends_cleanly_and_heartbeats_do_not_count_as_upstream_activity() {
        let config = config(|c| {
            c.settings.heartbeat = Some(10 * S);
            c.settings.idle_timeout = Some(25 * S);
            c.settings.retry = Some(S);
        });
        let (body, dropped) = sse(vec![Step::Data(b"data: a\n\n"), Step::Stall], &config);
        let frames = frames(body).await;
        let timeline: Vec<(u64, &[u8])> = frames
            .iter()
            .map(|(t, b)| (t.as_secs(), b.as_ref()))
            .collect();
        assert_eq!(
            timeline,
            [
                (0, &b"retry: 1000\n"[..]),
                (0, b"data: a\n\n"),
                (10, b":\n"),
                (20, b":\n"),
                (25, b"retry: 1000\n"),
            ]
        );
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(
            config.metrics.snapshot().closed(CloseReason::IdleTimeout),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_mid_line_cuts_without_a_hint() {
        let config = config(|c| {
            c.settings.idle_timeout = Some(5 * S);
            c.settings.retry = Some(S);
        });
        let (body, _) = sse(vec![Step::Data(b"data: par"), Step::Stall], &config);
        let out = joined(&frames(body).await);
        // Never a line break after a partial line: the client drops the partial event.
        assert_eq!(out, b"retry: 1000\ndata: par");
    }

    #[tokio::test(start_paused = true)]
    async fn lifetime_ends_at_the_next_event_boundary() {
        let config = config(|c| {
            c.settings.max_lifetime = Some(10 * S);
            c.settings.lifetime_jitter = 0.0;
        });
        let (body, dropped) = sse(
            vec![
                Step::Data(b"data: a\n"),
                Step::Wait(12 * S),
                Step::Data(b"data: b\n"),
                Step::Wait(S),
                Step::Data(b"\n"),
                Step::Data(b"data: never\n\n"),
            ],
            &config,
        );
        let frames = frames(body).await;
        assert_eq!(joined(&frames), b"data: a\ndata: b\n\n");
        assert_eq!(frames.last().unwrap().0, 13 * S);
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(config.metrics.snapshot().closed(CloseReason::Lifetime), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lifetime_cuts_after_the_grace_when_no_boundary_comes() {
        let config = config(|c| {
            c.settings.max_lifetime = Some(10 * S);
            c.settings.lifetime_jitter = 0.0;
            c.settings.close_grace = 2 * S;
            c.settings.retry = Some(S);
        });
        let (body, _) = sse(vec![Step::Data(b"data: a\n"), Step::Stall], &config);
        let frames = frames(body).await;
        assert_eq!(joined(&frames), b"retry: 1000\ndata: a\nretry: 1000\n");
        assert_eq!(frames.last().unwrap().0, 12 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn jittered_lifetimes_fall_between_80_and_100_percent() {
        let config = config(|c| c.settings.max_lifetime = Some(100 * S));
        for _ in 0..20 {
            let (body, _) = sse(vec![Step::Stall], &config);
            let start = Instant::now();
            let _ = frames(body).await;
            let lived = start.elapsed();
            assert!(lived >= 80 * S && lived <= 100 * S, "{lived:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn drain_ends_streams_within_the_window_with_a_jittered_hint() {
        let shutdown = SseShutdown::new();
        let config = config(|c| {
            c.shutdown = Some(shutdown.clone());
            c.settings.drain_window = 10 * S;
            c.settings.retry = Some(S);
        });
        let mut ends = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (body, dropped) = sse(vec![Step::Data(b"data: a\n\n"), Step::Stall], &config);
            tasks.push(tokio::spawn(async move { (frames(body).await, dropped) }));
        }
        tokio::time::sleep(S).await;
        let drained_at = Instant::now();
        shutdown.drain();
        for task in tasks {
            let (frames, dropped) = task.await.unwrap();
            assert!(dropped.load(Ordering::SeqCst));
            let (at, last) = frames.last().unwrap();
            let hint = std::str::from_utf8(last).unwrap();
            let millis: u64 = hint
                .strip_prefix("retry: ")
                .unwrap()
                .trim_end()
                .parse()
                .unwrap();
            assert!((800..=1200).contains(&millis), "{hint}");
            ends.push(*at - S);
        }
        assert!(ends.iter().all(|d| *d <= 10 * S));
        // Spread over the window, not all at once.
        let early = ends.iter().filter(|d| **d < 5 * S).count();
        assert!(
            (10..=40).contains(&early),
            "{early} of 50 ended in the first half"
        );
        assert_eq!(config.metrics.snapshot().closed(CloseReason::Shutdown), 50);
        assert!(drained_at.elapsed() <= 10 * S);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_opened_during_a_drain_ends_at_once() {
        let shutdown = SseShutdown::new();
        shutdown.drain();
        let config = config(|c| {
            c.shutdown = Some(shutdown.clone());
            c.settings.retry = Some(S);
        });
        let (body, dropped) = sse(vec![Step::Data(b"data: a\n\n")], &config);
        let frames = frames(body).await;
        assert_eq!(frames.len(), 1);
        assert!(frames[0].1.starts_with(b"retry: "));
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_error_is_forwarded_and_the_body_fused() {
        let config = config(|_| {});
        let (mut body, dropped) = sse(vec![Step::Data(b"data: a\n"), Step::Error], &config);
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "data: a\n"
        );
        assert!(body.frame().await.unwrap().is_err());
        assert!(dropped.load(Ordering::SeqCst));
        assert!(body.frame().await.is_none());
        assert!(body.is_end_stream());
        assert_eq!(
            config.metrics.snapshot().closed(CloseReason::UpstreamError),
            1
        );
    }

    #[tokio::test(start_paused = true)]
    async fn upstream_end_forwards_the_end_without_adding_a_blank_line() {
        let config = config(|c| c.settings.retry = Some(S));
        let (body, _) = sse(vec![Step::Data(b"data: incomplete\n")], &config);
        assert_eq!(
            joined(&frames(body).await),
            b"retry: 1000\ndata: incomplete\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_body_drops_the_inner_body_and_counts_client_gone() {
        let config = config(|c| c.settings.heartbeat = Some(S));
        let (mut body, dropped) = sse(vec![Step::Data(b"data: a\n\n"), Step::Stall], &config);
        body.frame().await.unwrap().unwrap();
        assert_eq!(config.metrics.snapshot().open_streams, 1);
        drop(body);
        assert!(dropped.load(Ordering::SeqCst));
        let snapshot = config.metrics.snapshot();
        assert_eq!(snapshot.open_streams, 0);
        assert_eq!(snapshot.closed(CloseReason::ClientGone), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn shared_counters_are_published_when_the_stream_waits() {
        let config = config(|_| {});
        let (mut body, _) = sse(vec![Step::Data(b"data: a\n\n"), Step::Stall], &config);
        body.frame().await.unwrap().unwrap();
        // Not yet: counts are published when the stream waits, not per frame.
        assert_eq!(config.metrics.snapshot().bytes, 0);
        let waited = tokio::time::timeout(Duration::from_millis(1), body.frame()).await;
        assert!(waited.is_err());
        let snapshot = config.metrics.snapshot();
        assert_eq!((snapshot.bytes, snapshot.events), (9, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn trailers_of_an_event_stream_are_forwarded() {
        let config = config(|_| {});
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-done", "1".parse().unwrap());
        let (mut body, _) = sse(
            vec![Step::Data(b"data: a\n\n"), Step::Trailers(trailers.clone())],
            &config,
        );
        body.frame().await.unwrap().unwrap();
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.trailers_ref(), Some(&trailers));
        assert!(body.frame().await.is_none());
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::config::Config;
    use crate::test_helpers::sse_parser::{CASES, CHUNKED_CASES, parse};
    use crate::test_helpers::{ScriptBody, Step};
    use crate::test_helpers::{events_of, split};
    use http_body_util::BodyExt;
    use proptest::prelude::*;

    /// Plays `chunks`, each after `waits[i]` milliseconds of silence, through an `SseBody` with a
    /// 10 ms heartbeat and a retry hint, on a paused clock; returns the client's bytes.
    fn relay(chunks: Vec<Vec<u8>>, waits: &[u64]) -> Vec<u8> {
        let mut config = Config::default();
        config.settings.heartbeat = Some(Duration::from_millis(10));
        config.settings.retry = Some(Duration::from_millis(1234));
        let config = Arc::new(config);
        let mut steps = Vec::new();
        for (i, chunk) in chunks.into_iter().enumerate() {
            steps.push(Step::Wait(Duration::from_millis(
                waits.get(i).copied().unwrap_or(0),
            )));
            steps.push(Step::Data(Box::leak(chunk.into_boxed_slice())));
        }
        steps.push(Step::Wait(Duration::from_millis(25)));
        let body = SseBody::sse(
            Some(Upstream::Direct {
                body: ScriptBody::new(steps),
            }),
            Arc::clone(&config),
            config.settings,
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move { body.collect().await.unwrap().to_bytes().to_vec() })
    }

    #[test]
    fn conformance_cases_survive_a_heartbeat_at_every_byte_offset() {
        for case in CASES {
            for offset in 0..=case.input.len() {
                let chunks = vec![case.input[..offset].to_vec(), case.input[offset..].to_vec()];
                let out = relay(chunks, &[0, 15]);
                assert_eq!(
                    parse(&out).triples(),
                    case.expected.to_vec(),
                    "{} split at {offset}: {:?}",
                    case.name,
                    String::from_utf8_lossy(&out)
                );
            }
        }
        for case in CHUNKED_CASES {
            let chunks: Vec<Vec<u8>> = case.chunks.iter().map(|c| c.to_vec()).collect();
            let waits = vec![15; chunks.len()];
            let out = relay(chunks, &waits);
            assert_eq!(
                parse(&out).triples(),
                case.expected.to_vec(),
                "{}",
                case.name
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// I2: a client that splits lines on LF and strips one CR reads the upstream's lines
        /// (plus the layer's own heartbeats and hint) from LF and CRLF streams, whatever the
        /// framing and the pauses.
        #[test]
        fn a_naive_line_splitter_reads_the_upstream_lines(
            stream in crate::scanner::tests::arb_lf_crlf_stream(),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
            waits in proptest::collection::vec(prop_oneof![Just(0u64), Just(15), Just(35)], 0..12),
        ) {
            use crate::scanner::tests::naive_lines_without;
            let out = relay(split(&stream, &cuts), &waits);
            let mut got = naive_lines_without(&out, b":");
            prop_assert_eq!(got.first().map(Vec::as_slice), Some(&b"retry: 1234"[..]));
            got.remove(0);
            prop_assert_eq!(got, naive_lines_without(&stream, b":"));
        }

        /// I1 with heartbeats forced at random points in time.
        #[test]
        fn heartbeats_at_random_times_change_no_event(
            stream in proptest::collection::vec(
                prop_oneof![
                    Just(b"data: x".to_vec()), Just(b"data".to_vec()), Just(b"event: e".to_vec()),
                    Just(b"id: 7".to_vec()), Just(b":c".to_vec()), Just(b"retry: 5".to_vec()),
                    Just(b"\r".to_vec()), Just(b"\n".to_vec()), Just(b"\r\n".to_vec()),
                    Just(b"\xEF\xBB\xBF".to_vec()), Just(b"\xEF".to_vec()),
                ],
                0..30,
            ).prop_map(|parts| parts.concat()),
            cuts in proptest::collection::vec(any::<usize>(), 0..10),
            waits in proptest::collection::vec(prop_oneof![Just(0u64), Just(5), Just(15), Just(35)], 0..12),
        ) {
            let chunks = split(&stream, &cuts);
            let out = relay(chunks, &waits);
            let expected = parse(&stream);
            let got = parse(&out);
            prop_assert_eq!(events_of(&got), events_of(&expected));
            // Only the layer's own retry value is added.
            let mut retries = vec![1234];
            retries.extend(expected.retries.iter().copied());
            prop_assert_eq!(got.retries, retries);
        }
    }
}

#[cfg(test)]
mod size {
    use super::*;

    /// The layer's own memory per idle stream is the boxed `Stream` plus what `SseBody` holds
    /// inline; the target (BENCHMARKS.md) is at most 512 bytes.
    #[test]
    fn an_idle_stream_costs_less_than_512_bytes_of_the_layers_own_memory() {
        let boxed = std::mem::size_of::<Stream>();
        let inline = std::mem::size_of::<SseBody<http_body_util::Empty<Bytes>>>();
        eprintln!("FIGURE: Stream {boxed} B boxed, SseBody<Empty> {inline} B inline");
        assert!(boxed + inline <= 512, "{boxed} + {inline}");
    }
}
