//! The event stream's state machine: opening lines, forwarding with the scanner, heartbeats,
//! idle timeout, lifetime, drain, and the clean end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};
use tokio::sync::futures::OwnedNotified;
use tokio::time::Instant;

use super::tally::Tally;
use super::upstream::Upstream;
use crate::BoxError;
use crate::compress::Encoder;
use crate::config::{Config, DRAIN_RETRY_JITTER, Settings};
use crate::metrics::{CloseReason, CloseSlot};
use crate::resume::GaveUp;
use crate::scanner::{LineEnd, Scanner, bom_prefix};
use crate::timer::SharedTimer;
use crate::{inject, jitter};

/// `State::activity`: the inner body produced bytes.
const UPSTREAM_ACTIVE: u8 = 1;
/// `State::activity`: bytes of the inner body went to the client.
const OUTPUT_ACTIVE: u8 = 2;

/// How many bytes of frames that are ready in the same poll are handed on as one frame, at most
/// (plus the last frame merged).
pub(crate) const COALESCE_LIMIT: usize = 32 * 1024;
/// The first allocation of a merged frame.
const MERGE_CAPACITY: usize = 4 * 1024;

/// Everything an event stream needs besides the inner body, boxed once per stream so that
/// passthrough bodies stay small. What most streams never use (overridden settings, lifetime,
/// drain, compression, a stashed frame) sits in a second box, made only for the streams that
/// use it: an idle stream with the default configuration costs this box and one slot of the
/// runtime's timer wheel (`size::` tests in `tests.rs` hold the figures).
pub(super) struct Machine {
    // The stream's place in the runtime's timer wheel, re-armed lazily: activity only updates
    // `State`'s instants.
    timer: SharedTimer,
    state: State,
}

/// Where the stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not polled yet: the opening lines (initial comment, `retry:`) are still to be written.
    Opening,
    /// Forwarding the inner body.
    Open,
    /// The layer wants to end the stream: at the next event boundary, or at
    /// `Rare::closing_deadline`.
    Closing(CloseReason),
    /// Done; once `pending` is written, the body ends.
    Ended,
}

pub(super) struct State {
    config: Arc<Config>,
    /// What most streams do without, made on first use.
    rare: Option<Box<Rare>>,
    scanner: Scanner,
    phase: Phase,
    /// Traffic not yet dated into `last_output` / `last_upstream` (`UPSTREAM_ACTIVE`,
    /// `OUTPUT_ACTIVE`).
    activity: u8,
    /// A frame to write before anything else (opening lines, a released BOM prefix, the final
    /// `retry:` hint).
    pending: Option<Bytes>,
    /// The last time bytes went to the client (heartbeats are due `heartbeat` after it), or a
    /// heartbeat was skipped.
    last_output: Instant,
    /// The last time the inner body produced bytes (for the idle timeout).
    last_upstream: Instant,
    tally: Tally,
}

/// The parts of a stream's state that most streams never use.
#[derive(Default)]
pub(super) struct Rare {
    /// The settings of this stream when an `SseOverride` changed the layer's (boxed, like the
    /// stash: `Rare` is made for a lifetime or a shutdown handle too, which need neither).
    overridden: Option<Box<Settings>>,
    /// When the stream reaches its (jittered) maximum lifetime.
    lifetime_at: Option<Instant>,
    /// When a drain wants this stream to end, and when the drain window closes.
    drain_at: Option<(Instant, Instant)>,
    /// When a stream in `Phase::Closing` is cut if no event boundary came.
    closing_deadline: Option<Instant>,
    /// The shutdown handle's waiter, while no drain has started (boxed: it is not `Unpin`).
    drain: Option<Pin<Box<OwnedNotified>>>,
    /// The layer's compression of the stream's output (I11), when negotiated.
    encoder: Option<Box<Encoder>>,
    /// A frame or an error of the inner body that came after merged data, for the next poll.
    stash: Option<Box<Result<Frame<Bytes>, BoxError>>>,
    /// Set by a `ResumeLayer` inside when it gave up on the stream: its end is counted as
    /// `CloseReason::ResumeGivenUp`.
    resume: Option<GaveUp>,
}

impl Machine {
    /// The stream ended and everything was written.
    pub(super) fn is_ended(&self) -> bool {
        self.state.is_ended()
            && self
                .state
                .rare
                .as_ref()
                .and_then(|rare| rare.encoder.as_ref())
                .is_none_or(|encoder| encoder.is_done())
    }

