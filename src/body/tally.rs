//! Per-stream counts: published to the shared [`SseMetrics`] when the stream waits, and logged
//! with the close reason when the stream ends.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::{CloseReason, CloseSlot, SseMetrics};

/// How many bytes a stream sends between updates of the shared byte counter, at most.
const FLUSH_BYTES: u64 = 64 * 1024;

/// Per-stream counts, reported to the metrics as they happen and in a `tracing` event when the
/// stream ends (which is when this is dropped).
pub(super) struct Tally {
    metrics: SseMetrics,
    opened: Instant,
    bytes: u64,
    events: u64,
    /// What the shared counters already have of `bytes` and `events`.
    flushed_bytes: u64,
    flushed_events: u64,
    heartbeats: u64,
    /// Where the close is counted: this stream's own slot, or the one it shares with its
    /// slow-client pump.
    close: CloseSlot,
    shared_close: Option<Arc<CloseSlot>>,
    /// The close was recorded (by this stream or its pump).
    finished: bool,
    /// The span the stream opened in (the request's): the close is logged in it too.
    span: tracing::Span,
}

impl Tally {
    pub(super) fn new(
        metrics: SseMetrics,
        now: Instant,
        shared_close: Option<Arc<CloseSlot>>,
    ) -> Self {
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
            close: CloseSlot::default(),
            shared_close,
            finished: false,
            span: tracing::Span::current(),
        }
    }

    pub(super) fn sent(&mut self, len: usize) {
        self.bytes += len as u64;
        if self.bytes - self.flushed_bytes >= FLUSH_BYTES {
            self.flush();
        }
    }

    pub(super) fn events(&mut self, n: u32) {
        self.events += u64::from(n);
    }

    /// Publishes the byte and event counts to the shared counters. Done when the stream waits,
    /// every `FLUSH_BYTES`, and at the end, rather than per frame: the shared counters sit on
    /// one cache line that every stream on every core would otherwise write.
    pub(super) fn flush(&mut self) {
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

    pub(super) fn heartbeat(&mut self) {
        self.heartbeats += 1;
        SseMetrics::add(&self.metrics.counters.heartbeats, 1);
    }

    pub(super) fn heartbeat_skipped(&self) {
        SseMetrics::add(&self.metrics.counters.heartbeats_skipped, 1);
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.finish(CloseReason::ClientGone);
    }
}

impl Tally {
    /// Counts the stream as closed for `reason`, once: the first reason reported wins, here or
    /// by the slow-client pump (which logs its own close).
    pub(super) fn finish(&mut self, reason: CloseReason) {
        self.flush();
        if self.finished {
            return;
        }
        self.finished = true;
        let slot = self.shared_close.as_deref().unwrap_or(&self.close);
        let (reason, first) = slot.close(&self.metrics, reason);
        if !first {
            return;
        }
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
