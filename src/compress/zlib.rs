//! A raw deflate stream of C zlib (through `libz-sys`): the one place of the crate that uses
//! `unsafe`.
//!
//! Why not a safe crate: zlib-rs (and zlib-ng, and so `libz-rs-sys`) hashes into a fixed 2^16
//! buckets, 128 KiB per stream whatever memLevel; flate2 calls C zlib's `deflateInit2_` with
//! memLevel 8 (a 64 KiB hash table and 64 KiB of symbol buffer). C zlib sizes both from
//! memLevel: `2^(windowBits + 2) + 2^(memLevel + 9)` bytes plus its ~6 KiB `deflate_state`, 30 KiB
//! for a 4 KiB window and memLevel 4, and only it meets issue 12's 64 KiB per stream for gzip.
//!
//! What the wrapper guarantees:
//! - The `z_stream` lives in a heap block of its own that never moves (zlib keeps a pointer to
//!   it in its state and checks it on every call), created here and freed in `Drop` after
//!   `deflateEnd`. Every pointer into it derives from the one raw pointer of that block.
//! - zlib allocates through `zalloc` / `zfree` below, on Rust's global allocator (so its state
//!   is counted like the rest of the process's memory), and adds what it holds to a counter in
//!   the same block (`state_bytes`).
//! - `next_in` / `next_out` point into the caller's slices only during one `deflate` call and
//!   are reset to null after it.
//! - zlib is only entered through `&mut self`: never twice at once.

use std::alloc::{Layout, alloc, dealloc};
use std::ffi::{c_int, c_uint, c_void};
use std::ptr::{self, NonNull};

use libz_sys as z;

/// The alignment of zlib's allocations (`max_align_t` on the usual 64-bit targets), and the size
/// of the header in front of each that keeps its size for `zfree`.
const ALIGN: usize = 16;

/// How far zlib got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Status {
    /// Progress was made (`Z_OK`).
    Ok,
    /// The stream is finished (`Z_STREAM_END`, after `Z_FINISH`).
    StreamEnd,
    /// No progress was possible: no input and nothing to flush (`Z_BUF_ERROR`; not an error).
    BufError,
}

/// zlib's `flush` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flush {
    /// `Z_NO_FLUSH`: output may be held back.
    None,
    /// `Z_SYNC_FLUSH`: everything so far decodes; the stream continues.
    Sync,
    /// `Z_FINISH`: the last block and the gzip trailer.
    Finish,
}

/// The block zlib's stream lives in, with the count of what zlib allocated for it.
struct Block {
    stream: z::z_stream,
    /// Bytes zlib holds for this stream (headers included), kept by `zalloc` / `zfree`.
    allocated: usize,
}

/// One gzip deflate stream.
pub(super) struct Deflate {
    block: NonNull<Block>,
}

// SAFETY: the stream's state is reached only through `block`, which this value owns alone (no
// other pointer to it escapes, zlib keeps none between calls but its own, into the block); zlib
// has no thread-local or global state for deflate; the allocator functions are thread-safe.
unsafe impl Send for Deflate {}
// SAFETY: `&self` methods only read the counter; zlib is entered only through `&mut self`.
unsafe impl Sync for Deflate {}

impl Deflate {
    /// A gzip stream (`windowBits + 16`) at `level` (0–9), a window of `2^window_bits` bytes
    /// (9–15) and `mem_level` (1–9); `None` if zlib refuses (out of memory or a bad argument).
    pub(super) fn new(level: u8, window_bits: u8, mem_level: u8) -> Option<Self> {
        let block = Box::into_raw(Box::new(Block {
            stream: z::z_stream {
                next_in: ptr::null_mut(),
                avail_in: 0,
                total_in: 0,
                next_out: ptr::null_mut(),
                avail_out: 0,
                total_out: 0,
                msg: ptr::null_mut(),
                state: ptr::null_mut(),
                zalloc,
                zfree,
                opaque: ptr::null_mut(),
                data_type: 0,
                adler: 0,
                reserved: 0,
            },
            allocated: 0,
        }));
        // SAFETY: `block` was just allocated and is not referenced elsewhere. `opaque` points at
        // the counter inside it, which only `zalloc` / `zfree` touch, during zlib calls made
        // through this `Deflate`. `deflateInit2_` gets a stream whose fields are all set, the
        // version of the linked zlib and the size of the `z_stream` it was declared with.
        let status = unsafe {
            (*block).stream.opaque = ptr::addr_of_mut!((*block).allocated).cast();
            z::deflateInit2_(
                ptr::addr_of_mut!((*block).stream),
                c_int::from(level),
                z::Z_DEFLATED,
                c_int::from(window_bits) + 16,
                c_int::from(mem_level),
                z::Z_DEFAULT_STRATEGY,
                z::zlibVersion(),
                c_int::try_from(size_of::<z::z_stream>()).unwrap_or(c_int::MAX),
            )
        };
        // SAFETY: from `Box::into_raw` just above, so not null.
        let block = unsafe { NonNull::new_unchecked(block) };
        if status != z::Z_OK {
            // zlib freed what it had allocated before failing: only the block is left.
            // SAFETY: from `Box::into_raw`, freed once, here; zlib keeps no pointer to it.
            drop(unsafe { Box::from_raw(block.as_ptr()) });
            return None;
        }
        Some(Self { block })
    }