    /// Whether the rarely used parts were made.
    #[cfg(test)]
    pub(super) const fn has_rare(&self) -> bool {
        self.state.rare.is_some()
    }

    /// Counts the end as `CloseReason::ResumeGivenUp` when `gave_up` is set by then.
    pub(super) fn set_resume(&mut self, gave_up: GaveUp) {
        self.state.rare().resume = Some(gave_up);
    }

    /// Compresses the stream's output with `encoder`.
    pub(super) fn set_encoder(&mut self, encoder: Encoder) {
        self.state.rare().encoder = Some(Box::new(encoder));
    }

    pub(super) fn new(
        config: Arc<Config>,
        settings: Settings,
        shared_close: Option<Arc<CloseSlot>>,
    ) -> Self {
        let now = Instant::now();
        let mut state = State {
            rare: None,
            scanner: Scanner::new(),
            phase: Phase::Opening,
            activity: 0,
            pending: None,
            last_output: now,
            last_upstream: now,
            tally: Tally::new(&config.metrics, now, shared_close),
            config,
        };
        if settings != state.config.settings {
            state.rare().overridden = Some(Box::new(settings));
        }
        if let Some(lifetime) = settings.max_lifetime {
            state.rare().lifetime_at =
                Some(now + jitter::shortened(lifetime, settings.lifetime_jitter));
        }
        if let Some(shutdown) = state.config.shutdown.clone() {
            // The waiter is made first: a drain that starts now is not missed. A stream opened
            // during a drain ends at once.
            let waiter = Box::pin(shutdown.notified());
            let rare = state.rare();
            if shutdown.is_draining() {
                rare.drain_at = Some((now, now));
            } else {
                rare.drain = Some(waiter);
            }
        }
        Self {
            timer: SharedTimer::new(),
            state,
        }
    }

