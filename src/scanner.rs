//! The framing scanner: where in the [event stream grammar] the upstream's bytes have left us.
//!
//! The scanner is advanced over every data frame the inner body produces and answers two
//! questions at each frame boundary: *may a line be injected here* (and with which line ending),
//! and *is this an event boundary*. It keeps O(1) state whatever the line or event length, never
//! copies or buffers the payload, and finds line endings with `memchr`.
//!
//! The rules it follows (see `docs/rules.md` in the repository, whose invariants I1–I9 the comments
//! below cite, and the WHATWG standard):
//!
//! - Lines end with CRLF, LF or a lone CR; a CR at the end of one frame and an LF at the start of
//!   the next are one line ending. Right after a CR whose next byte has not arrived, nothing is
//!   injected (I2): a `…\n` line would turn the LF of a CRLF into a blank line, and a `":\r"`
//!   line, though spec parsers read it right, splits the CRLF so that a client splitting on LF
//!   and stripping one CR reads `data: a\r:`. The one exception is a stream that has already
//!   used a lone CR as a line ending: its clients must handle CR, and `":\r"` is the only way
//!   to keep such a stream alive while it pauses after a CR.
//! - Only at a line start may anything be injected; mid-line nothing is (I2).
//! - An event is *open* once a field line has been seen since the last blank line; the layer
//!   injects only comment and `retry` lines, which never dispatch or reset anything, so they are
//!   safe inside an open event (I3). The layer ends a stream by preference where no event is open.
//! - A U+FEFF BOM is skipped by clients only as the stream's very first bytes. When the layer has
//!   written before the upstream's first byte, a leading BOM (possibly split across frames) is
//!   removed, and its first one or two bytes are held until the next byte tells whether they are
//!   one (I4).
//!
//! [event stream grammar]: https://html.spec.whatwg.org/multipage/server-sent-events.html#parsing-an-event-stream

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];
const DATA: [u8; 4] = *b"data";
/// `Scanner::name` once the field name is known not to be (or has been found to be) `data`.
const NAME_DONE: u8 = 5;

/// The line ending an injected line must use at the current position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LineEnd {
    /// At a line start: end the injected line with LF.
    Lf,
    /// Right after a CR whose next byte has not arrived, in a stream that has used a lone CR as
    /// a line ending: end the injected line with CR.
    Cr,
}

/// What the body must do with a data frame after the scanner has seen it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Feed {
    /// Bytes of a leading BOM held from earlier frames that turned out not to be a BOM: emit
    /// `BOM[..release]` before this frame.
    pub(crate) release: u8,
    /// Bytes at the start of this frame that belong to a removed BOM: drop them.
    pub(crate) skip: usize,
    /// Events this frame completed (blank lines after at least one `data` field).
    pub(crate) events: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Start,
    /// Inside a field line.
    Field,
    /// Inside a comment line.
    Comment,
    /// Right after a CR: a following LF belongs to the same line ending.
    Cr,
}

