//! Compression of event streams that never delays an event: see
//! [`SseLayer::compress`](crate::SseLayer::compress).
//!
//! The layer asks its inner service for identity (its scanner reads plain text), then encodes its
//! own output — the inner body's frames and its injected lines alike — with the coding negotiated
//! from the client's `Accept-Encoding`. The encoder is sync-flushed whenever the stream is about
//! to wait (the inner body is pending, after a heartbeat or a `retry:` line) and finished before
//! the body ends, so every byte the client has received decodes at once (rule I11); frames that
//! are ready together share one flush.
//!
//! # When to turn it on
//!
//! When bandwidth matters more than a little CPU and memory per stream: JSON events repeat their
//! keys from one event to the next, and a small window already finds them (see `BENCHMARKS.md`
//! in the repository for the ratios). Streams of small, rare events gain little: each flush costs
//! a few bytes.
//!
//! # What it costs per stream
//!
//! An encoder's state lives as long as its stream. The defaults are chosen for many streams
//! (measured, per stream, in `BENCHMARKS.md`: heap allocated by the encoder, which is what
//! 10,000 streams cost once their tables have been touched):
//!
//! | coding | feature | default | state per stream | smallest possible |
//! |---|---|---|---|---|
//! | `gzip` | `gzip` | level 6, window 2^12, memLevel 4 | 30 KiB | 9 KiB (window 2^9, memLevel 1), but such a window no longer holds an event (0.8× of identity) |
//! | `zstd` | `zstd` | level 3, window 2^12, hash 2^10, chain 2^10 | 60 KiB | — |
//! | `br` | `br` | quality 3, window 2^12 | 315 KiB | ~ 315 KiB: qualities 2 to 4 hash into 2^16 to 2^17 buckets whatever the window, 5 and up keep a ring buffer of at least 192 KiB; 0 and 1 keep no history from one flush to the next (0.8–0.9× of identity) |
//!
//! gzip and zstd stay within 64 KiB per stream, and they are what [`Compression::new`] offers:
//! zstd first, which needs the least CPU per event, then gzip. Brotli is offered only when
//! named in [`Compression::order`]: it costs five to ten times their memory and more CPU, and
//! compresses one-event flushes no better; every client that accepts br in practice (browsers,
//! curl, Node) accepts gzip too. On event streams flushed
//! after every event, a larger window gains little: the events a JSON stream repeats are the
//! last few.
//!
//! The `gzip` feature links C zlib (through `libz-sys`: the system's libz, or a bundled copy
//! built with the C compiler where there is none): it is the deflate whose memory follows
//! `window_bits` and `mem_level` (see [`Gzip`]).

mod encoder;
mod negotiate;
// The crate's only `unsafe`: a small wrapper of C zlib's deflate, whose memLevel no safe crate
// exposes (see the module's docs); every block there says why it is sound.
#[cfg(feature = "gzip")]
#[allow(
    unsafe_code,
    reason = "the zlib FFI wrapper; nothing else may use unsafe"
)]
#[warn(clippy::undocumented_unsafe_blocks)]
mod zlib;

use std::fmt;

pub(crate) use encoder::Encoder;
pub(crate) use negotiate::negotiate;

/// A content coding [`SseLayer::compress`](crate::SseLayer::compress) can encode an event
/// stream with.
///
/// Each is compiled in by the cargo feature of its name (`gzip`, `br`, `zstd`); a coding whose
/// feature is off is never chosen (see [`Coding::is_available`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Coding {
    /// `gzip` (RFC 1952), sync-flushed with `Z_SYNC_FLUSH`.
    Gzip,
    /// `br`, Brotli (RFC 7932), flushed with `BROTLI_OPERATION_FLUSH`.
    Br,
    /// `zstd` (RFC 8878), flushed with `ZSTD_e_flush`.
    Zstd,
}

