//! The encoder of one stream, and the loop that feeds it the state machine's frames and hands on
//! its output at every point the stream is about to wait (I11).

use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;

use super::{Coding, Compression, CompressionError};
use crate::BoxError;

/// Output is produced into chunks of this size (zeroed first: the encoders take `&mut [u8]`).
#[cfg(any(feature = "gzip", feature = "br", feature = "zstd"))]
const CHUNK: usize = 4096;
/// Input handed to the encoder since the last flush after which the output is flushed and
/// handed on even though more frames are ready (bounds what is held, and the work of one poll).
const FLUSH_AT: usize = 16 * 1024;

type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// What an encoder is asked to do with the input it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Take the input; output may be held back.
    Process,
    /// Take the input and write out everything, so that it decodes (sync flush).
    Flush,
    /// Take the input and end the compressed stream.
    Finish,
}

/// What comes after the output being handed on.
enum Next {
    /// A frame that is not data (trailers), after the finished output.
    Frame(Frame<Bytes>),
    /// The machine's error, after the flushed output.
    Error(BoxError),
    /// The end of the body, after the finished output.
    End,
}

/// The encoder of one stream and what it still has to hand on.
pub(crate) struct Encoder {
    codec: Codec,
    /// Input handed to the codec since its last flush.
    unflushed: usize,
    next: Option<Next>,
    /// The compressed stream was finished: nothing may be encoded any more.
    finished: bool,
    /// The end (or an error) was handed on.
    done: bool,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("coding", &self.codec.coding())
            .field("unflushed", &self.unflushed)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    pub(super) fn new(coding: Coding, settings: &Compression) -> Result<Self, CompressionError> {
        Ok(Self {
            codec: Codec::new(coding, settings)?,
            unflushed: 0,
            next: None,
            finished: false,
            done: false,
        })
    }

    /// The coding, for `Content-Encoding`.
    pub(crate) fn coding(&self) -> Coding {
        self.codec.coding()
    }

    /// Everything was handed on, the end included.
    pub(crate) const fn is_done(&self) -> bool {
        self.done
    }

    /// Polls `inner` (the stream's state machine) for as long as it has frames ready, encodes
    /// them, and hands on the encoder's flushed output when `inner` is about to wait, after at
    /// most `FLUSH_AT` bytes of input, before a trailers frame or an error, and finished before
    /// the end.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
        mut inner: impl FnMut(&mut Context<'_>) -> Polled,
    ) -> Polled {
        let mut out = Vec::new();
        loop {
            if let Some(next) = self.next.take() {
                return match next {
                    Next::Frame(frame) => Poll::Ready(Some(Ok(frame))),
                    Next::Error(error) => {
                        self.done = true;
                        Poll::Ready(Some(Err(error)))
                    }
                    Next::End => {
                        self.done = true;
                        Poll::Ready(None)
                    }
                };
            }
            if self.done {
                return Poll::Ready(None);
            }
            let (op, next) = match inner(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if self.finished {
                            // Data after trailers: nothing can carry it any more.
                            return self.fail("data after the end of the compressed stream");
                        }
                        if let Err(error) = self.codec.run(&data, &mut out, Op::Process) {
                            return self.fail(error);
                        }
                        self.unflushed += data.len();
                        if self.unflushed < FLUSH_AT {
                            continue;
                        }
                        (Op::Flush, None)
                    }
                    Err(frame) => (Op::Finish, Some(Next::Frame(frame))),
                },
                Poll::Ready(Some(Err(error))) => (Op::Flush, Some(Next::Error(error))),
                Poll::Ready(None) => (Op::Finish, Some(Next::End)),
                Poll::Pending if self.unflushed > 0 => (Op::Flush, None),
                Poll::Pending => return Poll::Pending,
            };
            if !self.finished {
                if let Err(error) = self.codec.run(&[], &mut out, op) {
                    return self.fail(error);
                }
                self.unflushed = 0;
                self.finished = op == Op::Finish;
            }
            self.next = next;
            if !out.is_empty() {
                // A flushed event is a few dozen bytes in a 4 KiB chunk: hand on only what it
                // needs, as the frame may wait in the connection's send queue behind a slow
                // client (usually an in-place shrink by the allocator).
                out.shrink_to_fit();
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
            }
        }
    }

    fn fail(&mut self, what: &'static str) -> Polled {
        self.done = true;
        self.next = None;
        Poll::Ready(Some(Err(CompressionError::new(what).into())))
    }
}

