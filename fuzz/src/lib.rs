//! The fuzz targets' inputs and checks (see `README.md`).
//!
//! - [`seed`]: the byte formats of the inputs (and of the files in `seeds/`);
//! - [`checks`]: checks through tower-sse's public API, shared with `tests/fuzz_seeds.rs`;
//! - [`header_rules`]: assertions over fixed response headers, shared with `src/fuzz_api.rs`;
//! - the checks over tower-sse's internals are `tower_sse::fuzz_api` (built with
//!   `--cfg fuzzing`, which `cargo fuzz` sets).

use arbitrary::{Arbitrary, Unstructured};

pub mod checks;
pub mod header_rules;
pub mod seed;

/// The reference SSE parser of the tests (the WHATWG rules, written from the standard).
#[path = "../../test-support/src/sse_parser.rs"]
pub mod sse_parser;

/// Implements `Arbitrary` for an input type through its byte format: every byte string is an
/// input, and the checked-in seeds mean what the stable test reads them as.
macro_rules! arbitrary_from_bytes {
    ($input:ty) => {
        impl<'a> Arbitrary<'a> for $input {
            fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
                let bytes = u.bytes(u.len())?;
                Ok(Self::decode(bytes))
            }

            fn arbitrary_take_rest(u: Unstructured<'a>) -> arbitrary::Result<Self> {
                Ok(Self::decode(u.take_rest()))
            }
        }
    };
}

arbitrary_from_bytes!(seed::ScannerInput);
arbitrary_from_bytes!(seed::BodyInput);
arbitrary_from_bytes!(seed::HeadersInput);
