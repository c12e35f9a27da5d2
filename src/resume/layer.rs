//! [`ResumeLayer`]: the configuration and the builder.

use std::time::Duration;

use tower_layer::Layer;

use super::config::Config;
use super::metrics::ResumeMetrics;
use super::service::ResumeService;

/// Applies [`ResumeService`] to an upstream client: when the event stream of a repeatable request
/// fails, the same request is sent again with `Last-Event-ID` and the new response's events are
/// spliced into the open response, so the client never reconnects.
///
/// Put it around the service that talks to the upstream (hyper-util's `Client`, a load-balanced
/// `tower` service), with an [`SseLayer`](crate::SseLayer) **outside** it, so that heartbeats
/// keep the client's connection alive while the layer waits to ask again:
///
/// ```text
/// client ── SseLayer ── ResumeLayer ── upstream client ── upstream
/// ```
///
/// The layer is cheap to clone (the configuration is a few plain values; the counters sit
/// behind an [`Arc`](std::sync::Arc)).
///
/// | option | default |
/// |---|---|
/// | [`resume_on_end`](Self::resume_on_end) | off: only a failed upstream stream is resumed |
/// | [`max_event`](Self::max_event) | 1 MiB |
/// | [`resume_attempts`](Self::resume_attempts) | 3 |
/// | [`retry`](Self::retry) | 3 s (the upstream's `retry:` wins) |
/// | [`max_retry`](Self::max_retry) | 30 s (bound on the upstream's `retry:`) |
/// | [`jitter`](Self::jitter) | ±50 % |
/// | [`max_resumes`](Self::max_resumes) | 100 per client stream |
///
/// See the [module docs](crate::resume) for an example.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ResumeLayer {
    config: Config,
    metrics: ResumeMetrics,
}

impl ResumeLayer {
    /// Creates a new [`ResumeLayer`] with the default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether an upstream stream that ends cleanly is resumed too.
    ///
    /// Off by default: an upstream that has finished a job ends its stream on purpose, and the
    /// client's stream ends with it (a browser's `EventSource` then reconnects by itself). Turn it
    /// on for upstreams whose streams are meant to be endless, where a clean end means a restart
    /// or a lifetime limit. A response to `HEAD` is never resumed on a clean end (it has no body).
    ///
    /// ```
    /// use tower_sse::ResumeLayer;
    ///
    /// let layer = ResumeLayer::new().resume_on_end(true);
    /// # let _ = layer;
    /// ```
    pub const fn resume_on_end(mut self, enabled: bool) -> Self {
        self.config.resume_on_end = enabled;
        self
    }

    /// The most bytes of an incomplete event held back.
    ///
    /// With resume, the client must never get the start of an event from one upstream response
    /// and the rest from another: bytes after the last event boundary of a frame are held until
    /// the event completes. Frames that end at event boundaries (the normal case for axum, Express
    /// and most servers) are handed on at once. Past `bytes`, the held bytes are handed on, and
    /// the stream goes on without resume (counted as [`GiveUpReason::TooLarge`]).
    ///
    /// Default: 1 MiB. Zero holds nothing: a stream whose frames split an event gives up resume
    /// at the first such frame.
    ///
    /// [`GiveUpReason::TooLarge`]: crate::resume::GiveUpReason::TooLarge
    ///
    /// ```
    /// use tower_sse::ResumeLayer;
    ///
    /// let layer = ResumeLayer::new().max_event(64 * 1024);
    /// # let _ = layer;
    /// ```
    pub const fn max_event(mut self, bytes: usize) -> Self {
        self.config.max_event = bytes;
        self
    }