/// The scanner's state: a few bytes, whatever the stream.
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    line: Line,
    /// How much of `data` the current field name has matched (`NAME_DONE` when decided).
    name: u8,
    /// A field line has been seen since the last blank line.
    open: bool,
    /// A `data` field has been seen since the last blank line: the next blank line dispatches.
    data: bool,
    /// `Some(n)`: still at the stream start, the upstream's first `n` bytes being a BOM prefix.
    bom: Option<u8>,
    /// The layer wrote before the upstream's first byte: a leading BOM is removed.
    strip_bom: bool,
    /// The upstream has ended a line with a lone CR (a CR followed by something other than LF).
    lone_cr: bool,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    /// Creates a new [`Scanner`] at the start of a stream.
    pub(crate) const fn new() -> Self {
        Self {
            line: Line::Start,
            name: NAME_DONE,
            open: false,
            data: false,
            bom: Some(0),
            strip_bom: false,
            lone_cr: false,
        }
    }

    /// Where a line may be injected now, and with which ending; `None` mid-line, and right after
    /// a CR unless the stream has used lone CRs (see the module docs).
    pub(crate) fn injection(&self) -> Option<LineEnd> {
        match self.position() {
            Some(LineEnd::Cr) if !self.lone_cr => None,
            position => position,
        }
    }

    /// Whether the client is at a line start (`Lf`) or right after a CR (`Cr`); `None` mid-line.
    fn position(&self) -> Option<LineEnd> {
        match self.bom {
            // Nothing from the upstream yet, or a held BOM prefix: the output is at a line start.
            Some(0) => Some(LineEnd::Lf),
            Some(_) if self.strip_bom => Some(LineEnd::Lf),
            // A BOM prefix already forwarded: injecting would break the BOM.
            Some(_) => None,
            None => match self.line {
                Line::Start => Some(LineEnd::Lf),
                Line::Cr => Some(LineEnd::Cr),
                Line::Field | Line::Comment => None,
            },
        }
    }

    /// Whether the stream is at an event boundary: at a line start (or right after a CR) with no
    /// event open.
    pub(crate) fn at_event_boundary(&self) -> bool {
        !self.open && self.position().is_some()
    }

    /// Whether the upstream is mid-line (where nothing may be injected).
    #[cfg(test)]
    pub(crate) fn mid_line(&self) -> bool {
        self.injection().is_none()
    }

    /// Records that the layer wrote a line. Before the upstream's first byte, this makes a leading
    /// BOM from the upstream be removed (I4).
    pub(crate) fn injected(&mut self) {
        if self.bom == Some(0) {
            self.strip_bom = true;
        }
    }

    /// At the upstream's end: BOM bytes still held, to be emitted so that no upstream byte is lost.
    pub(crate) fn finish(&mut self) -> u8 {
        match self.bom.take() {
            Some(held) if self.strip_bom => held,
            _ => 0,
        }
    }

    /// Advances over one data frame of the upstream.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Feed {
        self.feed_with_boundaries(chunk, |_| {})
    }

    /// [`feed`](Self::feed), also calling `boundary(offset)` for every event boundary in `chunk`:
    /// `chunk[..offset]` ends with a blank line's first line-ending byte. (A CR there may be
    /// followed by the LF of a CRLF: splitting at it is still safe, the LF only ends the blank
    /// line that the CR began.)
    pub(crate) fn feed_with_boundaries(
        &mut self,
        chunk: &[u8],
        mut boundary: impl FnMut(usize),
    ) -> Feed {
        let mut feed = Feed::default();
        let mut rest = chunk;
        if let Some(held) = self.bom {
            match match_bom(held, chunk) {
                BomMatch::Whole { taken } => {
                    // A whole BOM: the stream proper starts after it.
                    self.bom = None;
                    if self.strip_bom {
                        feed.skip = taken;
                    }
                    rest = chunk.get(taken..).unwrap_or_default();
                }
                BomMatch::Prefix { matched } => {
                    // Still a BOM prefix (or an empty frame): hold or forward, and wait.
                    self.bom = Some(matched);
                    if self.strip_bom {
                        feed.skip = chunk.len();
                    }
                    return feed;
                }
                BomMatch::Not { matched, taken } => {
                    // Not a BOM: the held bytes, if any, are ordinary text of the first line.
                    self.bom = None;
                    if self.strip_bom {
                        feed.release = held;
                    }
                    if matched > 0 {
                        self.line = Line::Field;
                        self.open = true;
                        self.name = NAME_DONE;
                    }
                    rest = chunk.get(taken..).unwrap_or_default();
                }
            }
        }
        let base = chunk.len() - rest.len();
        self.scan(rest, &mut feed, &mut |at| boundary(base + at));
        feed
    }

    fn scan(&mut self, bytes: &[u8], feed: &mut Feed, boundary: &mut impl FnMut(usize)) {
        let mut i = 0;
        while let Some(&byte) = bytes.get(i) {
            match self.line {
                Line::Cr => {
                    if byte == b'\n' {
                        i += 1;
                    } else {
                        self.lone_cr = true;
                    }
                    self.line = Line::Start;
                }
                Line::Start => {
                    i += 1;
                    match byte {
                        b'\r' => {
                            self.blank_line(feed);
                            boundary(i);
                            self.line = Line::Cr;
                        }
                        b'\n' => {
                            self.blank_line(feed);
                            boundary(i);
                        }
                        b':' => self.line = Line::Comment,
                        b'd' if bytes.get(i..i + 4) == Some(b"ata:") => {
                            // The common case in one comparison: a `data:` line.
                            self.line = Line::Field;
                            self.open = true;
                            self.data = true;
                            self.name = NAME_DONE;
                            i += 4;
                        }
                        _ => {
                            self.line = Line::Field;
                            self.open = true;
                            self.name = if byte == b'd' { 1 } else { NAME_DONE };
                        }
                    }
                }
                Line::Field if self.name < NAME_DONE => match byte {
                    b':' | b'\r' | b'\n' => {
                        if usize::from(self.name) == DATA.len() {
                            self.data = true;
                        }
                        self.name = NAME_DONE;
                        if byte == b':' {
                            i += 1;
                        }
                    }
                    _ => {
                        i += 1;
                        self.name = match DATA.get(usize::from(self.name)) {
                            Some(&expected) if expected == byte => self.name + 1,
                            _ => NAME_DONE,
                        };
                    }
                },
                Line::Field | Line::Comment => {
                    let rest = bytes.get(i..).unwrap_or_default();
                    match memchr::memchr2(b'\r', b'\n', rest) {
                        Some(offset) => {
                            let end = i + offset;
                            self.line = if bytes.get(end) == Some(&b'\r') {
                                Line::Cr
                            } else {
                                Line::Start
                            };
                            i = end + 1;
                        }
                        None => i = bytes.len(),
                    }
                }
            }
        }
    }

    fn blank_line(&mut self, feed: &mut Feed) {
        if self.data {
            feed.events = feed.events.saturating_add(1);
        }
        self.open = false;
        self.data = false;
    }
}

