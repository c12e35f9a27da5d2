//! The resume tracker: event boundaries, the last event id and the upstream's `retry:` value, as
//! a client following the [WHATWG rules] would see them.
//!
//! It is fed every data frame of the upstream and answers, at each frame boundary: *is the client
//! at an event boundary* (whole events only were handed on), *where was the last boundary in this
//! frame* (to hold an incomplete event's bytes), *what is the client's last event id* (the `id`
//! buffer as of the last blank line) and *what did the last valid `retry` field say*.
//!
//! The [`Scanner`](crate::scanner::Scanner) of the SSE layer does not keep `id` values (and the
//! resume layer sits inside it, on the upstream's side, where no scanner runs), so this is a
//! small parser of its own, built for the per-frame cost of the normal case in two paths:
//!
//! - [`Tracker::whole_events`], for a frame of whole events (the tracker at an event boundary,
//!   the frame ending with `\n\n`, no CR in it: what axum, Express and most servers write): one
//!   pass that tests 32 bytes at a time for a byte below `0x0E` (a few vector instructions that
//!   the compiler makes of plain Rust) and looks closer only at a block that has one; of each line
//!   it reads the first bytes; the last `id` value is copied once per frame, into a block of fixed
//!   size. The commonest frame, one `data` line after an `id` or `event` line or alone, costs one
//!   block test of the `data` line. It either takes the whole frame or leaves the state untouched.
//! - [`Tracker::feed_lines`], for any frame: from each line start it reads the first bytes, finds
//!   the line's end with `memchr` (a short loop for `id` lines), and parses only `id` and `retry`
//!   values; `data` lines and comments are skipped in one search each. Only a line cut by a frame
//!   boundary goes through a small state machine ([`Line`]).
//!
//! State is O(1) besides the id values, which are copied once each.
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
//!   scanner does (a prefix of it is held until the next byte tells whether it is one), with the
//!   scanner's [`match_bom`].
//!
//! [WHATWG rules]: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

use std::mem;

use crate::scanner::{BomMatch, match_bom};

/// The longest field name the tracker tells apart (`retry`).
const NAME: usize = 5;

/// Where a line cut by a frame boundary stands (whole lines never leave `Start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line.
    Start,
    /// Right after a CR: a following LF belongs to the same line ending.
    Cr,
    /// Inside a field name: its first `len` bytes (a longer name is none the tracker reads).
    Name { bytes: [u8; NAME], len: u8 },
    /// Inside an `id` value, read into `Tracker::reading`; `space`: a leading space may still
    /// be dropped.
    Id { space: bool },
    /// Inside a `retry` value: `value` so far (`None` once a byte is not a digit), `digits`: one
    /// digit at least.
    Retry {
        space: bool,
        value: Option<u64>,
        digits: bool,
    },
    /// Inside a comment, a `data` value, or a field whose value does not matter.
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

/// One id value.
#[derive(Debug, Clone, Default)]
struct Id {
    value: Vec<u8>,
    /// Longer than `max_id`: not kept.
    long: bool,
}

impl Id {
    fn set(&mut self, value: &[u8], max: usize) {
        self.value.clear();
        self.long = value.len() > max;
        if !self.long {
            self.value.extend_from_slice(value);
        }
    }

    fn push(&mut self, value: &[u8], max: usize) {
        if self.value.len().saturating_add(value.len()) > max {
            self.long = true;
            self.value.clear();
        } else if !self.long {
            self.value.extend_from_slice(value);
        }
    }
}

/// The bytes of an id [`LastId`] keeps in itself.
const INLINE: usize = 32;

/// The client's last event id. An id of up to [`INLINE`] bytes (numbers, ULIDs, UUIDs) is kept
/// in the struct, so that [`Tracker::whole_events`] copies one block of fixed size and calls
/// nothing; a longer one goes to the heap.
#[derive(Debug, Clone)]
struct LastId {
    inline: [u8; INLINE],
    /// The value's length: above [`INLINE`], the value is `heap`.
    len: usize,
    heap: Vec<u8>,
    /// Longer than `max_id`: not kept.
    long: bool,
}

impl Default for LastId {
    fn default() -> Self {
        Self {
            inline: [0; INLINE],
            len: 0,
            heap: Vec::new(),
            long: false,
        }
    }
}

impl LastId {
    /// The value, `None` when it was too long to keep.
    fn value(&self) -> Option<&[u8]> {
        if self.long {
            None
        } else if self.len <= INLINE {
            self.inline.get(..self.len)
        } else {
            Some(&self.heap)
        }
    }

    /// Takes the id buffer's value.
    fn set(&mut self, id: &Id) {
        self.long = id.long;
        self.len = id.value.len();
        if let Some(inline) = self.inline.get_mut(..self.len) {
            inline.copy_from_slice(&id.value);
        } else {
            self.heap.clone_from(&id.value);
        }
    }

    /// Takes the value of the `id` field whose text after the field name is `frame[from..to]`.
    #[inline]
    fn set_in(&mut self, frame: &[u8], from: usize, to: usize, max: usize) {
        let value = value_of(frame.get(from..to).unwrap_or_default());
        self.set_at(frame, to - value.len(), value.len(), max);
    }