    pub(super) fn poll_frame<B>(
        &mut self,
        mut body: Pin<&mut Option<Upstream<B>>>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
    where
        B: Body,
        B::Data: 'static,
        B::Error: Into<BoxError>,
    {
        let Self { timer, state } = self;
        let encoder = state.rare.as_mut().and_then(|rare| rare.encoder.take());
        let Some(mut encoder) = encoder else {
            return poll_stream(timer, state, body, cx);
        };
        let polled = encoder.poll_frame(cx, |cx| poll_stream(timer, state, body.as_mut(), cx));
        state.rare().encoder = Some(encoder);
        polled
    }
}

/// The stream's output, before compression.
fn poll_stream<B>(
    timer: &mut SharedTimer,
    state: &mut State,
    mut body: Pin<&mut Option<Upstream<B>>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>>
where
    B: Body,
    B::Data: 'static,
    B::Error: Into<BoxError>,
{
    loop {
        if state.phase == Phase::Ended {
            // Release the inner body, the timer and the drain waiter at once (I8).
            if body.is_some() {
                body.set(None);
            }
            timer.clear();
            if let Some(rare) = &mut state.rare {
                rare.drain = None;
            }
        }
        if let Some(bytes) = state.pending.take() {
            state.tally.sent(&state.config.metrics, bytes.len());
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
            Phase::Closing(reason) if state.scanner.at_event_boundary() => {
                state.end(reason);
                continue;
            }
            Phase::Open | Phase::Closing(_) => {}
        }

        if let Some(stashed) = state.rare.as_mut().and_then(|rare| rare.stash.take()) {
            match *stashed {
                Ok(frame) => return Poll::Ready(Some(Ok(frame))),
                Err(error) => {
                    state.finish(CloseReason::UpstreamError);
                    state.phase = Phase::Ended;
                    body.set(None);
                    return Poll::Ready(Some(Err(error)));
                }
            }
        }

        if let Some(mut inner) = body.as_mut().as_pin_mut() {
            match inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match state.upstream_data(data) {
                        Some(bytes) if state.phase == Phase::Open => {
                            let (bytes, ended) = state.coalesce(inner, bytes, cx);
                            if ended {
                                body.set(None);
                                state.upstream_ended();
                            }
                            state.tally.sent(&state.config.metrics, bytes.len());
                            return Poll::Ready(Some(Ok(Frame::data(bytes))));
                        }
                        Some(bytes) => {
                            // Closing: one frame at a time, so that the stream ends at the
                            // first event boundary.
                            state.tally.sent(&state.config.metrics, bytes.len());
                            return Poll::Ready(Some(Ok(Frame::data(bytes))));
                        }
                        None => continue,
                    },
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Poll::Ready(Some(Err(error))) => {
                    state.finish(CloseReason::UpstreamError);
                    state.phase = Phase::Ended;
                    body.set(None);
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => {
                    body.set(None);
                    state.upstream_ended();
                    continue;
                }
                Poll::Pending => {}
            }
        }

        if let Some(rare) = &mut state.rare
            && let Some(waiter) = &mut rare.drain
            && waiter.as_mut().poll(cx).is_ready()
        {
            rare.drain = None;
            let now = Instant::now();
            let started = state.config.shutdown.as_ref().and_then(|s| s.started());
            state.on_drain(started.unwrap_or(now), now);
            continue;
        }

        state.tally.flush(&state.config.metrics);
        if state.activity != 0 {
            state.date_activity(Instant::now());
        }
        // The heartbeat's deadline, moved to the runtime's grid of the heartbeat slack: idle
        // streams whose heartbeats fall due in the same slack are woken together.
        let heartbeat = state
            .heartbeat_due()
            .map(|(due, slack)| (timer.align(due, slack), slack));
        let Some(deadline) = state.next_deadline(heartbeat.map(|(at, _)| at)) else {
            return Poll::Pending;
        };
        if timer.poll_until(deadline, cx).is_pending() {
            return Poll::Pending;
        }
        // The deadline passed: act on what is due; the next turn re-arms the timer for what is
        // left.
        state.on_timer(Instant::now(), heartbeat);
    }
}

impl Drop for State {
    fn drop(&mut self) {
        // Dropped before it ended: the client went away (a no-op when the close was counted).
        self.finish(CloseReason::ClientGone);
    }
}

impl State {
    fn settings(&self) -> &Settings {
        self.rare
            .as_ref()
            .and_then(|rare| rare.overridden.as_deref())
            .unwrap_or(&self.config.settings)
    }

    /// The rarely used parts, made on first use.
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn finish(&mut self, reason: CloseReason) {
        let gave_up = || {
            self.rare
                .as_ref()
                .and_then(|rare| rare.resume.as_ref())
                .is_some_and(GaveUp::is_set)
        };
        let reason = match reason {
            CloseReason::UpstreamEnded | CloseReason::UpstreamError if gave_up() => {
                CloseReason::ResumeGivenUp
            }
            reason => reason,
        };
        self.tally.finish(&self.config.metrics, reason);
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
        if let Some((at, _)) = self.rare.as_ref().and_then(|rare| rare.drain_at)
            && at <= now
        {
            // Opened during a drain: a jittered `retry:` and a clean end, nothing else.
            self.end(CloseReason::Shutdown);
            return;
        }
        let retry = self
            .settings()
            .retry
            .map(|retry| inject::retry_line(retry, self.settings().retry_jitter, LineEnd::Lf));
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
        self.tally.events(&self.config.metrics, feed.events);
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

    /// Hands on `first` merged with the data frames the inner body has ready in this same poll,
    /// up to [`COALESCE_LIMIT`] bytes: fewer, larger frames mean fewer HTTP chunks and writes.
    /// Nothing waits for a frame that is not ready (I6): the first `Pending` ends the merge. A
    /// non-data frame or an error that comes after merged data is stashed for the next poll;
    /// returns whether the inner body ended.
    fn coalesce<B>(
        &mut self,
        mut inner: Pin<&mut Upstream<B>>,
        first: Bytes,
        cx: &mut Context<'_>,
    ) -> (Bytes, bool)
    where
        B: Body,
        B::Data: 'static,
        B::Error: Into<BoxError>,
    {
        let mut merged: Option<BytesMut> = None;
        let mut len = first.len();
        while len < COALESCE_LIMIT {
            match inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let Some(more) = self.upstream_data(data) else {
                            continue;
                        };
                        len += more.len();
                        merged
                            .get_or_insert_with(|| {
                                let mut buf = BytesMut::with_capacity(len.max(MERGE_CAPACITY));
                                buf.extend_from_slice(&first);
                                buf
                            })
                            .extend_from_slice(&more);
                    }
                    Err(frame) => {
                        self.rare().stash = Some(Box::new(Ok(frame)));
                        break;
                    }
                },
                Poll::Ready(Some(Err(error))) => {
                    self.rare().stash = Some(Box::new(Err(error)));
                    break;
                }
                Poll::Ready(None) => {
                    return (merged.map_or(first, BytesMut::freeze), true);
                }
                Poll::Pending => break,
            }
        }
        (merged.map_or(first, BytesMut::freeze), false)
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

    fn upstream_ended(&mut self) {
        let held = self.scanner.finish();
        if held > 0 {
            // Bytes of what looked like a leading BOM: the upstream's, never lost.
            self.pending = Some(Bytes::from_static(bom_prefix(held)));
        }
        self.finish(CloseReason::UpstreamEnded);
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
            self.pending = Some(inject::retry_line(retry, jitter, line_end));
        }
        self.finish(reason);
        self.phase = Phase::Ended;
    }

