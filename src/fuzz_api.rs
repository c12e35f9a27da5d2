//! The crate's internals, as thin wrappers, for the fuzz targets in `fuzz/` and the scanner bench.
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