/// How a frame's first bytes continue a possible leading BOM (shared with the resume tracker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BomMatch {
    /// A whole BOM ends after the frame's first `taken` bytes.
    Whole { taken: usize },
    /// The whole frame (possibly empty) continues the BOM, now `matched` bytes long.
    Prefix { matched: u8 },
    /// Not a BOM: the `matched` bytes (held ones and the frame's first `taken`) are text.
    Not { matched: u8, taken: usize },
}

/// Matches the start of `chunk` against the rest of a BOM of which `held` bytes were seen.
pub(crate) fn match_bom(held: u8, chunk: &[u8]) -> BomMatch {
    let mut matched = held;
    let mut taken = 0;
    while let (Some(&byte), Some(&expected)) = (chunk.get(taken), BOM.get(usize::from(matched))) {
        if byte != expected {
            break;
        }
        matched += 1;
        taken += 1;
    }
    if usize::from(matched) == BOM.len() {
        BomMatch::Whole { taken }
    } else if taken == chunk.len() {
        BomMatch::Prefix { matched }
    } else {
        BomMatch::Not { matched, taken }
    }
}

/// The BOM's first `n` bytes, for [`Feed::release`] and [`Scanner::finish`].
pub(crate) fn bom_prefix(n: u8) -> &'static [u8] {
    BOM.get(..usize::from(n)).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_helpers::sse_parser::{parse, parse_chunks};
    use crate::test_helpers::{events_of, split};
    use proptest::prelude::*;

    const HB_LF: &[u8] = b":hb\n";
    const HB_CR: &[u8] = b":hb\r";

    /// Feeds `chunks` and, before the first and after every chunk, injects a heartbeat wherever
    /// the scanner allows one; returns the output bytes as the client would see them.
    fn relay(chunks: &[&[u8]], inject_first: bool) -> (Vec<u8>, u32) {
        let mut scanner = Scanner::new();
        let mut out = Vec::new();
        let mut events = 0;
        let inject = |scanner: &mut Scanner, out: &mut Vec<u8>| match scanner.injection() {
            Some(LineEnd::Lf) => {
                out.extend_from_slice(HB_LF);
                scanner.injected();
            }
            Some(LineEnd::Cr) => {
                out.extend_from_slice(HB_CR);
                scanner.injected();
            }
            None => {}
        };
        if inject_first {
            inject(&mut scanner, &mut out);
        }
        for chunk in chunks {
            let feed = scanner.feed(chunk);
            events += feed.events;
            out.extend_from_slice(bom_prefix(feed.release));
            out.extend_from_slice(&chunk[feed.skip..]);
            inject(&mut scanner, &mut out);
        }
        out.extend_from_slice(bom_prefix(scanner.finish()));
        (out, events)
    }

    fn position(input: &[u8]) -> Scanner {
        let mut scanner = Scanner::new();
        scanner.feed(input);
        scanner
    }

    #[test]
    fn injection_positions_follow_the_grammar() {
        // (upstream so far, injection allowed, event boundary)
        let table: &[(&[u8], Option<LineEnd>, bool)] = &[
            (b"", Some(LineEnd::Lf), true),
            (b"data: a", None, false),
            (b"data: a\n", Some(LineEnd::Lf), false),
            (b"data: a\n\n", Some(LineEnd::Lf), true),
            (b"data: a\r", None, false),
            (b"data: a\r\n", Some(LineEnd::Lf), false),
            (b"data: a\r\r", Some(LineEnd::Cr), true),
            (b"data: a\r\n\r", None, true),
            (b"data: a\rdata: b\r", Some(LineEnd::Cr), false),
            (b"data: a\r\n\r\n", Some(LineEnd::Lf), true),
            (b": comment", None, false),
            (b": comment\n", Some(LineEnd::Lf), true),
            (b": comment\r", None, true),
            (b"event: x\n", Some(LineEnd::Lf), false),
            (b"id: 1\n\n", Some(LineEnd::Lf), true),
            (b"\xEF\xBB\xBF", Some(LineEnd::Lf), true),
            (b"\xEF\xBB\xBFdata", None, false),
            (b"\xEF\xBB", None, false),
            (b"\xEF", None, false),
            (b"\xEFx\n", Some(LineEnd::Lf), false),
            (b"data", None, false),
            (b"\n", Some(LineEnd::Lf), true),
            (b"\r", None, true),
            (b"\r\r", Some(LineEnd::Cr), true),
        ];
        for (input, injection, boundary) in table {
            let scanner = position(input);
            assert_eq!(
                scanner.injection(),
                *injection,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(scanner.at_event_boundary(), *boundary, "{input:?}");
        }
    }

    #[test]
    fn events_are_counted_only_when_data_was_seen() {
        let table: &[(&[u8], u32)] = &[
            (b"data: a\n\n", 1),
            (b"data\n\n", 1),
            (b"data:\n\n", 1),
            (b"event: x\n\n", 0),
            (b"id: 1\n\n", 0),
            (b"dat: a\n\n", 0),
            (b"datas: a\n\n", 0),
            (b"Data: a\n\n", 0),
            (b": data\n\n", 0),
            (b"data: a\r\rdata: b\r\n\r\n", 2),
            (b"data: a\n\n\n\n", 1),
            (b"ddata: a\n\n", 0),
            (b"xdata: a\n\n", 0),
            (b"data: a\n", 0),
            (b"\xEF\xBB\xBFdata: a\n\n", 1),
            (b"\xEF\xBBdata: a\n\n", 0),
        ];
        for (input, expected) in table {
            let mut scanner = Scanner::new();
            assert_eq!(scanner.feed(input).events, *expected, "{input:?}");
            // Byte by byte gives the same count.
            let mut scanner = Scanner::new();
            let split: u32 = input.iter().map(|b| scanner.feed(&[*b]).events).sum();
            assert_eq!(split, *expected, "{input:?} byte by byte");
        }
    }

    #[test]
    fn boundaries_are_reported_after_each_blank_line() {
        let mut scanner = Scanner::new();
        let mut seen = Vec::new();
        scanner.feed_with_boundaries(b"data: a\n\n: c\r\rdata: b\r\n\r\ndata", |at| seen.push(at));
        assert_eq!(seen, [9, 14, 24]);
        let mut seen = Vec::new();
        let mut scanner = Scanner::new();
        scanner.feed_with_boundaries(b"\xEF\xBB\xBF\n", |at| seen.push(at));
        assert_eq!(seen, [4]);
    }

    #[test]
    fn no_heartbeat_between_cr_and_lf() {
        // I2: `data: a\r` | `\ndata: b\r\n\r\n` with a heartbeat due between the frames.
        let (out, _) = relay(&[b"data: a\r", b"\ndata: b\r\n\r\n"], false);
        assert_eq!(out, b"data: a\r\ndata: b\r\n\r\n:hb\n");
        let parsed = parse(&out);
        assert_eq!(
            events_of(&parsed),
            [("message".into(), "a\nb".into(), String::new())]
        );
    }

    #[test]
    fn after_a_lone_cr_a_pause_after_a_cr_gets_a_cr_heartbeat() {
        // The stream has shown a lone CR: its clients must handle CR line endings.
        let (out, _) = relay(&[b"data: a\rdata: b\r", b"\r"], false);
        assert_eq!(out, b"data: a\rdata: b\r:hb\r\r:hb\r");
        assert_eq!(
            events_of(&parse(&out)),
            [("message".into(), "a\nb".into(), String::new())]
        );
    }

    #[test]
    fn a_naive_line_splitter_reads_crlf_streams_unchanged() {
        let upstream: &[u8] = b"data: a\r\ndata: b\r\n\r\n";
        for cut in 0..=upstream.len() {
            let (out, _) = relay(&[&upstream[..cut], &upstream[cut..]], true);
            assert_eq!(
                naive_lines_without(&out, b":hb"),
                naive_lines_without(upstream, b":hb"),
                "cut at {cut}: {:?}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    #[test]
    fn nothing_is_injected_mid_line() {
        let (out, _) = relay(&[b"data: hel", b"lo\n", b"\n"], false);
        assert_eq!(out, b"data: hello\n:hb\n\n:hb\n");
    }

    #[test]
    fn leading_bom_is_removed_after_an_injection_even_when_split() {
        let (out, _) = relay(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"], true);
        assert_eq!(out, b":hb\n:hb\n:hb\ndata: a\n\n:hb\n");
        let (out, _) = relay(&[b"\xEF\xBB\xBF", b"data: a\n\n"], true);
        assert_eq!(out, b":hb\n:hb\ndata: a\n\n:hb\n");
    }

    #[test]
    fn held_bom_prefix_is_released_when_it_is_no_bom() {
        let (out, _) = relay(&[b"\xEF", b"\xBBx\n"], true);
        assert_eq!(out, b":hb\n:hb\n\xEF\xBBx\n:hb\n");
        let (out, _) = relay(&[b"\xEF\xBB"], true);
        assert_eq!(out, b":hb\n:hb\n\xEF\xBB");
    }

    #[test]
    fn bom_is_forwarded_when_the_layer_wrote_nothing_first() {
        let (out, _) = relay(&[b"\xEF\xBB", b"\xBFdata: a\n\n"], false);
        assert_eq!(out, b"\xEF\xBB\xBFdata: a\n\n:hb\n");
    }

    #[test]
    fn a_bom_not_at_the_start_is_never_touched() {
        let (out, _) = relay(&[b"data: a\n", b"\xEF\xBB\xBFdata: b\n\n"], true);
        assert_eq!(out, b":hb\ndata: a\n:hb\n\xEF\xBB\xBFdata: b\n\n:hb\n");
    }

    #[test]
    fn a_long_line_costs_no_state() {
        let mut scanner = Scanner::new();
        let big = vec![b'x'; 1 << 20];
        scanner.feed(b"data: ");
        for _ in 0..8 {
            scanner.feed(&big);
            assert!(scanner.mid_line());
        }
        assert_eq!(scanner.feed(b"\n\n").events, 1);
        assert!(std::mem::size_of::<Scanner>() <= 8);
    }

    /// One event as a test generates it: fields, each a (name, value) pair, or comments.
    fn arb_line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            "[a-z \u{e9}\u{1F600}:]{0,12}".prop_map(|v| format!("data: {v}").into_bytes()),
            "[a-z]{0,6}".prop_map(|v| format!("data:{v}").into_bytes()),
            Just(b"data".to_vec()),
            "[a-z]{0,6}".prop_map(|v| format!("event: {v}").into_bytes()),
            "[0-9a-z]{0,4}".prop_map(|v| format!("id: {v}").into_bytes()),
            "[0-9]{1,4}".prop_map(|v| format!("retry: {v}").into_bytes()),
            "[a-z ]{0,8}".prop_map(|v| format!(":{v}").into_bytes()),
            "[a-z]{1,6}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(|v| v
                .into_iter()
                .filter(|b| *b != b'\r' && *b != b'\n')
                .collect()),
        ]
    }

    fn arb_stream() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<bool>(),
            proptest::collection::vec((arb_line(), 0..5u8), 0..24),
        )
            .prop_map(|(bom, lines)| {
                let mut out = Vec::new();
                if bom {
                    out.extend_from_slice(&BOM);
                }
                for (line, ending) in lines {
                    out.extend_from_slice(&line);
                    out.extend_from_slice(match ending {
                        0 => b"\n",
                        1 => b"\r\n",
                        2 => b"\r",
                        // A blank line after this one: an event boundary.
                        3 => b"\n\n",
                        _ => b"\r\n\r\n",
                    });
                }
                out
            })
    }

    /// The lines a hand-written client reads: split on LF, one trailing CR stripped, the
    /// unterminated rest dropped; lines equal to `injected` (the layer's own) left out.
    pub(crate) fn naive_lines_without(bytes: &[u8], injected: &[u8]) -> Vec<Vec<u8>> {
        let mut lines: Vec<Vec<u8>> = bytes.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
        lines.pop();
        for line in &mut lines {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        lines.retain(|line| line != injected);
        lines
    }

    /// Well-formed streams whose lines all end with LF or CRLF (never a lone CR).
    pub(crate) fn arb_lf_crlf_stream() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            (
                prop_oneof![
                    Just(&b"data: x"[..]),
                    Just(&b"data"[..]),
                    Just(&b"event: e"[..]),
                    Just(&b"id: 7"[..]),
                    Just(&b": c"[..]),
                    Just(&b""[..]),
                    Just(&b"retry: 5"[..]),
                ],
                any::<bool>(),
            ),
            0..24,
        )
        .prop_map(|lines| {
            let mut out = Vec::new();
            for (line, crlf) in lines {
                out.extend_from_slice(line);
                out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            }
            out
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// I2: a client that splits on LF and strips one CR reads the upstream's lines, plus
        /// only the layer's own, from LF and CRLF streams at any framing.
        #[test]
        fn a_naive_line_splitter_reads_the_upstream_lines(
            stream in arb_lf_crlf_stream(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let chunks = split(&stream, &cuts);
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let (out, _) = relay(&refs, false);
            prop_assert_eq!(naive_lines_without(&out, b":hb"), naive_lines_without(&stream, b":hb"));
        }

        /// I1: injecting wherever the scanner allows, at any framing, changes no event, and the
        /// scanner's event count matches the reference parser's.
        #[test]
        fn injection_at_every_safe_point_preserves_events(
            stream in arb_stream(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            inject_first in any::<bool>(),
        ) {
            let chunks = split(&stream, &cuts);
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let (out, counted) = relay(&refs, inject_first);
            let expected = parse(&stream);
            let got = parse(&out);
            prop_assert_eq!(events_of(&got), events_of(&expected));
            prop_assert_eq!(&got.retries, &expected.retries);
            prop_assert_eq!(counted as usize, expected.events.len());
            // The client's own framing does not matter either.
            prop_assert_eq!(events_of(&parse_chunks(&chunks)), events_of(&expected));
        }

        /// I1 on arbitrary bytes, not only well-formed streams.
        #[test]
        fn injection_preserves_events_on_arbitrary_bytes(
            stream in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b':'), Just(b'd'), Just(0xEF), Just(0xBB), Just(0xBF), any::<u8>()],
                0..64,
            ),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
            inject_first in any::<bool>(),
        ) {
            let chunks = split(&stream, &cuts);
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            let (out, counted) = relay(&refs, inject_first);
            let expected = parse(&stream);
            let got = parse(&out);
            prop_assert_eq!(events_of(&got), events_of(&expected));
            prop_assert_eq!(counted as usize, expected.events.len());
        }
    }
}