/// One codec's state.
enum Codec {
    #[cfg(feature = "gzip")]
    Gzip(super::zlib::Deflate),
    #[cfg(feature = "br")]
    Br(Box<brotli::enc::encode::BrotliEncoderStateStruct<brotli::enc::StandardAlloc>>),
    #[cfg(feature = "zstd")]
    Zstd(zstd::zstd_safe::CCtx<'static>),
    /// A coding whose feature is off (never negotiated).
    Unavailable(Coding),
}

impl Codec {
    #[cfg_attr(
        not(any(feature = "gzip", feature = "br", feature = "zstd")),
        expect(unused_variables, reason = "no codec compiled in")
    )]
    fn new(coding: Coding, settings: &Compression) -> Result<Self, CompressionError> {
        match coding {
            #[cfg(feature = "gzip")]
            Coding::Gzip => gzip::new(settings.gzip).map(Self::Gzip),
            #[cfg(feature = "br")]
            Coding::Br => Ok(Self::Br(br::new(settings.br))),
            #[cfg(feature = "zstd")]
            Coding::Zstd => zstd_codec::new(settings.zstd).map(Self::Zstd),
            #[allow(unreachable_patterns, reason = "reachable when a feature is off")]
            _ => Ok(Self::Unavailable(coding)),
        }
    }

    const fn coding(&self) -> Coding {
        match self {
            #[cfg(feature = "gzip")]
            Self::Gzip(_) => Coding::Gzip,
            #[cfg(feature = "br")]
            Self::Br(_) => Coding::Br,
            #[cfg(feature = "zstd")]
            Self::Zstd(_) => Coding::Zstd,
            Self::Unavailable(coding) => *coding,
        }
    }

    /// Encodes `input` into `out` (appended), with `op`.
    #[cfg_attr(
        not(any(feature = "gzip", feature = "br", feature = "zstd")),
        expect(
            unused_variables,
            clippy::ptr_arg,
            reason = "no codec compiled in to grow `out`"
        )
    )]
    fn run(&mut self, input: &[u8], out: &mut Vec<u8>, op: Op) -> Result<(), &'static str> {
        match self {
            #[cfg(feature = "gzip")]
            Self::Gzip(deflate) => gzip::run(deflate, input, out, op),
            #[cfg(feature = "br")]
            Self::Br(state) => br::run(state, input, out, op),
            #[cfg(feature = "zstd")]
            Self::Zstd(cctx) => zstd_codec::run(cctx, input, out, op),
            Self::Unavailable(_) => Err("the coding's feature is off"),
        }
    }
}

/// Grows `out` by one zeroed chunk; returns where the chunk starts.
#[cfg(any(feature = "gzip", feature = "br", feature = "zstd"))]
fn grow(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.resize(start + CHUNK, 0);
    start
}

#[cfg(feature = "gzip")]
mod gzip {
    use super::{CHUNK, Op, grow};
    use crate::compress::zlib::{Deflate, Flush, Status};
    use crate::compress::{CompressionError, Gzip};

    pub(super) fn new(settings: Gzip) -> Result<Deflate, CompressionError> {
        // Levels, window bits and memLevel are clamped to zlib's ranges by `Gzip`'s setters.
        Deflate::new(settings.level, settings.window_bits, settings.mem_level)
            .ok_or(CompressionError::new("gzip encoder"))
    }

