//! The byte formats of the fuzz inputs: what a file in `fuzz/seeds/<target>/` means.
//!
//! libFuzzer hands each target a byte string; these decoders turn any byte string into an input
//! (there is no invalid input), and the stable test `tests/fuzz_seeds.rs` decodes the checked-in
//! seeds with the same code, so that it needs no nightly toolchain. The fuzz targets take the
//! raw bytes (`fuzz_target!(|bytes: &[u8]| ...)`) and decode them here. The
//! formats keep the stream bytes as they are (no length prefixes), so that seeds can be written
//! with `printf` and libFuzzer's byte mutations map to small changes of the stream:
//!
//! - `scanner`: one flags byte (bit 0: the layer writes first, so a leading BOM is removed;
//!   bit 1: also replay the input through the public layer), then the stream, where each `0xFF`
//!   byte marks a frame boundary (`0xFF` never occurs in UTF-8, so no stream loses anything).
//! - `resume`: the `scanner` format (its flags byte is ignored).
//! - `body`: seven option bytes (see [`Options::decode`]), then a script: stream bytes form data
//!   frames, and `0xFF` followed by an opcode ends the current frame and does something (see
//!   [`Step`]).
//! - `headers`: one version byte, then `name:value` lines separated by LF (split at the first
//!   colon; a line without one is a name with an empty value; invalid names or values are
//!   skipped).

/// The byte that marks a frame boundary (scanner) or starts an opcode (body).
pub const MARK: u8 = 0xFF;

/// A `scanner` input: a stream, the offsets where it is split into frames, and flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScannerInput {
    /// The layer writes before the upstream's first byte (a `retry:` hint).
    pub inject_first: bool,
    /// Also replay the input through the public layer (slower: a runtime per input).
    pub through_layer: bool,
    /// The upstream's bytes.
    pub data: Vec<u8>,
    /// Offsets into `data` where a frame ends, ascending (repeats make empty frames).
    pub cuts: Vec<usize>,
}

impl ScannerInput {
    /// Decodes a `scanner` seed.
    pub fn decode(bytes: &[u8]) -> Self {
        let (flags, rest) = match bytes.split_first() {
            Some((flags, rest)) => (*flags, rest),
            None => (0, &[][..]),
        };
        let mut data = Vec::with_capacity(rest.len());
        let mut cuts = Vec::new();
        for &byte in rest {
            if byte == MARK {
                cuts.push(data.len());
            } else {
                data.push(byte);
            }
        }
        Self {
            inject_first: flags & 1 != 0,
            through_layer: flags & 2 != 0,
            data,
            cuts,
        }
    }

    /// The frames: `data` split at `cuts` (offsets past the end are clamped).
    pub fn frames(&self) -> Vec<&[u8]> {
        split(&self.data, &self.cuts)
    }
}

/// Splits `data` at `cuts` (any order, clamped to `data.len()`).
pub fn split<'a>(data: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(data.len())).collect();
    cuts.sort_unstable();
    let mut frames = Vec::with_capacity(cuts.len() + 1);
    let mut rest = data;
    let mut at = 0;
    for cut in cuts {
        let (frame, tail) = rest.split_at(cut - at);
        frames.push(frame);
        rest = tail;
        at = cut;
    }
    frames.push(rest);
    frames
}

/// The slow-client policy of a `body` input (mirrors `tower_sse::SlowClientPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `SlowClientPolicy::Disconnect`.
    Disconnect,
    /// `SlowClientPolicy::DropOldest`.
    DropOldest,
    /// `SlowClientPolicy::LatestPerType`.
    LatestPerType,
}

/// The slow-client buffer of a `body` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slow {
    /// `SlowClient::max_buffer`, bytes.
    pub max_buffer: usize,
    /// `SlowClient::timeout`, milliseconds.
    pub timeout_ms: u64,
    /// `SlowClient::policy`.
    pub policy: Policy,
}

/// How the layer is configured for a `body` input. Durations are milliseconds; `0` is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// A `retry:` hint (3000 ms, no jitter) at the start and when the layer ends the stream.
    pub retry: bool,
    /// An initial comment (`: hi`).
    pub initial_comment: bool,
    /// The heartbeat interval.
    pub heartbeat_ms: u64,
    /// The slow-client buffer.
    pub slow: Option<Slow>,
    /// An `SseShutdown` (triggered by [`Step::Shutdown`]) with this drain window.
    pub shutdown: Option<u64>,
    /// The idle timeout.
    pub idle_timeout_ms: u64,
    /// The maximum lifetime (no jitter); the close grace is `grace_ms`.
    pub max_lifetime_ms: u64,
    /// The close grace (lifetime) and drain window.
    pub grace_ms: u64,
}

/// The `retry:` value the checks configure, in milliseconds.
pub const RETRY_MS: u64 = 3000;

