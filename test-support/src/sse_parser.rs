//! Reference Server-Sent Events parser for the tests of `tower-sse`.
//!
//! This is a client-side event-stream parser written straight from the WHATWG HTML
//! standard, section "Server-sent events", subsections "Parsing an event stream" and
//! "Interpreting an event stream". The tests use it as the oracle for invariant I1 of
//! `docs/rules.md`: whatever a layer does to a stream, the events a browser would dispatch
//! from the layer's output must equal the events it would dispatch from the upstream.
//!
//! It depends on nothing but `std`. Unit tests in `src/` reach it as
//! `crate::test_helpers::sse_parser`, integration tests as `support::sse_parser`.
//!
//! What it models, step by step:
//!
//! 1. Bytes are decoded with a streaming implementation of the WHATWG "UTF-8 decoder"
//!    (invalid sequences become U+FFFD following the "maximal subpart" rule, exactly as
//!    `String::from_utf8_lossy` does on a whole buffer). A multi-byte character split across
//!    chunks decodes to that character.
//! 2. One U+FEFF at the very start of the decoded stream (the UTF-8 BOM, possibly split
//!    across chunks) is skipped; any later U+FEFF is an ordinary character.
//! 3. Lines end with CRLF, LF or a lone CR. A CR ends the line at once and a directly
//!    following LF (even in the next chunk) is swallowed, so CR | LF is one line ending.
//! 4. Each complete line is interpreted: blank line dispatches, `:` starts a comment,
//!    `name: value` / `name` lines are fields (`data`, `event`, `id`, `retry`; others ignored).
//! 5. At end of stream the unterminated last line and any undispatched event are discarded.
//!
//! The second half of this file is a table of conformance cases ([`CASES`] and
//! [`CHUNKED_CASES`]), written in this project's own words and modeled on the
//! web-platform-tests `eventsource/format-*` tests and on the chunkings used by
//! LaunchDarkly's SSE contract tests. Every expectation in it was derived by hand from the
//! standard, not by running this parser.

#![allow(dead_code, unreachable_pub)]

use std::mem;

const REPLACEMENT: char = '\u{FFFD}';
const BOM: char = '\u{FEFF}';

/// One event as a browser's `EventSource` would dispatch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event type: the last `event` field of the event, or `"message"` when it was empty.
    pub event_type: String,
    /// The data buffer with its single trailing LF removed.
    pub data: String,
    /// The event source's last event ID string at dispatch time.
    pub last_event_id: String,
}

/// Everything a stream produced, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// Dispatched events.
    pub events: Vec<Event>,
    /// Reconnection times set by valid `retry` fields, in order (milliseconds; a value too
    /// large for `u64` is recorded as `u64::MAX`).
    pub retries: Vec<u64>,
    /// Number of complete comment lines (lines starting with `:`).
    pub comments: usize,
}

impl Parsed {
    /// The events as `(type, data, last event id)` triples, the shape of [`Case::expected`].
    pub fn triples(&self) -> Vec<(&str, &str, &str)> {
        self.events
            .iter()
            .map(|e| {
                (
                    e.event_type.as_str(),
                    e.data.as_str(),
                    e.last_event_id.as_str(),
                )
            })
            .collect()
    }
}

/// Outcome of feeding one byte to the UTF-8 decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decoded {
    /// The byte was consumed as part of an unfinished sequence.
    Pending,
    /// A complete code point.
    Char(char),
    /// An error; the byte was consumed.
    Error,
    /// An error; the byte was NOT consumed and must be fed again ("restore byte to ioQueue").
    ErrorReprocess,
}

/// Streaming WHATWG "UTF-8 decoder" (Encoding standard, section 9.1.1), state kept across
/// chunks.
#[derive(Debug, Clone)]
struct Utf8Decoder {
    code_point: u32,
    bytes_seen: u8,
    bytes_needed: u8,
    lower_boundary: u8,
    upper_boundary: u8,
}

impl Default for Utf8Decoder {
    fn default() -> Self {
        Self {
            code_point: 0,
            bytes_seen: 0,
            bytes_needed: 0,
            lower_boundary: 0x80,
            upper_boundary: 0xBF,
        }
    }
}

impl Utf8Decoder {
    fn reset(&mut self) {
        *self = Self::default();
    }