impl Coding {
    /// The token of the coding in `Accept-Encoding` and `Content-Encoding`.
    ///
    /// ```
    /// assert_eq!(tower_sse::Coding::Br.as_str(), "br");
    /// ```
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Br => "br",
            Self::Zstd => "zstd",
        }
    }

    /// Whether the coding's cargo feature is on in this build.
    #[must_use]
    pub const fn is_available(self) -> bool {
        match self {
            Self::Gzip => cfg!(feature = "gzip"),
            Self::Br => cfg!(feature = "br"),
            Self::Zstd => cfg!(feature = "zstd"),
        }
    }

    /// Whether an `Accept-Encoding` token names this coding (`x-gzip` is gzip).
    fn matches(self, token: &[u8]) -> bool {
        token.eq_ignore_ascii_case(self.as_str().as_bytes())
            || (self == Self::Gzip && token.eq_ignore_ascii_case(b"x-gzip"))
    }
}

impl fmt::Display for Coding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The default preference order: the ratios on JSON event streams are close (see the module
/// docs), so zstd first (the least CPU per event, 60 KiB per stream), then gzip (30 KiB, several
/// times zstd's CPU). br (315 KiB) is left out, so that no stream costs more than 64 KiB unless
/// asked for.
const DEFAULT_ORDER: [Coding; 2] = [Coding::Zstd, Coding::Gzip];

/// How [`SseLayer::compress`](crate::SseLayer::compress) encodes event streams: which codings,
/// in which order of preference, with which settings.
///
/// [`Compression::new`] offers zstd then gzip, where compiled in (features `zstd`, `gzip`); br
/// (feature `br`) only when named in [`Compression::order`]. The client's q-values come first,
/// this order breaks ties.
///
/// ```
/// use tower_sse::{Coding, Compression, Gzip, Zstd};
///
/// let compression = Compression::new()
///     .order([Coding::Gzip, Coding::Zstd])
///     .gzip(Gzip::new().level(5).window_bits(13))
///     .zstd(Zstd::new().level(1));
/// assert_eq!(compression.codings(), [Coding::Gzip, Coding::Zstd]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Compression {
    order: Vec<Coding>,
    gzip: Gzip,
    br: Brotli,
    zstd: Zstd,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            order: DEFAULT_ORDER.to_vec(),
            gzip: Gzip::new(),
            br: Brotli::new(),
            zstd: Zstd::new(),
        }
    }
}

impl Compression {
    /// Creates a new [`Compression`]: zstd then gzip, where compiled in, each with its
    /// defaults (br only through [`Compression::order`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// The codings offered, in order of preference: the first a client accepts (with its
    /// highest q-value) is used. Duplicates are ignored; an empty list turns compression off.
    ///
    /// Default: zstd, gzip (zstd for its CPU; br, at about 315 KiB per stream, only when
    /// named here).
    pub fn order(mut self, order: impl IntoIterator<Item = Coding>) -> Self {
        self.order.clear();
        for coding in order {
            if !self.order.contains(&coding) {
                self.order.push(coding);
            }
        }
        self
    }

    /// The codings offered, in order of preference (those not compiled in included: they are
    /// skipped when negotiating).
    #[must_use]
    pub fn codings(&self) -> &[Coding] {
        &self.order
    }

    /// The settings of the gzip encoder.
    pub const fn gzip(mut self, gzip: Gzip) -> Self {
        self.gzip = gzip;
        self
    }

    /// The settings of the Brotli encoder.
    pub const fn br(mut self, br: Brotli) -> Self {
        self.br = br;
        self
    }

    /// The settings of the zstd encoder.
    pub const fn zstd(mut self, zstd: Zstd) -> Self {
        self.zstd = zstd;
        self
    }

    /// A new encoder for one stream.
    pub(crate) fn encoder(&self, coding: Coding) -> Result<Encoder, CompressionError> {
        Encoder::new(coding, self)
    }
}

