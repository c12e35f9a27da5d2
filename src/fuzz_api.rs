//! The crate's internals, as thin wrappers, for the fuzz targets in `fuzz/` and the scanner bench:
//! the framing scanner, header fixing and the resume layer's tracker.
//!
//! Hidden and not part of the API: compiled only with `--cfg fuzzing` (which `cargo fuzz` sets
//! for every crate it builds) or the unstable feature `__internals`. It uses nothing outside
//! `src/`, so the published crate builds with `--cfg fuzzing` too. The checks that drive these
//! wrappers (with the reference SSE parser) live in the `tower-sse-test-support` crate of the
//! repository (`test-support/src/checks.rs`).

use http::{HeaderMap, Version};

use crate::scanner;

/// The line ending an injected line must use at the scanner's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineEnd {
    /// At a line start: end the injected line with LF.
    Lf,
    /// Right after a CR whose next byte has not arrived: end the injected line with CR.
    Cr,
}

/// What the body must do with a data frame after the scanner has seen it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Feed {
    /// Bytes of a leading BOM held from earlier frames that turned out not to be a BOM: emit
    /// `bom_prefix(release)` before this frame.
    pub release: u8,
    /// Bytes at the start of this frame that belong to a removed BOM: drop them.
    pub skip: usize,
    /// Events this frame completed.
    pub events: u32,
}

impl From<scanner::Feed> for Feed {
    #[inline]
    fn from(feed: scanner::Feed) -> Self {
        Self {
            release: feed.release,
            skip: feed.skip,
            events: feed.events,
        }
    }
}

/// The framing scanner the body runs over the upstream's bytes.
#[derive(Debug, Clone, Default)]
pub struct Scanner(scanner::Scanner);

impl Scanner {
    /// A scanner at the start of a stream.
    #[must_use]
    pub const fn new() -> Self {
        Self(scanner::Scanner::new())
    }

    /// Where a line may be injected now, and with which ending; `None` mid-line.
    #[inline]
    #[must_use]
    pub fn injection(&self) -> Option<LineEnd> {
        self.0.injection().map(|end| match end {
            scanner::LineEnd::Lf => LineEnd::Lf,
            scanner::LineEnd::Cr => LineEnd::Cr,
        })
    }

    /// Whether the stream is at an event boundary: at a line start with no event open.
    #[inline]
    #[must_use]
    pub fn at_event_boundary(&self) -> bool {
        self.0.at_event_boundary()
    }

    /// Records that the layer wrote a line.
    #[inline]
    pub fn injected(&mut self) {
        self.0.injected();
    }

    /// At the upstream's end: BOM bytes still held, to be emitted.
    #[inline]
    pub fn finish(&mut self) -> u8 {
        self.0.finish()
    }

    /// Advances over one data frame of the upstream.
    #[inline]
    pub fn feed(&mut self, chunk: &[u8]) -> Feed {
        self.0.feed(chunk).into()
    }

    /// [`feed`](Self::feed), also calling `boundary(offset)` for every event boundary in `chunk`.
    #[inline]
    pub fn feed_with_boundaries(&mut self, chunk: &[u8], boundary: impl FnMut(usize)) -> Feed {
        self.0.feed_with_boundaries(chunk, boundary).into()
    }
}

/// The BOM's first `n` bytes (for [`Feed::release`] and [`Scanner::finish`]).
#[must_use]
pub fn bom_prefix(n: u8) -> &'static [u8] {
    scanner::bom_prefix(n)
}

/// Fixes an event stream's response headers for `version`, as the layer does.
pub fn fix_event_stream_headers(headers: &mut HeaderMap, version: Version) {
    crate::headers::fix_event_stream_headers(headers, version);
}

/// What the resume layer's tracker says of one data frame (the tracker's own `Feed`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackerFeed {
    /// Bytes of a removed leading BOM held from earlier frames that turned out not to be one.
    pub release: u8,
    /// Bytes at the start of this frame that belong to a removed BOM.
    pub skip: usize,
    /// Events this frame dispatched.
    pub events: u32,
    /// The offset just after the last event boundary inside this frame, if any.
    pub boundary: Option<usize>,
}

/// The resume layer's tracker: event boundaries, the client's last event id and the upstream's
/// `retry:` value, with its two paths exposed so that a check can compare them.
#[derive(Debug, Clone)]
pub struct ResumeTracker(crate::resume::tracker::Tracker);

impl ResumeTracker {
    /// A tracker at the start of a stream; ids longer than `max_id` bytes are not kept.
    #[must_use]
    pub fn new(max_id: usize) -> Self {
        Self(crate::resume::tracker::Tracker::new(max_id))
    }

    /// The one-pass path: `Some(events)` when it takes the frame (a frame of whole events),
    /// `None`, the state untouched, otherwise.
    #[inline]
    pub fn whole_events(&mut self, chunk: &[u8]) -> Option<u32> {
        self.0.whole_events(chunk)
    }

    /// The line-by-line path, which takes any frame.
    #[inline]
    pub fn feed_lines(&mut self, chunk: &[u8]) -> TrackerFeed {
        let feed = self.0.feed_lines(chunk);
        TrackerFeed {
            release: feed.release,
            skip: feed.skip,
            events: feed.events,
            boundary: feed.boundary,
        }
    }

    /// The client's last event id: `None` before any, `Some(Err(()))` when it was too long.
    #[must_use]
    pub fn last_id(&self) -> Option<Result<&[u8], ()>> {
        self.0.last_id()
    }

    /// The upstream's last valid `retry:` value, in milliseconds.
    #[must_use]
    pub fn retry(&self) -> Option<u64> {
        self.0.retry()
    }

    /// Whether everything fed so far ends at an event boundary.
    #[must_use]
    pub fn at_boundary(&self) -> bool {
        self.0.at_boundary()
    }
}