impl Options {
    /// Decodes the seven option bytes of a `body` input; missing bytes are zero.
    ///
    /// | byte | meaning |
    /// |---|---|
    /// | 0 | flags: bit 0 retry hint, 1 slow-client buffer, 2 shutdown handle, 3 idle timeout, 4 lifetime, 5–6 policy (0 `Disconnect`, 1 `DropOldest`, 2 `LatestPerType`, 3 `Disconnect`), 7 initial comment |
    /// | 1 | heartbeat interval, ms (0: none) |
    /// | 2 | slow-client `max_buffer` / 4 |
    /// | 3 | slow-client timeout, ms |
    /// | 4 | idle timeout / 2, ms |
    /// | 5 | max lifetime / 3, ms |
    /// | 6 | close grace and drain window, ms |
    pub fn decode(bytes: &[u8]) -> Self {
        let byte = |i: usize| u64::from(bytes.get(i).copied().unwrap_or(0));
        let flags = byte(0);
        let policy = match (flags >> 5) & 3 {
            1 => Policy::DropOldest,
            2 => Policy::LatestPerType,
            _ => Policy::Disconnect,
        };
        Self {
            retry: flags & 1 != 0,
            initial_comment: flags & 0x80 != 0,
            heartbeat_ms: byte(1),
            slow: (flags & 2 != 0).then(|| Slow {
                max_buffer: usize::from(bytes.get(2).copied().unwrap_or(0)) * 4,
                timeout_ms: byte(3),
                policy,
            }),
            shutdown: (flags & 4 != 0).then(|| byte(6)),
            idle_timeout_ms: if flags & 8 != 0 { byte(4) * 2 } else { 0 },
            max_lifetime_ms: if flags & 16 != 0 { byte(5) * 3 } else { 0 },
            grace_ms: byte(6),
        }
    }
}

/// One step of a `body` script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The upstream sends a data frame (bytes between two opcodes; `0xFF |` sends the current
    /// frame even when empty).
    Data(Vec<u8>),
    /// `0xFF w n`: `n` ms pass (the client keeps reading).
    Wait(u8),
    /// `0xFF s n`: the client reads nothing for the next `n` ms.
    Stall(u8),
    /// `0xFF x`: the shutdown handle drains.
    Shutdown,
}

/// A `body` input: options and a script.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyInput {
    /// The layer's configuration.
    pub options: Options,
    /// What the upstream, the client and the clock do, in order.
    pub steps: Vec<Step>,
}

/// The number of option bytes before a `body` script.
pub const OPTION_BYTES: usize = 7;

impl BodyInput {
    /// Decodes a `body` seed.
    pub fn decode(bytes: &[u8]) -> Self {
        let (head, script) = bytes.split_at(bytes.len().min(OPTION_BYTES));
        let mut steps = Vec::new();
        let mut frame = Vec::new();
        let mut rest = script.iter();
        while let Some(&byte) = rest.next() {
            if byte != MARK {
                frame.push(byte);
                continue;
            }
            let opcode = rest.next().copied();
            if !frame.is_empty() || opcode == Some(b'|') {
                steps.push(Step::Data(std::mem::take(&mut frame)));
            }
            match opcode {
                Some(b'w') => steps.push(Step::Wait(rest.next().copied().unwrap_or(0))),
                Some(b's') => steps.push(Step::Stall(rest.next().copied().unwrap_or(0))),
                Some(b'x') => steps.push(Step::Shutdown),
                // `|`, an unknown opcode or the end: the frame boundary alone.
                _ => {}
            }
        }
        if !frame.is_empty() {
            steps.push(Step::Data(frame));
        }
        Self {
            options: Options::decode(head),
            steps,
        }
    }

    /// A `scanner` input as a `body` script: a heartbeat every 10 ms, 15 ms of silence after
    /// each frame (so one heartbeat is due after each, injected where the scanner allows), and
    /// the `retry:` hint first when `inject_first`.
    pub fn from_scanner(input: &ScannerInput) -> Self {
        let mut steps = Vec::new();
        for frame in input.frames() {
            steps.push(Step::Data(frame.to_vec()));
            steps.push(Step::Wait(15));
        }
        Self {
            options: Options {
                retry: input.inject_first,
                heartbeat_ms: 10,
                ..Options::default()
            },
            steps,
        }
    }
}

/// A `headers` input: the response's header pairs and the HTTP version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadersInput {
    /// 0: HTTP/0.9, 1: HTTP/1.0, 2: HTTP/1.1, 3: HTTP/2, 4: HTTP/3 (modulo 5).
    pub version: u8,
    /// `(name, value)` pairs as bytes, possibly invalid.
    pub pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl HeadersInput {
    /// Decodes a `headers` seed.
    pub fn decode(bytes: &[u8]) -> Self {
        let (version, rest) = match bytes.split_first() {
            Some((version, rest)) => (*version, rest),
            None => (0, &[][..]),
        };
        let pairs = rest
            .split(|&b| b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| match line.iter().position(|&b| b == b':') {
                Some(colon) => {
                    let (name, value) = line.split_at(colon);
                    (name.to_vec(), value.get(1..).unwrap_or_default().to_vec())
                }
                None => (line.to_vec(), Vec::new()),
            })
            .collect();
        Self { version, pairs }
    }
}
