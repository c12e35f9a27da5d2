//! Replays the fuzz targets' seeds (`fuzz/seeds/<target>/`) on the stable toolchain, through the
//! checks the fuzz targets run (`tower_sse_test_support::checks`).
//!
//! - `scanner`: the framing scanner with a heartbeat injected wherever it allows one
//!   (`check_scanner`, over `tower_sse::fuzz_api`), and every seed also through the public layer
//!   (`check_scanner_layer`): its frames are sent with 15 ms of silence after each and a 10 ms
//!   heartbeat, on a paused clock, so that a heartbeat is due after every frame and written
//!   wherever the scanner allows; the `retry:` hint goes first when the seed's flag says the
//!   layer writes first. (The target goes through the layer only when the seed's flag bit 1 is
//!   set.)
//! - `resume`: the resume tracker's two paths against each other and the reference parser
//!   (`check_resume_tracker`, over `tower_sse::fuzz_api`); the `scanner` seeds, of the same
//!   format, are replayed through it too.
//! - `body`: the script is played as the fuzz target plays it.
//! - `headers`: the internal header fixing and the public layer's headers, as the target does.
//!
//! Crash reproducers of known bugs live in `fuzz/regressions/<target>/` (not in `seeds/`, so that
//! `cargo fuzz run <target> seeds/<target>` starts clean) and are replayed by the `regression_*` tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use tower_sse_test_support::seed::{self, BodyInput, HeadersInput, ScannerInput};
use tower_sse_test_support::{checks, header_rules};

/// The files of `fuzz/<dir>/`, sorted by name.
fn files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// Runs `check` on every file of `fuzz/<dir>/` and fails naming each file whose check failed.
fn replay(dir: &str, check: impl Fn(&[u8])) {
    let files = files(dir);
    assert!(!files.is_empty(), "no files in fuzz/{dir}/");
    let failed: Vec<&str> = files
        .iter()
        .filter(|(_, bytes)| catch_unwind(AssertUnwindSafe(|| check(bytes))).is_err())
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} files in fuzz/{dir}/ fail: {failed:?}",
        failed.len(),
        files.len()
    );
}

fn scanner(bytes: &[u8]) {
    let input = ScannerInput::decode(bytes);
    checks::check_scanner(&input.data, &input.cuts, input.inject_first);
}

fn scanner_layer(bytes: &[u8]) {
    checks::check_scanner_layer(&ScannerInput::decode(bytes));
}

fn resume(bytes: &[u8]) {
    let input = ScannerInput::decode(bytes);
    checks::check_resume_tracker(&input.data, &input.cuts);
}

fn body(bytes: &[u8]) {
    checks::check_body(&BodyInput::decode(bytes));
}

fn headers(bytes: &[u8]) {
    let input = HeadersInput::decode(bytes);
    checks::check_headers(&input.pairs, input.version);
    checks::check_headers_layer(&input.pairs, input.version);
}

#[test]
fn scanner_seeds_inject_only_at_line_starts_and_keep_their_events() {
    replay("seeds/scanner", scanner);
}

#[test]
fn scanner_seeds_keep_their_events_with_a_heartbeat_after_every_frame() {
    replay("seeds/scanner", scanner_layer);
}

#[test]
fn resume_seeds_agree_in_both_tracker_paths_and_with_the_reference() {
    replay("seeds/resume", resume);
}

#[test]
fn scanner_seeds_agree_in_both_tracker_paths_and_with_the_reference() {
    replay("seeds/scanner", resume);
}

#[test]
fn body_seeds_keep_every_invariant() {
    replay("seeds/body", body);
}

#[test]
fn header_seeds_are_fixed_by_the_function_and_through_the_layer() {
    replay("seeds/headers", headers);
}

/// Regression found by the `body` fuzzer, fixed:
/// `SlowClient::max_buffer(0)` never lets the pump pull a frame (`has_room` is `bytes <
/// max_buffer`): the stream hangs, or carries heartbeats forever, instead of holding one frame at
/// a time as documented
#[test]
fn regression_zero_max_buffer_holds_one_frame() {
    replay("regressions/body/zero-max-buffer", |bytes| {
        checks::check_body(&BodyInput::decode(bytes));
    });
}

/// Regression found by the `body` fuzzer, fixed:
/// the opening lines do not restart the heartbeat clock (`State::open` leaves `last_output`), so a
/// heartbeat follows the opening `retry:` hint at once when the body is first polled a heartbeat
/// interval or more after the response was made
#[test]
fn regression_no_heartbeat_right_after_the_opening_lines() {
    replay("regressions/body/heartbeat-after-opening", |bytes| {
        checks::check_body(&BodyInput::decode(bytes));
    });
}

/// Regression found by the `body` fuzzer, fixed:
/// `LatestPerType` reads the type of the stream's first event without skipping a leading BOM
/// (`event_kind` in `backpressure/queue.rs`): `BOM event: x` counts as a `message` event, and a
/// later `message` event replaces the newest (only) `x` event
#[test]
fn regression_latest_per_type_skips_a_leading_bom() {
    replay("regressions/body/latest-per-type-bom", |bytes| {
        checks::check_body(&BodyInput::decode(bytes));
    });
}

/// Regression found by the `body` fuzzer, fixed:
/// when `DropOldest` or `LatestPerType` discards the stream's first events before the client got
/// any of them and the next event starts with a BOM (an ordinary character there), the body takes
/// it for a leading BOM and removes it: `BOM event: x` then sets type `x`, an event the upstream
/// never sent
#[test]
fn regression_dropped_first_events_do_not_expose_an_inner_bom() {
    replay(
        "regressions/body/dropped-first-event-exposes-bom",
        |bytes| {
            checks::check_body(&BodyInput::decode(bytes));
        },
    );
}

#[test]
fn seed_formats_decode_as_documented() {
    let input = ScannerInput::decode(b"\x03data: a\r\xff\ndata: b\r\n\r\n");
    assert!(input.inject_first && input.through_layer);
    assert_eq!(input.frames(), [&b"data: a\r"[..], b"\ndata: b\r\n\r\n"]);

    let input =
        BodyInput::decode(b"\x05\x0a\x00\x00\x00\x00\x1edata: a\xffw\x0f\xff|\xffx\xffs\x02b");
    assert!(input.options.retry);
    assert_eq!(input.options.heartbeat_ms, 10);
    assert_eq!(input.options.shutdown, Some(30));
    assert_eq!(
        input.steps,
        [
            seed::Step::Data(b"data: a".to_vec()),
            seed::Step::Wait(15),
            seed::Step::Data(Vec::new()),
            seed::Step::Shutdown,
            seed::Step::Stall(2),
            seed::Step::Data(b"b".to_vec()),
        ]
    );

    let input = HeadersInput::decode(b"\x03cache-control:a:b\nx-empty\n");
    assert_eq!(header_rules::version(input.version), http::Version::HTTP_2);
    assert_eq!(
        input.pairs,
        [
            (b"cache-control".to_vec(), b"a:b".to_vec()),
            (b"x-empty".to_vec(), Vec::new()),
        ]
    );
}
