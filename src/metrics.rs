//! Counters every stream updates, readable through a cheap, cloneable [`SseMetrics`] handle.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering, Ordering::Relaxed};

/// Why an SSE stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The inner body ended.
    UpstreamEnded,
    /// The inner body returned an error.
    UpstreamError,
    /// The response body was dropped before it ended: the client went away.
    ClientGone,
    /// The inner body sent no bytes for the configured idle timeout.
    IdleTimeout,
    /// The stream reached its maximum lifetime.
    Lifetime,
    /// The stream was ended by a graceful-shutdown drain.
    Shutdown,
    /// The client stopped reading and the slow-client policy ended the stream.
    SlowClient,
    /// The inner body ended (or failed) after a [`ResumeLayer`](crate::ResumeLayer) inside this
    /// layer gave up resuming it: its attempts failed, the upstream answered 204, no id had been
    /// seen, or the stream had been resumed [`max_resumes`](crate::ResumeLayer::max_resumes)
    /// times. Without resume, or when resume went on, such an end counts as
    /// [`UpstreamEnded`](Self::UpstreamEnded) or [`UpstreamError`](Self::UpstreamError).
    ResumeGivenUp,
}

impl CloseReason {
    /// Every reason, in a stable order (for exporting counters).
    pub const ALL: [Self; 8] = [
        Self::UpstreamEnded,
        Self::UpstreamError,
        Self::ClientGone,
        Self::IdleTimeout,
        Self::Lifetime,
        Self::Shutdown,
        Self::SlowClient,
        Self::ResumeGivenUp,
    ];

    /// A short `snake_case` name, suitable as a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UpstreamEnded => "upstream_ended",
            Self::UpstreamError => "upstream_error",
            Self::ClientGone => "client_gone",
            Self::IdleTimeout => "idle_timeout",
            Self::Lifetime => "lifetime",
            Self::Shutdown => "shutdown",
            Self::SlowClient => "slow_client",
            Self::ResumeGivenUp => "resume_given_up",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) open: AtomicU64,
    pub(crate) opened: AtomicU64,
    pub(crate) closed: [AtomicU64; CloseReason::ALL.len()],
    pub(crate) bytes: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) heartbeats: AtomicU64,
    pub(crate) heartbeats_skipped: AtomicU64,
    pub(crate) queued_bytes: AtomicU64,
    pub(crate) events_dropped: AtomicU64,
    pub(crate) events_coalesced: AtomicU64,
}

/// A handle to the counters of one or more [`SseLayer`](crate::SseLayer)s.
///
/// Cloning is cheap (the counters sit behind an [`Arc`]); every clone reads and updates the same
/// counters. A layer creates its own handle unless one is given with
/// [`SseLayer::metrics`](crate::SseLayer::metrics), so several routes can share one.
///
/// The counters are plain atomics updated with relaxed ordering; reading them costs a few loads.
/// tower-sse does not depend on any metrics exporter: read a [`MetricsSnapshot`] where your
/// exporter wants values, for example in a Prometheus text endpoint:
///
/// ```
/// use std::fmt::Write;
/// use tower_sse::{CloseReason, SseLayer};
///
/// let layer = SseLayer::new();
/// let metrics = layer.metrics_handle();
///
/// let snapshot = metrics.snapshot();
/// let mut text = String::new();
/// writeln!(text, "sse_open_streams {}", snapshot.open_streams).unwrap();
/// for reason in CloseReason::ALL {
///     writeln!(text, "sse_closed_total{{reason=\"{reason}\"}} {}", snapshot.closed(reason)).unwrap();
/// }
/// assert!(text.starts_with("sse_open_streams 0\n"));
/// ```
#[derive(Clone, Default)]
pub struct SseMetrics {
    pub(crate) counters: Arc<Counters>,
}

