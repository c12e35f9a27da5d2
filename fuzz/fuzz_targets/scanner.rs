//! The framing scanner on arbitrary bytes and frame boundaries, with a heartbeat injected
//! wherever it allows one: injections only at line starts, the output minus the injected lines
//! is the input and parses to the same events. Flag bit 1 also replays the input through the
//! public layer (a heartbeat due after every frame), as `tests/fuzz_seeds.rs` does.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_sse_test_support::checks;
use tower_sse_test_support::seed::ScannerInput;

fuzz_target!(|bytes: &[u8]| {
    let input = ScannerInput::decode(bytes);
    checks::check_scanner(&input.data, &input.cuts, input.inject_first);
    if input.through_layer {
        checks::check_scanner_layer(&input);
    }
});
