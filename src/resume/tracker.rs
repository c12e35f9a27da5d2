//! The resume tracker: event boundaries, the last event id and the upstream's `retry:` value, as
//! a client following the [WHATWG rules] would see them.
//!
//! It is fed every data frame of the upstream and answers, at each frame boundary: *is the client
//! at an event boundary* (whole events only were handed on), *where was the last boundary in this
//! frame* (to hold an incomplete event's bytes), *what is the client's last event id* (the `id`
//! buffer as of the last blank line) and *what did the last valid `retry` field say*.
//!
//! The [`Scanner`](crate::scanner::Scanner) of the SSE layer does not keep `id` values, so this is
//! a small parser of its own, with the same shape: O(1) state besides the id value, `memchr` to the
//! end of each line, no copy of anything but `id` values.
//!
//! The rules it follows (see `docs/rules.md`, I10):
//!
//! - Lines end with CRLF, LF or a lone CR; a CR at the end of one frame and an LF at the start of
//!   the next are one line ending.
//! - An `id` field whose value has no NUL sets the id buffer; the client's last event id takes the
//!   buffer's value at the next blank line (dispatch), whether an event is dispatched or not.
//! - A `retry` field made of ASCII digits only sets the reconnection time at once.
//! - An event boundary is a line start (or the point right after a CR) with no field line since the
//!   last blank line; a comment line does not open an event, a partial one is still mid-line.
//! - A U+FEFF BOM is skipped as the stream's first bytes. A spliced body's leading BOM is removed
//!   (the client's stream did not start there): the tracker then reports its bytes to skip, as the
//!   scanner does (a prefix of it is held until the next byte tells whether it is one).
//!
//! [WHATWG rules]: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

use crate::scanner::{BomMatch, match_bom};

/// The field names the tracker cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Data,
    Id,
    Retry,
}

impl Field {
    const fn name(self) -> &'static [u8] {
        match self {
            Self::Data => b"data",
            Self::Id => b"id",
            Self::Retry => b"retry",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Start,
    /// Right after a CR: a following LF belongs to the same line ending.
    Cr,
    /// Inside a field name that has matched the first `n` bytes of `field`'s name.
    Name(Field, u8),
    /// Inside the value of `field`; `true` while a leading space may still be dropped.
    Value(Field, bool),
    /// Inside a comment or a field line whose value does not matter.
    Skip,
}

/// What the body must do with a data frame after the tracker has seen it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Feed {
    /// Bytes of a removed leading BOM held from earlier frames that turned out not to be a BOM:
    /// hand on `bom_prefix(release)` before this frame.
    pub(crate) release: u8,
    /// Bytes at the start of this frame that belong to a removed BOM: drop them.
    pub(crate) skip: usize,
    /// Events this frame dispatched (blank lines after at least one `data` field).
    pub(crate) events: u32,
    /// The offset just after the last event boundary inside this frame, if any.
    pub(crate) boundary: Option<usize>,
}

/// The offset of the first CR or LF in `bytes` from `from`; `short`: the line is likely short.
fn line_end(bytes: &[u8], from: usize, short: bool) -> Option<usize> {
    const SHORT: usize = 16;
    let rest = bytes.get(from..)?;
    if !short {
        return memchr::memchr2(b'\r', b'\n', rest).map(|offset| from + offset);
    }
    // Short lines (ids) are found faster by hand than by a vectorised search.
    for (offset, &byte) in rest.iter().take(SHORT).enumerate() {
        if byte == b'\n' || byte == b'\r' {
            return Some(from + offset);
        }
    }
    let long = rest.get(SHORT..)?;
    memchr::memchr2(b'\r', b'\n', long).map(|offset| from + SHORT + offset)
}

/// One id value.
#[derive(Debug, Clone)]
struct Slot {
    value: Vec<u8>,
    /// Longer than `max_id`: not kept.
    long: bool,
}

impl Slot {
    const fn new() -> Self {
        Self {
            value: Vec::new(),
            long: false,
        }
    }
}

