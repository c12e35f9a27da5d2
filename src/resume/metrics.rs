//! Counters of the resume layer, readable through a cheap, cloneable [`ResumeMetrics`] handle.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// Why a resume was given up, and the client's stream ended (or went on without resume).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GiveUpReason {
    /// Events were handed to the client and no usable id was seen (none, an empty one, one too
    /// long to keep, or one that is not a valid header value): asking again would replay them.
    NoId,
    /// An incomplete event grew past [`max_event`](crate::ResumeLayer::max_event): its bytes were
    /// handed on, and the stream went on without resume.
    TooLarge,
    /// Every one of the [`resume_attempts`](crate::ResumeLayer::resume_attempts) requests failed
    /// (no connection, an error, or an answer other than `200 text/event-stream` or 204).
    Attempts,
    /// The upstream answered the new request with `204 No Content`: it said stop.
    NoContent,
    /// The stream was interrupted again after [`max_resumes`](crate::ResumeLayer::max_resumes)
    /// resumes: it ended as it would without the layer.
    MaxResumes,
}

impl GiveUpReason {
    /// Every reason, in a stable order (for exporting counters).
    pub const ALL: [Self; 5] = [
        Self::NoId,
        Self::TooLarge,
        Self::Attempts,
        Self::NoContent,
        Self::MaxResumes,
    ];

    /// A short `snake_case` name, suitable as a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoId => "no_id",
            Self::TooLarge => "too_large",
            Self::Attempts => "attempts",
            Self::NoContent => "no_content",
            Self::MaxResumes => "max_resumes",
        }
    }

    /// Whether a give-up for this reason ends the client's stream (its close reason): every
    /// reason but [`TooLarge`](Self::TooLarge), after which the stream goes on without resume.
    ///
    /// The stream then ends as it would without the layer: cleanly (after a `retry:` line for
    /// [`Attempts`](Self::Attempts)), or with the upstream's error for [`NoId`](Self::NoId) and
    /// [`MaxResumes`](Self::MaxResumes) when the upstream failed. An outer
    /// [`SseLayer`](crate::SseLayer) counts that end as the upstream's
    /// ([`CloseReason::UpstreamEnded`](crate::CloseReason::UpstreamEnded) or
    /// [`UpstreamError`](crate::CloseReason::UpstreamError)); this reason, counted by
    /// [`ResumeMetrics`] and logged, says why resume did not hide it.
    ///
    /// ```
    /// use tower_sse::resume::GiveUpReason;
    ///
    /// assert!(GiveUpReason::Attempts.ends_stream());
    /// assert!(!GiveUpReason::TooLarge.ends_stream());
    /// ```
    pub const fn ends_stream(self) -> bool {
        !matches!(self, Self::TooLarge)
    }

    const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Default)]
struct Counters {
    streams: AtomicU64,
    interrupted: AtomicU64,
    attempts: AtomicU64,
    resumed: AtomicU64,
    gave_up: [AtomicU64; GiveUpReason::ALL.len()],
}

/// A handle to the counters of one or more [`ResumeLayer`](crate::ResumeLayer)s.
///
/// Cloning is cheap (the counters sit behind an [`Arc`]); every clone reads and updates the same
/// counters. A layer creates its own handle unless one is given with
/// [`ResumeLayer::metrics`](crate::ResumeLayer::metrics), so several routes can share one.
///
/// ```
/// use std::fmt::Write;
/// use tower_sse::ResumeLayer;
/// use tower_sse::resume::GiveUpReason;
///
/// let layer = ResumeLayer::new();
/// let snapshot = layer.metrics_handle().snapshot();
/// let mut text = String::new();
/// writeln!(text, "sse_resume_attempts_total {}", snapshot.attempts).unwrap();
/// writeln!(text, "sse_resumed_total {}", snapshot.resumed).unwrap();
/// for reason in GiveUpReason::ALL {
///     writeln!(text, "sse_resume_given_up_total{{reason=\"{reason}\"}} {}", snapshot.gave_up(reason)).unwrap();
/// }
/// assert!(text.starts_with("sse_resume_attempts_total 0\n"));
/// ```
#[derive(Clone, Default)]
pub struct ResumeMetrics {
    counters: Arc<Counters>,
}