    /// A drain started at `started`: this stream picks its moment in the window.
    fn on_drain(&mut self, started: Instant, now: Instant) {
        let window = self.settings().drain_window;
        let window_end = (started + window).max(now);
        let at = (started + window.mul_f64(jitter::random_unit())).max(now);
        self.rare().drain_at = Some((at.min(window_end), window_end));
    }

    fn close(&mut self, reason: CloseReason, deadline: Instant) {
        let current = self.rare.as_ref().and_then(|rare| rare.closing_deadline);
        match (self.phase, current) {
            (Phase::Open, _) => {}
            (Phase::Closing(_), Some(current)) if deadline < current => {}
            _ => return,
        }
        self.phase = Phase::Closing(reason);
        self.rare().closing_deadline = Some(deadline);
    }

    /// When the next heartbeat falls due (an interval after the last output), and how late it
    /// may go out.
    fn heartbeat_due(&self) -> Option<(Instant, Duration)> {
        let interval = self.settings().heartbeat?;
        Some((
            self.last_output + interval,
            self.config.heartbeat_slack(interval),
        ))
    }

    /// The earliest deadline; `heartbeat`: the heartbeat's, on the slack's grid.
    fn next_deadline(&self, heartbeat: Option<Instant>) -> Option<Instant> {
        let s = self.settings();
        let idle = s.idle_timeout.map(|limit| self.last_upstream + limit);
        let Some(rare) = &self.rare else {
            return match (heartbeat, idle) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        };
        let candidates = [
            heartbeat,
            idle,
            rare.lifetime_at,
            rare.drain_at.map(|(at, _)| at),
            match self.phase {
                Phase::Closing(_) => rare.closing_deadline,
                _ => None,
            },
        ];
        candidates.into_iter().flatten().min()
    }

    /// `heartbeat`: when the heartbeat was set to go out (its due time on the slack's grid), and
    /// the slack.
    fn on_timer(&mut self, now: Instant, heartbeat: Option<(Instant, Duration)>) {
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
        if let Phase::Closing(reason) = self.phase
            && let Some(deadline) = self.rare.as_ref().and_then(|rare| rare.closing_deadline)
            && now >= deadline
        {
            // No event boundary within the grace: cut (the client drops the partial event).
            self.end(reason);
            return;
        }
        if let Some(at) = self.rare.as_ref().and_then(|rare| rare.lifetime_at)
            && now >= at
        {
            self.rare().lifetime_at = None;
            self.close(CloseReason::Lifetime, now + self.settings().close_grace);
        }
        if let Some((at, window_end)) = self.rare.as_ref().and_then(|rare| rare.drain_at)
            && now >= at
        {
            self.rare().drain_at = None;
            self.close(CloseReason::Shutdown, window_end.max(now));
        }
        if let Some(interval) = self.settings().heartbeat
            && now >= self.last_output + interval
        {
            // Dated when it was set to go out, when that was less than one slack ago: the next one
            // is then due on the grid again, so an idle stream keeps the grid (one heartbeat
            // every interval, rounded up to the slack) instead of slipping by the time it took to
            // poll it. Polled later than that (an overloaded runtime), it is dated now: heartbeats
            // never come in a burst to catch up (the next is due at least an interval minus the
            // slack after this one).
            self.last_output = match heartbeat {
                Some((at, slack)) if at <= now && now < at + slack => at,
                _ => now,
            };
            match self.scanner.injection() {
                Some(line_end) => {
                    self.scanner.injected();
                    self.tally.heartbeat(&self.config.metrics);
                    self.pending = Some(self.config.heartbeat_line(line_end));
                }
                None => Tally::heartbeat_skipped(&self.config.metrics),
            }
        }
    }
}
