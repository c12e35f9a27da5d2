//! Checks over the crate's internals for the fuzz targets in `fuzz/` (see `fuzz/README.md`).
//!
//! Compiled only with `--cfg fuzzing`, which `cargo fuzz` sets; hidden, not part of the API.
//! The functions accept any input and panic only when an invariant of `SSE-RULES.md` is broken.
//! What they check through the public layer instead (runnable on stable) lives in
//! `fuzz/src/checks.rs`, which `tests/fuzz_seeds.rs` replays the seeds through.

use http::HeaderMap;

use crate::headers::fix_event_stream_headers;
use crate::scanner::{LineEnd, Scanner, bom_prefix};

#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#[path = "../test-support/src/sse_parser.rs"]
mod sse_parser;

#[allow(unreachable_pub, clippy::panic)]
#[path = "../fuzz/src/header_rules.rs"]
mod header_rules;

#[allow(dead_code, unreachable_pub)]
#[path = "../fuzz/src/seed.rs"]
mod seed;

use seed::split;
use sse_parser::{Parser, parse};

const BOM: &[u8] = b"\xEF\xBB\xBF";
const HEARTBEAT_LF: &[u8] = b":hb\n";
const HEARTBEAT_CR: &[u8] = b":hb\r";
/// Frames after which the per-frame checks (that clone the reference parser) stop, to keep
/// inputs with thousands of frames fast.
const CHECKED_FRAMES: usize = 128;

/// Feeds `data`, split at `cuts` (clamped, any order), to the framing scanner and injects a
/// heartbeat wherever it allows one: before the first frame when `inject_first` (as a `retry:`
/// hint is), and after every frame, like the layer when the upstream pauses there.
///
/// Asserts that:
/// - a line is injected exactly where the client is at a line start (I2), ending with CR exactly
///   when the client's last byte is a CR (whose LF may follow), never mid-line or inside a BOM;
/// - the output minus the injected lines is the input, minus a leading BOM when something was
///   injected before it (I4, I8b), and it parses to the same events and retry values (I1);
/// - the scanner's event count and event boundaries agree with the reference parser, and its
///   reported boundary offsets follow a line-ending byte.
pub fn check_scanner(data: &[u8], cuts: &[usize], inject_first: bool) {
    let mut relay = Relay::default();
    if inject_first {
        relay.inject();
    }
    for (index, frame) in split(data, cuts).into_iter().enumerate() {
        relay.feed(frame, index < CHECKED_FRAMES);
        relay.inject();
    }
    let held = relay.scanner.finish();
    relay.push_upstream(bom_prefix(held));

    let expected_upstream = match data.strip_prefix(BOM) {
        Some(rest) if relay.injected_first => rest,
        _ => data,
    };
    assert_eq!(
        relay.upstream, expected_upstream,
        "the output minus the injected lines is not the input"
    );
    let expected = parse(data);
    let got = parse(&relay.out);
    assert_eq!(
        got.triples(),
        expected.triples(),
        "I1: events changed; output {:?}",
        String::from_utf8_lossy(&relay.out)
    );
    assert_eq!(got.retries, expected.retries, "retry values changed");
    assert_eq!(
        relay.counted,
        expected.events.len() as u64,
        "the scanner counted another number of events"
    );
}

/// Builds a header map from the valid pairs of `pairs`, fixes it as an event stream's headers
/// for the HTTP version `version` stands for (0.9, 1.0, 1.1, 2, 3, modulo 5), twice.
///
/// Asserts that fixing never panics, is idempotent, and gives one `Cache-Control` with
/// `no-cache` and `no-transform` that keeps the original directives, `X-Accel-Buffering`
/// (the application's or `no`), no `Content-Length`, no connection-specific header on HTTP/2
/// and HTTP/3, and every other header untouched.
pub fn check_headers(pairs: &[(Vec<u8>, Vec<u8>)], version: u8) {
    let version = header_rules::version(version);
    let before: HeaderMap = header_rules::header_map(pairs);
    let mut once = before.clone();
    fix_event_stream_headers(&mut once, version);
    header_rules::assert_fixed(&before, &once, version);
    let mut twice = once.clone();
    fix_event_stream_headers(&mut twice, version);
    assert_eq!(once, twice, "fixing the headers is not idempotent");
}