/// The tracker's state.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    line: Line,
    /// A field line has been seen since the last blank line.
    open: bool,
    /// A `data` field has been seen since the last blank line.
    data: bool,
    /// `Some(n)`: at a body's start, its first `n` bytes being a BOM prefix.
    bom: Option<u8>,
    /// A leading BOM is removed (a spliced body), rather than handed on.
    strip_bom: bool,
    /// Three id values: the client's last event id, the id buffer, and the `id` line being read
    /// are each one of them (the first two often the same); an id is copied once, from its frame
    /// into its slot, and moves by index.
    slots: [Slot; 3],
    /// The slot of the `id` line being read.
    reading: usize,
    /// The slot of the id buffer: `None` until an `id` field set it.
    buffer: Option<usize>,
    /// The slot of the client's last event id (the buffer at the last dispatch).
    last: Option<usize>,
    /// The `id` line being read holds a NUL (it is ignored).
    nul: bool,
    /// The value of the `retry` line being read (`None`: not only digits).
    retry_value: Option<u64>,
    retry_digits: bool,
    /// The last valid `retry` value, in milliseconds.
    retry: Option<u64>,
    max_id: usize,
}

impl Tracker {
    /// Creates a new [`Tracker`] at the start of a stream; ids longer than `max_id` bytes are not
    /// kept (the stream cannot be resumed after one).
    pub(crate) const fn new(max_id: usize) -> Self {
        Self {
            line: Line::Start,
            open: false,
            data: false,
            bom: Some(0),
            strip_bom: false,
            slots: [Slot::new(), Slot::new(), Slot::new()],
            reading: 0,
            buffer: None,
            last: None,
            nul: false,
            retry_value: None,
            retry_digits: false,
            retry: None,
            max_id,
        }
    }

    /// The client's last event id: `None` when no `id` field has taken effect, `Some(Err(()))`
    /// when the last one was too long to keep.
    pub(crate) fn last_id(&self) -> Option<Result<&[u8], ()>> {
        let slot = self.slots.get(self.last?)?;
        Some(if slot.long {
            Err(())
        } else {
            Ok(slot.value.as_slice())
        })
    }

    /// The last valid `retry` value of the upstream, in milliseconds.
    pub(crate) const fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Whether everything fed so far ends at an event boundary.
    pub(crate) fn at_boundary(&self) -> bool {
        !self.open && self.bom.is_none_or(|n| n == 0) && matches!(self.line, Line::Start | Line::Cr)
    }

    /// Forgets what was fed after the last event boundary (its bytes were never handed on) and
    /// starts a new body whose leading BOM is removed.
    pub(crate) fn splice(&mut self) {
        self.line = Line::Start;
        self.open = false;
        self.data = false;
        self.bom = Some(0);
        self.strip_bom = true;
        self.buffer = self.last;
    }

    /// At a body's end: the bytes of a removed BOM's prefix still held, to be handed on.
    pub(crate) fn finish(&mut self) -> u8 {
        match self.bom.take() {
            Some(held) if self.strip_bom => held,
            _ => 0,
        }
    }