/// Settings of the gzip encoder (C zlib; feature `gzip`).
///
/// Its state per stream is `2^(window_bits + 2) + 2^(mem_level + 9)` bytes plus zlib's own 6 KiB:
/// 30 KiB with the defaults, 262 KiB with zlib's (window 2^15, memLevel 8).
///
/// ```
/// use tower_sse::{Coding, Compression, Gzip};
///
/// // A window of 8 KiB: 46 KiB per stream instead of 30.
/// let compression = Compression::new()
///     .order([Coding::Gzip])
///     .gzip(Gzip::new().level(6).window_bits(13).mem_level(4));
/// assert_eq!(compression.codings(), [Coding::Gzip]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Gzip {
    pub(crate) level: u8,
    pub(crate) window_bits: u8,
    pub(crate) mem_level: u8,
}

impl Default for Gzip {
    fn default() -> Self {
        Self {
            level: 6,
            window_bits: 12,
            mem_level: 4,
        }
    }
}

impl Gzip {
    /// Creates a new [`Gzip`] with the defaults: level 6, window 2^12 bytes, memLevel 4.
    pub fn new() -> Self {
        Self::default()
    }

    /// The compression level, 0 (stored) to 9 (clamped). Default: 6.
    pub const fn level(mut self, level: u8) -> Self {
        self.level = if level > 9 { 9 } else { level };
        self
    }

    /// The window is `2^bits` bytes, 9 to 15 (clamped). Default: 12 (4 KiB: a dozen 300-byte
    /// events).
    pub const fn window_bits(mut self, bits: u8) -> Self {
        self.window_bits = clamp(bits, 9, 15);
        self
    }

    /// zlib's memLevel, 1 to 9 (clamped): its hash table has `2^(level + 7)` entries and a block
    /// holds up to `2^(level + 6)` symbols (each memLevel doubles both, `2^(level + 9)` bytes).
    /// Default: 4 (8 KiB).
    pub const fn mem_level(mut self, level: u8) -> Self {
        self.mem_level = clamp(level, 1, 9);
        self
    }
}

/// Settings of the Brotli encoder (the `brotli` crate; feature `br`).
///
/// Qualities 2 to 4 keep a hash table of 2^16 (2, 3) or 2^17 (4) buckets whatever the window:
/// 315 KiB per stream at quality 3 (the default), 715 KiB at 4. Qualities 0 and 1 need almost
/// nothing but forget everything at each flush, and 5 and up need megabytes (32 MiB at 5: the
/// crate's default hasher; even with a small one, its ring buffer alone is 192 KiB). No setting
/// of the `brotli` crate stays within 64 KiB per stream and keeps history across flushes.
///
/// ```
/// use tower_sse::{Brotli, Coding, Compression};
///
/// let compression = Compression::new()
///     .order([Coding::Br])
///     .br(Brotli::new().quality(4).window_bits(16));
/// # let _ = compression;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Brotli {
    pub(crate) quality: u8,
    pub(crate) window_bits: u8,
}

impl Default for Brotli {
    fn default() -> Self {
        Self {
            quality: 3,
            window_bits: 12,
        }
    }
}

impl Brotli {
    /// Creates a new [`Brotli`] with the defaults: quality 3, window 2^12 bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The quality, 0 to 11 (clamped). Default: 3. Qualities 5 and up keep much larger match
    /// finders (megabytes per stream); 0 and 1 compress each flush on its own.
    pub const fn quality(mut self, quality: u8) -> Self {
        self.quality = if quality > 11 { 11 } else { quality };
        self
    }

    /// The window (`lgwin`) is `2^bits - 16` bytes, 10 to 24 (clamped). Default: 12 (4 KiB: a
    /// dozen 300-byte events).
    pub const fn window_bits(mut self, bits: u8) -> Self {
        self.window_bits = clamp(bits, 10, 24);
        self
    }
}

/// Settings of the zstd encoder (libzstd through the `zstd` crate; feature `zstd`).
///
/// Its state per stream (`ZSTD_sizeof_CCtx` once it has encoded) is about three times the
/// window plus the two tables: 60 KiB with the defaults, 165 KiB with a window of 2^14 and
/// tables of 2^12.
///
/// ```
/// use tower_sse::{Coding, Compression, Zstd};
///
/// let compression = Compression::new()
///     .order([Coding::Zstd])
///     .zstd(Zstd::new().level(1).window_log(14).hash_log(12).chain_log(12));
/// # let _ = compression;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
#[non_exhaustive]
pub struct Zstd {
    pub(crate) level: i8,
    pub(crate) window_log: u8,
    pub(crate) hash_log: u8,
    pub(crate) chain_log: u8,
}

