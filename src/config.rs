//! The layer's configuration: plain values, cheap to copy per stream, shared behind an `Arc`.

use std::time::Duration;

use bytes::Bytes;

use crate::backpressure::SlowClient;
use crate::metrics::SseMetrics;
use crate::scanner::LineEnd;
use crate::shutdown::SseShutdown;

/// Default heartbeat interval: below nginx's and AWS ALB's 60 s, Cloudflare's 100 s and
/// Tomcat's 30 s idle limits, with room to spare.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// The most a heartbeat is let run late by default, so that heartbeats of many streams go out
/// together (`SseLayer::heartbeat_slack`); by default the slack is a tenth of the interval, at
/// most this.
pub(crate) const MAX_DEFAULT_HEARTBEAT_SLACK: Duration = Duration::from_secs(1);
/// Default `retry:` hint.
pub(crate) const DEFAULT_RETRY: Duration = Duration::from_secs(3);
/// Default fraction of the maximum lifetime a stream may end early by (80–100 %).
pub(crate) const DEFAULT_LIFETIME_JITTER: f64 = 0.2;
/// Default time a stream being closed waits for an event boundary before it is cut.
pub(crate) const DEFAULT_CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Default window over which a drain spreads the ends of streams.
pub(crate) const DEFAULT_DRAIN_WINDOW: Duration = Duration::from_secs(10);
/// Jitter of the `retry:` hint sent on a drain, whatever the configured jitter.
pub(crate) const DRAIN_RETRY_JITTER: f64 = 0.2;

/// The configuration a layer hands to each of its services and streams.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) settings: Settings,
    /// `:` + comment + LF, and the same ending with CR.
    pub(crate) heartbeat_lf: Bytes,
    pub(crate) heartbeat_cr: Bytes,
    /// How late a heartbeat may go out (`SseLayer::heartbeat_slack`); `None`: a tenth of the
    /// interval, at most [`MAX_DEFAULT_HEARTBEAT_SLACK`].
    pub(crate) heartbeat_slack: Option<Duration>,
    /// `:` + comment + LF, written first on every stream.
    pub(crate) initial_comment: Option<Bytes>,
    pub(crate) shutdown: Option<SseShutdown>,
    pub(crate) metrics: SseMetrics,
    pub(crate) bypass_compression: bool,
    /// The layer's own compression of event streams (`SseLayer::compress`).
    pub(crate) compression: Option<crate::compress::Compression>,
    /// Used by layers in the [`Buffered`](crate::Buffered) mode.
    pub(crate) slow_client: Option<SlowClient>,
}

/// The per-stream part of the configuration, which a [`SseOverride`](crate::SseOverride) can
/// change for one response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Settings {
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) retry: Option<Duration>,
    pub(crate) retry_jitter: f64,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) lifetime_jitter: f64,
    pub(crate) close_grace: Duration,
    pub(crate) drain_window: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            settings: Settings {
                heartbeat: Some(DEFAULT_HEARTBEAT),
                retry: Some(DEFAULT_RETRY),
                retry_jitter: 0.0,
                idle_timeout: None,
                max_lifetime: None,
                lifetime_jitter: DEFAULT_LIFETIME_JITTER,
                close_grace: DEFAULT_CLOSE_GRACE,
                drain_window: DEFAULT_DRAIN_WINDOW,
            },
            heartbeat_lf: Bytes::from_static(b":\n"),
            heartbeat_cr: Bytes::from_static(b":\r"),
            heartbeat_slack: None,
            initial_comment: None,
            shutdown: None,
            metrics: SseMetrics::new(),
            bypass_compression: true,
            compression: None,
            slow_client: None,
        }
    }
}

impl Config {
    /// How late a heartbeat due every `interval` may go out.
    pub(crate) fn heartbeat_slack(&self, interval: Duration) -> Duration {
        self.heartbeat_slack
            .unwrap_or_else(|| (interval / 10).min(MAX_DEFAULT_HEARTBEAT_SLACK))
    }

    pub(crate) fn heartbeat_line(&self, end: LineEnd) -> Bytes {
        match end {
            LineEnd::Lf => self.heartbeat_lf.clone(),
            LineEnd::Cr => self.heartbeat_cr.clone(),
        }
    }
}

