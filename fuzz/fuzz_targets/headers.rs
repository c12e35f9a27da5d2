//! Fixing an event stream's response headers, on arbitrary valid header maps and every HTTP
//! version: no panic, idempotent, the required headers present, everything else untouched;
//! both over the crate's internal function and through the public layer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_sse_test_support::checks;
use tower_sse_test_support::seed::HeadersInput;

fuzz_target!(|bytes: &[u8]| {
    let input = HeadersInput::decode(bytes);
    checks::check_headers(&input.pairs, input.version);
    checks::check_headers_layer(&input.pairs, input.version);
});