impl Default for Zstd {
    fn default() -> Self {
        Self {
            level: 3,
            window_log: 12,
            hash_log: 10,
            chain_log: 10,
        }
    }
}

impl Zstd {
    /// Creates a new [`Zstd`] with the defaults: level 3, window 2^12 bytes, hash and chain
    /// tables of 2^10 entries.
    pub fn new() -> Self {
        Self::default()
    }

    /// The compression level, -7 to 22 (clamped). Default: 3.
    pub const fn level(mut self, level: i8) -> Self {
        self.level = if level < -7 {
            -7
        } else if level > 22 {
            22
        } else {
            level
        };
        self
    }

    /// The window is `2^log` bytes, 10 to 24 (clamped). Default: 12 (4 KiB: a dozen 300-byte
    /// events).
    pub const fn window_log(mut self, log: u8) -> Self {
        self.window_log = clamp(log, 10, 24);
        self
    }

    /// The hash table has `2^log` entries of 4 bytes, 6 to 24 (clamped). Default: 10.
    pub const fn hash_log(mut self, log: u8) -> Self {
        self.hash_log = clamp(log, 6, 24);
        self
    }

    /// The chain table has `2^log` entries of 4 bytes, 6 to 24 (clamped). Default: 10.
    pub const fn chain_log(mut self, log: u8) -> Self {
        self.chain_log = clamp(log, 6, 24);
        self
    }
}

const fn clamp(value: u8, min: u8, max: u8) -> u8 {
    if value < min {
        min
    } else if value > max {
        max
    } else {
        value
    }
}

/// An encoder failed (it could not be created, or refused its input): the stream ends with this
/// error. Found by downcasting the body's error.
#[derive(Debug)]
pub struct CompressionError(&'static str);

impl CompressionError {
    pub(crate) const fn new(what: &'static str) -> Self {
        Self(what)
    }
}

impl fmt::Display for CompressionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "event stream compression failed: {}", self.0)
    }
}

impl std::error::Error for CompressionError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_order_is_zstd_gzip_and_br_only_when_named() {
        assert_eq!(Compression::new().codings(), [Coding::Zstd, Coding::Gzip]);
        assert_eq!(
            Compression::new()
                .order([Coding::Zstd, Coding::Gzip, Coding::Br])
                .codings(),
            [Coding::Zstd, Coding::Gzip, Coding::Br]
        );
    }

    #[test]
    fn order_drops_duplicates_and_may_be_empty() {
        let compression = Compression::new().order([Coding::Gzip, Coding::Br, Coding::Gzip]);
        assert_eq!(compression.codings(), [Coding::Gzip, Coding::Br]);
        assert!(Compression::new().order([]).codings().is_empty());
    }

    #[test]
    fn odd_settings_are_clamped() {
        assert_eq!(Gzip::new().level(42).level, 9);
        assert_eq!(Gzip::new().window_bits(3).window_bits, 9);
        assert_eq!(Gzip::new().mem_level(0).mem_level, 1);
        assert_eq!(Brotli::new().quality(99).quality, 11);
        assert_eq!(Brotli::new().window_bits(30).window_bits, 24);
        assert_eq!(Zstd::new().level(-100).level, -7);
        assert_eq!(Zstd::new().window_log(0).window_log, 10);
        assert_eq!(Zstd::new().hash_log(99).hash_log, 24);
    }

    #[test]
    fn tokens_match_case_insensitively() {
        assert!(Coding::Gzip.matches(b"GZip"));
        assert!(Coding::Gzip.matches(b"x-gzip"));
        assert!(!Coding::Br.matches(b"x-br"));
        assert!(Coding::Zstd.matches(b"ZSTD"));
    }
}