    /// Compresses from `input` into `output`: the bytes of each it consumed and produced, and
    /// how far zlib got; `Err` if zlib reports its state broken (`Z_STREAM_ERROR`).
    pub(super) fn deflate(
        &mut self,
        input: &[u8],
        output: &mut [u8],
        flush: Flush,
    ) -> Result<(usize, usize, Status), ()> {
        // zlib counts in `unsigned int`: longer slices are taken in parts (the caller loops
        // until all is consumed).
        let in_len = c_uint::try_from(input.len()).unwrap_or(c_uint::MAX);
        let out_len = c_uint::try_from(output.len()).unwrap_or(c_uint::MAX);
        let flush = match flush {
            Flush::None => z::Z_NO_FLUSH,
            Flush::Sync => z::Z_SYNC_FLUSH,
            Flush::Finish => z::Z_FINISH,
        };
        // SAFETY: the stream was initialised by `deflateInit2_` and not ended (that is `Drop`).
        // `next_in` / `next_out` point into `input` / `output` for at most their lengths, which
        // are borrowed for this call; zlib only reads through `next_in` (it is `*mut` because
        // the bindings are declared without `z_const`). Both are reset to null before return.
        let (status, in_left, out_left) = unsafe {
            let stream = ptr::addr_of_mut!((*self.block.as_ptr()).stream);
            (*stream).next_in = input.as_ptr().cast_mut();
            (*stream).avail_in = in_len;
            (*stream).next_out = output.as_mut_ptr();
            (*stream).avail_out = out_len;
            let status = z::deflate(stream, flush);
            let left = ((*stream).avail_in, (*stream).avail_out);
            (*stream).next_in = ptr::null_mut();
            (*stream).avail_in = 0;
            (*stream).next_out = ptr::null_mut();
            (*stream).avail_out = 0;
            (status, left.0, left.1)
        };
        let consumed = usize::try_from(in_len.saturating_sub(in_left)).unwrap_or(0);
        let produced = usize::try_from(out_len.saturating_sub(out_left)).unwrap_or(0);
        let status = match status {
            z::Z_OK => Status::Ok,
            z::Z_STREAM_END => Status::StreamEnd,
            z::Z_BUF_ERROR => Status::BufError,
            _ => return Err(()),
        };
        Ok((consumed, produced, status))
    }

    /// The bytes zlib holds for this stream (its allocations with their headers): the encoder's
    /// state per stream, without the block itself (`size_of::<z_stream>()` + 8).
    #[cfg(test)]
    pub(super) fn state_bytes(&self) -> usize {
        // SAFETY: the block lives as long as `self`; zlib is not running (that needs `&mut`).
        unsafe { (*self.block.as_ptr()).allocated }
    }
}

impl Drop for Deflate {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised and is ended once, here; then the block, from
        // `Box::into_raw`, is freed once. `deflateEnd` frees zlib's state through `zfree`, which
        // writes the counter inside the block: the block is freed after it.
        unsafe {
            z::deflateEnd(ptr::addr_of_mut!((*self.block.as_ptr()).stream));
            drop(Box::from_raw(self.block.as_ptr()));
        }
    }
}

/// zlib's allocator: `items * size` bytes on Rust's global allocator, behind a header that keeps
/// the size for `zfree`; null if the size overflows or the allocation fails (zlib then returns
/// `Z_MEM_ERROR`). Adds the size to the counter `opaque` points at.
unsafe extern "C" fn zalloc(opaque: *mut c_void, items: c_uint, size: c_uint) -> *mut c_void {
    let Some(total) = usize::try_from(items)
        .ok()
        .zip(usize::try_from(size).ok())
        .and_then(|(items, size)| items.checked_mul(size))
        .and_then(|bytes| bytes.checked_add(ALIGN))
    else {
        return ptr::null_mut();
    };
    let Ok(layout) = Layout::from_size_align(total, ALIGN) else {
        return ptr::null_mut();
    };
    // SAFETY: `layout` has a non-zero size (at least `ALIGN`). The header (`ALIGN` bytes, aligned
    // for `usize`) is written inside the allocation; the pointer handed to zlib is `ALIGN` bytes
    // in, so still aligned to `ALIGN`, with `items * size` bytes after it. `opaque` is the
    // counter of the block whose stream zlib is working on (set in `Deflate::new`), not
    // otherwise borrowed during the zlib call.
    unsafe {
        let base = alloc(layout);
        if base.is_null() {
            return ptr::null_mut();
        }
        base.cast::<usize>().write(total);
        if let Some(allocated) = opaque.cast::<usize>().as_mut() {
            *allocated = allocated.saturating_add(total);
        }
        base.add(ALIGN).cast()
    }
}

