//! Per-stream counts: published to the shared [`SseMetrics`] when the stream waits, and logged
//! with the close reason when the stream ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::{CloseReason, CloseSlot, SseMetrics};

/// How many bytes a stream sends between updates of the shared byte counter, at most.
const FLUSH_BYTES: u64 = 64 * 1024;

/// Per-stream counts, reported to the metrics (the layer's, passed in: a stream does not keep a
/// handle of its own) as they happen, and in a `tracing` event when the stream ends.
pub(super) struct Tally {
    opened: Instant,
    bytes: u64,
    events: u64,
    /// What the shared counters do not have yet of `bytes` (below `FLUSH_BYTES`) and `events`.
    unflushed_bytes: u32,
    unflushed_events: u32,
    heartbeats: u32,
    /// Where the close is counted, unless the stream shares a slot with its slow-client pump.
    close: CloseSlot,
    /// The close was recorded (by this stream or its pump).
    finished: bool,
    /// What only some streams have, boxed: most streams have neither.
    extra: Option<Box<Extra>>,
}

/// The parts of a [`Tally`] that most streams do without.
struct Extra {
    /// The close slot shared with the slow-client pump.
    shared_close: Option<Arc<CloseSlot>>,
    /// The span the stream opened in (the request's), kept when `tower_sse` debug events are
    /// on: the close is logged in it too.
    span: Option<tracing::Span>,
}

impl Tally {
    pub(super) fn new(
        metrics: &SseMetrics,
        now: Instant,
        shared_close: Option<Arc<CloseSlot>>,
    ) -> Self {
        metrics.opened();
        tracing::debug!(target: "tower_sse", "sse stream opened");
        let span = tracing::enabled!(target: "tower_sse", tracing::Level::DEBUG)
            .then(tracing::Span::current);
        Self {
            opened: now,
            bytes: 0,
            events: 0,
            unflushed_bytes: 0,
            unflushed_events: 0,
            heartbeats: 0,
            close: CloseSlot::default(),
            finished: false,
            extra: (shared_close.is_some() || span.is_some())
                .then(|| Box::new(Extra { shared_close, span })),
        }
    }

    pub(super) fn sent(&mut self, metrics: &SseMetrics, len: usize) {
        let len = len as u64;
        self.bytes += len;
        let unflushed = u64::from(self.unflushed_bytes) + len;
        match u32::try_from(unflushed) {
            Ok(unflushed) if u64::from(unflushed) < FLUSH_BYTES => self.unflushed_bytes = unflushed,
            _ => {
                SseMetrics::add(&metrics.counters.bytes, unflushed);
                self.unflushed_bytes = 0;
            }
        }
    }

    pub(super) fn events(&mut self, metrics: &SseMetrics, n: u32) {
        self.events += u64::from(n);
        match self.unflushed_events.checked_add(n) {
            Some(unflushed) => self.unflushed_events = unflushed,
            None => {
                SseMetrics::add(
                    &metrics.counters.events,
                    u64::from(self.unflushed_events) + u64::from(n),
                );
                self.unflushed_events = 0;
            }
        }
    }

    /// Publishes the byte and event counts to the shared counters. Done when the stream waits,
    /// every `FLUSH_BYTES`, and at the end, rather than per frame: the shared counters sit on
    /// one cache line that every stream on every core would otherwise write.
    pub(super) fn flush(&mut self, metrics: &SseMetrics) {
        if self.unflushed_bytes != 0 {
            SseMetrics::add(&metrics.counters.bytes, u64::from(self.unflushed_bytes));
            self.unflushed_bytes = 0;
        }
        if self.unflushed_events != 0 {
            SseMetrics::add(&metrics.counters.events, u64::from(self.unflushed_events));
            self.unflushed_events = 0;
        }
    }

    pub(super) fn heartbeat(&mut self, metrics: &SseMetrics) {
        self.heartbeats = self.heartbeats.saturating_add(1);
        SseMetrics::add(&metrics.counters.heartbeats, 1);
    }

    pub(super) fn heartbeat_skipped(metrics: &SseMetrics) {
        SseMetrics::add(&metrics.counters.heartbeats_skipped, 1);
    }

    /// Counts the stream as closed for `reason`, once: the first reason reported wins, here or
    /// by the slow-client pump (which logs its own close). A stream dropped before it ended
    /// reports `ClientGone` (its state's `Drop`).
    pub(super) fn finish(&mut self, metrics: &SseMetrics, reason: CloseReason) {
        self.flush(metrics);
        if self.finished {
            return;
        }
        self.finished = true;
        let extra = self.extra.as_deref();
        let slot = extra
            .and_then(|e| e.shared_close.as_deref())
            .unwrap_or(&self.close);
        let (reason, first) = slot.close(metrics, reason);
        if !first {
            return;
        }
        let duration: Duration = self.opened.elapsed();
        let _span = extra
            .and_then(|e| e.span.as_ref())
            .map(tracing::Span::enter);
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
