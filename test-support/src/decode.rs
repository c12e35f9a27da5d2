//! An incremental decoder of the content codings `SseLayer::compress` writes (gzip, br, zstd),
//! for the compression tests and the compression bench: feed it the body's chunks as they come,
//! read everything decoded so far.

use std::io::Write;

/// Everything fed so far, decoded as far as it goes.
pub enum Decoder {
    /// No `Content-Encoding`: the bytes as they are.
    Identity(Vec<u8>),
    /// `gzip` (flate2).
    Gzip(flate2::write::GzDecoder<Vec<u8>>),
    /// `br` (brotli-decompressor).
    Br(Box<brotli_decompressor::DecompressorWriter<Vec<u8>>>),
    /// `zstd` (libzstd's streaming decoder) and what it decoded.
    Zstd(zstd::zstd_safe::DCtx<'static>, Vec<u8>),
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let coding = match self {
            Self::Identity(_) => "identity",
            Self::Gzip(_) => "gzip",
            Self::Br(_) => "br",
            Self::Zstd(..) => "zstd",
        };
        f.debug_tuple("Decoder").field(&coding).finish()
    }
}

impl Decoder {
    /// Creates a new [`Decoder`] for a response's `Content-Encoding` (`None` or `identity`: no
    /// coding).
    ///
    /// # Panics
    ///
    /// On a coding other than `identity`, `gzip`, `br` and `zstd`.
    pub fn new(content_encoding: Option<&str>) -> Self {
        match content_encoding {
            None | Some("identity") => Self::Identity(Vec::new()),
            Some("gzip") => Self::Gzip(flate2::write::GzDecoder::new(Vec::new())),
            // Its `flush` writes out at most one buffer of decoded bytes: a buffer larger than
            // anything a test or the bench decodes at once.
            Some("br") => Self::Br(Box::new(brotli_decompressor::DecompressorWriter::new(
                Vec::new(),
                1 << 20,
            ))),
            Some("zstd") => Self::Zstd(zstd::zstd_safe::DCtx::create(), Vec::new()),
            Some(other) => panic!("no decoder for the content coding {other:?}"),
        }
    }

    /// Feeds `bytes` and returns everything decoded so far.
    ///
    /// # Panics
    ///
    /// When the bytes are not a valid stream of the coding.
    pub fn feed(&mut self, bytes: &[u8]) -> &[u8] {
        match self {
            Self::Identity(decoded) => {
                decoded.extend_from_slice(bytes);
                decoded
            }
            Self::Gzip(d) => {
                d.write_all(bytes).unwrap();
                d.flush().unwrap();
                d.get_ref()
            }
            Self::Br(d) => {
                d.write_all(bytes).unwrap();
                d.flush().unwrap();
                d.get_ref()
            }
            Self::Zstd(dctx, decoded) => {
                let mut input = zstd::zstd_safe::InBuffer::around(bytes);
                // No input, no progress (zstd calls that an error).
                while !bytes.is_empty() {
                    let mut buffer = vec![0u8; 64 * 1024];
                    let mut output = zstd::zstd_safe::OutBuffer::around(&mut buffer[..]);
                    dctx.decompress_stream(&mut output, &mut input).unwrap();
                    let written = output.pos();
                    decoded.extend_from_slice(&buffer[..written]);
                    // Everything decodable is out when the output had room left.
                    if input.pos() == bytes.len() && written < buffer.len() {
                        break;
                    }
                }
                decoded
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_coding_decodes_what_was_fed_so_far() {
        let text = b"data: {\"n\":1}\n\n".repeat(20);
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&text).unwrap();
        let gzip = gzip.finish().unwrap();
        let zstd = zstd::encode_all(&text[..], 3).unwrap();
        for (coding, encoded) in [
            (None, text.clone()),
            (Some("gzip"), gzip),
            (Some("zstd"), zstd),
        ] {
            let mut decoder = Decoder::new(coding);
            let (first, second) = encoded.split_at(encoded.len() / 2);
            let partial = decoder.feed(first).len();
            assert!(partial <= text.len(), "{coding:?}");
            assert_eq!(decoder.feed(second), &text[..], "{coding:?}");
        }
    }
}