    /// Takes the `len` bytes of `frame` from `start` on.
    #[inline]
    fn set_at(&mut self, frame: &[u8], start: usize, len: usize, max: usize) {
        self.long = len > max;
        self.len = len;
        // The usual case: the block of `INLINE` bytes from the value's start is in the frame.
        if len <= INLINE
            && let Some(block) = frame.get(start..start + INLINE)
            && let Ok(block) = <&[u8; INLINE]>::try_from(block)
        {
            self.inline = *block;
            return;
        }
        let value = frame.get(start..start + len).unwrap_or_default();
        if let Some(inline) = self.inline.get_mut(..len) {
            inline.copy_from_slice(value);
        } else if !self.long {
            self.heap.clear();
            self.heap.extend_from_slice(value);
        }
    }
}

/// The first line ending (CR or LF) in `line`, and whether a NUL comes before it: 8 bytes at a
/// time (SWAR, no `unsafe`) over the first 32 bytes, where an `id` line usually ends (faster
/// than a vectorised search for so few bytes), then with `memchr`.
fn short_line_end(line: &[u8]) -> Option<(usize, bool)> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const LF: u64 = u64::from_ne_bytes([b'\n'; 8]);
    const CR: u64 = u64::from_ne_bytes([b'\r'; 8]);
    const SHORT: usize = 32;
    /// The high bit of each zero byte of `x` (and maybe of bytes above the first zero byte:
    /// the lowest one set is always exact).
    const fn zeros(x: u64) -> u64 {
        x.wrapping_sub(ONES) & !x & HIGHS
    }
    let mut at = 0;
    for chunk in line.chunks_exact(8).take(SHORT / 8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let word = u64::from_le_bytes(word);
        let hits = zeros(word ^ LF) | zeros(word ^ CR) | zeros(word);
        if hits != 0 {
            let first = at + (hits.trailing_zeros() / 8) as usize;
            return match line.get(first) {
                Some(0) => long_line_end(line, first),
                _ => Some((first, false)),
            };
        }
        at += 8;
    }
    long_line_end(line, at)
}

/// Whether `block` holds a byte below `0x0E` (an LF, a CR, a NUL or another control byte up to
/// CR). Written so that the compiler makes it a few vector instructions (no `unsafe`).
#[inline]
fn has_control(block: &[u8; BLOCK]) -> bool {
    block
        .iter()
        .fold(false, |found, &byte| found | (byte < 0x0E))
}

/// The bytes [`next_control`] reads at once.
const BLOCK: usize = 32;

