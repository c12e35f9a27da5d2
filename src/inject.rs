//! The lines the layer writes itself: comments (heartbeats, the initial comment) and `retry:`
//! hints. Heartbeat lines are built once per layer; a `retry:` line once per stream end or start.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::jitter::jittered_millis;
use crate::scanner::LineEnd;

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
}
