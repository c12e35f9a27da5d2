//! The layer's configuration: plain values, cheap to copy per stream, shared behind an `Arc`.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::backpressure::SlowClient;
use crate::metrics::SseMetrics;
use crate::scanner::LineEnd;
use crate::shutdown::SseShutdown;

/// Default heartbeat interval: below nginx's and AWS ALB's 60 s, Cloudflare's 100 s and
/// Tomcat's 30 s idle limits, with room to spare.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
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
    /// `:` + comment + LF, written first on every stream.
    pub(crate) initial_comment: Option<Bytes>,
    pub(crate) shutdown: Option<SseShutdown>,
    pub(crate) metrics: SseMetrics,
    pub(crate) bypass_compression: bool,
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
            initial_comment: None,
            shutdown: None,
            metrics: SseMetrics::new(),
            bypass_compression: true,
            slow_client: None,
        }
    }
}

impl Config {
    pub(crate) fn heartbeat_line(&self, end: LineEnd) -> Bytes {
        match end {
            LineEnd::Lf => self.heartbeat_lf.clone(),
            LineEnd::Cr => self.heartbeat_cr.clone(),
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

/// A `:`-comment line with the given ending.
pub(crate) fn comment_line(text: &str, end: LineEnd) -> Bytes {
    let mut line = BytesMut::with_capacity(text.len() + 2);
    line.put_u8(b':');
    line.put_slice(text.as_bytes());
    line.put_u8(end_byte(end));
    line.freeze()
}

/// A `retry:` line for `duration` with `jitter` (a fraction: ±jitter of the value), in whole
/// milliseconds: ASCII digits only (I5).
pub(crate) fn retry_line(duration: Duration, jitter: f64, end: LineEnd) -> Bytes {
    let millis = jittered_millis(duration, jitter);
    let mut line = BytesMut::with_capacity(32);
    line.put_slice(b"retry: ");
    line.put_slice(millis.to_string().as_bytes());
    line.put_u8(end_byte(end));
    line.freeze()
}

const fn end_byte(end: LineEnd) -> u8 {
    match end {
        LineEnd::Lf => b'\n',
        LineEnd::Cr => b'\r',
    }
}

/// `duration` in milliseconds, moved by a random amount within ±`jitter` of itself.
pub(crate) fn jittered_millis(duration: Duration, jitter: f64) -> u64 {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if jitter <= 0.0 {
        return millis;
    }
    // `millis as f64` loses precision only above 2^53 ms (285,000 years).
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "the value is finite, non-negative and far below u64::MAX"
    )]
    let jittered = (millis as f64 * (1.0 + jitter * (2.0 * random_unit() - 1.0))).round() as u64;
    jittered
}

/// `duration` shortened by a random fraction of at most `jitter` (for lifetimes: 80–100 %).
pub(crate) fn shortened(duration: Duration, jitter: f64) -> Duration {
    duration.mul_f64(1.0 - jitter * random_unit())
}

/// A uniformly distributed value in `0.0..1.0`, from a per-process random seed and a counter
/// (splitmix64). Good enough to spread reconnects; not for anything secret.
pub(crate) fn random_unit() -> f64 {
    use std::collections::hash_map::RandomState;
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| RandomState::new().hash_one(0x5EED_u64));
    let mut z = seed.wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    #[expect(
        clippy::cast_precision_loss,
        reason = "53 random bits scaled into a float"
    )]
    let unit = (z >> 11) as f64 / (1_u64 << 53) as f64;
    unit
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_lines_are_digits_only() {
        assert_eq!(
            retry_line(Duration::from_millis(3000), 0.0, LineEnd::Lf),
            "retry: 3000\n"
        );
        assert_eq!(
            retry_line(Duration::from_micros(1500), 0.0, LineEnd::Cr),
            "retry: 1\r"
        );
        for _ in 0..1000 {
            let line = retry_line(Duration::from_millis(1000), 0.2, LineEnd::Lf);
            let digits = &line[7..line.len() - 1];
            assert!(digits.iter().all(u8::is_ascii_digit), "{line:?}");
            let value: u64 = std::str::from_utf8(digits).unwrap().parse().unwrap();
            assert!((800..=1200).contains(&value), "{value}");
        }
    }

    #[test]
    fn random_units_are_in_range_and_spread() {
        let values: Vec<f64> = (0..10_000).map(|_| random_unit()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let below_half = values.iter().filter(|v| **v < 0.5).count();
        assert!((4_000..6_000).contains(&below_half), "{below_half}");
    }

    #[test]
    fn lifetimes_shorten_within_the_jitter() {
        for _ in 0..1000 {
            let d = shortened(Duration::from_secs(100), 0.2);
            assert!(d >= Duration::from_secs(80) && d <= Duration::from_secs(100));
        }
    }

    #[test]
    fn odd_fractions_are_clamped() {
        assert_eq!(clamp_fraction(f64::NAN), 0.0);
        assert_eq!(clamp_fraction(-1.0), 0.0);
        assert_eq!(clamp_fraction(7.0), 1.0);
        assert_eq!(clamp_fraction(0.25), 0.25);
    }
}
