//! Fixing an event stream's response headers, on arbitrary valid header maps and every HTTP
//! version: no panic, idempotent, the required headers present, everything else untouched;
//! both over the crate's internal function and through the public layer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_sse_fuzz::checks;
use tower_sse_fuzz::seed::HeadersInput;

fuzz_target!(|input: HeadersInput| {
    tower_sse::fuzz_api::check_headers(&input.pairs, input.version);
    checks::check_headers_layer(&input.pairs, input.version);
});
