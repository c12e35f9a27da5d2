//! A gRPC codec without protobuf: one message is the UTF-8 bytes of one `String`.
//!
//! `examples/tonic.rs` keeps its own copy on purpose: an example must read on its own.

use bytes::{Buf, BufMut};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// The codec: `String` in, `String` out.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringCodec;

/// [`StringCodec`]'s encoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringEncoder;

/// [`StringCodec`]'s decoder: a message that is not UTF-8 is an `INTERNAL` error.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringDecoder;

impl Codec for StringCodec {
    type Encode = String;
    type Decode = String;
    type Encoder = StringEncoder;
    type Decoder = StringDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        StringEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        StringDecoder
    }
}

impl Encoder for StringEncoder {
    type Item = String;
    type Error = Status;

    fn encode(&mut self, item: String, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(item.as_bytes());
        Ok(())
    }
}

impl Decoder for StringDecoder {
    type Item = String;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<String>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|error| Status::internal(format!("message is not UTF-8: {error}")))
    }
}