    pub(super) fn run(
        deflate: &mut Deflate,
        input: &[u8],
        out: &mut Vec<u8>,
        op: Op,
    ) -> Result<(), &'static str> {
        let flush = match op {
            Op::Process => Flush::None,
            Op::Flush => Flush::Sync,
            Op::Finish => Flush::Finish,
        };
        let mut consumed = 0;
        loop {
            let start = grow(out);
            let result = deflate.deflate(
                input.get(consumed..).unwrap_or_default(),
                out.get_mut(start..).unwrap_or_default(),
                flush,
            );
            let (taken, produced, status) = match result {
                Ok(progress) => progress,
                Err(()) => {
                    out.truncate(start);
                    return Err("gzip encoder error");
                }
            };
            consumed += taken;
            out.truncate(start + produced.min(CHUNK));
            let room_left = produced < CHUNK;
            match (op, status) {
                (Op::Finish, Status::StreamEnd) => return Ok(()),
                (Op::Finish, _) => {}
                // No progress possible: everything is taken and written.
                (_, Status::BufError) => return Ok(()),
                _ if consumed >= input.len() && room_left => return Ok(()),
                _ => {}
            }
        }
    }
}

#[cfg(feature = "br")]
mod br {
    use brotli::enc::StandardAlloc;
    use brotli::enc::backward_references::BrotliEncoderMode;
    use brotli::enc::encode::{
        BrotliEncoderOperation, BrotliEncoderParameter, BrotliEncoderStateStruct,
    };
    use brotli::interface::{PredictionModeContextMap, StaticCommand};
    use brotli::{InputPair, InputReferenceMut};

    use super::{CHUNK, Op, grow};
    use crate::compress::Brotli;

    pub(super) fn new(settings: Brotli) -> Box<BrotliEncoderStateStruct<StandardAlloc>> {
        let mut state = Box::new(BrotliEncoderStateStruct::new(StandardAlloc::default()));
        state.set_parameter(
            BrotliEncoderParameter::BROTLI_PARAM_QUALITY,
            u32::from(settings.quality),
        );
        state.set_parameter(
            BrotliEncoderParameter::BROTLI_PARAM_LGWIN,
            u32::from(settings.window_bits),
        );
        state.set_parameter(
            BrotliEncoderParameter::BROTLI_PARAM_MODE,
            BrotliEncoderMode::BROTLI_MODE_TEXT as u32,
        );
        state
    }

    fn no_callback(
        _: &mut PredictionModeContextMap<InputReferenceMut<'_>>,
        _: &mut [StaticCommand],
        _: InputPair<'_>,
        _: &mut StandardAlloc,
    ) {
    }

    pub(super) fn run(
        state: &mut BrotliEncoderStateStruct<StandardAlloc>,
        input: &[u8],
        out: &mut Vec<u8>,
        op: Op,
    ) -> Result<(), &'static str> {
        let operation = match op {
            Op::Process => BrotliEncoderOperation::BROTLI_OPERATION_PROCESS,
            Op::Flush => BrotliEncoderOperation::BROTLI_OPERATION_FLUSH,
            Op::Finish => BrotliEncoderOperation::BROTLI_OPERATION_FINISH,
        };
        let mut available_in = input.len();
        let mut input_offset = 0;
        loop {
            let start = grow(out);
            let mut available_out = CHUNK;
            let mut output_offset = 0;
            let ok = state.compress_stream(
                operation,
                &mut available_in,
                input,
                &mut input_offset,
                &mut available_out,
                out.get_mut(start..).unwrap_or_default(),
                &mut output_offset,
                &mut None,
                &mut no_callback,
            );
            out.truncate(start + output_offset.min(CHUNK));
            if !ok {
                return Err("brotli encoder error");
            }
            let drained = available_in == 0 && !state.has_more_output();
            let done = match op {
                Op::Finish => state.is_finished(),
                Op::Process | Op::Flush => drained,
            };
            if done {
                return Ok(());
            }
        }
    }
}