/// The scanner, the output as a client reads it, and what the checks need to know.
#[derive(Default)]
struct Relay {
    scanner: Scanner,
    /// Everything written: upstream bytes and injected lines.
    out: Vec<u8>,
    /// The upstream's bytes as written (the output minus the injected lines).
    upstream: Vec<u8>,
    /// Some upstream byte has been fed.
    upstream_started: bool,
    /// A line was injected before the upstream's first byte.
    injected_first: bool,
    /// The upstream fed so far, for the per-frame checks.
    parser: Parser,
    counted: u64,
    boundaries: Vec<usize>,
}

impl Relay {
    /// What the client has read so far, after the one BOM it skips at the stream start.
    fn view(&self) -> &[u8] {
        self.out.strip_prefix(BOM).unwrap_or(&self.out)
    }

    fn inject(&mut self) {
        let view = self.view();
        let at_line_start = view.is_empty() || matches!(view.last(), Some(b'\n' | b'\r'));
        let after_cr = view.last() == Some(&b'\r');
        match self.scanner.injection() {
            None => assert!(
                !at_line_start,
                "a heartbeat is refused at a line start: {:?}",
                String::from_utf8_lossy(&self.out)
            ),
            Some(end) => {
                assert!(
                    at_line_start,
                    "I2: injection mid-line: {:?}",
                    String::from_utf8_lossy(&self.out)
                );
                assert_eq!(
                    end == LineEnd::Cr,
                    after_cr,
                    "I2: injected line ends with {end:?} after {:?}",
                    String::from_utf8_lossy(&self.out)
                );
                self.out.extend_from_slice(match end {
                    LineEnd::Lf => HEARTBEAT_LF,
                    LineEnd::Cr => HEARTBEAT_CR,
                });
                self.scanner.injected();
                if !self.upstream_started {
                    self.injected_first = true;
                }
            }
        }
    }

    fn feed(&mut self, frame: &[u8], check: bool) {
        let mut boundaries = std::mem::take(&mut self.boundaries);
        boundaries.clear();
        let feed = self
            .scanner
            .feed_with_boundaries(frame, |at| boundaries.push(at));
        self.counted += u64::from(feed.events);
        assert!(feed.release <= 2, "released {} BOM bytes", feed.release);
        let kept = frame.get(feed.skip..);
        assert!(kept.is_some(), "skip {} past the frame", feed.skip);
        assert!(
            feed.release == 0 || feed.skip == 0,
            "a frame both releases and skips BOM bytes"
        );
        let mut last = 0;
        for &at in &boundaries {
            assert!(
                at > last && matches!(frame.get(at - 1), Some(b'\r' | b'\n')),
                "boundary {at} of {boundaries:?} in {frame:?} follows no line ending"
            );
            last = at;
        }
        self.boundaries = boundaries;
        self.push_upstream(bom_prefix(feed.release));
        self.push_upstream(kept.unwrap_or_default());
        if !frame.is_empty() {
            self.upstream_started = true;
        }
        self.parser.feed(frame);

        if check {
            let so_far = self.parser.clone().finish();
            assert_eq!(
                self.counted,
                so_far.events.len() as u64,
                "the scanner's event count is behind or ahead of the parser"
            );
            if self.scanner.at_event_boundary() {
                // Nothing is open: a blank line here would dispatch nothing.
                let mut blank = self.parser.clone();
                blank.feed(b"\n");
                assert_eq!(
                    blank.finish().events.len(),
                    so_far.events.len(),
                    "an event boundary inside an event"
                );
            }
        }
    }

    fn push_upstream(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        self.upstream.extend_from_slice(bytes);
    }
}