impl SseMetrics {
    /// Creates a new [`SseMetrics`] with every counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let c = &self.counters;
        MetricsSnapshot {
            open_streams: c.open.load(Relaxed),
            opened: c.opened.load(Relaxed),
            closed: std::array::from_fn(|i| c.closed.get(i).map_or(0, |n| n.load(Relaxed))),
            bytes: c.bytes.load(Relaxed),
            events: c.events.load(Relaxed),
            heartbeats: c.heartbeats.load(Relaxed),
            heartbeats_skipped: c.heartbeats_skipped.load(Relaxed),
            queued_bytes: c.queued_bytes.load(Relaxed),
            events_dropped: c.events_dropped.load(Relaxed),
            events_coalesced: c.events_coalesced.load(Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub(crate) fn opened(&self) {
        Self::add(&self.counters.opened, 1);
        Self::add(&self.counters.open, 1);
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        if let Some(counter) = self.counters.closed.get(reason.index()) {
            Self::add(counter, 1);
        }
        self.counters.open.fetch_sub(1, Relaxed);
    }
}

/// Where a stream's close is recorded and counted, exactly once, by whoever reports it first.
///
/// The response body reports every close it sees. A stream with a slow-client buffer has a
/// second reporter: its pump, which finds a client stalled while the body is not being polled at
/// all (hyper polls a body only when it can write), so the stream's close would otherwise be
/// counted only when the connection finally dies.
#[derive(Debug, Default)]
pub(crate) struct CloseSlot(AtomicU8);

impl CloseSlot {
    /// Records `reason` and counts it in `metrics`, unless a close was recorded before. Returns
    /// the reason that stands, and whether it is this one.
    pub(crate) fn close(&self, metrics: &SseMetrics, reason: CloseReason) -> (CloseReason, bool) {
        #[expect(clippy::cast_possible_truncation, reason = "eight reasons")]
        let code = reason.index() as u8 + 1;
        match self
            .0
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                metrics.closed(reason);
                (reason, true)
            }
            Err(earlier) => {
                let earlier = CloseReason::ALL
                    .get(usize::from(earlier).saturating_sub(1))
                    .copied()
                    .unwrap_or(reason);
                (earlier, false)
            }
        }
    }
}

impl fmt::Debug for SseMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SseMetrics").field(&self.snapshot()).finish()
    }
}

/// The counters of an [`SseMetrics`] handle at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// SSE streams open now (a gauge).
    pub open_streams: u64,
    /// SSE streams opened since the handle was created.
    pub opened: u64,
    closed: [u64; CloseReason::ALL.len()],
    /// Body bytes sent on SSE streams, the layer's own bytes included.
    pub bytes: u64,
    /// Events dispatched to clients (blank lines after a `data` field), as the scanner counts them.
    pub events: u64,
    /// Heartbeat comments sent.
    pub heartbeats: u64,
    /// Heartbeats due while the upstream was mid-line, and so not sent.
    pub heartbeats_skipped: u64,
    /// Bytes waiting in slow-client buffers now (a gauge).
    pub queued_bytes: u64,
    /// Whole events discarded by the `DropOldest` slow-client policy.
    pub events_dropped: u64,
    /// Events replaced by a newer one of the same type under the `LatestPerType` policy.
    pub events_coalesced: u64,
}

impl MetricsSnapshot {
    /// Streams that ended for `reason`.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed.get(reason.index()).copied().unwrap_or(0)
    }

    /// Streams that ended, for any reason.
    pub fn closed_total(&self) -> u64 {
        self.closed.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_indices_and_names() {
        for (i, reason) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let mut names: Vec<_> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        names.dedup();
        assert_eq!(names.len(), CloseReason::ALL.len());
    }

    #[test]
    fn clones_share_counters() {
        let metrics = SseMetrics::new();
        let clone = metrics.clone();
        clone.opened();
        clone.closed(CloseReason::IdleTimeout);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.opened, 1);
        assert_eq!(snapshot.open_streams, 0);
        assert_eq!(snapshot.closed(CloseReason::IdleTimeout), 1);
        assert_eq!(snapshot.closed_total(), 1);
    }
}
