//! The resume layer's tracker on arbitrary bytes and frame boundaries: its one-pass path agrees
//! with its line-by-line path wherever it takes a frame, and at every event boundary it reports
//! the last event id the reference parser would give a client. The input is a `scanner` seed
//! (its flags byte is ignored).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_sse_test_support::checks;
use tower_sse_test_support::seed::ScannerInput;

fuzz_target!(|bytes: &[u8]| {
    let input = ScannerInput::decode(bytes);
    checks::check_resume_tracker(&input.data, &input.cuts);
});
