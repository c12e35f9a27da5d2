//! `SseBody` through the public layer, driven by a script of upstream frames, waits, client
//! stalls and a drain on a paused current-thread runtime, with heartbeats, retry hints, idle
//! timeout, lifetime, shutdown and the slow-client buffer as the input configures them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_sse_test_support::checks;
use tower_sse_test_support::seed::BodyInput;

fuzz_target!(|bytes: &[u8]| {
    checks::check_body(&BodyInput::decode(bytes));
});