/// One change to the per-stream settings: what the shared builder methods of
/// [`SseLayer`](crate::SseLayer) and [`SseOverride`](crate::SseOverride) make (see
/// `macros::stream_options`). Values are normalized when the change is made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Change {
    Heartbeat(Option<Duration>),
    Retry(Option<Duration>),
    RetryJitter(f64),
    IdleTimeout(Option<Duration>),
    MaxLifetime(Option<Duration>),
    LifetimeJitter(f64),
    CloseGrace(Duration),
    DrainWindow(Duration),
}

impl Change {
    /// How many kinds of change there are.
    pub(crate) const KINDS: usize = 8;

    /// Which setting the change is to, in `0..KINDS`.
    pub(crate) const fn kind(self) -> usize {
        match self {
            Self::Heartbeat(_) => 0,
            Self::Retry(_) => 1,
            Self::RetryJitter(_) => 2,
            Self::IdleTimeout(_) => 3,
            Self::MaxLifetime(_) => 4,
            Self::LifetimeJitter(_) => 5,
            Self::CloseGrace(_) => 6,
            Self::DrainWindow(_) => 7,
        }
    }

    pub(crate) const fn apply(self, settings: &mut Settings) {
        match self {
            Self::Heartbeat(interval) => settings.heartbeat = interval,
            Self::Retry(delay) => settings.retry = delay,
            Self::RetryJitter(fraction) => settings.retry_jitter = fraction,
            Self::IdleTimeout(limit) => settings.idle_timeout = limit,
            Self::MaxLifetime(lifetime) => settings.max_lifetime = lifetime,
            Self::LifetimeJitter(fraction) => settings.lifetime_jitter = fraction,
            Self::CloseGrace(grace) => settings.close_grace = grace,
            Self::DrainWindow(window) => settings.drain_window = window,
        }
    }
}

/// `None` for a zero duration: a zero interval, limit or lifetime means "off".
pub(crate) fn non_zero(duration: Duration) -> Option<Duration> {
    (!duration.is_zero()).then_some(duration)
}

/// Clamps a jitter fraction into `0.0..=1.0` (NaN counts as zero).
pub(crate) fn clamp_fraction(fraction: f64) -> f64 {
    if fraction.is_nan() {
        0.0
    } else {
        fraction.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_change_has_its_own_slot() {
        let d = Duration::from_secs(1);
        let all = [
            Change::Heartbeat(None),
            Change::Retry(None),
            Change::RetryJitter(0.0),
            Change::IdleTimeout(None),
            Change::MaxLifetime(None),
            Change::LifetimeJitter(0.0),
            Change::CloseGrace(d),
            Change::DrainWindow(d),
        ];
        let mut kinds: Vec<usize> = all.iter().map(|c| c.kind()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds, (0..Change::KINDS).collect::<Vec<_>>());
    }

    #[test]
    fn the_default_heartbeat_slack_is_a_tenth_of_the_interval_at_most_one_second() {
        let mut config = Config::default();
        let s = Duration::from_secs;
        assert_eq!(config.heartbeat_slack(DEFAULT_HEARTBEAT), s(1));
        assert_eq!(config.heartbeat_slack(s(5)), Duration::from_millis(500));
        assert_eq!(
            config.heartbeat_slack(Duration::from_millis(10)),
            Duration::from_millis(1)
        );
        config.heartbeat_slack = Some(Duration::ZERO);
        assert_eq!(config.heartbeat_slack(DEFAULT_HEARTBEAT), Duration::ZERO);
        config.heartbeat_slack = Some(s(3));
        assert_eq!(config.heartbeat_slack(s(5)), s(3));
    }

    #[test]
    fn odd_fractions_are_clamped() {
        assert_eq!(clamp_fraction(f64::NAN), 0.0);
        assert_eq!(clamp_fraction(-1.0), 0.0);
        assert_eq!(clamp_fraction(7.0), 1.0);
        assert_eq!(clamp_fraction(0.25), 0.25);
    }
}