/// zlib's deallocator, for pointers from `zalloc`.
unsafe extern "C" fn zfree(opaque: *mut c_void, address: *mut c_void) {
    if address.is_null() {
        return;
    }
    // SAFETY: `address` came from `zalloc` (zlib frees only what it allocated), so the header
    // `ALIGN` bytes before it holds the total size, and the layout is the one allocated with.
    // `opaque` as in `zalloc`.
    unsafe {
        let base = address.cast::<u8>().sub(ALIGN);
        let total = base.cast::<usize>().read();
        if let Some(allocated) = opaque.cast::<usize>().as_mut() {
            *allocated = allocated.saturating_sub(total);
        }
        dealloc(base, Layout::from_size_align_unchecked(total, ALIGN));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_decodes_after_each_sync_flush_and_at_its_end() {
        let mut deflate = Deflate::new(6, 12, 4).unwrap();
        let mut wire = Vec::new();
        let mut out = [0_u8; 256];
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        let mut plain = Vec::new();
        for n in 0..50 {
            let event = format!("id: {n}\ndata: {{\"n\":{n},\"stage\":\"load\"}}\n\n");
            plain.extend_from_slice(event.as_bytes());
            let mut input = event.as_bytes();
            loop {
                let (consumed, produced, _) =
                    deflate.deflate(input, &mut out, Flush::Sync).unwrap();
                input = &input[consumed..];
                wire.extend_from_slice(&out[..produced]);
                std::io::Write::write_all(&mut decoder, &out[..produced]).unwrap();
                if input.is_empty() && produced < out.len() {
                    break;
                }
            }
            std::io::Write::flush(&mut decoder).unwrap();
            assert_eq!(decoder.get_ref(), &plain, "after event {n}");
        }
        loop {
            let (_, produced, status) = deflate.deflate(&[], &mut out, Flush::Finish).unwrap();
            wire.extend_from_slice(&out[..produced]);
            if status == Status::StreamEnd {
                break;
            }
        }
        let mut whole = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&wire[..]), &mut whole)
            .unwrap();
        assert_eq!(whole, plain);
    }

    #[test]
    fn a_flush_with_nothing_new_makes_no_progress() {
        let mut deflate = Deflate::new(6, 12, 4).unwrap();
        let mut out = [0_u8; 64];
        deflate
            .deflate(b"data: x\n\n", &mut out, Flush::Sync)
            .unwrap();
        let (consumed, produced, status) = deflate.deflate(&[], &mut out, Flush::Sync).unwrap();
        assert_eq!((consumed, produced, status), (0, 0, Status::BufError));
    }

    #[test]
    fn state_bytes_follow_window_and_mem_level() {
        let small = Deflate::new(6, 12, 4).unwrap().state_bytes();
        let large = Deflate::new(6, 15, 8).unwrap().state_bytes();
        // 2^(12+2) + 2^(4+9) = 24 KiB and 2^17 + 2^17 = 256 KiB, plus deflate_state.
        assert!((24 * 1024..40 * 1024).contains(&small), "{small}");
        assert!((256 * 1024..272 * 1024).contains(&large), "{large}");
    }

    #[test]
    fn ending_a_stream_frees_what_zlib_allocated() {
        // What `Drop` does, with the counter read between `deflateEnd` and freeing the block.
        let mut deflate = std::mem::ManuallyDrop::new(Deflate::new(9, 15, 9).unwrap());
        let mut out = vec![0_u8; 1 << 16];
        deflate
            .deflate(&[b'a'; 100_000], &mut out, Flush::Sync)
            .unwrap();
        assert!(deflate.state_bytes() > 0);
        // SAFETY: as in `Drop`; `deflate` is never dropped (`ManuallyDrop`) nor used again.
        let left = unsafe {
            let block = deflate.block.as_ptr();
            z::deflateEnd(ptr::addr_of_mut!((*block).stream));
            let left = (*block).allocated;
            drop(Box::from_raw(block));
            left
        };
        assert_eq!(left, 0);
    }
}
