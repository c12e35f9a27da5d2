//! Random spreads: jittered `retry:` values and lifetimes, so that a fleet of clients does not
//! reconnect in the same millisecond.

use std::time::Duration;

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
}