    /// How many requests are sent, each after its own jittered wait, before resume is given up
    /// for an interruption; the client's stream then ends cleanly after a `retry:` line.
    ///
    /// A request fails when the service errors (no connection), or the answer is neither
    /// `200 text/event-stream` (spliced) nor `204` (the client's stream ends cleanly). Each
    /// successful splice starts the count again for the next interruption.
    ///
    /// Default: 3. Zero turns resume off: every response passes through as is.
    ///
    /// ```
    /// use tower_sse::ResumeLayer;
    ///
    /// let layer = ResumeLayer::new().resume_attempts(5);
    /// # let _ = layer;
    /// ```
    pub const fn resume_attempts(mut self, attempts: u32) -> Self {
        self.config.attempts = attempts;
        self
    }

    /// How long to wait before asking again when the upstream has sent no valid `retry:` field
    /// (its last one wins, as in a browser, up to [`max_retry`](Self::max_retry)).
    ///
    /// Default: 3 s, what browsers use. Zero asks again at once (with no jitter to spread).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sse::ResumeLayer;
    ///
    /// let layer = ResumeLayer::new().retry(Duration::from_millis(500));
    /// # let _ = layer;
    /// ```
    pub const fn retry(mut self, wait: Duration) -> Self {
        self.config.retry = wait;
        self
    }

    /// The longest wait taken from the upstream's `retry:` field: a larger value is clamped to
    /// `wait` (before jitter), so that an upstream sending `retry: 999999999` does not park its
    /// clients for days. It also bounds the `retry:` line written when resume is given up after
    /// [`resume_attempts`](Self::resume_attempts). The layer's own [`retry`](Self::retry) is
    /// not clamped: it is the operator's choice.
    ///
    /// Default: 30 s. Zero asks again at once whatever the upstream says.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_sse::ResumeLayer;
    ///
    /// let layer = ResumeLayer::new().max_retry(Duration::from_secs(10));
    /// # let _ = layer;
    /// ```
    pub const fn max_retry(mut self, wait: Duration) -> Self {
        self.config.max_retry = wait;
        self
    }

    /// The most resumes (new upstream responses spliced in) over one client stream's lifetime.
    /// The interruption after the last one ends the client's stream as it would end without the
    /// layer, counted as [`GiveUpReason::MaxResumes`].
    ///
    /// It bounds what one client stream can cost an upstream that keeps failing after it
    /// answers (each splice starts [`resume_attempts`](Self::resume_attempts) again): the
    /// client then reconnects, through authentication and routing, as it would without resume.
    ///
    /// Default: 100. Zero resumes nothing (every interruption ends the client's stream).
    ///
    /// [`GiveUpReason::MaxResumes`]: crate::resume::GiveUpReason::MaxResumes
    ///
    /// ```
    /// use tower_sse::ResumeLayer;
    ///
    /// let layer = ResumeLayer::new().max_resumes(20);
    /// # let _ = layer;
    /// ```
    pub const fn max_resumes(mut self, resumes: u32) -> Self {
        self.config.max_resumes = resumes;
        self
    }

    /// Moves each wait by a random amount within ±`fraction` of it, so that the streams of a
    /// restarted upstream do not all ask again in the same millisecond.
    ///
    /// Default: 0.5 (a 3 s wait becomes 1.5–4.5 s). Clamped to `0.0..=1.0`; zero waits exactly.
    ///
    /// ```
    /// use tower_sse::ResumeLayer;
    ///
    /// let layer = ResumeLayer::new().jitter(0.2);
    /// # let _ = layer;
    /// ```
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.config.jitter = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// Counts into `metrics` (shared with other layers) rather than the layer's own handle.
    ///
    /// ```
    /// use tower_sse::{ResumeLayer, ResumeMetrics};
    ///
    /// let metrics = ResumeMetrics::new();
    /// let a = ResumeLayer::new().metrics(metrics.clone());
    /// let b = ResumeLayer::new().metrics(metrics.clone());
    /// # let _ = (a, b);
    /// ```
    pub fn metrics(mut self, metrics: ResumeMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The handle to this layer's counters.
    pub fn metrics_handle(&self) -> ResumeMetrics {
        self.metrics.clone()
    }
}

impl<S> Layer<S> for ResumeLayer {
    type Service = ResumeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResumeService::from_config(inner, self.config, self.metrics.clone())
    }
}