    fn decode(&mut self, byte: u8) -> Decoded {
        if self.bytes_needed == 0 {
            match byte {
                0x00..=0x7F => return Decoded::Char(char::from(byte)),
                0xC2..=0xDF => {
                    self.bytes_needed = 1;
                    self.code_point = u32::from(byte & 0x1F);
                }
                0xE0..=0xEF => {
                    if byte == 0xE0 {
                        self.lower_boundary = 0xA0;
                    }
                    if byte == 0xED {
                        self.upper_boundary = 0x9F;
                    }
                    self.bytes_needed = 2;
                    self.code_point = u32::from(byte & 0x0F);
                }
                0xF0..=0xF4 => {
                    if byte == 0xF0 {
                        self.lower_boundary = 0x90;
                    }
                    if byte == 0xF4 {
                        self.upper_boundary = 0x8F;
                    }
                    self.bytes_needed = 3;
                    self.code_point = u32::from(byte & 0x07);
                }
                _ => return Decoded::Error,
            }
            return Decoded::Pending;
        }
        if byte < self.lower_boundary || byte > self.upper_boundary {
            self.reset();
            return Decoded::ErrorReprocess;
        }
        self.lower_boundary = 0x80;
        self.upper_boundary = 0xBF;
        self.code_point = (self.code_point << 6) | u32::from(byte & 0x3F);
        self.bytes_seen += 1;
        if self.bytes_seen != self.bytes_needed {
            return Decoded::Pending;
        }
        // The boundaries above exclude surrogates and values past U+10FFFF.
        let c = char::from_u32(self.code_point).unwrap_or(REPLACEMENT);
        self.reset();
        Decoded::Char(c)
    }

    /// End of queue: true when an unfinished sequence must be reported as one error.
    fn finish(&mut self) -> bool {
        let pending = self.bytes_needed != 0;
        self.reset();
        pending
    }
}

/// Incremental event-stream parser: feed arbitrary chunks, then [`Parser::finish`].
///
/// Feeding a byte string in any split gives the same result as feeding it whole.
#[derive(Debug, Clone)]
pub struct Parser {
    decoder: Utf8Decoder,
    /// No character has been decoded yet (the BOM check is still to be made).
    at_stream_start: bool,
    /// The previous character was a CR, so a following LF belongs to its line ending.
    after_cr: bool,
    line: String,
    data: String,
    event_type: String,
    last_event_id_buffer: String,
    last_event_id: String,
    out: Parsed,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// A parser at the start of a stream, all buffers empty.
    pub fn new() -> Self {
        Self {
            decoder: Utf8Decoder::default(),
            at_stream_start: true,
            after_cr: false,
            line: String::new(),
            data: String::new(),
            event_type: String::new(),
            last_event_id_buffer: String::new(),
            last_event_id: String::new(),
            out: Parsed::default(),
        }
    }

    /// Feeds the next chunk of the stream (may be empty, may split anything anywhere).
    pub fn feed(&mut self, chunk: &[u8]) {
        for &byte in chunk {
            loop {
                match self.decoder.decode(byte) {
                    Decoded::Pending => break,
                    Decoded::Char(c) => {
                        self.push_char(c);
                        break;
                    }
                    Decoded::Error => {
                        self.push_char(REPLACEMENT);
                        break;
                    }
                    Decoded::ErrorReprocess => self.push_char(REPLACEMENT),
                }
            }
        }
    }

    /// The number of events dispatched so far (what [`finish`](Self::finish) would return now).
    pub fn dispatched(&self) -> usize {
        self.out.events.len()
    }

    /// How many events feeding `chunk` next would dispatch, without feeding it. Copies the
    /// current line and event, not the events dispatched so far: cheap enough to ask per frame.
    pub fn dispatches_if_fed(&self, chunk: &[u8]) -> usize {
        let mut probe = Self {
            decoder: self.decoder.clone(),
            at_stream_start: self.at_stream_start,
            after_cr: self.after_cr,
            line: self.line.clone(),
            data: self.data.clone(),
            event_type: self.event_type.clone(),
            last_event_id_buffer: self.last_event_id_buffer.clone(),
            last_event_id: self.last_event_id.clone(),
            out: Parsed::default(),
        };
        probe.feed(chunk);
        probe.out.events.len()
    }

    /// End of stream: an unterminated last line and an incomplete event (no closing blank
    /// line) are discarded.
    pub fn finish(mut self) -> Parsed {
        if self.decoder.finish() {
            // Lands in the unterminated last line, which is discarded anyway.
            self.push_char(REPLACEMENT);
        }
        self.out
    }

    fn push_char(&mut self, c: char) {
        if self.at_stream_start {
            self.at_stream_start = false;
            if c == BOM {
                return;
            }
        }
        if self.after_cr {
            self.after_cr = false;
            if c == '\n' {
                return;
            }
        }
        match c {
            '\r' => {
                self.after_cr = true;
                self.end_line();
            }
            '\n' => self.end_line(),
            _ => self.line.push(c),
        }
    }

    fn end_line(&mut self) {
        let line = mem::take(&mut self.line);
        self.process_line(&line);
        // Keep the allocation for the next line.
        self.line = line;
        self.line.clear();
    }

    fn process_line(&mut self, line: &str) {
        if line.is_empty() {
            self.dispatch();
        } else if line.starts_with(':') {
            self.out.comments += 1;
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            self.process_field(field, value);
        } else {
            self.process_field(line, "");
        }
    }