impl ResumeMetrics {
    /// Creates a new [`ResumeMetrics`] with every counter at zero.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads every counter.
    #[must_use]
    pub fn snapshot(&self) -> ResumeSnapshot {
        let c = &self.counters;
        ResumeSnapshot {
            streams: c.streams.load(Relaxed),
            interrupted: c.interrupted.load(Relaxed),
            attempts: c.attempts.load(Relaxed),
            resumed: c.resumed.load(Relaxed),
            gave_up: std::array::from_fn(|i| c.gave_up.get(i).map_or(0, |n| n.load(Relaxed))),
        }
    }

    pub(crate) fn stream(&self) {
        self.counters.streams.fetch_add(1, Relaxed);
    }

    pub(crate) fn interrupted(&self) {
        self.counters.interrupted.fetch_add(1, Relaxed);
    }

    pub(crate) fn attempt(&self) {
        self.counters.attempts.fetch_add(1, Relaxed);
    }

    pub(crate) fn resumed(&self) {
        self.counters.resumed.fetch_add(1, Relaxed);
    }

    pub(crate) fn gave_up(&self, reason: GiveUpReason) {
        if let Some(counter) = self.counters.gave_up.get(reason.index()) {
            counter.fetch_add(1, Relaxed);
        }
    }
}

impl fmt::Debug for ResumeMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResumeMetrics")
            .field(&self.snapshot())
            .finish()
    }
}

/// The counters of a [`ResumeMetrics`] handle at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResumeSnapshot {
    /// Event streams of repeatable requests watched by the layer (those it could resume).
    pub streams: u64,
    /// Upstream streams that failed (or ended, with `resume_on_end`) while being watched.
    pub interrupted: u64,
    /// Requests sent again to the upstream.
    pub attempts: u64,
    /// New upstream responses spliced into a client's stream.
    pub resumed: u64,
    gave_up: [u64; GiveUpReason::ALL.len()],
}

impl ResumeSnapshot {
    /// Resumes given up for `reason`.
    #[must_use]
    pub fn gave_up(&self, reason: GiveUpReason) -> u64 {
        self.gave_up.get(reason.index()).copied().unwrap_or(0)
    }

    /// Resumes given up, for any reason.
    #[must_use]
    pub fn gave_up_total(&self) -> u64 {
        self.gave_up.iter().sum()
    }

    /// Client streams the layer ended after giving up resume: the give-ups whose reason
    /// [ends the stream](GiveUpReason::ends_stream) (all but
    /// [`TooLarge`](GiveUpReason::TooLarge)).
    #[must_use]
    pub fn ended_streams(&self) -> u64 {
        GiveUpReason::ALL
            .iter()
            .filter(|reason| reason.ends_stream())
            .map(|&reason| self.gave_up(reason))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_have_distinct_indices_and_names() {
        for (i, reason) in GiveUpReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let mut names: Vec<_> = GiveUpReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), GiveUpReason::ALL.len());
    }

    #[test]
    fn clones_share_counters() {
        let metrics = ResumeMetrics::new();
        let clone = metrics.clone();
        clone.gave_up(GiveUpReason::NoContent);
        clone.attempt();
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.gave_up(GiveUpReason::NoContent), 1);
        assert_eq!(snapshot.gave_up_total(), 1);
        assert_eq!(snapshot.attempts, 1);
    }

    #[test]
    fn every_give_up_but_too_large_ends_the_stream() {
        let metrics = ResumeMetrics::new();
        for reason in GiveUpReason::ALL {
            metrics.gave_up(reason);
            assert_eq!(reason.ends_stream(), reason != GiveUpReason::TooLarge);
        }
        metrics.gave_up(GiveUpReason::TooLarge);
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.gave_up_total(), 6);
        assert_eq!(snapshot.ended_streams(), 4);
    }
}

/// Set by a [`ResumeBody`](crate::ResumeBody) when it gives up in a way that ends the client's
/// stream; read by an outer `SseLayer` (it finds it in the response's extensions) to count the
/// end as [`CloseReason::ResumeGivenUp`](crate::CloseReason::ResumeGivenUp).
#[derive(Debug, Clone, Default)]
pub(crate) struct GaveUp(Arc<AtomicBool>);

impl GaveUp {
    pub(crate) fn set(&self) {
        self.0.store(true, Relaxed);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Relaxed)
    }
}