/// The first byte below `0x0E` in `bytes`: 8 bytes at a time (SWAR), the rest one by one.
#[inline]
fn first_control(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // The lowest byte flagged by `(x - 0x0E..) & !x & 0x80..` is below 0x0E (bytes above it may
    // be flagged by a borrow).
    const BELOW: u64 = ONES * 0x0E;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().ok()?);
        let hits = word.wrapping_sub(BELOW) & !word & HIGHS;
        if hits != 0 {
            return Some(offset + (hits.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    let rest = words.remainder();
    rest.iter()
        .position(|&byte| byte < 0x0E)
        .map(|n| offset + n)
}

/// The first byte below `0x0E` in `bytes` from `at` on: every line ending and NUL is one, and
/// so are the other control bytes up to CR, which the caller skips. Blocks of [`BLOCK`] bytes
/// are tested at once with vector instructions, the last one overlapping bytes already tested.
#[inline]
fn next_control(bytes: &[u8], at: usize) -> Option<usize> {
    // A short line (an `id`, an `event`) ends in its first 16 bytes: two words, no block.
    if let Some(n) = bytes.get(at..at + 16).and_then(first_control) {
        return Some(at + n);
    }
    let rest = bytes.get(at..)?;
    let mut blocks = rest.chunks_exact(BLOCK);
    let mut offset = at;
    for block in &mut blocks {
        if has_control(block.try_into().ok()?) {
            return first_control(block).map(|n| offset + n);
        }
        offset += BLOCK;
    }
    if blocks.remainder().is_empty() {
        return None;
    }
    // The last block of `bytes`, when it starts at or after `at`: its bytes before `offset`
    // hold no control byte, so the first it finds is after them.
    if let Some(last) = bytes.len().checked_sub(BLOCK).filter(|&last| last >= at) {
        let block = bytes.get(last..)?;
        if !has_control(block.try_into().ok()?) {
            return None;
        }
        return first_control(block).map(|n| last + n);
    }
    first_control(blocks.remainder()).map(|n| offset + n)
}

/// Whether `bytes` holds a byte below `0x0E`: [`BLOCK`] bytes at a time, the last block
/// overlapping the one before it.
#[inline]
fn any_control(bytes: &[u8]) -> bool {
    let mut blocks = bytes.chunks_exact(BLOCK);
    for block in &mut blocks {
        if block.try_into().is_ok_and(has_control) {
            return true;
        }
    }
    if blocks.remainder().is_empty() {
        return false;
    }
    match bytes
        .len()
        .checked_sub(BLOCK)
        .and_then(|last| bytes.get(last..))
    {
        Some(last) => last.try_into().is_ok_and(has_control),
        None => first_control(bytes).is_some(),
    }
}

/// The first line ending in `line` from `from` (no line ending before it), and whether a NUL
/// comes before it.
fn long_line_end(line: &[u8], from: usize) -> Option<(usize, bool)> {
    let rest = line.get(from..)?;
    let end = from + memchr::memchr2(b'\r', b'\n', rest)?;
    let nul = line.get(from..end).is_some_and(|bytes| bytes.contains(&0));
    Some((end, nul))
}

/// The value of a whole `retry` field: ASCII digits only, at least one (saturating).
fn retry_value(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0_u64, |n, &byte| {
        byte.is_ascii_digit()
            .then(|| n.saturating_mul(10).saturating_add(u64::from(byte - b'0')))
    })
}

/// A field's value: after the colon, one leading space dropped.
fn value_of(rest: &[u8]) -> &[u8] {
    match rest {
        [b':', b' ', value @ ..] | [b':', value @ ..] => value,
        _ => &[],
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
    /// The client's last event id (meaningful when `last_set`).
    last: LastId,
    /// An `id` field has taken effect (a blank line followed it).
    last_set: bool,
    /// The id buffer, when it differs from `last` (`pending`): an `id` field since the last
    /// blank line. At a blank line `last` takes its value.
    buffer: Id,
    pending: bool,
    /// The `id` value being read across frames (`Line::Id`), and whether it holds a NUL.
    reading: Id,
    nul: bool,
    /// The last valid `retry` value, in milliseconds.
    retry: Option<u64>,
    max_id: usize,
}

impl Tracker {
    /// Creates a new [`Tracker`] at the start of a stream; ids longer than `max_id` bytes are not
    /// kept (the stream cannot be resumed after one).
    pub(crate) fn new(max_id: usize) -> Self {
        Self {
            line: Line::Start,
            open: false,
            data: false,
            bom: Some(0),
            strip_bom: false,
            last: LastId::default(),
            last_set: false,
            buffer: Id::default(),
            pending: false,
            reading: Id::default(),
            nul: false,
            retry: None,
            max_id,
        }
    }

    /// The client's last event id: `None` when no `id` field has taken effect, `Some(Err(()))`
    /// when the last one was too long to keep.
    pub(crate) fn last_id(&self) -> Option<Result<&[u8], ()>> {
        if !self.last_set {
            return None;
        }
        Some(self.last.value().ok_or(()))
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
        self.pending = false;
    }

    /// At a body's end: the bytes of a removed BOM's prefix still held, to be handed on.
    pub(crate) fn finish(&mut self) -> u8 {
        match self.bom.take() {
            Some(held) if self.strip_bom => held,
            _ => 0,
        }
    }

    /// Advances over one data frame: [`whole_events`](Self::whole_events), else
    /// [`feed_lines`](Self::feed_lines) (the body calls the two itself).
    #[cfg(test)]
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Feed {
        match self.whole_events(chunk) {
            Some(events) => Feed {
                events,
                boundary: Some(chunk.len()),
                ..Feed::default()
            },
            None => self.feed_lines(chunk),
        }
    }

    /// The normal case, a frame of whole events, in one pass: the tracker at an event boundary
    /// with no line cut and no BOM to look for, a frame that ends with a blank line (`\n\n`) and
    /// holds no CR. Returns the events it dispatched, the state advanced as
    /// [`feed_lines`](Self::feed_lines) advances it; `None`, the state untouched, for any other
    /// frame.
    ///
    /// Such a frame is whole lines, and every `id` line in it is followed by a blank line: the
    /// client's last event id is the last `id` value without a NUL, copied once at the end. One
    /// pass ([`next_control`]) finds the line endings, a CR and the NULs; of each line only the
    /// first bytes are read.
    #[inline]
    pub(crate) fn whole_events(&mut self, chunk: &[u8]) -> Option<u32> {
        if self.open || self.line != Line::Start || self.bom.is_some() {
            return None;
        }
        // The frame without its last two LFs: the first ends its last line, the second is the
        // blank line that ends the frame.
        let [lines @ .., b'\n', b'\n'] = chunk else {
            return None;
        };
        match self.one_event(chunk, lines) {
            Some(events) => Some(events),
            None => self.whole_lines(chunk, lines),
        }
    }

    /// [`whole_events`](Self::whole_events) for any frame of whole events, line by line.
    #[inline(never)]
    fn whole_lines(&mut self, chunk: &[u8], lines: &[u8]) -> Option<u32> {
        let mut events = 0_u32;
        let mut data = false;
        // Where the last `id` line's text after the field name is, and the last valid `retry`.
        let mut id = None;
        let mut retry = None;
        let mut start = 0;
        let mut nul = false;
        let mut at = 0;
        loop {
            let end = match next_control(lines, at) {
                Some(end) => {
                    at = end + 1;
                    match lines.get(end) {
                        Some(b'\n') => end,
                        Some(b'\r') => return None,
                        Some(0) => {
                            nul = true;
                            continue;
                        }
                        _ => continue,
                    }
                }
                None => lines.len(),
            };
            let line = lines.get(start..end).unwrap_or_default();
            match line.first() {
                None => events += u32::from(mem::take(&mut data)),
                Some(b'd') => {
                    if let [b'd', b'a', b't', b'a', tail @ ..] = line
                        && matches!(tail.first(), None | Some(b':'))
                    {
                        data = true;
                    }
                }
                Some(b'i') => {
                    if let [b'i', b'd', tail @ ..] = line
                        && matches!(tail.first(), None | Some(b':'))
                        && !nul
                    {
                        id = Some((start + 2, end));
                    }
                }
                Some(b'r') => {
                    if let [b'r', b'e', b't', b'r', b'y', tail @ ..] = line
                        && matches!(tail.first(), None | Some(b':'))
                    {
                        retry = retry_value(value_of(tail)).or(retry);
                    }
                }
                Some(_) => {}
            }
            if end == lines.len() {
                break;
            }
            start = at;
            nul = false;
        }
        // The blank line that ends the frame.
        events += u32::from(data);
        if let Some((from, to)) = id {
            self.last.set_in(chunk, from, to, self.max_id);
            self.last_set = true;
        }
        if retry.is_some() {
            self.retry = retry;
        }
        Some(events)
    }

    /// The most common frame of all, one event of one `data` line, after an `id` or an `event`
    /// line or alone (`lines` is the frame without its last two LFs): taken with a test of the
    /// `data` line's blocks and a look at the first line's first bytes. `None` for any other
    /// frame, the state untouched.
    #[inline]
    fn one_event(&mut self, chunk: &[u8], lines: &[u8]) -> Option<u32> {
        let (first, rest) = match lines {
            [b'd', b'a', b't', b'a', b':', ..] => (None, lines),
            [b'i', b'd', b':', ..] | [b'e', b'v', b'e', b'n', b't', b':', ..] => {
                let end = lines
                    .get(..lines.len().min(2 * 16))
                    .and_then(first_control)?;
                match lines.split_at_checked(end)? {
                    (first, [b'\n', rest @ ..]) => (Some(first), rest),
                    _ => return None,
                }
            }
            _ => return None,
        };
        if !matches!(rest, [b'd', b'a', b't', b'a', b':', ..]) || any_control(rest) {
            return None;
        }
        if let Some([b'i', b'd', b':', value @ ..]) = first {
            // The value starts after `id:` and one space, if any.
            let (start, len) = match value {
                [b' ', value @ ..] => (4, value.len()),
                _ => (3, value.len()),
            };
            // The usual id: the block of `INLINE` bytes from its start is in the frame.
            match chunk.get(start..start + INLINE) {
                Some(block) if len <= INLINE => {
                    if let Ok(block) = <&[u8; INLINE]>::try_from(block) {
                        self.last.inline = *block;
                    }
                    self.last.len = len;
                    self.last.long = len > self.max_id;
                }
                _ => self.last.set_at(chunk, start, len, self.max_id),
            }
            self.last_set = true;
        }
        Some(1)
    }

    /// Advances over one data frame, line by line: any frame, at any state.
    pub(crate) fn feed_lines(&mut self, chunk: &[u8]) -> Feed {
        let mut feed = Feed::default();
        let mut i = 0;
        if let Some(held) = self.bom {
            match match_bom(held, chunk) {
                BomMatch::Whole { taken } => {
                    // A whole BOM: the stream proper starts after it.
                    self.bom = None;
                    if self.strip_bom {
                        feed.skip = taken;
                    }
                    i = taken;
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
                    // Not a BOM: the bytes matched so far are text of the first line (a field
                    // whose name starts with them: none the tracker reads).
                    self.bom = None;
                    if self.strip_bom {
                        feed.release = held;
                    }
                    if matched > 0 {
                        self.open = true;
                        self.line = Line::Skip;
                    }
                    i = taken;
                }
            }
        }
        match self.line {
            Line::Start => {}
            Line::Cr => match chunk.get(i) {
                None => return feed,
                Some(&byte) => {
                    if byte == b'\n' {
                        i += 1;
                        if !self.open {
                            feed.boundary = Some(i);
                        }
                    }
                    self.line = Line::Start;
                }
            },
            _ => {
                // The rest of a line cut by the frame boundary.
                let rest = chunk.get(i..).unwrap_or_default();
                let Some(end) = memchr::memchr2(b'\r', b'\n', rest) else {
                    self.partial(rest);
                    return feed;
                };
                self.partial(rest.get(..end).unwrap_or_default());
                self.end_partial();
                self.line = Line::Start;
                i = self.line_ending(chunk, i + end, &mut feed);
            }
        }
        self.lines(chunk, i, &mut feed);
        feed
    }

    /// The fast path: from the line start `i`, whole lines to the frame's end, then the start of
    /// a cut line, if any, into the state machine. `id` lines are read with one short search
    /// that also finds a NUL; `data` lines and comments are skipped with one `memchr` each.
    fn lines(&mut self, bytes: &[u8], mut i: usize, feed: &mut Feed) {
        while let Some(rest) = bytes.get(i..) {
            let end = match rest.first() {
                None => return,
                Some(b'\n' | b'\r') => {
                    self.dispatch(feed);
                    0
                }
                Some(b'i') => match short_line_end(rest) {
                    Some((end, nul)) => {
                        if let Some(line) = rest.get(..end) {
                            self.i_line(line, nul);
                        }
                        i = self.line_ending(bytes, i + end, feed);
                        continue;
                    }
                    None => return self.start_partial(rest),
                },
                Some(_) => match memchr::memchr2(b'\r', b'\n', rest) {
                    Some(end) => end,
                    None => return self.start_partial(rest),
                },
            };
            if let Some(line @ [_, ..]) = rest.get(..end) {
                self.whole_line(line);
            }
            i = self.line_ending(bytes, i + end, feed);
        }
    }

    /// A whole, non-empty line (without its ending).
    fn whole_line(&mut self, line: &[u8]) {
        match line {
            [b':', ..] => {}
            [b'd', b'a', b't', b'a', tail @ ..] if matches!(tail.first(), None | Some(b':')) => {
                self.open = true;
                self.data = true;
            }
            [b'i', ..] => self.i_line(line, line.contains(&0)),
            [b'r', b'e', b't', b'r', b'y', tail @ ..]
                if matches!(tail.first(), None | Some(b':')) =>
            {
                self.open = true;
                if let Some(value) = retry_value(value_of(tail)) {
                    self.retry = Some(value);
                }
            }
            _ => self.open = true,
        }
    }

    /// A whole line that starts with `i` (`nul`: it holds a NUL): an `id` field, or another.
    fn i_line(&mut self, line: &[u8], nul: bool) {
        self.open = true;
        if let [b'i', b'd', tail @ ..] = line
            && matches!(tail.first(), None | Some(b':'))
            && !nul
        {
            self.buffer.set(value_of(tail), self.max_id);
            self.pending = true;
        }
    }

    /// A blank line: the id buffer becomes the last event id; an event is dispatched if it has
    /// data.
    fn dispatch(&mut self, feed: &mut Feed) {
        if self.pending {
            self.last.set(&self.buffer);
            self.pending = false;
            self.last_set = true;
        }
        if self.data {
            feed.events = feed.events.saturating_add(1);
        }
        self.open = false;
        self.data = false;
    }

    /// The line ending whose first byte is at `at`: returns the offset after it (after the LF
    /// of a CRLF; a CR that ends the frame leaves `Line::Cr`), and notes an event boundary.
    fn line_ending(&mut self, bytes: &[u8], at: usize, feed: &mut Feed) -> usize {
        let mut i = at + 1;
        if bytes.get(at) == Some(&b'\r') {
            match bytes.get(i) {
                Some(b'\n') => i += 1,
                Some(_) => {}
                None => self.line = Line::Cr,
            }
        }
        if !self.open {
            feed.boundary = Some(i);
        }
        i
    }

    /// The start of a line that the frame cuts (`part` is not empty and has no line ending).
    fn start_partial(&mut self, part: &[u8]) {
        if part.first() == Some(&b':') {
            self.line = Line::Skip;
            return;
        }
        self.open = true;
        self.line = Line::Name {
            bytes: [0; NAME],
            len: 0,
        };
        self.partial(part);
    }

    /// More bytes (no line ending) of a line cut by a frame boundary.
    fn partial(&mut self, mut part: &[u8]) {
        loop {
            match &mut self.line {
                Line::Name { bytes, len } => {
                    let room = NAME - usize::from(*len);
                    let colon = part.iter().take(room + 1).position(|&b| b == b':');
                    let name = part.get(..colon.unwrap_or(part.len())).unwrap_or_default();
                    let Some(slot) =
                        bytes.get_mut(usize::from(*len)..usize::from(*len) + name.len())
                    else {
                        // Longer than any name the tracker reads.
                        self.line = Line::Skip;
                        return;
                    };
                    slot.copy_from_slice(name);
                    *len += u8::try_from(name.len()).unwrap_or(u8::MAX);
                    let Some(colon) = colon else {
                        return;
                    };
                    let field = *bytes;
                    let field = field.get(..usize::from(*len)).unwrap_or_default();
                    self.begin_value(field);
                    part = part.get(colon + 1..).unwrap_or_default();
                }
                Line::Id { space } => {
                    let Some(&first) = part.first() else {
                        return;
                    };
                    if mem::take(space) && first == b' ' {
                        part = part.get(1..).unwrap_or_default();
                    }
                    self.nul |= part.contains(&0);
                    self.reading.push(part, self.max_id);
                    return;
                }
                Line::Retry {
                    space,
                    value,
                    digits,
                } => {
                    let Some(&first) = part.first() else {
                        return;
                    };
                    if mem::take(space) && first == b' ' {
                        part = part.get(1..).unwrap_or_default();
                    }
                    for &byte in part {
                        *value = value.filter(|_| byte.is_ascii_digit()).map(|n| {
                            n.saturating_mul(10)
                                .saturating_add(u64::from(byte.wrapping_sub(b'0')))
                        });
                        *digits = true;
                    }
                    return;
                }
                Line::Start | Line::Cr | Line::Skip => return,
            }
        }
    }

    /// The value of the field `name` starts (cut by a frame boundary).
    fn begin_value(&mut self, name: &[u8]) {
        self.line = match name {
            b"data" => {
                self.data = true;
                Line::Skip
            }
            b"id" => {
                self.reading.value.clear();
                self.reading.long = false;
                self.nul = false;
                Line::Id { space: true }
            }
            b"retry" => Line::Retry {
                space: true,
                value: Some(0),
                digits: false,
            },
            _ => Line::Skip,
        };
    }

    /// The line ending of a line cut by a frame boundary has arrived.
    fn end_partial(&mut self) {
        match self.line {
            Line::Name { bytes, len } => match bytes.get(..usize::from(len)) {
                // A field with no colon: an empty value.
                Some(b"data") => self.data = true,
                Some(b"id") => {
                    self.buffer.set(&[], self.max_id);
                    self.pending = true;
                }
                _ => {}
            },
            Line::Id { .. } => {
                if !self.nul {
                    mem::swap(&mut self.buffer, &mut self.reading);
                    self.pending = true;
                }
            }
            Line::Retry {
                value: Some(value),
                digits: true,
                ..
            } => self.retry = Some(value),
            Line::Retry { .. } | Line::Start | Line::Cr | Line::Skip => {}
        }
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

    /// Feeds `frames` to the tracker and to the naive reference, checking that they agree after
    /// each frame; returns the tracker.
    fn checked(frames: &[&[u8]]) -> Tracker {
        let mut fast = Tracker::new(16);
        let mut naive = Naive::new(16);
        for (n, frame) in frames.iter().enumerate() {
            assert_eq!(fast.feed(frame), naive.feed(frame), "{frames:?} frame {n}");
            assert_eq!(
                fast.at_boundary(),
                naive.at_boundary(),
                "{frames:?} frame {n}"
            );
            assert_eq!(fast.last_id(), naive.last_id(), "{frames:?} frame {n}");
            assert_eq!(fast.retry(), naive.retry, "{frames:?} frame {n}");
        }
        fast
    }

    /// Frames, the last event id after them, and whether they end at an event boundary.
    type Case<'a> = (&'a [&'a [u8]], Option<Result<&'a [u8], ()>>, bool);

    #[test]
    fn the_whole_line_path_agrees_with_the_reference_on_each_rule() {
        let cases: &[Case<'_>] = &[
            // LF, CRLF and CR line endings, and mixed.
            (&[b"id: 1\ndata: a\n\n"], Some(Ok(b"1")), true),
            (&[b"id: 1\r\ndata: a\r\n\r\n"], Some(Ok(b"1")), true),
            (&[b"id: 1\rdata: a\r\r"], Some(Ok(b"1")), true),
            (&[b"id: 1\r\ndata: a\n\r"], Some(Ok(b"1")), true),
            // A CR at the end of a frame: the LF that starts the next is the same line ending,
            // not a blank line.
            (
                &[b"id: 1\r", b"\ndata: a\r", b"\n\r", b"\n"],
                Some(Ok(b"1")),
                true,
            ),
            (&[b"id: 1\ndata: a\r", b"\n"], None, false),
            (&[b"id: 1\ndata: a\n\r", b"id: 2\n\n"], Some(Ok(b"2")), true),
            // Several events in one frame: the last id that took effect.
            (
                &[b"id: 1\ndata: a\n\nid: 2\ndata: b\n\ndata: c\n\n"],
                Some(Ok(b"2")),
                true,
            ),
            (
                &[b"id: 1\ndata: a\n\nid: 2\ndata: b\n"],
                Some(Ok(b"1")),
                false,
            ),
            // An id pending from an earlier frame, taking effect, or superseded, in this one.
            (&[b"id: 1\ndata: a\n", b"\n"], Some(Ok(b"1")), true),
            (&[b"id: 1\n", b"id: 2\n\n"], Some(Ok(b"2")), true),
            (&[b"id: 1\n", b"\nid: 2\ndata: b\n"], Some(Ok(b"1")), false),
            (&[b"id: 1\n\nid: 2\n", b"data: b\n\n"], Some(Ok(b"2")), true),
            // A leading BOM is skipped, one later is text.
            (&[b"\xEF\xBB\xBFid: 1\n\n"], Some(Ok(b"1")), true),
            (&[b"\xEF", b"\xBB\xBFid: 1\n\n"], Some(Ok(b"1")), true),
            (&[b"id: 1\n\n\xEF\xBB\xBFid: 2\n\n"], Some(Ok(b"1")), true),
            // An id with a NUL is ignored, whole or cut.
            (&[b"id: 1\n\nid: a\0b\ndata: x\n\n"], Some(Ok(b"1")), true),
            (
                &[b"id: 1\n\nid: a\0", b"b\ndata: x\n\n"],
                Some(Ok(b"1")),
                true,
            ),
            // (past the first 32 bytes, where the short search hands over to `memchr`)
            (
                &[b"id: 1\n\nid: abcdefghijklmnopqrstuvwxyz0123456789\0x\n\n"],
                Some(Ok(b"1")),
                true,
            ),
            // `id` without a colon is an empty id; an empty id resets the last event id.
            (&[b"id: 1\n\nid\n\n"], Some(Ok(b"")), true),
            (&[b"id: 1\n\nid:\r\n\r\n"], Some(Ok(b"")), true),
            (&[b"id: 1\n\nid: \n\n"], Some(Ok(b"")), true),
            (&[b"id: 1\n\ni", b"d\n\n"], Some(Ok(b"")), true),
            // Not `id`: other names starting with `i`, and one leading space only dropped.
            (&[b"idx: 1\nid : 2\ni: 3\n\n"], None, true),
            (&[b"id:  1\n\n"], Some(Ok(b" 1")), true),
            (&[b"id:1\n\n"], Some(Ok(b"1")), true),
            // Too long to keep (16 bytes here).
            (&[b"id: 0123456789abcdefg\n\n"], Some(Err(())), true),
            // Comments do not open an event; `retry` is read at once.
            (&[b": hi\nretry: 250\n\n: x\n"], None, true),
            (&[b"data: a\n\nretry: 1x\n"], None, false),
        ];
        for &(frames, last, boundary) in cases {
            let tracker = checked(frames);
            assert_eq!(tracker.last_id(), last, "{frames:?}");
            assert_eq!(tracker.at_boundary(), boundary, "{frames:?}");
        }
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

    /// The reference the tracker is checked against: the same answers, computed one byte at a
    /// time with the whole line in hand (no fast path, no cut lines, no id slots).
    struct Naive {
        max_id: usize,
        /// The current line's bytes (complete lines are handled at their ending).
        line: Vec<u8>,
        after_cr: bool,
        open: bool,
        data: bool,
        /// `Some(bytes)`: at a body's start, `bytes` being a BOM prefix.
        bom: Option<Vec<u8>>,
        strip: bool,
        buffer: Option<Vec<u8>>,
        last: Option<Vec<u8>>,
        retry: Option<u64>,
    }

    impl Naive {
        fn new(max_id: usize) -> Self {
            Self {
                max_id,
                line: Vec::new(),
                after_cr: false,
                open: false,
                data: false,
                bom: Some(Vec::new()),
                strip: false,
                buffer: None,
                last: None,
                retry: None,
            }
        }

        fn feed(&mut self, chunk: &[u8]) -> Feed {
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            let mut feed = Feed::default();
            for (at, &byte) in chunk.iter().enumerate() {
                if let Some(held) = &mut self.bom {
                    if held.len() < 3 && BOM[held.len()] == byte {
                        held.push(byte);
                        if self.strip {
                            feed.skip = at + 1;
                        }
                        if held.len() == 3 {
                            self.bom = None;
                        }
                        continue;
                    }
                    // Not a BOM: bytes held from earlier frames are released, and every byte
                    // matched so far is text.
                    let held = self.bom.take().unwrap_or_default();
                    if self.strip {
                        feed.release = u8::try_from(held.len() - at).unwrap();
                        feed.skip = 0;
                    }
                    self.line.extend_from_slice(&held);
                }
                self.byte(byte, at, &mut feed);
            }
            feed
        }

        fn byte(&mut self, byte: u8, at: usize, feed: &mut Feed) {
            let after_cr = std::mem::take(&mut self.after_cr);
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    let line = std::mem::take(&mut self.line);
                    self.complete(&line, feed);
                    self.after_cr = byte == b'\r';
                }
                _ => {
                    self.line.push(byte);
                    return;
                }
            }
            if !self.open {
                feed.boundary = Some(at + 1);
            }
        }

        fn complete(&mut self, line: &[u8], feed: &mut Feed) {
            if line.is_empty() {
                self.last.clone_from(&self.buffer);
                if self.data {
                    feed.events += 1;
                }
                self.open = false;
                self.data = false;
                return;
            }
            if line[0] == b':' {
                return;
            }
            self.open = true;
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &[][..]),
            };
            match name {
                b"data" => self.data = true,
                b"id" if !value.contains(&0) => self.buffer = Some(value.to_vec()),
                b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                    self.retry = Some(value.iter().fold(0_u64, |n, &b| {
                        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
                    }));
                }
                _ => {}
            }
        }

        fn at_boundary(&self) -> bool {
            !self.open && self.line.is_empty() && self.bom.as_ref().is_none_or(Vec::is_empty)
        }

        fn last_id(&self) -> Option<Result<&[u8], ()>> {
            let last = self.last.as_ref()?;
            Some(if last.len() > self.max_id {
                Err(())
            } else {
                Ok(last.as_slice())
            })
        }

        fn splice(&mut self) {
            self.line.clear();
            self.after_cr = false;
            self.open = false;
            self.data = false;
            self.bom = Some(Vec::new());
            self.strip = true;
            self.buffer.clone_from(&self.last);
        }

        fn finish(&mut self) -> u8 {
            match self.bom.take() {
                Some(held) if self.strip => u8::try_from(held.len()).unwrap(),
                _ => 0,
            }
        }
    }

    /// Bytes that make up event streams, and any byte.
    fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
        let token = prop_oneof![
            4 => proptest::sample::select(vec![
                &b"id"[..], b"id:", b"id: ", b"data", b"data:", b"data: ", b"retry", b"retry:",
                b"retry: ", b"event: ", b":", b" ", b"\n", b"\r", b"\r\n", b"\n\n", b"\0", b"7",
                b"42", b"99999999999999999999999", b"\xEF\xBB\xBF", b"\xEF", b"\xBB", b"d", b"i",
                b"r", b"x",
            ]).prop_map(<[u8]>::to_vec),
            1 => any::<u8>().prop_map(|b| vec![b]),
        ];
        proptest::collection::vec(token, 0..48).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        /// The SWAR line-end search finds what a byte-by-byte search finds.
        #[test]
        fn short_line_end_agrees_with_a_byte_loop(
            line in proptest::collection::vec(
                prop_oneof![Just(0_u8), Just(1), Just(b'\n'), Just(b'\r'), Just(0x80), any::<u8>()],
                0..80,
            ),
        ) {
            let end = line.iter().position(|&b| b == b'\n' || b == b'\r');
            let want = end.map(|end| (end, line[..end].contains(&0)));
            prop_assert_eq!(short_line_end(&line), want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// The tracker agrees with the naive reference on arbitrary bytes, arbitrary framings
        /// and arbitrary splice points: every `Feed`, and at every frame boundary the last id,
        /// the retry value and the boundary flag; and at the end, the held BOM bytes.
        #[test]
        fn agrees_with_a_naive_reference_on_any_bytes_and_framing(
            bytes in stream_bytes(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            splices in proptest::collection::vec(any::<bool>(), 13),
            max_id in 0_usize..6,
        ) {
            let mut fast = Tracker::new(max_id);
            let mut naive = Naive::new(max_id);
            for (n, chunk) in split(&bytes, &cuts).iter().enumerate() {
                if splices[n] {
                    fast.splice();
                    naive.splice();
                }
                prop_assert_eq!(fast.feed(chunk), naive.feed(chunk), "frame {}", n);
                prop_assert_eq!(fast.at_boundary(), naive.at_boundary(), "frame {}", n);
                prop_assert_eq!(fast.last_id(), naive.last_id(), "frame {}", n);
                prop_assert_eq!(fast.retry(), naive.retry, "frame {}", n);
            }
            prop_assert_eq!(fast.finish(), naive.finish());
        }
    }

    /// Whole events of the lines below, each line ended by an LF (or, for some, a CR or CRLF).
    fn whole_event_frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let line = proptest::sample::select(vec![
            &b"id: 1"[..],
            b"id: 22",
            b"id:333",
            b"id",
            b"id:",
            b"idx: 9",
            b"id: a\0b",
            b"id: \x01\t",
            b"data: {\"seq\":1,\"text\":\"a long enough line to cross a 32-byte block\"}",
            b"data",
            b"data:",
            b"data:x\0y",
            b"dat: a",
            b"retry: 250",
            b"retry: 25x",
            b"retry",
            b"retryx: 1",
            b": comment",
            b":",
            b"event: e",
            b"\t",
            b"",
            b"\xEF\xBB\xBF",
        ]);
        let ending =
            prop_oneof![8 => Just(&b"\n"[..]), 1 => Just(&b"\r\n"[..]), 1 => Just(&b"\r"[..])];
        let event = proptest::collection::vec((line, ending), 0..5).prop_map(|lines| {
            let mut event = Vec::new();
            for (line, ending) in lines {
                event.extend_from_slice(line);
                event.extend_from_slice(ending);
            }
            event.push(b'\n');
            event
        });
        // Frames of one or more whole events.
        proptest::collection::vec(proptest::collection::vec(event, 1..4), 0..12)
            .prop_map(|frames| frames.into_iter().map(|events| events.concat()).collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Frames of whole events, the case [`Tracker::whole_events`] takes: every `Feed`, last
        /// id, retry value and boundary flag agree with the naive reference (a frame it does not
        /// take goes through `feed_lines`, which the reference checks too).
        #[test]
        fn whole_event_frames_agree_with_the_naive_reference(
            frames in whole_event_frames(),
            max_id in 0_usize..6,
        ) {
            let mut fast = Tracker::new(max_id);
            let mut naive = Naive::new(max_id);
            for (n, frame) in frames.iter().enumerate() {
                prop_assert_eq!(fast.feed(frame), naive.feed(frame), "frame {}", n);
                prop_assert_eq!(fast.at_boundary(), naive.at_boundary(), "frame {}", n);
                prop_assert_eq!(fast.last_id(), naive.last_id(), "frame {}", n);
                prop_assert_eq!(fast.retry(), naive.retry, "frame {}", n);
            }
        }
    }

    #[test]
    fn frames_of_whole_events_take_the_fast_path() {
        let mut tracker = Tracker::new(64);
        // The first bytes of a stream may be a BOM: the line-by-line path decides.
        assert_eq!(tracker.whole_events(b"data: a\n\n"), None);
        assert_eq!(tracker.feed(b"data: a\n\n").events, 1);
        assert_eq!(tracker.whole_events(b"id: 7\ndata: b\n\n: c\n\n"), Some(1));
        assert_eq!(last(&tracker), Some(&b"7"[..]));
        assert_eq!(tracker.whole_events(b"retry: 40\nid: 8\n\n"), Some(0));
        assert_eq!(
            (last(&tracker), tracker.retry()),
            (Some(&b"8"[..]), Some(40))
        );
        // Not whole events, a CR, an id with a NUL: the state is left as it was.
        for frame in [
            &b"data: c\n"[..],
            b"data: c\r\n\r\n",
            b"id: 9\ndata: c\r\n\n",
        ] {
            assert_eq!(tracker.whole_events(frame), None);
        }
        assert_eq!(tracker.whole_events(b"id: 9\0\ndata: c\n\n"), Some(1));
        assert_eq!(last(&tracker), Some(&b"8"[..]));
        // One event of one `data` line, after an `id` or `event` line or alone.
        assert_eq!(tracker.whole_events(b"id:10\ndata: d\n\n"), Some(1));
        assert_eq!(tracker.whole_events(b"event: e\ndata: e\n\n"), Some(1));
        assert_eq!(tracker.whole_events(b"data: f\n\n"), Some(1));
        assert_eq!(last(&tracker), Some(&b"10"[..]));
        let long = b"id: 0123456789abcdef0123456789abcdef0123\ndata: g\n\n";
        assert_eq!(tracker.whole_events(long), Some(1));
        assert_eq!(
            last(&tracker),
            Some(&b"0123456789abcdef0123456789abcdef0123"[..])
        );
        assert_eq!(tracker.whole_events(b"id: 11\ndata: h\rdata: i\n\n"), None);
        assert_eq!(
            tracker.whole_events(b"id: 11\ndata: h\0\ndata\n\n"),
            Some(1)
        );
        assert_eq!(last(&tracker), Some(&b"11"[..]));
    }
}