    fn process_field(&mut self, field: &str, value: &str) {
        match field {
            "event" => {
                self.event_type.clear();
                self.event_type.push_str(value);
            }
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            // An id containing NULL is ignored (falls through to the last arm).
            "id" if !value.contains('\0') => {
                self.last_event_id_buffer.clear();
                self.last_event_id_buffer.push_str(value);
            }
            // A retry that is not all ASCII digits is ignored (falls through to the last arm).
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.out.retries.push(parse_decimal_saturating(value));
            }
            // Any other field name, and the ignored `id` / `retry` values above.
            _ => {}
        }
    }

    fn dispatch(&mut self) {
        self.last_event_id.clone_from(&self.last_event_id_buffer);
        if self.data.is_empty() {
            self.data.clear();
            self.event_type.clear();
            return;
        }
        if self.data.ends_with('\n') {
            self.data.pop();
        }
        let event_type = if self.event_type.is_empty() {
            String::from("message")
        } else {
            mem::take(&mut self.event_type)
        };
        self.out.events.push(Event {
            event_type,
            data: mem::take(&mut self.data),
            last_event_id: self.last_event_id.clone(),
        });
        self.data.clear();
        self.event_type.clear();
    }
}

/// Base-ten value of a non-empty string of ASCII digits, saturating at `u64::MAX`.
fn parse_decimal_saturating(digits: &str) -> u64 {
    digits.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(b.wrapping_sub(b'0')))
    })
}

/// Parses a whole byte string as one complete stream.
pub fn parse(bytes: &[u8]) -> Parsed {
    let mut parser = Parser::new();
    parser.feed(bytes);
    parser.finish()
}

/// Parses a stream given as consecutive chunks.
pub fn parse_chunks<I: IntoIterator<Item = B>, B: AsRef<[u8]>>(chunks: I) -> Parsed {
    let mut parser = Parser::new();
    for chunk in chunks {
        parser.feed(chunk.as_ref());
    }
    parser.finish()
}

// ---------------------------------------------------------------------------------------
// Conformance cases
// ---------------------------------------------------------------------------------------

/// A whole stream and the events the standard says it dispatches.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// What the case is about.
    pub name: &'static str,
    /// The complete stream, as bytes.
    pub input: &'static [u8],
    /// `(type, data, last event id)` of each dispatched event, in order.
    pub expected: &'static [(&'static str, &'static str, &'static str)],
}

/// A stream given as specific chunks (the interesting splits of the SSE contract tests).
#[derive(Debug, Clone, Copy)]
pub struct ChunkedCase {
    /// What the case is about.
    pub name: &'static str,
    /// The stream, chunk by chunk.
    pub chunks: &'static [&'static [u8]],
    /// `(type, data, last event id)` of each dispatched event, in order.
    pub expected: &'static [(&'static str, &'static str, &'static str)],
}

impl ChunkedCase {
    /// The chunks joined into one byte string.
    pub fn concat(&self) -> Vec<u8> {
        self.chunks.concat()
    }
}