#[cfg(feature = "zstd")]
mod zstd_codec {
    use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective;
    use zstd::zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer};

    use super::{Op, grow};
    use crate::compress::{CompressionError, Zstd};

    pub(super) fn new(settings: Zstd) -> Result<CCtx<'static>, CompressionError> {
        let mut cctx = CCtx::try_create().ok_or(CompressionError::new("zstd context"))?;
        for parameter in [
            CParameter::CompressionLevel(i32::from(settings.level)),
            CParameter::WindowLog(u32::from(settings.window_log)),
            CParameter::HashLog(u32::from(settings.hash_log)),
            CParameter::ChainLog(u32::from(settings.chain_log)),
            CParameter::ChecksumFlag(false),
        ] {
            cctx.set_parameter(parameter)
                .map_err(|_| CompressionError::new("zstd parameter"))?;
        }
        Ok(cctx)
    }

    pub(super) fn run(
        cctx: &mut CCtx<'static>,
        input: &[u8],
        out: &mut Vec<u8>,
        op: Op,
    ) -> Result<(), &'static str> {
        let directive = match op {
            Op::Process => ZSTD_EndDirective::ZSTD_e_continue,
            Op::Flush => ZSTD_EndDirective::ZSTD_e_flush,
            Op::Finish => ZSTD_EndDirective::ZSTD_e_end,
        };
        let mut input = InBuffer::around(input);
        loop {
            let start = grow(out);
            let (remaining, written) = {
                let mut output = OutBuffer::around(out.get_mut(start..).unwrap_or_default());
                let remaining = cctx
                    .compress_stream2(&mut output, &mut input, directive)
                    .map_err(|_| "zstd encoder error")?;
                (remaining, output.pos())
            };
            out.truncate(start + written);
            let done = match op {
                Op::Process => input.pos() >= input.src.len(),
                Op::Flush | Op::Finish => remaining == 0,
            };
            if done {
                return Ok(());
            }
        }
    }
}

#[cfg(all(test, any(feature = "gzip", feature = "zstd")))]
mod tests {
    use super::*;

    /// Feeds `codec` 200 JSON events, each sync-flushed, then a run of input larger than the
    /// default windows (so that every buffer is allocated at its full size).
    #[expect(clippy::unwrap_used, reason = "a test helper (not a #[test] fn)")]
    fn feed(codec: &mut Codec) {
        let mut out = Vec::new();
        for n in 0..200_usize {
            let event = format!(
                "id: {n}\ndata: {{\"record\":\"rec-{:06}\",\"processed\":{},\"stage\":\"load\"}}\n\n",
                n * 7919 % 1_000_000,
                n * 3
            );
            codec.run(event.as_bytes(), &mut out, Op::Process).unwrap();
            codec.run(&[], &mut out, Op::Flush).unwrap();
        }
        codec.run(&[b'x'; 20_000], &mut out, Op::Flush).unwrap();
    }

    /// Issue 12's bound for gzip: what C zlib allocated for the stream (through the wrapper's
    /// allocator, headers included), once it has encoded and flushed events.
    #[cfg(feature = "gzip")]
    #[test]
    fn gzip_state_per_stream_is_at_most_64_kib_by_default() {
        let mut codec = Codec::new(Coding::Gzip, &Compression::new()).unwrap();
        feed(&mut codec);
        let Codec::Gzip(deflate) = &codec else {
            unreachable!("a gzip codec")
        };
        assert!(
            deflate.state_bytes() <= 64 * 1024,
            "{} bytes",
            deflate.state_bytes()
        );
    }

    /// Issue 12's bound: ≤ 64 KiB of encoder state per stream by default. libzstd's own count
    /// (`ZSTD_sizeof_CCtx`), once the context has encoded and flushed events, so that its
    /// workspace is allocated at its full size.
    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_state_per_stream_is_at_most_64_kib_by_default() {
        let mut codec = Codec::new(Coding::Zstd, &Compression::new()).unwrap();
        feed(&mut codec);
        let Codec::Zstd(cctx) = &codec else {
            unreachable!("a zstd codec")
        };
        assert!(cctx.sizeof() <= 64 * 1024, "{} bytes", cctx.sizeof());
    }
}