    /// Advances over one data frame.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Feed {
        let mut feed = Feed::default();
        let mut start = 0;
        if let Some(held) = self.bom {
            match match_bom(held, chunk) {
                BomMatch::Whole { taken } => {
                    // A whole BOM: the stream proper starts after it.
                    self.bom = None;
                    if self.strip_bom {
                        feed.skip = taken;
                    }
                    start = taken;
                }
                BomMatch::Prefix { matched } => {
                    // Still a BOM prefix (or an empty frame): hold or hand on, and wait.
                    self.bom = Some(matched);
                    if self.strip_bom {
                        feed.skip = chunk.len();
                    }
                    return feed;
                }
                BomMatch::Not { matched, taken } => {
                    // Not a BOM: the bytes matched so far are text of the first line.
                    self.bom = None;
                    if self.strip_bom {
                        feed.release = held;
                    }
                    if matched > 0 {
                        self.open = true;
                        self.line = Line::Skip;
                    }
                    start = taken;
                }
            }
        }
        self.scan(chunk, start, &mut feed);
        feed
    }

    fn scan(&mut self, bytes: &[u8], mut i: usize, feed: &mut Feed) {
        while let Some(&byte) = bytes.get(i) {
            match self.line {
                Line::Cr => {
                    if byte == b'\n' {
                        i += 1;
                        if !self.open {
                            feed.boundary = Some(i);
                        }
                    }
                    self.line = Line::Start;
                }
                Line::Start => {
                    let after = self.whole_lines(bytes, i, feed);
                    if after != i {
                        i = after;
                        continue;
                    }
                    i += 1;
                    match byte {
                        b'\n' | b'\r' => {
                            self.dispatch(feed);
                            feed.boundary = Some(i);
                            if byte == b'\r' {
                                self.line = Line::Cr;
                            }
                        }
                        b':' => self.line = Line::Skip,
                        b'i' if bytes.get(i..i + 2) == Some(b"d:") => {
                            // `id:` in one comparison.
                            self.open = true;
                            i += 2;
                            self.begin_value(Field::Id);
                        }
                        b'd' if bytes.get(i..i + 4) == Some(b"ata:") => {
                            // The common case in one comparison: a `data:` line.
                            self.open = true;
                            self.data = true;
                            self.line = Line::Skip;
                            i += 4;
                        }
                        _ => {
                            self.open = true;
                            self.line = match byte {
                                b'd' => Line::Name(Field::Data, 1),
                                b'i' => Line::Name(Field::Id, 1),
                                b'r' => Line::Name(Field::Retry, 1),
                                _ => Line::Skip,
                            };
                        }
                    }
                }
                Line::Name(field, matched) => {
                    let name = field.name();
                    if usize::from(matched) == name.len() {
                        match byte {
                            b':' => {
                                i += 1;
                                self.begin_value(field);
                            }
                            b'\r' | b'\n' => {
                                // A field with an empty value.
                                self.begin_value(field);
                                self.end_value(field);
                                i = self.end_line(bytes, i, feed);
                            }
                            _ => self.line = Line::Skip,
                        }
                    } else if name.get(usize::from(matched)) == Some(&byte) {
                        i += 1;
                        self.line = Line::Name(field, matched + 1);
                    } else {
                        self.line = Line::Skip;
                    }
                }
                Line::Value(field, space) => {
                    let mut from = i;
                    if space {
                        if byte == b' ' {
                            from += 1;
                        }
                        self.line = Line::Value(field, false);
                    }
                    let rest = bytes.get(from..).unwrap_or_default();
                    let end = memchr::memchr2(b'\r', b'\n', rest).map(|offset| from + offset);
                    let value = bytes
                        .get(from..end.unwrap_or(bytes.len()))
                        .unwrap_or_default();
                    self.value(field, value);
                    match end {
                        Some(end) => {
                            self.end_value(field);
                            i = self.end_line(bytes, end, feed);
                        }
                        None => i = bytes.len(),
                    }
                }
                Line::Skip => {
                    let rest = bytes.get(i..).unwrap_or_default();
                    match memchr::memchr2(b'\r', b'\n', rest) {
                        Some(offset) => i = self.end_line(bytes, i + offset, feed),
                        None => i = bytes.len(),
                    }
                }
            }
        }
    }

    /// The common lines, each whole in `bytes` from the line start `i` (`data:`, `id:`, comments
    /// and blank lines), in one tight loop. Returns where the state machine goes on: at a line
    /// start (with `self.line` still `Start`), or after a CR that ends `bytes` (`Cr`).
    fn whole_lines(&mut self, bytes: &[u8], mut i: usize, feed: &mut Feed) -> usize {
        loop {
            let Some(&first) = bytes.get(i) else {
                return i;
            };
            let (from, id) = match first {
                b'\n' | b'\r' => {
                    self.dispatch(feed);
                    (i, false)
                }
                b':' => (i + 1, false),
                b'd' if bytes.get(i + 1..i + 5) == Some(b"ata:") => (i + 5, false),
                b'i' if bytes.get(i + 1..i + 3) == Some(b"d:") => (i + 3, true),
                _ => return i,
            };
            let Some(end) = line_end(bytes, from, id) else {
                // An incomplete line: the state machine reads it from its start.
                return i;
            };
            match first {
                b'd' => {
                    self.open = true;
                    self.data = true;
                }
                b'i' if id => {
                    self.open = true;
                    let value = bytes.get(from..end).unwrap_or_default();
                    let value = value.strip_prefix(b" ").unwrap_or(value);
                    self.begin_value(Field::Id);
                    self.value(Field::Id, value);
                    self.end_value(Field::Id);
                }
                _ => {}
            }
            i = end + 1;
            if bytes.get(end) == Some(&b'\r') {
                match bytes.get(i) {
                    Some(b'\n') => i += 1,
                    Some(_) => {}
                    None => {
                        self.line = Line::Cr;
                        if !self.open {
                            feed.boundary = Some(i);
                        }
                        return i;
                    }
                }
            }
            self.line = Line::Start;
            if !self.open {
                feed.boundary = Some(i);
            }
        }
    }

    /// Ends the line whose ending byte is at `at`; returns the offset after it.
    fn end_line(&mut self, bytes: &[u8], at: usize, feed: &mut Feed) -> usize {
        self.line = if bytes.get(at) == Some(&b'\r') {
            Line::Cr
        } else {
            Line::Start
        };
        if !self.open {
            feed.boundary = Some(at + 1);
        }
        at + 1
    }

    fn begin_value(&mut self, field: Field) {
        match field {
            Field::Data => {
                self.data = true;
                self.line = Line::Skip;
                return;
            }
            Field::Id => {
                // A slot that is neither the last id nor the buffer.
                self.reading = (0..3)
                    .find(|&i| Some(i) != self.last && Some(i) != self.buffer)
                    .unwrap_or(0);
                if let Some(slot) = self.slots.get_mut(self.reading) {
                    slot.value.clear();
                    slot.long = false;
                }
                self.nul = false;
            }
            Field::Retry => {
                self.retry_value = Some(0);
                self.retry_digits = false;
            }
        }
        self.line = Line::Value(field, true);
    }

    fn value(&mut self, field: Field, value: &[u8]) {
        match field {
            Field::Data => {}
            Field::Id => {
                if value.contains(&0) {
                    self.nul = true;
                }
                if let Some(slot) = self.slots.get_mut(self.reading) {
                    if slot.value.len().saturating_add(value.len()) > self.max_id {
                        slot.long = true;
                    } else {
                        slot.value.extend_from_slice(value);
                    }
                }
            }
            Field::Retry => {
                for &byte in value {
                    self.retry_value = match (self.retry_value, byte) {
                        (Some(n), b'0'..=b'9') => {
                            self.retry_digits = true;
                            Some(n.saturating_mul(10).saturating_add(u64::from(byte - b'0')))
                        }
                        _ => None,
                    };
                }
            }
        }
    }

    fn end_value(&mut self, field: Field) {
        match field {
            Field::Data => self.data = true,
            Field::Id => {
                if !self.nul {
                    self.buffer = Some(self.reading);
                }
            }
            Field::Retry => {
                if let (Some(value), true) = (self.retry_value, self.retry_digits) {
                    self.retry = Some(value);
                }
            }
        }
    }

    fn dispatch(&mut self, feed: &mut Feed) {
        self.last = self.buffer;
        if self.data {
            feed.events = feed.events.saturating_add(1);
        }
        self.open = false;
        self.data = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_helpers::split;
    use crate::test_helpers::sse_parser::parse;
    use proptest::prelude::*;

    fn fed(chunks: &[&[u8]]) -> Tracker {
        let mut tracker = Tracker::new(1024);
        for chunk in chunks {
            tracker.feed(chunk);
        }
        tracker
    }

    fn last(tracker: &Tracker) -> Option<&[u8]> {
        tracker.last_id().and_then(Result::ok)
    }

    #[test]
    fn ids_take_effect_at_the_blank_line() {
        let tracker = fed(&[b"id: 1\ndata: a\n\nid: 2\ndata: b\n"]);
        assert_eq!(last(&tracker), Some(&b"1"[..]));
        assert!(!tracker.at_boundary());
        let tracker = fed(&[b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n"]);
        assert_eq!(last(&tracker), Some(&b"2"[..]));
        assert!(tracker.at_boundary());
    }

    #[test]
    fn ids_are_read_across_frames_and_line_endings() {
        let tracker = fed(&[b"i", b"d", b":", b" ", b"4", b"2", b"\r", b"\n", b"\r"]);
        assert_eq!(last(&tracker), Some(&b"42"[..]));
        let tracker = fed(&[b"id\n\n"]);
        assert_eq!(last(&tracker), Some(&b""[..]));
        let tracker = fed(&[b"id:  x\n\n"]);
        assert_eq!(last(&tracker), Some(&b" x"[..]));
        let tracker = fed(&[b"idx: 1\n\n"]);
        assert_eq!(last(&tracker), None);
    }

    #[test]
    fn an_id_with_a_nul_is_ignored() {
        let tracker = fed(&[b"id: 1\n\nid: a\0b\n\n"]);
        assert_eq!(last(&tracker), Some(&b"1"[..]));
    }

    #[test]
    fn a_too_long_id_is_not_kept() {
        let mut tracker = Tracker::new(3);
        tracker.feed(b"id: 1234\n\n");
        assert_eq!(tracker.last_id(), Some(Err(())));
    }

    #[test]
    fn retry_values_must_be_digits() {
        let tracker = fed(&[b"retry: 150\n", b"retry: 1x\nretry:\n"]);
        assert_eq!(tracker.retry(), Some(150));
        let tracker = fed(&[b"ret", b"ry: 2", b"5\r"]);
        assert_eq!(tracker.retry(), Some(25));
    }

    #[test]
    fn boundaries_are_after_blank_lines_and_comments_outside_events() {
        let mut tracker = Tracker::new(64);
        let feed = tracker.feed(b"data: a\n\n: c\ndata: b");
        assert_eq!(feed.boundary, Some(13));
        assert_eq!(feed.events, 1);
        assert!(!tracker.at_boundary());
        let feed = tracker.feed(b": mid\n");
        assert_eq!(feed.boundary, None);
        let mut tracker = Tracker::new(64);
        let feed = tracker.feed(b": partial comment");
        assert_eq!(feed.boundary, None);
        assert!(!tracker.at_boundary());
    }

    #[test]
    fn a_splice_forgets_the_unfinished_event_and_strips_a_bom() {
        let mut tracker = Tracker::new(64);
        tracker.feed(b"id: 1\ndata: a\n\nid: 2\ndata: b");
        tracker.splice();
        assert_eq!(last(&tracker), Some(&b"1"[..]));
        assert_eq!(tracker.feed(b"\xEF\xBB").skip, 2);
        let feed = tracker.feed(b"\xBFdata: c\n\n");
        assert_eq!((feed.skip, feed.events), (1, 1));
        assert_eq!(last(&tracker), Some(&b"1"[..]));
        tracker.splice();
        assert_eq!(tracker.feed(b"\xEF").skip, 1);
        // Not a BOM: its first byte is handed on, and makes the line a field of another name.
        let feed = tracker.feed(b"data: d\n\n");
        assert_eq!((feed.release, feed.skip, feed.events), (1, 0, 0));
    }

    #[test]
    fn a_leading_bom_is_skipped_when_reading_the_first_body() {
        let mut tracker = Tracker::new(64);
        let feed = tracker.feed(b"\xEF\xBB\xBFid: 7\n\n");
        assert_eq!(feed.skip, 0);
        assert_eq!(last(&tracker), Some(&b"7"[..]));
    }

    proptest! {
        /// At every frame boundary the tracker's last id and boundary flag agree with the reference
        /// parser over the same bytes.
        #[test]
        fn agrees_with_the_reference_parser(
            parts in proptest::collection::vec(prop_oneof![
                Just(&b"id: 1\n"[..]), Just(&b"id: 22\r\n"[..]), Just(&b"id\r"[..]),
                Just(&b"data: x\n"[..]), Just(&b"data\n"[..]), Just(&b"\n"[..]), Just(&b"\r"[..]),
                Just(&b"\r\n"[..]), Just(&b": c\n"[..]), Just(&b"event: e\n"[..]),
                Just(&b"retry: 5\n"[..]), Just(&b"id: a\0\n"[..]), Just(&b"\xEF\xBB\xBF"[..]),
            ], 0..24),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let bytes: Vec<u8> = parts.concat();
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut tracker = Tracker::new(64);
            let mut seen = 0;
            for chunk in split(&bytes, &cuts) {
                tracker.feed(&chunk);
                seen += chunk.len();
                let prefix = bytes.get(..seen).unwrap_or_default();
                let parsed = parse(prefix);
                if tracker.at_boundary() {
                    // A boundary: adding `data: z\n\n` adds exactly one event, carrying the
                    // tracker's last id.
                    let mut more = prefix.to_vec();
                    more.extend_from_slice(b"data: z\n\n");
                    let after = parse(&more);
                    prop_assert_eq!(after.events.len(), parsed.events.len() + 1);
                    let id = after.events.last().map(|e| e.last_event_id.clone()).unwrap_or_default();
                    let tracked = match tracker.last_id() {
                        Some(Ok(id)) => String::from_utf8_lossy(id).into_owned(),
                        _ => String::new(),
                    };
                    prop_assert_eq!(id, tracked);
                }
            }
        }
    }
}