/// Conformance cases over whole streams (tests also replay them at every split).
pub const CASES: &[Case] = &[
    // --- data fields and the space after the colon ---
    Case {
        name: "a single data line makes one message",
        input: b"data: hello\n\n",
        expected: &[("message", "hello", "")],
    },
    Case {
        name: "no space after the colon is fine",
        input: b"data:hello\n\n",
        expected: &[("message", "hello", "")],
    },
    Case {
        name: "only the first space after the colon is removed",
        input: b"data:  two\n\ndata:   \n\n",
        expected: &[("message", " two", ""), ("message", "  ", "")],
    },
    Case {
        name: "a tab after the colon is kept",
        input: b"data:\t x\n\n",
        expected: &[("message", "\t x", "")],
    },
    Case {
        name: "a lone space value is an empty value",
        input: b"data: \n\n",
        expected: &[("message", "", "")],
    },
    Case {
        name: "data lines are joined with LF",
        input: b"data: a\ndata: b\n\n",
        expected: &[("message", "a\nb", "")],
    },
    Case {
        name: "a bare data field dispatches empty data",
        input: b"data\n\n",
        expected: &[("message", "", "")],
    },
    Case {
        name: "empty data values stack up as newlines",
        input: b"data:\n\ndata\ndata\n\ndata:end\n\n",
        expected: &[("message", "", ""), ("message", "\n", ""), ("message", "end", "")],
    },
    Case {
        name: "only one trailing LF is removed from the data",
        input: b"data: a\ndata\n\n",
        expected: &[("message", "a\n", "")],
    },
    Case {
        name: "colons inside the value are kept",
        input: b"data: a:b: c\ndata::\n\n",
        expected: &[("message", "a:b: c\n:", "")],
    },
    Case {
        name: "NUL characters in data are kept",
        input: b"data: a\x00b\ndata:\x00\n\n",
        expected: &[("message", "a\0b\n\0", "")],
    },
    // --- blank lines, comments, unknown fields ---
    Case {
        name: "blank lines alone dispatch nothing",
        input: b"\n\n\r\n\r\r",
        expected: &[],
    },
    Case {
        name: "an empty stream dispatches nothing",
        input: b"",
        expected: &[],
    },
    Case {
        name: "comments are ignored before, inside and after an event",
        input: b": first\n:\ndata: x\n: inside the event\n\n:last\n",
        expected: &[("message", "x", "")],
    },
    Case {
        name: "comment lines with every line ending dispatch nothing",
        input: b":\r:\r\n:\n: x\n",
        expected: &[],
    },
    Case {
        name: "field names are case-sensitive",
        input: b"Data: upper\nDATA: shout\n\ndata: lower\n\n",
        expected: &[("message", "lower", "")],
    },
    Case {
        name: "unknown fields are ignored",
        input: b"foo: bar\ndata: x\nsometext\ndata-x: y\n\n",
        expected: &[("message", "x", "")],
    },
    Case {
        name: "a space before the colon or the name makes another field",
        input: b"data : x\n\n data: y\n\ndata:z\n\n",
        expected: &[("message", "z", "")],
    },
    Case {
        name: "a whitespace-only line is a field, not a blank line",
        input: b"data: a\n \ndata: b\n\n",
        expected: &[("message", "a\nb", "")],
    },
    Case {
        name: "retry lines never dispatch, valid or bogus",
        input: b"retry: 1000\n\nretry: x\nretry\nretry: 1e3\nretry: -1\ndata: x\n\n",
        expected: &[("message", "x", "")],
    },
    Case {
        name: "a mix of valid and broken field lines",
        input: b"data:\x00\ndata:  sp\rDATA:no\ndata\x00:no\ndata:one\r\x00data:no\nda-ta:no\rdata_x\ndata:two\rdata:\r\n data:no\ndata:end\n\n",
        expected: &[("message", "\0\n sp\none\ntwo\n\nend", "")],
    },
    // --- event type ---
    Case {
        name: "the event field sets the type",
        input: b"event: greet\ndata: hi\n\n",
        expected: &[("greet", "hi", "")],
    },
    Case {
        name: "the event type is reset after dispatch",
        input: b"event: a\ndata: 1\n\ndata: 2\n\n",
        expected: &[("a", "1", ""), ("message", "2", "")],
    },
    Case {
        name: "the event type is reset even when nothing is dispatched",
        input: b"event: a\n\ndata: 2\n\n",
        expected: &[("message", "2", "")],
    },
    Case {
        name: "an empty event type means message",
        input: b"event: \ndata: x\n\nevent\ndata: y\n\n",
        expected: &[("message", "x", ""), ("message", "y", "")],
    },
    Case {
        name: "the last event field of an event wins",
        input: b"event: a\nevent: b\ndata: x\n\n",
        expected: &[("b", "x", "")],
    },
    Case {
        name: "the event type keeps colons and trailing spaces",
        input: b"event: a:b \ndata: x\n\n",
        expected: &[("a:b ", "x", "")],
    },
    // --- id ---
    Case {
        name: "the id persists across later events",
        input: b"id: 1\ndata: a\n\ndata: b\n\n",
        expected: &[("message", "a", "1"), ("message", "b", "1")],
    },
    Case {
        name: "an id from an event without data still applies",
        input: b"id: 7\n\ndata: x\n\n",
        expected: &[("message", "x", "7")],
    },
    Case {
        name: "an empty id resets the last event id",
        input: b"id: 1\ndata: a\n\nid\ndata: b\n\nid: 2\ndata: c\n\nid: \ndata: d\n\n",
        expected: &[
            ("message", "a", "1"),
            ("message", "b", ""),
            ("message", "c", "2"),
            ("message", "d", ""),
        ],
    },
    Case {
        name: "an id containing NUL is ignored",
        input: b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\nid: \x00\ndata: c\n\n",
        expected: &[("message", "a", "1"), ("message", "b", "1"), ("message", "c", "1")],
    },
    Case {
        name: "the latest id inside an event wins",
        input: b"id: 1\nid: 2\ndata: x\n\n",
        expected: &[("message", "x", "2")],
    },
    Case {
        name: "ids, types and comments across several events",
        input: b"event: a\nid: 1\ndata: 1\n\n: keepalive\n\nevent: b\ndata: 2\n\nid: 3\ndata: 3\n\n",
        expected: &[("a", "1", "1"), ("b", "2", "1"), ("message", "3", "3")],
    },
    // --- end of stream ---
    Case {
        name: "an unterminated last line is discarded",
        input: b"data: a\n\ndata: b\n\ndata: c",
        expected: &[("message", "a", ""), ("message", "b", "")],
    },
    Case {
        name: "an event without its closing blank line is discarded, with its id",
        input: b"data: a\n\nid: 9\ndata: b\n",
        expected: &[("message", "a", "")],
    },
    // --- line endings ---
    Case {
        name: "CR-only line endings",
        input: b"data: a\rdata: b\r\rdata: c\r\r",
        expected: &[("message", "a\nb", ""), ("message", "c", "")],
    },
    Case {
        name: "CRLF line endings",
        input: b"id: 1\r\ndata: a\r\ndata: b\r\n\r\n",
        expected: &[("message", "a\nb", "1")],
    },
    Case {
        name: "mixed line endings",
        input: b"data: a\rdata: b\ndata: c\r\n\ndata: d\n\r",
        expected: &[("message", "a\nb\nc", ""), ("message", "d", "")],
    },
    Case {
        name: "LF then CR is two line endings",
        input: b"data: 1\n\rdata: 2\r\n\r\n",
        expected: &[("message", "1", ""), ("message", "2", "")],
    },
    Case {
        name: "CR then CRLF is a line end and a blank line",
        input: b"data: a\r\r\ndata: b\r\n\r\n",
        expected: &[("message", "a", ""), ("message", "b", "")],
    },
    Case {
        name: "a CR as the very last byte ends the blank line",
        input: b"data: a\n\r",
        expected: &[("message", "a", "")],
    },
    // --- byte order mark ---
    Case {
        name: "a BOM at the stream start is skipped",
        input: b"\xEF\xBB\xBFdata: x\n\n",
        expected: &[("message", "x", "")],
    },
    Case {
        name: "a second BOM becomes part of the first field name",
        input: b"\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\ndata: y\n\n",
        expected: &[("message", "y", "")],
    },
    Case {
        name: "a BOM after the start is an ordinary character",
        input: b"data: a\n\n\xEF\xBB\xBFdata: b\n\ndata: \xEF\xBB\xBFc\n\n",
        expected: &[("message", "a", ""), ("message", "\u{FEFF}c", "")],
    },
    Case {
        name: "a comment right after the BOM is still a comment",
        input: b"\xEF\xBB\xBF:hello\n\ndata: x\n\n",
        expected: &[("message", "x", "")],
    },
    Case {
        name: "a stream that is only a BOM dispatches nothing",
        input: b"\xEF\xBB\xBF",
        expected: &[],
    },
    Case {
        name: "a truncated BOM at the start is a replacement character",
        input: b"\xEF\xBBdata: x\n\ndata: y\n\n",
        expected: &[("message", "y", "")],
    },
    // --- UTF-8 ---
    Case {
        name: "multi-byte UTF-8 characters decode",
        input: b"event: \xC3\xA9t\xC3\xA9\ndata: \xE2\x82\xAC \xF0\x9F\x98\x80 \xE4\xB8\xAD\n\n",
        expected: &[("\u{E9}t\u{E9}", "\u{20AC} \u{1F600} \u{4E2D}", "")],
    },
    Case {
        name: "an invalid byte becomes U+FFFD",
        input: b"data: a\xFFb\x80c\n\n",
        expected: &[("message", "a\u{FFFD}b\u{FFFD}c", "")],
    },
    Case {
        name: "a truncated sequence before a newline is one U+FFFD",
        input: b"data: \xE2\x82\ndata: \xF0\x9F\x98\n\n",
        expected: &[("message", "\u{FFFD}\n\u{FFFD}", "")],
    },
    Case {
        name: "overlong, surrogate and out-of-range encodings are replaced byte by byte",
        input: b"data: \xC0\xAF|\xED\xA0\x80|\xF4\x90\x80\x80\n\n",
        expected: &[(
            "message",
            "\u{FFFD}\u{FFFD}|\u{FFFD}\u{FFFD}\u{FFFD}|\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}",
            "",
        )],
    },
    Case {
        name: "an invalid byte in a field name makes the field unknown",
        input: b"d\xFFata: x\n\ndata: ok\n\n",
        expected: &[("message", "ok", "")],
    },
    Case {
        name: "invalid bytes in an id are replaced, not rejected",
        input: b"id: \xFF\ndata: x\n\n",
        expected: &[("message", "x", "\u{FFFD}")],
    },
];

/// Conformance cases with explicit chunk boundaries.
pub const CHUNKED_CASES: &[ChunkedCase] = &[
    ChunkedCase {
        name: "CRLF split across chunks is one line ending",
        chunks: &[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"],
        expected: &[("message", "a\nb", "")],
    },
    ChunkedCase {
        name: "CR at chunk end then LF in the next chunk continues the event",
        chunks: &[b"data: a\r", b"\ndata: b\r\n\r\n"],
        expected: &[("message", "a\nb", "")],
    },
    ChunkedCase {
        name: "CR at chunk end then CR in the next chunk is a blank line",
        chunks: &[b"data: a\r", b"\r"],
        expected: &[("message", "a", "")],
    },
    ChunkedCase {
        name: "CRLF blank line split after its CR dispatches once",
        chunks: &[b"data: x\r\n\r", b"\n", b"data: y\n\n"],
        expected: &[("message", "x", ""), ("message", "y", "")],
    },
    ChunkedCase {
        name: "LF alone in a chunk after a CR chunk is not a blank line",
        chunks: &[b"data: a\r", b"\n", b"data: b\r", b"\n", b"\r", b"\n"],
        expected: &[("message", "a\nb", "")],
    },
    ChunkedCase {
        name: "BOM split byte by byte is skipped",
        chunks: &[b"\xEF", b"\xBB", b"\xBF", b"d", b"ata: x\n", b"\n"],
        expected: &[("message", "x", "")],
    },
    ChunkedCase {
        name: "BOM split across chunks followed by a second BOM",
        chunks: &[b"\xEF\xBB", b"\xBF\xEF", b"\xBB\xBFdata: x\n\ndata: y\n\n"],
        expected: &[("message", "y", "")],
    },
    ChunkedCase {
        name: "empty chunks change nothing",
        chunks: &[b"", b"data: x", b"", b"\r", b"", b"\n", b"\r\n", b""],
        expected: &[("message", "x", "")],
    },
    ChunkedCase {
        name: "a three-byte character split over three chunks",
        chunks: &[b"data: \xE2", b"\x82", b"\xAC\n\n"],
        expected: &[("message", "\u{20AC}", "")],
    },
    ChunkedCase {
        name: "a four-byte character split in the middle",
        chunks: &[b"data: \xF0\x9F", b"\x98\x80\n\n"],
        expected: &[("message", "\u{1F600}", "")],
    },
    ChunkedCase {
        name: "a truncated sequence at chunk end followed by ASCII",
        chunks: &[b"data: \xE2\x82", b"x\n\n"],
        expected: &[("message", "\u{FFFD}x", "")],
    },
    ChunkedCase {
        name: "one event per chunk",
        chunks: &[b"data: 1\n\n", b"data: 2\n\n", b"id: 3\ndata: 3\n\n"],
        expected: &[
            ("message", "1", ""),
            ("message", "2", ""),
            ("message", "3", "3"),
        ],
    },
    ChunkedCase {
        name: "one event split over many chunks",
        chunks: &[b"ev", b"ent: t", b"ick\nda", b"ta", b": 4", b"2\n", b"\n"],
        expected: &[("tick", "42", "")],
    },
    ChunkedCase {
        name: "the closing blank line split as LF then LF",
        chunks: &[b"data: x\n", b"\n"],
        expected: &[("message", "x", "")],
    },
    ChunkedCase {
        name: "an incomplete event at the end is discarded even if its line ends later",
        chunks: &[b"data: a\n\ndata: b", b"\n"],
        expected: &[("message", "a", "")],
    },
];

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// Small deterministic PRNG (xorshift64*), so the property tests need no crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Pieces that make interesting streams when glued at random.
    const TOKENS: &[&[u8]] = &[
        b"data",
        b"data:",
        b"data: ",
        b"id: ",
        b"id",
        b"event:",
        b"retry: ",
        b"retry:12",
        b"99999999999999999999999",
        b":",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\n",
        b"x",
        b"\x00",
        b"\xEF\xBB\xBF",
        b"\xEF",
        b"\xBB",
        b"\xBF",
        b"\xE2\x82\xAC",
        b"\xF0\x9F\x98\x80",
        b"\xF0\x9F",
        b"\xC3",
        b"\xFF",
        b"\x80",
        b"\xED\xA0\x80",
        b"\xF4\x90",
        b"Data",
    ];

    fn random_stream(rng: &mut Rng) -> Vec<u8> {
        let n = rng.below(40);
        let mut out = Vec::new();
        for _ in 0..n {
            if rng.below(8) == 0 {
                out.push(rng.next() as u8);
            } else {
                out.extend_from_slice(TOKENS[rng.below(TOKENS.len())]);
            }
        }
        out
    }

    fn random_split<'a>(rng: &mut Rng, bytes: &'a [u8]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let (head, tail) = rest.split_at(rng.below(rest.len() + 1));
            chunks.push(head);
            rest = tail;
        }
        chunks
    }

    /// A second, non-incremental reading of the standard used to cross-check the parser:
    /// decode the whole buffer with `from_utf8_lossy`, drop a leading BOM, cut terminated
    /// lines, interpret them.
    fn whole_buffer_reference(bytes: &[u8]) -> Parsed {
        let text = String::from_utf8_lossy(bytes);
        let mut rest = text.strip_prefix('\u{FEFF}').unwrap_or(&text);
        let mut lines = Vec::new();
        while let Some(end) = rest.find(['\r', '\n']) {
            let (line, tail) = rest.split_at(end);
            lines.push(line);
            rest = tail
                .strip_prefix("\r\n")
                .or_else(|| tail.strip_prefix('\r'))
                .or_else(|| tail.strip_prefix('\n'))
                .unwrap();
        }
        let mut out = Parsed::default();
        let (mut data, mut kind, mut id) = (String::new(), String::new(), String::new());
        for line in lines {
            if line.is_empty() {
                if !data.is_empty() {
                    let kind = if kind.is_empty() { "message" } else { &kind };
                    out.events.push(Event {
                        event_type: kind.to_owned(),
                        data: data.strip_suffix('\n').unwrap_or(&data).to_owned(),
                        last_event_id: id.clone(),
                    });
                }
                data.clear();
                kind.clear();
                continue;
            }
            if line.starts_with(':') {
                out.comments += 1;
                continue;
            }
            let (name, value) = match line.find(':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(' ').unwrap_or(value))
                }
                None => (line, ""),
            };
            match name {
                "data" => {
                    data += value;
                    data += "\n";
                }
                "event" => kind = value.to_owned(),
                "id" if !value.contains('\0') => id = value.to_owned(),
                "retry" if !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()) => {
                    out.retries.push(value.parse().unwrap_or(u64::MAX));
                }
                _ => {}
            }
        }
        out
    }

    fn decode_chunks(chunks: &[&[u8]]) -> String {
        let mut decoder = Utf8Decoder::default();
        let mut out = String::new();
        for chunk in chunks {
            for &byte in *chunk {
                loop {
                    match decoder.decode(byte) {
                        Decoded::Pending => break,
                        Decoded::Char(c) => {
                            out.push(c);
                            break;
                        }
                        Decoded::Error => {
                            out.push(REPLACEMENT);
                            break;
                        }
                        Decoded::ErrorReprocess => out.push(REPLACEMENT),
                    }
                }
            }
        }
        if decoder.finish() {
            out.push(REPLACEMENT);
        }
        out
    }

    #[test]
    fn there_are_at_least_thirty_conformance_cases() {
        assert!(CASES.len() >= 30, "only {} cases", CASES.len());
        let mut names: Vec<&str> = CASES.iter().map(|c| c.name).collect();
        names.extend(CHUNKED_CASES.iter().map(|c| c.name));
        let total = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), total, "case names must be unique");
    }

    #[test]
    fn every_case_parses_whole_to_its_expectation() {
        for case in CASES {
            assert_eq!(
                parse(case.input).triples(),
                case.expected,
                "case: {}",
                case.name
            );
        }
    }

    #[test]
    fn every_case_gives_the_same_events_split_at_every_single_offset() {
        for case in CASES {
            for at in 0..=case.input.len() {
                let (a, b) = case.input.split_at(at);
                assert_eq!(
                    parse_chunks([a, b]).triples(),
                    case.expected,
                    "case: {}, split at {}",
                    case.name,
                    at
                );
            }
        }
    }

    #[test]
    fn every_case_gives_the_same_events_split_at_every_pair_of_offsets() {
        for case in CASES {
            let whole = parse(case.input);
            for i in 0..=case.input.len() {
                for j in i..=case.input.len() {
                    let (a, rest) = case.input.split_at(i);
                    let (b, c) = rest.split_at(j - i);
                    assert_eq!(
                        parse_chunks([a, b, c]),
                        whole,
                        "case: {}, split at {} and {}",
                        case.name,
                        i,
                        j
                    );
                }
            }
        }
    }

    #[test]
    fn every_case_gives_the_same_events_fed_byte_by_byte() {
        for case in CASES {
            let parsed = parse_chunks(case.input.chunks(1));
            assert_eq!(parsed.triples(), case.expected, "case: {}", case.name);
            assert_eq!(parsed, parse(case.input), "case: {}", case.name);
        }
    }

    #[test]
    fn every_chunked_case_matches_its_expectation_chunked_and_whole() {
        for case in CHUNKED_CASES {
            assert_eq!(
                parse_chunks(case.chunks).triples(),
                case.expected,
                "case: {}",
                case.name
            );
            let whole = case.concat();
            assert_eq!(
                parse(&whole).triples(),
                case.expected,
                "case: {}",
                case.name
            );
            for at in 0..=whole.len() {
                let (a, b) = whole.split_at(at);
                assert_eq!(
                    parse_chunks([a, b]).triples(),
                    case.expected,
                    "case: {}, split at {}",
                    case.name,
                    at
                );
            }
            let bytewise = parse_chunks(whole.chunks(1));
            assert_eq!(bytewise.triples(), case.expected, "case: {}", case.name);
        }
    }

    #[test]
    fn cr_at_chunk_end_then_lf_is_one_line_ending() {
        // The heartbeat scenario of invariant I2: only one event, with both lines.
        let parsed = parse_chunks([&b"data: a\r"[..], b"\ndata: b\r\n\r\n"]);
        assert_eq!(parsed.triples(), [("message", "a\nb", "")]);
    }

    #[test]
    fn crlf_split_across_chunks_is_one_line_ending() {
        let parsed = parse_chunks([&b"data: a\r"[..], b"\n", b"\r", b"\n"]);
        assert_eq!(parsed.triples(), [("message", "a", "")]);
        let parsed = parse_chunks([&b"data: a\r"[..], b"\n", b"data: b\r\n\r\n"]);
        assert_eq!(parsed.triples(), [("message", "a\nb", "")]);
    }

    #[test]
    fn cr_at_chunk_end_then_cr_is_a_blank_line() {
        let parsed = parse_chunks([&b"data: a\r"[..], b"\r"]);
        assert_eq!(parsed.triples(), [("message", "a", "")]);
    }

    #[test]
    fn bom_split_byte_by_byte_is_skipped() {
        let parsed = parse_chunks([&b"\xEF"[..], b"\xBB", b"\xBF", b"data: x\n\n"]);
        assert_eq!(parsed.triples(), [("message", "x", "")]);
    }

    #[test]
    fn bom_is_skipped_only_at_the_very_start_of_the_stream() {
        // A BOM after an empty first chunk is still at the stream start.
        let parsed = parse_chunks([&b""[..], b"\xEF\xBB\xBFdata: x\n\n"]);
        assert_eq!(parsed.triples(), [("message", "x", "")]);
        // After any character it is part of the line: here it spoils the field name.
        let parsed = parse_chunks([&b"\n"[..], b"\xEF\xBB\xBFdata: x\n\n"]);
        assert!(parsed.events.is_empty());
        let parsed = parse(b"\n\xEF\xBB\xBF:c\n");
        assert_eq!(parsed.comments, 0);
    }

    #[test]
    fn lone_cr_at_end_of_stream_ends_the_line() {
        assert_eq!(parse(b"data: a\r\r").triples(), [("message", "a", "")]);
        assert_eq!(parse(b"retry: 5\r").retries, [5]);
    }

    #[test]
    fn unterminated_last_line_is_discarded_whatever_it_holds() {
        let parsed = parse(b"data: a\n\nretry: 5");
        assert!(parsed.retries.is_empty());
        let parsed = parse(b":comment");
        assert_eq!(parsed.comments, 0);
    }

    #[test]
    fn incomplete_event_at_end_of_stream_is_discarded() {
        assert!(parse(b"data: a\n").events.is_empty());
        assert!(parse(b"data: a\r\n").events.is_empty());
        assert!(parse(b"event: x\ndata: a\nid: 1\n").events.is_empty());
    }

    #[test]
    fn retry_with_only_ascii_digits_is_recorded_in_order() {
        let parsed = parse(b"retry: 3000\nretry:03000\nretry: 0\ndata: x\n\nretry: 10\n");
        assert_eq!(parsed.retries, [3000, 3000, 0, 10]);
        assert_eq!(parsed.triples(), [("message", "x", "")]);
    }

    #[test]
    fn retry_with_anything_but_digits_is_ignored() {
        let parsed = parse(
            b"retry\nretry:\nretry: \nretry: 1e3\nretry: -1\nretry: +1\nretry: 1 \nretry:  1\nretry: 1.5\nretry: \xD9\xA3\nRetry: 7\n",
        );
        assert!(parsed.retries.is_empty(), "{:?}", parsed.retries);
    }

    #[test]
    fn retry_overflow_saturates_at_u64_max() {
        let parsed = parse(b"retry: 18446744073709551615\nretry: 18446744073709551616\nretry: 99999999999999999999999999\n");
        assert_eq!(parsed.retries, [u64::MAX, u64::MAX, u64::MAX]);
    }

    #[test]
    fn comments_are_counted_once_per_complete_line() {
        let parsed = parse(b":\n: a\r:b\r\n\xEF\xBB\xBF\n:\n");
        // The BOM-looking line is not at the stream start, so it is a field, not a comment.
        assert_eq!(parsed.comments, 4);
        let parsed = parse(b"\xEF\xBB\xBF: first\n");
        assert_eq!(parsed.comments, 1);
    }

    #[test]
    fn id_buffer_survives_dispatch_but_data_and_type_do_not() {
        let parsed = parse(b"id: 1\nevent: e\ndata: a\n\ndata: b\n\n");
        assert_eq!(parsed.triples(), [("e", "a", "1"), ("message", "b", "1")]);
    }

    #[test]
    fn default_parser_is_a_new_parser() {
        let mut a = Parser::default();
        let mut b = Parser::new();
        a.feed(b"data: x\n\n");
        b.feed(b"data: x\n\n");
        assert_eq!(a.finish(), b.finish());
    }

    #[test]
    fn streaming_decoder_matches_from_utf8_lossy_at_every_split() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..2000 {
            let n = rng.below(24);
            let bytes: Vec<u8> = (0..n)
                .map(|_| match rng.below(4) {
                    0 => rng.next() as u8,
                    1 => 0x80 | (rng.next() as u8 & 0x3F),
                    2 => [0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xC0][rng.below(9)],
                    _ => b'a',
                })
                .collect();
            let expected = String::from_utf8_lossy(&bytes);
            assert_eq!(decode_chunks(&[&bytes]), expected, "{bytes:02X?}");
            for at in 0..=bytes.len() {
                let (a, b) = bytes.split_at(at);
                assert_eq!(decode_chunks(&[a, b]), expected, "{bytes:02X?} at {at}");
            }
            let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(decode_chunks(&bytewise), expected, "{bytes:02X?}");
        }
    }

    #[test]
    fn any_split_of_a_random_stream_parses_like_the_whole_stream() {
        let mut rng = Rng(0x0123_4567_89AB_CDEF);
        for _ in 0..3000 {
            let bytes = random_stream(&mut rng);
            let whole = parse(&bytes);
            for _ in 0..4 {
                let chunks = random_split(&mut rng, &bytes);
                assert_eq!(parse_chunks(&chunks), whole, "{chunks:02X?}");
            }
            assert_eq!(parse_chunks(bytes.chunks(1)), whole, "{bytes:02X?}");
        }
    }

    #[test]
    fn parser_agrees_with_a_whole_buffer_reading_of_the_standard() {
        let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
        for _ in 0..3000 {
            let bytes = random_stream(&mut rng);
            assert_eq!(
                parse(&bytes),
                whole_buffer_reference(&bytes),
                "{bytes:02X?}"
            );
        }
        for case in CASES {
            assert_eq!(
                parse(case.input),
                whole_buffer_reference(case.input),
                "case: {}",
                case.name
            );
        }
    }
}
